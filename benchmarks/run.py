"""Timings of the theory and the simulations (sgd, anil); writes benchmarks/RESULTS.md.

Run from the repository root: ``python -m benchmarks.run`` (about 20 s).

Measured, each after one untimed warm-up call (numba compiles or loads its cache, scipy imports):
- the wall and CPU times of ``solve`` for the sgd ODE of K = M = 2 to alpha = 1000 and of K = 8,
  M = 4 to alpha = 100 (default drawn initial condition, lr = lr_head = 0.5, DOP853 at
  rtol = 1e-6, atol = 1e-8, 201 records), median of REPEATS runs;
- the same for the anil ODE (second order, population support, task_std = 0.5,
  inner_lr = 0.5) of K = M = 2 to alpha = 100 with inner_steps 1 and 5;
- simulation speed (sgd, and anil with the population support): outer steps per second of
  ``simulate`` at N = 10^4, K = M = 2 (20000 steps
  per run, two records, so the cost is the steps), median of REPEATS runs, and the ratio of the
  time per step to the time numpy's default Generator needs to draw the step's N inputs,
  ``rng.standard_normal(N)`` (median over DRAW_REPEATS blocks of DRAW_CALLS calls), measured in
  the same run so both see the same machine load.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numba
import numpy as np
import scipy

from simulations.run import simulate
from solvers.integrate import solve
from theory.config import Config
from theory.system import build_system

REPEATS = 7
DRAW_CALLS = 2000
DRAW_REPEATS = 7
N_SIM = 10_000
SIM_ALPHA = 2.0  # 20000 steps at N = 10^4
RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> dict[str, str]:
    """CPU model, cores available to this process, library versions, load at measurement time."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return {
        "CPU": model,
        "cores": f"{len(os.sched_getaffinity(0))} available of {os.cpu_count()}",
        "Python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "load average (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in load),
    }


