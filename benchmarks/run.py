"""Speed of the theory, the simulations, parallel seeds, sweeps, the cold start and the compiled
exact systems (issue 13); writes benchmarks/RESULTS.md.

Run from the repository root: ``python -m benchmarks.run`` (about 6 minutes on 2 cores, a third of
it the cold start, which compiles the numba code twice from an empty cache, and the 100 x 100 sweep
of the compiled section). Every figure is measured in this one run, so ratios compare like with
like on the same machine load; the table gives the machine, its load average and the cores other
jobs used meanwhile. "How it was measured" in RESULTS.md (``HOW`` below) describes every row.

``python -m benchmarks.run --only SECTION[,SECTION...]`` runs the named sections (theory, fewshot,
simulation, core, parallel, cold_start, sweep, compiled) and prints their rows without writing
RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import scipy

from benchmarks import nn2pp
from benchmarks.cases import (
    GRID_LR,
    GRID_SIDE,
    LARGE_CASES,
    SWEEP_LR,
    exact_config,
    simulation_config,
    theory_config,
)
from benchmarks.euler import euler
from metaode.config import Config, load_config
from metaode.simulations.run import simulate
from metaode.solvers.integrate import solve
from metaode.solvers.sweep import Axis, parse_axis, sweep
from metaode.theory.system import build_system

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
REPEATS = 7  # timed calls per theory curve (median)
SIM_WIDTHS = (10**3, 10**4, 10**5, 10**6)
SIM_WORK = 10**8  # steps x N per simulation timing: 10^5 steps at N = 10^3 ... 100 at N = 10^6
SIM_REPEATS = 3
#: the sgd curves (K, M, alpha_max) timed against scipy, Euler and nn2pp
SGD_CURVES = ((2, 2, 1000.0), (8, 4, 100.0))
EULER_DT = nn2pp.DT  # nn2pp's scheme on our right-hand side (``benchmarks.euler``)
#: timed runs of the nn2pp binary named by the environment variable NN2PP, per curve (median)
NN2PP_REPEATS = 3
NOT_RUN = "not run (set NN2PP to the nn2pp ode binary)"
PARALLEL_ALPHA = 10.0  # 2 seeds x 10^5 steps at N = 10^4 (sgd)
ROUNDS = 3  # of the alternating 1- and 2-process measurements (parallel seeds, sweeps)
SPIN = 3 * 10**7  # iterations of the pure-Python loop of ``core_rows`` (~1.5 s)
IMPORT_RUNS = 7
PACKAGES = "theory,solvers,simulations,validation"
EVERYTHING = "theory.system,solvers.integrate,simulations.run,metaode.cli.program"
SWEEP_POINTS = 400  # sgd K = M = 2 to alpha = 1000 at lr = SWEEP_LR
POINT_SWEEP = 40  # points of each 1-process sweep of the per-point rows (issue 13)


def machine() -> dict[str, str]:
    """CPU model, cores available to this process, library versions, load at measurement time."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "CPU": model,
        "cores": f"{len(os.sched_getaffinity(0))} available of {os.cpu_count()}",
        "Python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
    }


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def busy_seconds() -> tuple[float, float]:
    """(CPU seconds of the whole machine since boot, CPU seconds of this process and all its
    descendants): their increments over a section give the CPU that other jobs used meanwhile.

    The descendants include the fork server of ``theory.processes`` and the workers it forks, which
    are not this process's children; each process of the tree counts its own time and that of
    the children it has reaped (``/proc/PID/stat``: utime, stime, cutime, cstime), so an exited
    worker is counted once, in its reaper's cutime.
    """
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    machine = sum(ticks[i] for i in (0, 1, 2, 5, 6))  # user, nice, system, irq, softirq
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:  # the process exited meanwhile
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree.update(children)
        frontier = children
    hz = os.sysconf("SC_CLK_TCK")
    return machine / hz, sum(cpu.get(pid, 0) for pid in tree) / hz


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU times of ``fn()`` over ``repeats`` calls after one warm-up call, and
    the last result."""
    result = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), result


def child(*args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``python -m benchmarks.child ARGS`` in a fresh process; its JSON result."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.child", *args], cwd=ROOT,
                         env={**os.environ, **(env or {})}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(group: str, name: str, value: str, target: str = "", ratio: str = "",
        detail: str = "") -> dict[str, str]:
    return {"group": group, "name": name, "value": value, "target": target, "ratio": ratio,
            "detail": detail}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


# -- theory --------------------------------------------------------------------------------------
def theory_rows() -> list[dict[str, str]]:
    rows = []
    for K, M, alpha_max in SGD_CURVES:
        rows += sgd_curve(K, M, alpha_max)
    for steps in (1, 5):
        config = theory_config(2, 2, 100.0, "anil", steps)
        system = build_system(config)
        wall, cpu, traj = median_time(lambda system=system: solve(system), REPEATS)
        scipy_wall = median_time(lambda system=system: solve(system, method="DOP853"),
                                 REPEATS)[0]
        rows.append(row("theory", f"anil (second order, inner_steps {steps}), K = M = 2, "
                        "alpha = 0..100", ms(wall), "<= 100 ms", f"{wall / 0.1:.2f} of target",
                        f"CPU {ms(cpu)}; {traj.nfev} rhs evaluations; final error "
                        f"{traj.error[-1]:.3g}; scipy's DOP853 on the same system "
                        f"{ms(scipy_wall)} ({scipy_wall / wall:.1f}x)"))
    return rows


def activation_rows() -> list[dict[str, str]]:
    """The theory of linear and of ReLU students and teachers beside erf's on the sgd and anil
    cases of ``theory_rows`` (and sgd at K = 8, M = 4): same configs, timed in one run."""
    rows = []
    for K, M, alpha_max, algorithm in ((2, 2, 1000.0, "sgd"), (2, 2, 100.0, "anil"),
                                        (8, 4, 100.0, "sgd")):
        erf = theory_config(K, M, alpha_max, algorithm)
        times = {}
        for name in ("erf", "linear", "relu"):
            config = erf.replace({"student.activation": name, "teacher.activation": name})
            system = build_system(config)
            wall, _, traj = median_time(lambda system=system: solve(system), REPEATS)
            times[name] = (wall, traj.nfev)
        erf_wall, erf_nfev = times["erf"]
        what = "anil (second order, inner_steps 1)" if algorithm == "anil" else "sgd"
        for name in ("linear", "relu"):
            wall, nfev = times[name]
            target = "<= 3x erf" if name == "relu" and K == M == 2 else ""
            rows.append(row("activations", f"{what}, K = {K}, M = {M}, alpha = 0..{alpha_max:g}: "
                            f"{name} student and teacher", ms(wall), target,
                            f"{wall / erf_wall:.2f}x erf's time",
                            f"erf {ms(erf_wall)} ({erf_nfev} rhs evaluations), {name} {nfev} "
                            "rhs evaluations; medians of the same number of calls"))
    return rows


def sgd_curve(K: int, M: int, alpha_max: float) -> list[dict[str, str]]:
    """Time of our solve, of scipy's DOP853, of Euler at dt = 0.01 on our right-hand side and of
    nn2pp (when NN2PP names its binary), and their accuracy against rtol 1e-12."""
    config = theory_config(K, M, alpha_max)
    system = build_system(config)
    times = config.times()
    wall, cpu, ours = median_time(lambda: solve(system), REPEATS)
    scipy_wall, _, theirs = median_time(lambda: solve(system, method="DOP853"), REPEATS)
    tight = solve(system, method="DOP853", rtol=1e-12, atol=1e-14)
    check = solve(system, method="DOP853", rtol=1e-11, atol=1e-13)  # the reference's own error
    start = time.perf_counter()
    states = euler(system, times, EULER_DT)
    euler_seconds = time.perf_counter() - start
    euler_error = np.array([system.observables(y)["error"] for y in states])
    for traj in (ours, tight, check):
        if traj.status != 0:
            raise RuntimeError(traj.message)
    name = f"sgd, K = {K}, M = {M}, alpha = 0..{alpha_max:g}"
    err_ours = np.abs(ours.error - tight.error).max()
    err_euler = np.abs(euler_error - tight.error).max()
    state_ours = np.abs(ours.states - tight.states).max()
    state_euler = np.abs(states - tight.states).max()
    reference = max(np.abs(check.error - tight.error).max(),
                    np.abs(check.states - tight.states).max())
    return [
        row("theory", f"{name}: our solve (numba-DOP853, rtol 1e-6)", ms(wall),
            "<= 50 ms" if K == 2 else "", f"{wall / 0.05:.2f} of target" if K == 2 else "",
            f"CPU {ms(cpu)}; {ours.nfev} rhs evaluations, {1e6 * wall / ours.nfev:.1f} us each "
            f"(incl. records); final error {ours.error[-1]:.3g}"),
        row("theory", f"{name}: scipy's DOP853 on the same system (the default before 0.2)",
            ms(scipy_wall), "", f"{scipy_wall / wall:.1f}x our time",
            f"{theirs.nfev} rhs evaluations; max |difference| of the state from ours "
            f"{np.abs(theirs.states - ours.states).max():.1g}"),
        *nn2pp_rows(name, config, wall, cpu),
        row("theory", f"{name}: Euler dt = 0.01 on our right-hand side (`benchmarks/euler.py`)",
            ms(euler_seconds), "", f"{euler_seconds / wall:.0f}x our time",
            f"{int(round(alpha_max / EULER_DT))} rhs evaluations"),
        row("theory", f"{name}: max abs error of the error curve vs rtol 1e-12",
            f"ours {err_ours:.2g}, Euler {err_euler:.2g}", "ours <= Euler",
            f"Euler / ours = {err_euler / err_ours:.0f}",
            f"max abs error of the state (Q, R, w): ours {state_ours:.2g}, Euler "
            f"{state_euler:.2g}; the reference (rtol 1e-12, {tight.nfev} rhs evaluations) "
            f"differs from rtol 1e-11 by {reference:.1g}; {len(times)} records"),
    ]


def nn2pp_rows(name: str, config: Config, wall: float, cpu: float) -> list[dict[str, str]]:
    """nn2pp's ODE integrator (``benchmarks.nn2pp``) on ``config``: its time (median of
    NN2PP_REPEATS runs) against ours (``wall``, ``cpu``), and the max abs error of its error curve
    and of ours, both at its records, against a solve at rtol 1e-12 at those records."""
    timing = f"{name}: nn2pp (C++, Euler dt = {nn2pp.DT:g}), the binary NN2PP"
    accuracy = (f"{name}: max abs error of the error curve vs rtol 1e-12 at nn2pp's "
                f"{nn2pp.RECORDS} records")
    binary = os.environ.get("NN2PP")
    if not binary:
        return [row("theory", timing, NOT_RUN, ">= 10x slower than ours"),
                row("theory", accuracy, NOT_RUN, "ours <= nn2pp")]
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise SystemExit(f"NN2PP={binary!r} is not an executable file (the nn2pp ode binary)")
    runs = [nn2pp.run(binary, config) for _ in range(NN2PP_REPEATS)]
    peer = runs[-1]
    seconds = statistics.median(r.seconds for r in runs)
    peer_cpu = statistics.median(r.cpu for r in runs)
    system = build_system(config)
    tight = solve(system, peer.alpha, method="DOP853", rtol=1e-12, atol=1e-14)
    ours = solve(system, peer.alpha)
    for traj in (tight, ours):
        if traj.status != 0:
            raise RuntimeError(traj.message)
    same_scheme = np.array([system.observables(y)["error"]
                            for y in euler(system, peer.alpha, nn2pp.DT)])
    err_peer = np.abs(peer.eg - tight.error).max()
    err_ours = np.abs(ours.error - tight.error).max()
    printed = np.abs(peer.eg - same_scheme)
    steps = round(peer.alpha[-1] / nn2pp.DT)
    return [
        row("theory", timing, f"{seconds:.3g} s", ">= 10x slower than ours",
            f"{seconds / wall:.0f}x our time",
            f"CPU {peer_cpu:.3g} s ({peer_cpu / cpu:.0f}x ours); median of "
            f"{NN2PP_REPEATS} runs (process start included); {steps} Euler steps to alpha = "
            f"{peer.alpha[-1]:g} (its last record)"),
        row("theory", accuracy, f"nn2pp {err_peer:.2g}, ours {err_ours:.2g}", "ours <= nn2pp",
            f"nn2pp / ours = {err_peer / err_ours:.0f}",
            f"ours: our solve (same settings) recording at those times; nn2pp's error differs "
            f"from Euler "
            f"dt = {nn2pp.DT:g} on our right-hand side at the same records by at most "
            f"{printed.max():.1g} (relative {(printed / np.abs(same_scheme)).max():.1g}; it "
            f"prints {nn2pp.DIGITS} significant digits): the same equations and conventions"),
    ]


def fewshot_rows() -> list[dict[str, str]]:
    """Few-shot anil at the default Monte Carlo tolerance (theory.mc_rtol = 0.01) and solver
    tolerances: the built-in experiment with support = 5 and inner_steps 1, 2, and the maml theory
    of the same config with inner_steps 2 (with one inner step it is few-shot anil exactly), one
    solve each (the budget control is part of the time), each after an untimed short solve of the
    same kind that loads numba's cache; the maml row's ratio is to anil's time of this run."""
    rows, anil_wall = [], {}
    default = load_config(None).replace("training.support", 5)
    for algorithm, steps in (("anil", 1), ("anil", 2), ("maml", 2)):
        config = default.replace({"training.algorithm": algorithm, "training.inner_steps": steps})
        warm = config.replace({"training.alpha_max": 1.0, "output.points": 2,
                               "metatest.at": [0.0], "theory.mc_tasks": 64,
                               "theory.mc_rtol": 0.0})
        solve(build_system(warm))
        start, cpu0 = time.perf_counter(), time.process_time()
        traj = solve(build_system(config))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        mc = traj.monte_carlo
        if algorithm == "anil":
            anil_wall[steps] = wall
            target, ratio = "<= 2 s, ideally <= 0.5 s", f"{wall / 2.0:.2f} of 2 s"
        else:
            target = "comparable to few-shot anil (issue 15)"
            ratio = f"{wall / anil_wall[steps]:.2f} x few-shot anil's"
        rows.append(row("theory", f"{'few-shot anil' if algorithm == 'anil' else 'maml'}, "
                        f"built-in experiment, support 5, inner_steps {steps}, default "
                        "tolerance (alpha = 0..80, mc_rtol 0.01)", f"{wall:.3g} s", target, ratio,
                        f"CPU {cpu:.3g} s ({numba.get_num_threads()} numba threads); "
                        f"{mc['tasks']} support sets; largest relative uncertainty "
                        f"{mc['max_relative_error']:.2g} ({mc['where']}); {traj.nfev} rhs "
                        "evaluations of the final solve"))
    return rows


