"""The trajectory type shared by theory and simulation, and its CSV form (INTERFACE.md).

A trajectory holds the recorded meta-times alpha, the state y = (Q, R, w) at each of them
(theory.state layout) and the observables computed from the state (``error``,
``error_before_adaptation`` and any extra columns). Theory and simulation both produce it, so the
validation layer compares like with like.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from theory.state import column_names, unpack

SUCCESS, DIVERGED = 0, 1


@dataclass
class Trajectory:
    """Recorded meta-times, states and observables of one run (one seed for a simulation).

    ``metatest`` maps a meta-time alpha to the meta-test curve there (error after 0..S test
    adaptation steps). ``status`` is SUCCESS or DIVERGED (then ``message`` says at which alpha and
    why and the arrays stop at the last good record); ``nfev`` counts right-hand-side evaluations
    (theory) or steps (simulation).
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
        names = column_names(self.K, self.M)
        if name in names:
            return self.states[:, names.index(name)]
        raise KeyError(f"no column {name!r}")

    def columns(self) -> list[str]:
        """CSV header: alpha, error, error_before_adaptation, other observables, then the state."""
        first = ["error", "error_before_adaptation"]
        extra = [k for k in self.observables if k not in first]
        return ["alpha", *first, *extra, *column_names(self.K, self.M)]


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, which
    then gets the usual permissions (0666 minus the umask, not mkstemp's 0600) and is renamed over
    ``path``; an interrupted write leaves the old file (or none), never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_write``), flushed to disk first."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def write_csv(path: str | Path, runs: list[Trajectory]) -> None:
    """Write one trajectory (theory.csv) or several seeds (simulation.csv, with a seed column)."""
    with_seed = any(r.seed is not None for r in runs)
    header = runs[0].columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((["seed"] if with_seed else []) + header)
    for run in runs:
        table = np.column_stack([run.column(name) for name in header])
        for row in table:
            prefix = [run.seed] if with_seed else []
            writer.writerow(prefix + [repr(float(v)) for v in row])
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path, K: int, M: int) -> list[Trajectory]:
    """Read a file written by ``write_csv`` back into trajectories (one per seed)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], np.array(rows[1:], dtype=float).reshape(len(rows) - 1, len(rows[0]))
    with_seed = header[0] == "seed"
    seeds = body[:, 0].astype(int) if with_seed else np.zeros(len(body), dtype=int)
    state_cols = [header.index(n) for n in column_names(K, M)]
    obs_cols = {n: header.index(n) for n in header if n not in column_names(K, M)
                and n not in ("seed", "alpha")}
    runs = []
    for seed in dict.fromkeys(seeds.tolist()):
        block = body[seeds == seed]
        runs.append(Trajectory(
            alpha=block[:, header.index("alpha")], states=block[:, state_cols], K=K, M=M,
            observables={n: block[:, i] for n, i in obs_cols.items()},
            seed=seed if with_seed else None))
    return runs


def metatest_curves(alpha: np.ndarray, states: np.ndarray, at: np.ndarray,
                    curve) -> dict[float, np.ndarray]:
    """{alpha: curve(state)} for the recorded alphas that are in ``at``."""
    wanted = set(np.asarray(at, dtype=float).tolist())
    return {float(a): np.asarray(curve(y)) for a, y in zip(alpha, states, strict=True)
            if float(a) in wanted}


def write_metatest_csv(path: str | Path, runs: list[Trajectory]) -> None:
    """metatest.csv: columns (seed,) alpha, steps, error — one row per adaptation step."""
    with_seed = any(r.seed is not None for r in runs)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((["seed"] if with_seed else []) + ["alpha", "steps", "error"])
    for run in runs:
        for a, curve in run.metatest.items():
            for r, err in enumerate(curve):
                writer.writerow(([run.seed] if with_seed else []) + [repr(a), r, repr(float(err))])
    atomic_write_text(path, buf.getvalue())