def median_time(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU (process) times of ``fn()`` over ``repeats`` calls after one warm-up,
    and the last result."""
    result = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), result


ANIL = {"teacher": {"M": 2, "task_std": 0.5},
        "training": {"algorithm": "anil", "order": "second", "inner_lr": 0.5, "lr": 0.5,
                     "lr_head": 0.5}}


def theory_case(K: int, M: int, alpha_max: float, algorithm: str = "sgd",
                inner_steps: int = 1) -> dict[str, object]:
    """Median time of one theory curve (DOP853, rtol 1e-6, atol 1e-8, 201 records)."""
    training = {"algorithm": algorithm, "lr": 0.5, "lr_head": 0.5, "alpha_max": alpha_max}
    teacher = {"M": M}
    name = f"{algorithm} theory, K = {K}, M = {M}, alpha = 0..{alpha_max:g}, rtol 1e-6"
    if algorithm == "anil":
        teacher.update(ANIL["teacher"])
        training.update(ANIL["training"], inner_steps=inner_steps)
        name = (f"anil theory (second order, inner_steps {inner_steps}), K = {K}, M = {M}, "
                f"alpha = 0..{alpha_max:g}, rtol 1e-6")
    config = Config.from_dict({
        "teacher": teacher, "student": {"K": K}, "training": training,
        "solver": {"method": "DOP853", "rtol": 1e-6, "atol": 1e-8},
    })
    system = build_system(config)
    seconds, cpu, traj = median_time(lambda: solve(system), REPEATS)
    if traj.status != 0:
        raise RuntimeError(f"{name} failed: {traj.message}")
    return {"name": name, "seconds": seconds, "cpu": cpu,
            "detail": f"{traj.nfev} rhs evaluations, {1e6 * seconds / traj.nfev:.1f} us each "
                      f"(incl. records), final error {traj.error[-1]:.3g}"}


def input_draw() -> dict[str, object]:
    """Median time of numpy's default Generator drawing the N inputs of one step."""
    rng = np.random.default_rng(0)
    rng.standard_normal(N_SIM)
    blocks, blocks_cpu = [], []
    for _ in range(DRAW_REPEATS):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(DRAW_CALLS):
            rng.standard_normal(N_SIM)
        blocks.append((time.perf_counter() - start) / DRAW_CALLS)
        blocks_cpu.append((time.process_time() - start_cpu) / DRAW_CALLS)
    per_draw = statistics.median(blocks)
    return {"name": f"numpy default_rng().standard_normal({N_SIM})",
            "seconds": per_draw, "cpu": statistics.median(blocks_cpu),
            "detail": f"{1e6 * per_draw:.1f} us per call (median of {DRAW_REPEATS} blocks "
                      f"of {DRAW_CALLS} calls)"}


def simulation_case(algorithm: str, per_draw: float) -> dict[str, object]:
    """Steps per second of one seed at N = 10^4, K = M = 2, and the ratio to the input draw."""
    training = {"algorithm": algorithm, "lr": 0.5, "lr_head": 0.5, "alpha_max": SIM_ALPHA}
    teacher = {"M": 2}
    if algorithm == "anil":
        teacher.update(ANIL["teacher"])
        training.update(ANIL["training"])
    config = Config.from_dict({"teacher": teacher, "student": {"K": 2}, "training": training,
                               "output": {"points": 2}})
    steps = int(round(SIM_ALPHA * N_SIM))
    seconds, cpu, _ = median_time(lambda: simulate(config, N_SIM, [0], progress=False), REPEATS)
    per_step = seconds / steps
    what = "sgd" if algorithm == "sgd" else "anil (population support, second order)"
    return {"name": f"{what} simulation, N = {N_SIM}, K = M = 2 ({steps} steps per run)",
            "seconds": seconds, "cpu": cpu,
            "detail": f"{1 / per_step:,.0f} steps/s = {1e6 * per_step:.1f} us per step, "
                      f"{per_step / per_draw:.2f} x the input draw"}


def markdown(info: dict[str, str], rows: list[dict[str, object]]) -> str:
    lines = ["# Benchmarks", "", "Written by `python -m benchmarks.run`.", "",
             "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += ["", "## Results", "", "| benchmark | median wall time | median CPU time | detail |",
              "| --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['seconds'] * 1e3:.3g} ms | "
                     f"{row['cpu'] * 1e3:.3g} ms | {row['detail']} |")
    how = (
        "Every timed call is preceded by one untimed warm-up call of the same function, so numba's "
        "compilation (or the loading of its on-disk cache) and scipy's imports are not timed. "
        f"Times are medians over {REPEATS} calls of the wall time (`time.perf_counter`) and of "
        "the CPU time of the process (`time.process_time`); the code is single-threaded, so on an "
        "idle machine they agree and a wall time above the CPU time means the cores were shared "
        "(see the load average). The steps per second and the ratio use wall times. The theory "
        "rows time `solvers.integrate.solve` on the sgd system of a config with the default drawn "
        "initial condition (lr = lr_head = 0.5, DOP853, rtol = 1e-6, atol = 1e-8, 201 records; "
        "the time includes evaluating the observables at the records). The simulation row times "
        f"`simulations.run.simulate` for one seed at N = {N_SIM} over alpha = {SIM_ALPHA:g} with "
        "two records, so besides the steps it includes building the networks (one QR of an "
        "N x (K + M) matrix) and two overlap evaluations. The input-draw row times numpy's "
        "default Generator (PCG64) drawing N standard normals, the unavoidable work of one online "
        f"step, in blocks of {DRAW_CALLS} calls in the same process; the ratio in the simulation "
        "row is time per step / time per draw. It can be below 1: the simulation draws the same "
        "stream of normals one by one inside numba-compiled code (`simulations.kernels."
        "draw_input`), whose cost per normal differs from that of numpy's `standard_normal`."
    )
    lines += ["", "## How it was measured", "", how, ""]
    return "\n".join(lines)


def main() -> None:
    info = machine()
    for key, value in info.items():
        print(f"{key}: {value}")
    draw = input_draw()
    rows = [theory_case(2, 2, 1000.0), theory_case(8, 4, 100.0),
            theory_case(2, 2, 100.0, "anil", 1), theory_case(2, 2, 100.0, "anil", 5),
            simulation_case("sgd", draw["seconds"]), simulation_case("anil", draw["seconds"]),
            draw]
    info["load average (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    for row in rows:
        print(f"{row['name']}: {row['seconds'] * 1e3:.3g} ms wall, {row['cpu'] * 1e3:.3g} ms CPU "
              f"({row['detail']})")
    RESULTS.write_text(markdown(info, rows))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
