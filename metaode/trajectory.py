"""The trajectory type shared by theory and simulation (docs/model.md, "Outputs").

A trajectory holds the recorded meta-times alpha, the state y = (Q, R, w) at each of them
(``metaode.theory.state`` layout) and the observables computed from the state (``error``,
``error_before_adaptation`` and any extra columns). Theory and simulation both produce it, so the
validation layer compares like with like. Its files are written by ``metaode.io``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metaode.theory.state import column_names, unpack

SUCCESS, DIVERGED, INTERRUPTED = 0, 1, 2
#: CSV columns of a trajectory's Monte Carlo uncertainty are named prefix + column.
UNCERTAINTY_PREFIX = "mc_err_"


@dataclass
class Trajectory:
    """Recorded meta-times, states and observables of one run (one seed for a simulation).

    ``metatest`` maps a meta-time alpha to the meta-test curve there (error after 0..S test
    adaptation steps). ``status`` is SUCCESS, DIVERGED (then ``message`` says at which alpha and
    why and the arrays stop at the last good record) or INTERRUPTED (stopped on request, e.g. by
    SIGINT; the arrays hold the records reached); ``nfev`` counts right-hand-side evaluations
    (theory) or steps (simulation). A theory whose right-hand side is a Monte Carlo estimate
    carries ``uncertainty``: for a column c, the standard error of c along the trajectory
    (CSV column ``mc_err_<c>``), and ``monte_carlo``: the budget used and whether ``theory.mc_rtol``
    was met (``solvers.integrate.solve``).
    """

    alpha: np.ndarray
    states: np.ndarray
    K: int
    M: int
    observables: dict[str, np.ndarray] = field(default_factory=dict)
    status: int = SUCCESS
    message: str = ""
    nfev: int = 0
    seed: int | None = None
    metatest: dict[float, np.ndarray] = field(default_factory=dict)
    uncertainty: dict[str, np.ndarray] = field(default_factory=dict)
    monte_carlo: dict[str, Any] = field(default_factory=dict)

    def order_parameters(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Q, R, w) at record i."""
        return unpack(self.states[i], self.K, self.M)

    @property
    def error(self) -> np.ndarray:
        return self.observables["error"]

    def column(self, name: str) -> np.ndarray:
        """Any CSV column by name: alpha, an observable or a state entry such as ``R_0_1``."""
        if name == "alpha":
            return self.alpha
        if name in self.observables:
            return self.observables[name]
        if name.startswith(UNCERTAINTY_PREFIX) and name[len(UNCERTAINTY_PREFIX):] in \
                self.uncertainty:
            return self.uncertainty[name[len(UNCERTAINTY_PREFIX):]]
        names = column_names(self.K, self.M)
        if name in names:
            return self.states[:, names.index(name)]
        raise KeyError(f"no column {name!r}")

    def to_pandas(self):
        """The trajectory as a pandas DataFrame, one row per record and the CSV's columns
        (pandas is an optional dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Trajectory.to_pandas needs pandas: python -m pip install "
                              "pandas") from None
        return pd.DataFrame({name: self.column(name) for name in self.columns()})

    def columns(self) -> list[str]:
        """CSV header: alpha, error, error_before_adaptation, other observables, the state, then
        the uncertainties ``mc_err_<name>`` (Monte Carlo theory)."""
        first = ["error", "error_before_adaptation"]
        extra = [k for k in self.observables if k not in first]
        return ["alpha", *first, *extra, *column_names(self.K, self.M),
                *[UNCERTAINTY_PREFIX + k for k in self.uncertainty]]


def finite_length(curve: np.ndarray) -> int:
    """The number of leading finite entries of ``curve``."""
    bad = np.flatnonzero(~np.isfinite(curve))
    return int(bad[0]) if bad.size else len(curve)


def metatest_curves(alpha: np.ndarray, states: np.ndarray, at: np.ndarray,
                    curve) -> dict[float, np.ndarray]:
    """{alpha: curve(state)} for the recorded alphas that are in ``at``."""
    wanted = set(np.asarray(at, dtype=float).tolist())
    return {float(a): np.asarray(curve(y)) for a, y in zip(alpha, states, strict=True)
            if float(a) in wanted}


def metatest_problem(runs: list[Trajectory]) -> str:
    """Where a meta-test curve of ``runs`` stops being finite ('' if none does)."""
    for run in runs:
        for a, curve in run.metatest.items():
            n = finite_length(curve)
            if n < len(curve):
                who = "" if run.seed is None else f"seed {run.seed}: "
                return (f"{who}the meta-test curve at alpha = {a:g} is not finite from "
                        f"{n} test adaptation steps on")
    return ""