# -- simulations ---------------------------------------------------------------------------------
def simulation_rows() -> list[dict[str, str]]:
    rows = []
    for algorithm in ("sgd", "anil"):
        what = "sgd" if algorithm == "sgd" else "anil (population, second order)"
        for N in SIM_WIDTHS:
            steps = SIM_WORK // N
            r = child("simulation", algorithm, str(N), str(steps), str(SIM_REPEATS))
            ratio = r["per_step"] / r["per_draw"]
            rows.append(row(
                "simulation", f"{what}, K = M = 2, N = 10^{round(np.log10(N))}",
                f"{1 / r['per_step']:,.0f} steps/s", "<= 1.5 x draw" if N == 10**4 else "",
                f"{ratio:.2f} x draw",
                f"{1e6 * r['per_step']:.1f} us per step; numpy draw of N normals "
                f"{1e6 * r['per_draw']:.1f} us; peak RSS {r['rss_peak_mb']:.0f} MB (after "
                f"imports {r['rss_baseline_mb']:.0f} MB, networks built "
                f"{r['rss_built_mb']:.0f} MB); {steps} steps x {SIM_REPEATS}"))
    return rows


def core_rows() -> list[dict[str, str]]:
    """How much a second process gets done: the same pure-Python loop alone and as two processes
    started together (throughput ratio = 2 x time alone / time of the slower of the two)."""
    args = [sys.executable, "-m", "benchmarks.child", "spin", str(SPIN)]
    alone = child("spin", str(SPIN))["seconds"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    both = max(json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"] for p in procs)
    return [row("parallel seeds", "machine: 2 processes of a pure-Python loop at once",
                f"{both:.2f} s", "", f"{2 * alone / both:.2f}x the throughput of 1 process",
                f"alone {alone:.2f} s; the ceiling of any 2-process speed-up in this run (other "
                "jobs on the machine lower it)")]


def parallel_rows() -> list[dict[str, str]]:
    """2 seeds at N = 10^4 (sgd) with 1 and 2 worker processes, alternately in ROUNDS rounds, and
    the pool's start-up cost."""
    config = simulation_config("sgd", PARALLEL_ALPHA)
    N = 10**4
    rounds = []
    for _ in range(ROUNDS):
        seconds = {}
        for workers in (1, 2):
            start = time.perf_counter()
            runs = simulate(config, N, [0, 1], progress=False, workers=workers)
            seconds[workers] = time.perf_counter() - start
            if any(r.status != 0 for r in runs):
                raise RuntimeError("parallel benchmark diverged")
        rounds.append(seconds)
    start = time.perf_counter()
    simulate(simulation_config("sgd", 0.1), 100, [0, 1], progress=False, workers=2)
    startup = time.perf_counter() - start
    speedups = [r[1] / r[2] for r in rounds]
    best = max(range(ROUNDS), key=lambda i: speedups[i])
    return [row("parallel seeds", f"sgd, 2 seeds x {int(PARALLEL_ALPHA * N)} steps at N = 10^4, "
                "2 processes", f"{statistics.median(r[2] for r in rounds):.2f} s", "",
                f"{statistics.median(speedups):.2f}x 1 process",
                f"1 process (in this process, one seed after the other) "
                f"{statistics.median(r[1] for r in rounds):.2f} s; medians over {ROUNDS} rounds "
                f"(speed-ups {', '.join(f'{x:.2f}' for x in speedups)}); start-up of the "
                f"2-process pool (a 10-step run) {startup:.2f} s, so net of start-up "
                f"{rounds[best][1] / (rounds[best][2] - startup):.2f}x in the best round")]


# -- cold start ----------------------------------------------------------------------------------
def cold_start_rows() -> list[dict[str, str]]:
    rows = []
    for label, modules in (("import theory, solvers, simulations, validation", PACKAGES),
                           ("import metaode.theory.system, solvers.integrate, simulations.run, "
                            "cli.program (all the command line loads)", EVERYTHING)):
        times = [child("import", modules)["import"] for _ in range(IMPORT_RUNS)]
        rows.append(row("cold start", label, ms(statistics.median(times)), "<= 1 s",
                        f"{statistics.median(times):.2f} of target",
                        f"median of {IMPORT_RUNS} fresh processes (min {ms(min(times))}, "
                        f"max {ms(max(times))})"))
    for case, what in (("sgd", "sgd K = M = 2 to alpha = 1000"),
                       ("anil", "validation/default.toml (anil, alpha = 80, meta-test)")):
        with tempfile.TemporaryDirectory() as cache:
            env = {"NUMBA_CACHE_DIR": cache}
            cold = child("first-solve", case, env=env)
            warm = child("first-solve", case, env=env)
        rows.append(row("cold start", f"first solve, empty numba cache: {what}",
                        f"{cold['first']:.1f} s", "<= 30 s", f"{cold['first'] / 30:.2f} of target",
                        f"CPU {cold['first_cpu']:.1f} s (compilation) + imports "
                        f"{cold['import']:.2f} s; a second solve in that process "
                        f"{ms(cold['second'])}"))
        rows.append(row("cold start", f"first solve, second process (cache on disk): {what}",
                        ms(warm["first"]), "pays nothing",
                        f"+{ms(warm['first'] - warm['second'])} over a warm solve",
                        f"loading the cached machine code; warm solve {ms(warm['second'])}; "
                        f"imports {warm['import']:.2f} s"))
    return rows


# -- sweeps --------------------------------------------------------------------------------------
def sweep_rows() -> list[dict[str, str]]:
    """Points per second of ``solvers.sweep.sweep`` with 1 and 2 processes, alternately in ROUNDS
    rounds: as the first sweep of a fresh process (``benchmarks.child sweep``, what ``metaode
    sweep`` does) and as a later sweep in this process (a notebook's next sweep)."""
    config = theory_config(2, 2, 1000.0)
    unsuccessful = set()

    def fresh(workers: int) -> float:
        result = child("sweep", str(workers), str(SWEEP_POINTS))
        unsuccessful.add(int(result["unsuccessful"]))
        return SWEEP_POINTS / result["seconds"]

    def later(workers: int) -> float:
        with tempfile.TemporaryDirectory() as out:
            result = sweep(config, [parse_axis(f"training.lr={SWEEP_LR}:{SWEEP_POINTS}")], out,
                           workers=workers)
        unsuccessful.add(SWEEP_POINTS - result.count("success"))
        return SWEEP_POINTS / result.seconds

    later(2)  # this process's fork server started and its workers' first sweep done
    rows = []
    lr = SWEEP_LR.replace(":", "..")
    for rate, when in ((fresh, "first sweep of a fresh process (as `metaode sweep`)"),
                       (later, "a later sweep in the same process (a notebook's next sweep)")):
        rounds = [(rate(1), rate(2)) for _ in range(ROUNDS)]
        ratios = [two / one for one, two in rounds]
        rows.append(row("sweeps", f"{SWEEP_POINTS} points (sgd K = M = 2 to alpha = 1000, "
                        f"lr = {lr}), 2 processes, {when}",
                        f"{statistics.median(r[1] for r in rounds):.1f} points/s",
                        ">= 1.7x 1 process", f"{statistics.median(ratios):.2f}x 1 process",
                        f"1 process {statistics.median(r[0] for r in rounds):.1f} points/s; "
                        f"medians over {ROUNDS} rounds (ratios "
                        f"{', '.join(f'{x:.2f}' for x in ratios)}); points not successful: "
                        f"{', '.join(str(n) for n in sorted(unsuccessful))}"))
    return rows


# -- compiled exact systems (issue 13) ------------------------------------------------------------
def compiled_rows() -> list[dict[str, str]]:
    """The targets of issue 13 for the exact systems at the default solver tolerances: the time
    per point of a 1-process sweep (sgd and population anil, K = M = 2), a 100 x 100 sweep with 2
    processes as the first sweep of a fresh process, and one solve of each large network."""
    rows = []
    for label, config, before, target in (
            ("sgd, K = M = 2, alpha = 0..1000, 201 records", exact_config(2, 2, 1000.0), "66-72 ms",
             0.010),
            ("anil (population, second order), K = M = 2, alpha = 0..100, 201 records",
             exact_config(2, 2, 100.0, "anil"), "20 ms", 0.005)):
        axis = parse_axis(f"training.lr={SWEEP_LR}:{POINT_SWEEP}")
        per_point(config, axis)  # numba's cache loaded
        rounds = [per_point(config, axis) for _ in range(ROUNDS)]
        wall = statistics.median(r[0] for r in rounds)
        rows.append(row("compiled", f"{label}: per point of a 1-process sweep (`metaode sweep "
                        "--workers 1`)", ms(wall), f"<= {ms(target)} (before: {before})",
                        f"{wall / target:.2f} of target",
                        f"CPU {ms(statistics.median(r[1] for r in rounds))} per point; medians of "
                        f"{ROUNDS} sweeps of {POINT_SWEEP} points (training.lr = "
                        f"{SWEEP_LR.replace(':', '..')}), start-up, journal and CSV included; "
                        f"{statistics.median(r[2] for r in rounds):.0f} rhs evaluations per point"))
    grid = child("grid-sweep", "2", str(GRID_SIDE))
    lr = GRID_LR.replace(":", "..")
    rows.append(row("compiled", f"{GRID_SIDE} x {GRID_SIDE} sweep (training.lr = {lr} x "
                    f"training.lr_head = {lr}) of sgd, K = M = 2 to alpha = 1000, 2 processes, "
                    "first sweep of a fresh process (as `metaode sweep --workers 2`)",
                    f"{grid['seconds']:.1f} s", "<= 90 s (before: ~6 min)",
                    f"{grid['seconds'] / 90:.2f} of target",
                    f"{1e3 * grid['seconds'] / GRID_SIDE**2:.2f} ms per point; "
                    f"{grid['nfev'] / GRID_SIDE**2:.0f} rhs evaluations per point; points not "
                    f"successful: {int(grid['unsuccessful'])}"))
    for name, K, M, alpha_max, algorithm, before, target in LARGE_CASES:
        config = exact_config(K, M, alpha_max, algorithm)
        solve(build_system(config.replace("training.alpha_max", 0.01)))  # compiled code loaded
        system = build_system(config)
        start, cpu = time.perf_counter(), time.process_time()
        traj = solve(system)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if traj.status != 0:
            raise RuntimeError(traj.message)
        rows.append(row("compiled", f"{name}, K = {K}, M = {M}, alpha = 0..{alpha_max:g}",
                        f"{wall:.2f} s", f"<= {target:g} s (before: {before:g} s)",
                        f"{wall / target:.2f} of target",
                        f"CPU {cpu:.2f} s on {numba.get_num_threads()} numba threads; "
                        f"{traj.nfev} rhs evaluations, {1e3 * wall / traj.nfev:.1f} ms each; "
                        f"final error {traj.error[-1]:.3g}"))
    return rows


def per_point(config: Config, axis: Axis) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, rhs evaluations) per point of a 1-process sweep over ``axis``,
    every point of which must succeed."""
    points = len(axis.values)
    with tempfile.TemporaryDirectory() as out:
        cpu = time.process_time()
        result = sweep(config, [axis], out, workers=1)
        cpu = time.process_time() - cpu
    if result.count("success") != points:
        raise RuntimeError(f"a point of the sweep over {axis.key} did not succeed")
    return (result.seconds / points, cpu / points,
            sum(r["nfev"] for r in result.rows) / points)


# -- report --------------------------------------------------------------------------------------
HOW = """\
All rows come from one run of `python -m benchmarks.run`; "ratio" compares figures of that run.

- **theory**: `solvers.integrate.solve` on the config of `benchmarks.cases.theory_config` (default
  drawn initial condition, lr = lr_head = 0.5, the default integrator numba-DOP853, with scipy's
  DOP853 beside it, at rtol = 1e-6, atol = 1e-8, 201 records, observables included); median
  over 7 calls after one untimed warm-up call (numba's cache loaded,
  scipy imported), wall time (`time.perf_counter`) with the CPU time (`time.process_time`) in the
  detail. anil: second order, population support, task_std = 0.5, inner_lr = 0.5.
- **activations**: the theory rows' sgd (K = M = 2, alpha = 0..1000; K = 8, M = 4,
  alpha = 0..100) and anil (inner_steps 1) configs with a linear and with a ReLU student and
  teacher beside the same configs with erf, each the median of 7 calls after a warm-up call, the
  ratio to erf's time.
