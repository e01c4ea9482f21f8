"""maml against anil on paired random streams (docs/model.md §11).

maml also adapts J in the inner loop. The first-layer inner step moves the fields of fresh query
inputs by O(N^-1/2) only, but the support examples' own fields by O(inner_lr / P). Hence with one
inner step (the head's single step sees unshifted support fields) maml converges to anil as N
grows, while with two or more steps on the same support set the second head step sees shifted
fields and the two algorithms differ by O(1/P) at any N.

``maml_anil_gap`` runs both algorithms with the same seed (``simulations.fewshot`` consumes
identical draws for both: the same tasks, support and query inputs) and measures the gap
max_t max_i |y_maml,i(t) - y_anil,i(t)| over the recorded order parameters y = (Q, R, w), for
several N. ``theory_gap`` gives the same measure for the ODEs (docs/model.md §11): both theories
solved on the same Monte Carlo points, its uncertainty the spread of the gaps of the independent
streams (§10), and the signed difference maml - anil of every column with its uncertainty.
``difference_agreement`` compares the simulated and the theory's differences column by column,
with sign. ``gap_figure`` plots the simulated gap against N on log-log axes with the fitted slope,
and the theory's gap (the N -> infinity limit) as a band.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metaode.config import Config
from metaode.simulations.run import simulate_seed
from metaode.solvers.integrate import STREAM_RTOL_FRACTION, integrate, solve
from metaode.theory.state import column_names
from metaode.theory.system import build_system
from metaode.trajectory import Trajectory
from metaode.validation.criterion import compared_columns
from metaode.validation.plots import save_figure


def paired_runs(config: Config, N: int, seeds: Sequence[int],
                progress: bool = False) -> tuple[list[Trajectory], list[Trajectory]]:
    """(maml runs, anil runs) of ``config`` at width N, one pair per seed on identical draws."""
    maml = config.replace("training.algorithm", "maml")
    anil = config.replace("training.algorithm", "anil")
    pairs = [(simulate_seed(maml, int(N), int(seed), progress),
              simulate_seed(anil, int(N), int(seed), progress)) for seed in seeds]
    return [m for m, _ in pairs], [a for _, a in pairs]


def maml_anil_gap(config: Config, N_values: Sequence[int], seeds: Sequence[int],
                  progress: bool = False) -> dict:
    """Gap between paired maml and anil runs of ``config`` (its support must be finite).

    Returns {"N": [...], "gap": (len(N), len(seeds)) array, "mean", "stderr", "slope",
    "difference", "difference_err"}: slope is the least-squares slope of log(mean gap) against
    log N (NaN for a single N); difference[c] is the seed mean of the signed paired difference
    y_maml - y_anil of column c (the state and the errors) at every record, one row per N, and
    difference_err its standard error over the seeds (NaN for one seed).
    """
    gaps = np.empty((len(N_values), len(seeds)))
    rows = []
    for i, N in enumerate(N_values):
        maml, anil = paired_runs(config, N, seeds, progress)
        gaps[i] = [np.max(np.abs(m.states - a.states)) for m, a in zip(maml, anil, strict=True)]
        rows.append(paired_difference(maml, anil))
    mean = gaps.mean(axis=1)
    S = len(seeds)
    stderr = gaps.std(axis=1, ddof=1) / np.sqrt(S) if S > 1 else np.full(len(N_values), np.nan)
    slope = (float(np.polyfit(np.log(np.asarray(N_values, float)), np.log(mean), 1)[0])
             if len(N_values) > 1 else float("nan"))
    return {"N": [int(n) for n in N_values], "gap": gaps, "mean": mean, "stderr": stderr,
            "slope": slope,
            "difference": {n: np.array([r[n][0] for r in rows]) for n in rows[0]},
            "difference_err": {n: np.array([r[n][1] for r in rows]) for n in rows[0]}}


def paired_difference(maml: list[Trajectory],
                      anil: list[Trajectory]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{column: (seed mean, standard error over the seeds)} of the signed paired difference
    y_maml - y_anil at every record, for the errors and the state (NaN errors for one seed)."""
    K, M = maml[0].K, maml[0].M
    out = {}
    for n in compared_columns(K, M):
        d = np.array([m.column(n) - a.column(n) for m, a in zip(maml, anil, strict=True)])
        se = (d.std(axis=0, ddof=1) / np.sqrt(len(d)) if len(d) > 1
              else np.full(d.shape[1], np.nan))
        out[n] = (d.mean(axis=0), se)
    return out


