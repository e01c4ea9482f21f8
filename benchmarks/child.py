"""Measurements that need a process of their own; ``benchmarks.run`` starts them.

    python -m benchmarks.child simulation ALGORITHM N STEPS REPEATS
    python -m benchmarks.child first-solve CASE           (CASE: sgd | anil)
    python -m benchmarks.child import MODULE[,MODULE...]
    python -m benchmarks.child spin ITERATIONS
    python -m benchmarks.child sweep WORKERS POINTS
    python -m benchmarks.child grid-sweep WORKERS SIDE

Each prints one JSON object on its last line of output.

simulation: steps per second of one run (``simulations.run.make_run(...).advance``) at width N,
K = M = 2, and numpy's ``default_rng().standard_normal(N)`` in the same process, both as medians;
the peak resident memory of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before
the networks of width N exist (after the imports and a warm-up at N = 100 that loads the compiled
kernels), once they are built (``simulations.networks``: the QR factorisation of an N x (K + M)
Gaussian matrix and its products) and at the end of the stepping.

first-solve: wall and CPU time of the imports, of the first ``solve`` in the process (numba compiles
it, or loads it from its cache: NUMBA_CACHE_DIR is set by the caller) and of a second solve.
CASE sgd is the curve K = M = 2 to alpha = 1000 of the theory benchmark; CASE anil is the built-in
experiment ``validation/default.toml`` (anil, K = M = 2, second order, alpha = 80, meta-test
curves).

import: wall time of importing the modules, in this fresh process.

spin: wall time of a pure-Python loop of ITERATIONS additions (no memory traffic, no libraries):
run alone and as two processes at once, it says how much of a second core the machine gives.

sweep: the wall time of ``solvers.sweep.sweep`` over POINTS values of training.lr (sgd, K = M = 2
to alpha = 1000, ``benchmarks.cases``) with WORKERS processes, as the first sweep of a fresh
process (what ``metaode sweep`` does): its start-up (numba's cache, the fork server) is included.

grid-sweep: the same for the SIDE x SIDE grid of training.lr x training.lr_head (GRID_LR each) of
sgd, K = M = 2 to alpha = 1000 at the default solver tolerances (``benchmarks.cases``, issue 13).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def simulation(algorithm: str, N: int, steps: int, repeats: int) -> dict[str, float]:
    import numpy as np

    from benchmarks.cases import simulation_config
    from metaode.simulations.run import make_run

    config = simulation_config(algorithm, 1.0)
    make_run(config, 100, np.random.default_rng(1)).advance(10)  # load the compiled kernels
    baseline = _rss_mb()
    run = make_run(config, N, np.random.default_rng(0))
    built = _rss_mb()
    run.advance(max(1, steps // 100))
    per_step = []
    for _ in range(repeats):
        start = time.perf_counter()
        run.advance(steps)
        per_step.append((time.perf_counter() - start) / steps)
    rng = np.random.default_rng(0)
    calls = max(5, 10**7 // N)
    per_draw = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            rng.standard_normal(N)
        per_draw.append((time.perf_counter() - start) / calls)
    return {"per_step": statistics.median(per_step), "per_draw": statistics.median(per_draw),
            "rss_baseline_mb": baseline, "rss_built_mb": built, "rss_peak_mb": _rss_mb()}


def first_solve(case: str) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    from pathlib import Path

    from benchmarks.cases import theory_config
    from metaode.config import Config
    from metaode.solvers.integrate import solve
    from metaode.theory.system import build_system

    out = {"import": time.perf_counter() - wall, "import_cpu": time.process_time() - cpu}
    if case == "sgd":
        config = theory_config(2, 2, 1000.0)
    else:
        config = Config.from_toml(Path(__file__).parents[1] / "validation" / "default.toml")
    for name in ("first", "second"):
        wall, cpu = time.perf_counter(), time.process_time()
        traj = solve(build_system(config))
        out[name], out[f"{name}_cpu"] = time.perf_counter() - wall, time.process_time() - cpu
        if traj.status != 0:
            raise RuntimeError(traj.message)
    return out


def import_time(modules: str) -> dict[str, float]:
    import importlib

    start = time.perf_counter()
    for name in modules.split(","):
        importlib.import_module(name)
    return {"import": time.perf_counter() - start}


def spin(iterations: int) -> dict[str, float]:
    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return {"seconds": time.perf_counter() - start}


def sweep(workers: int, points: int) -> dict[str, float]:
    import multiprocessing.forkserver
    import tempfile

    from benchmarks.cases import SWEEP_LR, theory_config
    from metaode.solvers.sweep import parse_axis
    from metaode.solvers.sweep import sweep as run_sweep

    axis = parse_axis(f"training.lr={SWEEP_LR}:{points}")
    with tempfile.TemporaryDirectory() as out:
        result = run_sweep(theory_config(2, 2, 1000.0), [axis], out, workers=workers)
    # stop and reap the fork server (private API, no public one): otherwise it outlives this
    # process, and its CPU and its workers' would count as "other jobs" in benchmarks.run
    multiprocessing.forkserver._forkserver._stop()
    return {"seconds": result.seconds, "unsuccessful": points - result.count("success")}


def grid_sweep(workers: int, side: int) -> dict[str, float]:
    import multiprocessing.forkserver
    import tempfile

    from benchmarks.cases import GRID_LR, exact_config
    from metaode.solvers.sweep import parse_axis
    from metaode.solvers.sweep import sweep as run_sweep

    axes = [parse_axis(f"training.{key}={GRID_LR}:{side}") for key in ("lr", "lr_head")]
    with tempfile.TemporaryDirectory() as out:
        result = run_sweep(exact_config(2, 2, 1000.0), axes, out, workers=workers)
    multiprocessing.forkserver._forkserver._stop()  # as in ``sweep``
    return {"seconds": result.seconds, "unsuccessful": side * side - result.count("success"),
            "nfev": float(sum(r["nfev"] for r in result.rows))}


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "simulation":
        result = simulation(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif kind == "first-solve":
        result = first_solve(args[0])
    elif kind == "spin":
        result = spin(int(args[0]))
    elif kind == "sweep":
        result = sweep(int(args[0]), int(args[1]))
    elif kind == "grid-sweep":
        result = grid_sweep(int(args[0]), int(args[1]))
    elif kind == "import":
        result = import_time(args[0])
    else:
        raise SystemExit(f"unknown measurement {kind!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
