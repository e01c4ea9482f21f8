"""Convergence of the simulation to the theory as N grows.

For each N the simulation runs over several seeds from exactly the theory's initial overlaps, and
the deviation of a run is the root-mean-square over recorded times and state entries of
y_sim(alpha) - y_theory(alpha), y = (Q, R, w). The order parameters of a finite network fluctuate
around the ODE solution by O(N^-1/2) (a sum of N alpha independent increments of size O(1/N) with
O(1/N) drift corrections), so the seed-RMS deviation D(N) should follow D ~ N^-1/2: the fitted
slope of log D against log N is the figure of merit (``convergence_study``), drawn by
``convergence_figure``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metaode.config import Config
from metaode.simulations.run import simulate_seed
from metaode.solvers.integrate import solve
from metaode.theory.system import build_system
from metaode.validation.plots import save_figure


def deviation(theory_states: np.ndarray, theory_alpha: np.ndarray, run_states: np.ndarray,
              run_alpha: np.ndarray) -> float:
    """RMS over records and entries of the run's state minus the theory's (interpolated)."""
    ref = np.column_stack([np.interp(run_alpha, theory_alpha, theory_states[:, i])
                           for i in range(theory_states.shape[1])])
    return float(np.sqrt(np.mean((run_states - ref) ** 2)))


def convergence_study(config: Config, N_values: Sequence[int], seeds: Sequence[int],
                      progress: bool = False) -> dict:
    """Deviation D(N) (RMS over seeds) and the fitted slope of log D against log N."""
    theory = solve(build_system(config))
    if theory.status != 0:
        raise RuntimeError(f"theory failed: {theory.message}")
    per_seed = np.empty((len(N_values), len(seeds)))
    for i, N in enumerate(N_values):
        for j, seed in enumerate(seeds):
            run = simulate_seed(config, int(N), int(seed), progress)
            per_seed[i, j] = deviation(theory.states, theory.alpha, run.states, run.alpha)
    D = np.sqrt(np.mean(per_seed**2, axis=1))
    logN, logD = np.log(np.asarray(N_values, float)), np.log(D)
    slope, intercept = np.polyfit(logN, logD, 1)
    # standard error of the slope from the scatter of the points about the line
    resid = logD - (slope * logN + intercept)
    dof = max(len(N_values) - 2, 1)
    slope_se = float(np.sqrt(np.sum(resid**2) / dof / np.sum((logN - logN.mean()) ** 2)))
    return {"N": [int(n) for n in N_values], "seeds": [int(s) for s in seeds],
            "deviation": D.tolist(), "deviation_per_seed": per_seed.tolist(),
            "slope": float(slope), "slope_stderr": slope_se, "intercept": float(intercept)}


def convergence_figure(result: dict, path: str, title: str = "") -> None:
    """Log-log figure of D(N) with the fit and the N^-1/2 reference."""
    N = np.asarray(result["N"], float)
    D = np.asarray(result["deviation"])
    per_seed = np.asarray(result["deviation_per_seed"])
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j in range(per_seed.shape[1]):
        ax.plot(N, per_seed[:, j], "o", color="0.7", ms=4, label="seeds" if j == 0 else None)
    ax.plot(N, D, "o", color="C0", label="RMS over seeds")
    fit = np.exp(result["intercept"]) * N ** result["slope"]
    ax.plot(N, fit, "-", color="C0", label=f"fit: slope {result['slope']:.3f}")
    ax.plot(N, D[0] * (N / N[0]) ** -0.5, "--", color="C3", label=r"$N^{-1/2}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel("RMS deviation of (Q, R, w) from the ODE")
    ax.set_title(title or "simulation to theory as N grows")
    ax.legend()
    save_figure(fig, path)