def theory_gap(config: Config, pooled_maml: Trajectory | None = None) -> dict:
    """The maml - anil gap of the theory (finite support), both solved on maml's final sample
    (``pooled_maml``: maml's solve of ``config``, if the caller has it already).

    Returns {"gap": max_t max_i |y_maml,i - y_anil,i| of the pooled trajectories, "gap_err": std_b
    gap_b / sqrt(B) over the B streams, "alpha": records, "difference": {column: maml - anil},
    "difference_err": {column: std_b / sqrt(B) of the streams' differences}, "tasks": budget}.
    With one inner step the two theories are identical and the gap is 0 exactly.
    """
    maml = config.replace("training.algorithm", "maml")
    if pooled_maml is None:
        pooled_maml = solve(build_system(maml))
    budget = pooled_maml.monte_carlo["tasks"]
    maml_system = build_system(maml).with_budget(budget)
    anil_system = build_system(config.replace("training.algorithm", "anil")).with_budget(budget)
    pooled_anil = integrate(anil_system)
    loose = {"rtol": max(config.solver.rtol, STREAM_RTOL_FRACTION * config.theory.mc_rtol),
             "metatest": False}
    names = [n for n in pooled_maml.observables if n in pooled_anil.observables
             and not n.startswith("align_")] + column_names(config.K, config.M)
    per_stream = []
    for sm, sa in zip(maml_system.stream_systems(), anil_system.stream_systems(), strict=True):
        m, a = integrate(sm, **loose), integrate(sa, **loose)
        per_stream.append({"gap": float(np.max(np.abs(m.states - a.states))),
                           **{n: m.column(n) - a.column(n) for n in names}})
    B = len(per_stream)
    return {
        "gap": float(np.max(np.abs(pooled_maml.states - pooled_anil.states))),
        "gap_err": float(np.std([p["gap"] for p in per_stream], ddof=1) / np.sqrt(B)),
        "alpha": pooled_maml.alpha.tolist(),
        "difference": {n: (pooled_maml.column(n) - pooled_anil.column(n)).tolist()
                       for n in names},
        "difference_err": {n: (np.std([p[n] for p in per_stream], axis=0, ddof=1)
                               / np.sqrt(B)).tolist() for n in names},
        "tasks": int(budget),
    }


def difference_agreement(simulated: dict, theory: dict, row: int = -1,
                         bias: float = 0.0) -> dict[str, dict]:
    """Column by column, the simulated paired difference maml - anil (``maml_anil_gap``, its
    ``row``-th N) against the theory's (``theory_gap``) at every record,

        z = max(|d_sim - d_theory| - bias, 0) / sqrt(se_sim^2 + se_theory^2),

    with each standard error pooled along the run (its largest value over the records: a few
    seeds give noisy per-record spreads, as in the theory-vs-simulation criterion) and ``bias`` an
    allowance for the finite-N part of the simulated difference; and the significance of the
    theory's difference |d_theory| / se_theory. Returns {column: {"z": max z, "where": record
    index, "signal": max |d_theory| / se_theory, "sign": whether d_sim and d_theory agree in
    sign wherever both exceed 3 of their standard errors}} for the columns both carry."""
    out = {}
    for name, d_sim in simulated["difference"].items():
        if name not in theory["difference"]:
            continue
        d_sim = d_sim[row]
        d_th = np.asarray(theory["difference"][name])
        se_sim = float(np.max(simulated["difference_err"][name][row]))
        se_th = float(np.max(theory["difference_err"][name]))
        z = _ratio(np.maximum(np.abs(d_sim - d_th) - bias, 0.0), np.hypot(se_sim, se_th))
        both = (np.abs(d_th) > 3 * se_th) & (np.abs(d_sim) > 3 * se_sim)
        i = int(np.argmax(z))
        out[name] = {"z": float(z[i]), "where": i,
                     "signal": float(_ratio(d_th, se_th).max()),
                     "sign": bool(np.all(np.sign(d_sim[both]) == np.sign(d_th[both])))}
    return out


def _ratio(x: np.ndarray, scale: float) -> np.ndarray:
    """|x| / scale, with 0 where both vanish (at alpha = 0 every difference is exactly 0)."""
    x = np.abs(x)
    if scale > 0:
        return x / scale
    return np.where(x > 0, np.inf, 0.0)


def gap_figure(results: dict[str, dict], path: str) -> None:
    """Log-log figure of the gap against N, one series per label (e.g. inner_steps = 1, 2)."""
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, res in results.items():
        N = np.asarray(res["N"], float)
        bar = ax.errorbar(N, res["mean"], yerr=res["stderr"], marker="o", capsize=3,
                          label=f"{label} (slope {res['slope']:.2f})")
        theory = res.get("theory")
        if theory is not None and theory["gap"] > 0:
            colour = bar.lines[0].get_color()
            ax.axhline(theory["gap"], color=colour, ls="--", lw=1,
                       label=f"{label}: theory (N -> infinity)")
            ax.axhspan(theory["gap"] - 2 * theory["gap_err"], theory["gap"] + 2 * theory["gap_err"],
                       color=colour, alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel(r"$\max_t \|y_{\rm maml} - y_{\rm anil}\|_\infty$")
    ax.set_title("maml vs anil, paired streams")
    ax.legend()
    save_figure(fig, path)
