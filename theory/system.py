"""An ODE system: what the solvers integrate and what the simulations are compared with.

``build_system(config)`` returns the system of the config's algorithm. Every system offers the
initial state y0 = pack(Q0, R0, w0), the right-hand side dy/dalpha, and ``observables(y)``: the
named scalars recorded along a trajectory (the same function serves the simulations, which
evaluate it on their networks' exact order parameters).

Validity of a state (theory after every accepted integrator step, simulation after every chunk of
steps): ``state_problem`` (non-finite, blow-up, lost covariance); at every record also ``runaway``
(a student unit longer than ``solver.max_norm`` allows). A run that fails either stops there,
keeping its records up to that point, with a message that says at which alpha and why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, typeof

from metaode.algorithms import algorithm
from metaode.config import PSD_TOLERANCE, Config, ConfigError
from metaode.theory.fields import field_covariance, representation_error, specialisation
from metaode.theory.state import column_names, pack, unpack

#: |entries of y| beyond this mean the dynamics ran away (weights of norm ~1e4 sqrt(N)).
DIVERGENCE_BOUND = 1e8


class ODESystem(ABC):
    """dy/dalpha = f(y) for y = (Q, R, w) of one config (autonomous: f does not depend on alpha).

    ``monte_carlo``: whether f is a Monte Carlo estimate; such a system also offers
    ``stream_systems()`` (one system per independent stream of its sample), ``with_budget(n)`` and
    ``sample.size`` for the uncertainty control of ``solvers.integrate.solve``.
    """

    monte_carlo = False

    def __init__(self, config: Config):
        self.config = config
        self.K, self.M = config.K, config.M
        self.T = np.ascontiguousarray(config.teacher.T, dtype=float)
        self.acts = config.activations

    def initial_state(self) -> np.ndarray:
        s = self.config.student
        return pack(np.asarray(s.Q0, float), np.asarray(s.R0, float), np.asarray(s.w0, float))

    @abstractmethod
    def rhs(self, alpha: float, y: np.ndarray) -> np.ndarray:
        """dy/dalpha at state y."""

    @abstractmethod
    def observables(self, y: np.ndarray) -> dict[str, float]:
        """error, error_before_adaptation and the system's other recorded scalars at y."""

    def common_observables(self, Q: np.ndarray, R: np.ndarray, w: np.ndarray) -> dict[str, float]:
        """Observables of every algorithm: representation quality and specialisation of R.

        ``representation_error`` = E_tau min_w eps(w; u_tau); ``specialisation`` and ``align_k``
        (the teacher unit student unit k aligns with) from ``theory.fields.specialisation``.
        """
        te = self.config.teacher
        spec, align = specialisation(Q, R, self.T)
        return {"representation_error": representation_error(self.acts, Q, R, self.T, te.u0,
                                                             te.task_std),
                "specialisation": spec, **{f"align_{k}": float(a) for k, a in enumerate(align)}}

    @property
    def psd_tolerance(self) -> float:
        """Relative tolerance of the covariance check of ``invalid``:
        min(1e-2, max(PSD_TOLERANCE, 10 (solver.rtol + solver.atol))).

        An integrated state carries errors of ~rtol |y| + atol per entry, so a covariance that is
        exactly singular (a student that has learnt a teacher unit: Omega -> singular as alpha ->
        infinity) is integrated into smallest eigenvalues of ~ -0.4 rtol (measured for sgd, rtol =
        1e-6 .. 1e-10, up to alpha = 1e6): rounding of a valid state, not a lost covariance. The
        factor 10 leaves a margin of 25 over that; the cap keeps a check for very loose tolerances.
        """
        sv = self.config.solver
        return min(1e-2, max(PSD_TOLERANCE, 10.0 * (sv.rtol + sv.atol)))

    def invalid(self, y: np.ndarray) -> str:
        """Why y is not a valid state ('' if it is): ``state_problem`` (non-finite, beyond
        DIVERGENCE_BOUND, or Omega no longer a covariance within ``psd_tolerance``)."""
        return state_problem(y, self.K, self.M, self.T, self.psd_tolerance)

    def runaway(self, y: np.ndarray) -> str:
        """Why the recorded state y is a runaway ('' if not): ``runaway(.., solver.max_norm)``."""
        return runaway(y, self.K, self.M, self.T, self.config.solver.max_norm)


