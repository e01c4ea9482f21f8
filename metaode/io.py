"""Files: atomic writes, the CSV form of trajectories, strict JSON and the run record.

Every result file is written atomically (``atomic_write``): an interrupted run leaves the old
file or none, never a truncated one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from metaode.theory.state import column_names
from metaode.trajectory import UNCERTAINTY_PREFIX, Trajectory, finite_length

#: The run record written next to the outputs of every command (``write_run_record``).
RUN_RECORD = "run.json"
#: Packages whose versions a run record lists (with python and metaode itself).
RECORDED_PACKAGES = ("numpy", "scipy", "numba", "sympy", "metaode")


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
    """Write one trajectory (theory.csv) or several seeds (simulation.csv, with a seed column).

    The columns are those of the first run with records (a run stopped before its first record,
    e.g. interrupted, has no rows and does not know the observables of the others)."""
    with_seed = any(r.seed is not None for r in runs)
    header = next((r for r in runs if len(r.alpha)), runs[0]).columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((["seed"] if with_seed else []) + header)
    for run in runs:
        if not len(run.alpha):
            continue
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
                and n not in ("seed", "alpha") and not n.startswith(UNCERTAINTY_PREFIX)}
    err_cols = {n[len(UNCERTAINTY_PREFIX):]: header.index(n) for n in header
                if n.startswith(UNCERTAINTY_PREFIX)}
    runs = []
    for seed in dict.fromkeys(seeds.tolist()):
        block = body[seeds == seed]
        runs.append(Trajectory(
            alpha=block[:, header.index("alpha")], states=block[:, state_cols], K=K, M=M,
            observables={n: block[:, i] for n, i in obs_cols.items()},
            uncertainty={n: block[:, i] for n, i in err_cols.items()},
            seed=seed if with_seed else None))
    return runs


def write_metatest_csv(path: str | Path, runs: list[Trajectory]) -> None:
    """metatest.csv: columns (seed,) alpha, steps, error — one row per adaptation step; a curve
    that stops being finite (a test adaptation that diverges) is written up to there
    (``metatest_problem`` says where)."""
    with_seed = any(r.seed is not None for r in runs)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((["seed"] if with_seed else []) + ["alpha", "steps", "error"])
    for run in runs:
        for a, curve in run.metatest.items():
            for r, err in enumerate(curve[: finite_length(curve)]):
                writer.writerow(([run.seed] if with_seed else []) + [repr(a), r, repr(float(err))])
    atomic_write_text(path, buf.getvalue())


def package_versions() -> dict[str, str]:
    """Versions of python and of RECORDED_PACKAGES ("unknown" for one that is not installed)."""
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def git_revision() -> dict[str, Any]:
    """{"revision": HEAD's hash, "dirty": uncommitted changes to tracked files} of the git work
    tree this package was imported from, or {"revision": "unknown", "dirty": None} if it is not in
    one (e.g. installed from a wheel) or git is missing."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            raise ValueError("the package is not at the top of this work tree")
        return {"revision": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"revision": "unknown", "dirty": None}


def write_run_record(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write ``folder/run.json`` atomically: ``record`` (the command line, config, seeds, status,
    outputs ...) plus ``versions`` (``package_versions``), ``git`` (``git_revision``) and the
    ``platform``. Non-finite floats become null (strict JSON)."""
    data = {**record, "versions": package_versions(), "git": git_revision(),
            "platform": platform.platform()}
    path = Path(folder) / RUN_RECORD
    atomic_write_text(path, json.dumps(strict_json(data), indent=1, allow_nan=False) + "\n")
    return path


def strict_json(value: Any) -> Any:
    """``value`` as strict JSON, the one sanitiser of every JSON file metaode writes: numpy scalars
    and arrays to Python, NaN and +-inf to None."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, np.generic):
        return strict_json(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` (e.g. the figures of ``compare``) as strict JSON, atomically."""
    atomic_write_text(path, json.dumps(strict_json(data), indent=1, allow_nan=False) + "\n")
