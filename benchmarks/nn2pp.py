"""nn2pp, the peer integrator of Goldt et al. (2019), run on our sgd configs by the benchmark.

The ODE integrator of the public sgoldt/nn2pp repository (``scmpp_ode.cpp``; built outside this
repository, README "Layout") integrates the sgd ODEs of docs/model.md §7 by explicit
Euler, y(alpha + dt) = y(alpha) + dt f(y(alpha)), default dt = 0.01. Its conventions, read from its
source, are ours:

- g(x) = erf(x / sqrt 2) (``--g 1``), teacher and student;
- eg = E(yhat - y)^2 / 2 computed from (Q, R, T, A, v) without the label-noise floor, i.e. our
  ``error`` = epsilon(w; u0) of §3 (its I2 = (2 / pi) arcsin(...), so eg carries 1 / pi);
- time in weight updates / N = our alpha (``--steps`` is alpha_max);
- first layer lr / sqrt N (``--lr`` = training.lr), head lr2 / N (``--lr2`` = training.lr_head,
  trained only with ``--both``; without it the head stays at v0), one example per step, teacher
  output noise of std ``--sigma`` = teacher.noise (the lr^2 sigma^2 J2 term of §7);
- its teacher (T, A) and student (Q, R, v) are (T, u0) and (Q0, R0, w0): given here through
  ``--prefix`` files (PREFIX_Q0.dat, _R0.dat, _T0.dat, _A0.dat, _v0.dat, Armadillo raw ASCII),
  which replace its own drawn initial conditions.

It writes 300 records, at alpha = 0 and then one after each block of Euler steps that covers the
next interval of a log grid from 0.1 to alpha_max, rounded up to whole steps (so the records drift
ahead of the grid and the last lies at most 300 dt past alpha_max), as lines
``t, eg, et, eg_frac, et_frac, diff, Q_kl (k <= l), R_km, A_m, v_k`` printed with 6 significant
digits (et .. diff are nan for the ODE), after ``#`` comment lines. The mapping is checked by the
benchmark: nn2pp's eg agrees with Euler at the same dt on our right-hand side
(``benchmarks/euler.py``) to its printed digits.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaode.config import Config

#: nn2pp's integration step (its default).
DT = 0.01
#: significant digits of nn2pp's output (C++ streams' default precision).
DIGITS = 6
#: records nn2pp writes (its NUM_DATAPOINTS).
RECORDS = 300


@dataclass(frozen=True)
class Run:
    """One nn2pp run: its wall and CPU time (``seconds``, ``cpu``), the record times
    ``alpha`` (multiples of DT) and its generalisation error ``eg`` there."""

    seconds: float
    cpu: float
    alpha: np.ndarray
    eg: np.ndarray


def options(config: Config, dt: float = DT) -> list[str]:
    """nn2pp's command-line options for the sgd ``config`` (without ``--prefix``); ValueError
    naming the config field that nn2pp cannot represent."""
    tr = config.training
    if tr.algorithm != "sgd":
        raise ValueError(f"training.algorithm: nn2pp integrates sgd only, got {tr.algorithm!r}")
    for field, name in (("teacher.activation", config.teacher.activation),
                        ("student.activation", config.student.activation)):
        if name != "erf":
            raise ValueError(f"{field}: nn2pp is run with erf only, got {name!r}")
    if tr.query * tr.meta_batch != 1:
        raise ValueError("training.query, training.meta_batch: nn2pp takes one example per "
                         f"step (query x meta_batch = 1), got {tr.query} x {tr.meta_batch}")
    last = tr.alpha_max + RECORDS * dt  # its last record: at most one dt past each grid point
    if 10.0 ** (math.floor(math.log10(last)) - DIGITS + 1) > dt:
        raise ValueError(f"training.alpha_max: nn2pp prints alpha with {DIGITS} significant "
                         f"digits, which resolve dt = {dt:g} only below alpha = "
                         f"{10.0 ** (math.floor(math.log10(dt)) + DIGITS):g}; got "
                         f"{tr.alpha_max:g}")
    opts = ["--g", "1", "-K", str(config.K), "-M", str(config.M), "--lr", repr(tr.lr),
            "--sigma", repr(config.teacher.noise), "--steps", repr(tr.alpha_max),
            "--dt", repr(dt)]
    if tr.lr_head > 0:
        opts += ["--both", "--lr2", repr(tr.lr_head)]
    return opts


def write_initial(config: Config, prefix: Path) -> None:
    """The files PREFIX_{Q0,R0,T0,A0,v0}.dat that nn2pp's ``--prefix`` loads: Q0, R0, T, u0, w0
    of ``config`` in Armadillo's raw ASCII format (rows of numbers, 17 significant digits)."""
    s, t = config.student, config.teacher
    for name, matrix in (("Q0", s.Q0), ("R0", s.R0), ("T0", t.T)):
        np.savetxt(f"{prefix}_{name}.dat", np.asarray(matrix, dtype=float), fmt="%.17g")
    for name, vector in (("A0", t.u0), ("v0", s.w0)):  # column vectors
        np.savetxt(f"{prefix}_{name}.dat", np.asarray(vector, dtype=float), fmt="%.17g")


def parse(text: str, K: int, M: int, dt: float = DT) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, eg) of nn2pp's output ``text``: alpha is the printed time rounded to the
    multiple of ``dt`` that it prints (ValueError if it is not within the printing precision
    of one, or if a line has not the 6 + K(K+1)/2 + KM + M + K columns of (K, M))."""
    columns = 6 + K * (K + 1) // 2 + K * M + M + K
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) != columns:
            raise ValueError(f"nn2pp output line {number}: {len(fields)} columns, expected "
                             f"{columns} for K = {K}, M = {M}")
        rows.append((float(fields[0]), float(fields[1])))
    if not rows:
        raise ValueError("nn2pp output has no records")
    printed, eg = np.array(rows).T
    alpha = np.rint(printed / dt) * dt
    digit = np.array([10.0 ** (math.floor(math.log10(a)) - DIGITS + 1) if a > 0 else 0.0
                      for a in printed])
    off = np.abs(printed - alpha) > 0.5 * digit + 1e-9 * dt
    if off.any():
        raise ValueError(f"nn2pp output: time {printed[off][0]:g} is not a multiple of "
                         f"dt = {dt:g}")
    return alpha, eg


def run(binary: str, config: Config, dt: float = DT) -> Run:
    """Run nn2pp's ODE integrator ``binary`` on ``config`` from its initial overlaps, in a
    temporary folder (it writes PREFIX_ode.dat there); wall time of the process, its CPU time
    (``RUSAGE_CHILDREN``) and its records."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = Path(folder) / "case"
        write_initial(config, prefix)
        args = [binary, *options(config, dt), "--prefix", str(prefix)]
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = subprocess.run(args, cwd=folder, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{binary} exited with status {out.returncode}: {out.stderr.strip()}")
    alpha, eg = parse(out.stdout, config.K, config.M, dt)
    cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return Run(seconds, cpu_seconds, alpha, eg)