- **few-shot anil**: `solve(build_system(config))` once per curve on the built-in experiment
  (`metaode validate`'s config) with support = 5 and inner_steps 1 and 2, and the maml theory of
  the same config with inner_steps 2 (its ratio: to few-shot anil's time of the run), at the default
  tolerances (theory.mc_rtol = 0.01, solver rtol 1e-8, atol 1e-10): the budget control, the 8
  stream solves of every budget it tries and the final solve are all in the time, after an
  untimed short solve of the same config (alpha = 0..1, 64 support sets, mc_rtol = 0) that loads
  numba's cache; numba's default threads.
- **nn2pp**: the ODE integrator of Goldt et al. 2019 (`scmpp_ode.cpp` of the public sgoldt/nn2pp
  repository: C++ with Armadillo, explicit Euler at dt = 0.01), built outside this repository and
  run when the environment variable NN2PP names its binary (otherwise its rows say "not run").
  `benchmarks/nn2pp.py` maps the config to its options (`--g 1 -K -M --lr --sigma --steps --dt`, and
  `--both --lr2 lr_head` when the head learns) and hands it our initial overlaps and teacher (Q0,
  R0, T, u0, w0) through its `--prefix` files. Its conventions are ours (read from its source): g(x)
  = erf(x/sqrt 2), eg = E(yhat - y)^2 / 2 without the noise floor, time = updates / N = alpha, first
  layer lr / sqrt N, head lr2 / N, one example per step, output noise sigma. It writes 300 records
  (alpha = 0, then one after each block of Euler steps that covers the next interval of a log grid
  from 0.1 to alpha_max, rounded up to whole steps, so the records drift ahead of the grid and the
  last lies at most 300 dt past alpha_max), 6 significant digits. Wall time of the process (start-up
  included; median of 3 runs, in the same run as ours) with its CPU time (`RUSAGE_CHILDREN`),
  OMP_NUM_THREADS = 1. **Euler dt = 0.01** is the same scheme on our right-hand side
  (`benchmarks/euler.py`), timed once; nn2pp's error curve agrees with it to its printed digits,
  which checks the mapping. **Accuracy**: the largest absolute deviation over the 201 records of the
  error curve (and, in the detail, of every entry of the state) from a scipy DOP853 solve at rtol =
  1e-12, atol = 1e-14 of the same system; the detail says how far rtol 1e-11 is from that reference
  (its own accuracy). For nn2pp the same over its 300 records, where ours is our solve (rtol 1e-6)
  evaluated there and the reference is solved there.
- **simulation**: each case in a fresh process (`benchmarks/child.py`): `make_run(config,
  N).advance` for 10^8 / N outer steps (10^5 at N = 10^3 down to 100 at N = 10^6), median of 3 after
  a warm-up of 1 % of the steps; the records (overlaps, observables) are not included. The draw is
  numpy's default Generator (PCG64) `standard_normal(N)` in the same process (median of 5 blocks),
  the work every online step must do at least; "x draw" = time per step / time per draw. It can be
  below 1: the kernels draw the same stream of normals one at a time inside compiled code, faster
  per normal than numpy's `standard_normal`. Peak memory is the process's peak resident set size
  (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, which counts all memory: interpreter, libraries,
  numba's compiled code and numpy's arrays), after the imports and a warm-up at N = 100, once the
  networks of width N are built, and at the end; the growth is numpy's arrays (J and B, (K + M) N
  doubles, plus the QR factorisation that builds them, the peak) and the kernel's inputs.
- **parallel seeds**: `simulations.run.simulate(config, 10^4, [0, 1], workers=w)`, sgd K = M = 2,
  10^5 steps per seed, with w = 1 (in this process) and w = 2 (a `theory.processes` pool, whose
  start-up is included in the 2-process time and also given alone, measured on a 10-step run once
  the fork server runs; the first round also waits for the server's imports), alternately in 3
  rounds; the speed-up is the median of the rounds' ratios. Other jobs on the machine lower it: the
  row "machine" (two pure-Python loops at once) and the cores they used (Machine section) say how
  much of the second core this run had.
- **cold start**: import times are measured inside fresh processes (the interpreter's own start-up
  of ~20 ms is not included), median of 7. First solve: a fresh process with NUMBA_CACHE_DIR set
  to an empty temporary folder times its first `solve(build_system(config))` (numba compiles every
  function it reaches and writes its cache there), then a second process with the same folder
  times its first solve (machine code loaded from the cache) and a second solve (warm).
- **sweeps**: `solvers.sweep.sweep` over training.lr with 1 and 2 processes (with 2, this one and
  a worker forked by `theory.processes`; this one computes points too), alternately in 3 rounds;
  points per second = points / wall time of the sweep call, start-up included; medians of the
  rounds. "First sweep of a fresh process": each sweep in its own process (`benchmarks/child.py`),
  so the 2-process rate includes the fork server's imports (~0.4 s) and the worker's loading of
  numba's cache (~0.3 s), while this process computes; the interpreter's own start-up and imports
  are not included. "A later sweep": in the benchmark's process, whose fork server is running (one
  untimed 2-process sweep before the rounds), so only the worker's start-up is included.
- **compiled** (the targets of issue 13, whose "before" figures are quoted there): the configs of
  `benchmarks.cases.exact_config`, those of the theory rows at the default solver tolerances (rtol
  1e-8, atol 1e-10). Per point: `solvers.sweep.sweep` with 1 process over 40 values of training.lr
  (one untimed sweep first), wall time of the sweep call / points, median of 3 sweeps, with the
  CPU time (`time.process_time`). The 100 x 100 sweep: `benchmarks/child.py grid-sweep` in a fresh
  process, 2 processes (start-up included). Large networks: one solve each after an untimed solve
  to alpha = 0.01 (numba's cache loaded), wall and CPU time (the CPU time of all numba threads).
"""


def markdown(info: dict[str, str], rows: list[dict[str, str]]) -> str:
    lines = ["# Benchmarks", "", "Written by `python -m benchmarks.run`.", "", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += ["", "## Results", "", "| | benchmark | measured | target / reference | ratio | "
              "detail |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['group']} | {r['name']} | {r['value']} | {r['target']} | {r['ratio']} | "
              f"{r['detail']} |" for r in rows]
    lines += ["", "## How it was measured", "", HOW]
    return "\n".join(lines)


SECTIONS = {"theory": theory_rows, "activations": activation_rows, "fewshot": fewshot_rows,
            "simulation": simulation_rows, "core": core_rows, "parallel": parallel_rows,
            "cold_start": cold_start_rows, "sweep": sweep_rows, "compiled": compiled_rows}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--only", metavar="SECTION[,SECTION...]",
                        help=f"run these sections ({', '.join(SECTIONS)}) and print their rows "
                        "without writing RESULTS.md")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [name for name in only if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})")
    info = machine()
    info["load average (1, 5, 15 min) at the start"] = load()
    for key, value in info.items():
        print(f"{key}: {value}")
    rows: list[dict[str, str]] = []
    others = []
    for name in only:
        start, (machine_start, own_start) = time.perf_counter(), busy_seconds()
        new = SECTIONS[name]()
        machine_end, own_end = busy_seconds()
        elapsed = time.perf_counter() - start
        cores = (machine_end - machine_start - (own_end - own_start)) / elapsed
        others.append(f"{name} {max(cores, 0.0):.2f}")
        for r in new:
            print(" | ".join(v for v in r.values() if v))
        rows += new
    info["load average (1, 5, 15 min) at the end"] = load()
    info["cores used by other jobs during each section (from /proc/stat)"] = ", ".join(others)
    if args.only:
        print("; ".join(f"{key}: {value}" for key, value in list(info.items())[-2:]))
        return
    RESULTS.write_text(markdown(info, rows))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