def state_problem(y: np.ndarray, K: int, M: int, T: np.ndarray,
                  tolerance: float = PSD_TOLERANCE) -> str:
    """Why y = pack(Q, R, w) is not a valid state of the dynamics ('' if it is).

    Checked in this order: an entry that is not finite; an entry with |y_i| > DIVERGENCE_BOUND (a
    blow-up); Omega = [[Q, R], [R^T, T]] not positive semi-definite, i.e. its smallest eigenvalue
    below -tolerance max(1, max |Omega_ij|) (default: PSD_TOLERANCE, the config's check of Q0, R0):
    then (Q, R) are no overlaps of any vectors, and further on the Gaussian integrals break down
    (arcsin arguments reach +-1 when Omega + I is singular). The message names the entry or the
    eigenvalue.
    """
    y = np.ascontiguousarray(y, dtype=float)
    code, index, value = _state_check(y, K, M, np.ascontiguousarray(T, dtype=float),
                                      DIVERGENCE_BOUND, tolerance)
    if code == 0:
        return ""
    name = column_names(K, M)[index] if index >= 0 else ""
    if code == 1:
        return f"{name} is not finite ({value})"
    if code == 2:
        return f"|{name}| = {abs(value):.6g} exceeded {DIVERGENCE_BOUND:g}"
    return (f"[[Q, R], [R^T, T]] lost positive semi-definiteness (smallest eigenvalue "
            f"{value:.3g}; an overlap exceeds what the norms allow)")


def runaway(y: np.ndarray, K: int, M: int, T: np.ndarray, max_norm: float) -> str:
    """Why y is a runaway ('' if not): max_k Q_kk > max_norm max_m T_mm (``solver.max_norm``).

    Above the maximal learning rate the norms of the student units grow without bound, but for erf
    units (g' ~ Q_kk^-1/2 once saturated) often only like a power of alpha, never reaching
    DIVERGENCE_BOUND: this bound makes such a run stop. It is checked at the recorded meta-times
    (theory and simulation alike, so both stop at the same record).
    """
    Q, _, _ = unpack(np.asarray(y, dtype=float), K, M)
    diag = np.diag(Q)
    scale = float(np.max(np.diag(T)))
    k = int(np.argmax(diag))
    if diag[k] > max_norm * scale:
        return (f"runaway: Q_{k}_{k} / max_m T_mm = {diag[k] / scale:.6g} exceeded "
                f"solver.max_norm = {max_norm:g}")
    return ""


def non_finite(observables: dict[str, float]) -> str:
    """Why the observables of a record cannot be written ('' if they can): the first one that is
    not finite (a NaN or inf in an output is never silent: the run stops before that record)."""
    for name, value in observables.items():
        if not np.isfinite(value):
            return f"the observable {name} is not finite ({value})"
    return ""


@njit(cache=True)
def _state_check(y, K, M, T, bound, tolerance):
    """(code, index, value): 0 valid; 1 y[index] non-finite; 2 |y[index]| > bound; 3 the smallest
    eigenvalue ``value`` of Omega is below -tolerance max(1, max |Omega|)."""
    for i in range(y.shape[0]):
        if not np.isfinite(y[i]):
            return 1, i, y[i]
        if abs(y[i]) > bound:
            return 2, i, y[i]
    Q, R, _ = unpack(y, K, M)
    omega = field_covariance(Q, R, T)
    lowest = np.linalg.eigvalsh(omega)[0]
    if lowest < -tolerance * max(1.0, np.abs(omega).max()):
        return 3, -1, lowest
    return 0, -1, 0.0


def specialised(kernel: Any, *example: Any) -> Callable[..., Any]:
    """The compiled entry point of the numba function ``kernel`` for the argument types of
    ``example``: calling it skips the dispatcher's type resolution, which for the activation
    markers (named tuples) costs ~4 us per call from Python, more than a small right-hand side.
    The caller passes arguments of exactly those types (y: a C-contiguous float64 vector)."""
    signature = tuple(typeof(a) for a in example)
    kernel.compile(signature)
    return kernel.overloads[signature].entry_point


def build_system(config: Config) -> ODESystem:
    """The ODE system of ``config.training.algorithm`` (its entry in ``metaode.algorithms``)."""
    name = config.training.algorithm
    factory = algorithm(name).theory_factory()
    if factory is None:
        raise ConfigError("training.algorithm",
                          f"{name!r} has no ODE theory in this version (simulation only)")
    return factory(config)
