"""Local drift check: the ODE right-hand side against the mean one-window increment of a network.

From a simulated network at meta-time alpha0 (state y0 = (Q, R, w) of its exact overlaps), run
``repeats`` independent continuations of ``window`` outer steps, each from the same (J, w) with its
own random stream, and average the increments (y_window - y0) / (window / N). Their mean estimates
dy/dalpha at y0 with a Monte Carlo standard error, to be compared with the ODE's right-hand side at
the same y0: every ODE term is tested at a state the dynamics actually visits, without waiting for
errors to accumulate along a trajectory.

With ``window = 1`` the increment of Q splits exactly into the part linear in the update,
(dJ J^T + J dJ^T) / N (the drift, -lr (X + X^T) in docs/model.md §5.2), and the quadratic part
dJ dJ^T / N (the lr^2 term). The ODE's two parts are separated the same way: dQ/dalpha =
lr a + lr^2 b at fixed state, so evaluating the right-hand side at lr and 2 lr gives
b = (f(2 lr) - 2 f(lr)) / (2 lr^2).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from metaode.config import Config
from metaode.simulations.kernels import overlaps
from metaode.simulations.run import make_run
from metaode.theory.state import column_names, pack
from metaode.theory.system import build_system
from metaode.validation.plots import save_figure


def rhs_parts(config: Config, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drift, lr^2 term) of dy/dalpha at y, split through the lr-dependence of the ODE."""
    lr = config.training.lr
    f1 = build_system(config).rhs(0.0, y)
    diffusion = np.zeros_like(f1)
    if lr > 0:
        f2 = build_system(config.replace("training.lr", 2.0 * lr)).rhs(0.0, y)
        n_q = config.K * (config.K + 1) // 2  # only Q has an lr^2 term (R and w: none)
        diffusion[:n_q] = (f2[:n_q] - 2.0 * f1[:n_q]) / 2.0
    return f1 - diffusion, diffusion


def local_drift_check(config: Config, N: int, alpha0: float, repeats: int, window: int = 1,
                      seed: int = 0, progress: bool = True) -> dict:
    """Mean increment of (Q, R, w) per unit alpha from the state reached at alpha0, and the ODE.

    Returns a dict with ``names`` (state entries), ``state``, ``rhs``, ``mean``, ``stderr``,
    ``z`` = (mean - rhs) / stderr, and for window = 1 also ``drift``/``drift_mean``/
    ``drift_stderr`` and ``diffusion``/``diffusion_mean``/``diffusion_stderr``.
    """
    run = make_run(config, N, np.random.default_rng(seed))
    run.advance(int(round(alpha0 * N)))
    Q0, R0, w0 = run.state()
    y0 = pack(Q0, R0, w0)
    J0, wh0 = run.J.copy(), run.w.copy()
    scale = N / window
    total = np.empty((repeats, y0.size))
    linear = np.empty((repeats, y0.size))
    quadratic = np.zeros((repeats, y0.size))
    for r in tqdm(range(repeats), desc="continuations", disable=not progress, leave=False):
        run.J[:] = J0
        run.w[:] = wh0
        run.rng = np.random.default_rng([seed, r + 1])
        run.advance(window)
        Q, R, w = run.state()
        total[r] = (pack(Q, R, w) - y0) * scale
        if window == 1:
            dJ = run.J - J0
            lin_Q = (dJ @ J0.T + J0 @ dJ.T) / N
            quad_Q = dJ @ dJ.T / N
            _, R_lin, _ = overlaps(dJ, run.B)
            linear[r] = pack(lin_Q, R_lin, w - w0) * scale
            quadratic[r] = pack(quad_Q, np.zeros_like(R), np.zeros_like(w)) * scale
    drift, diffusion = rhs_parts(config, y0)
    out = _summary(total, drift + diffusion, "")
    if window == 1:
        out.update(_summary(linear, drift, "drift_"))
        out.update(_summary(quadratic, diffusion, "diffusion_"))
        out["drift"], out["diffusion"] = drift, diffusion
    out.update(names=column_names(config.K, config.M), state=y0, alpha0=alpha0, N=N,
               repeats=repeats, window=window)
    return out


def _summary(samples: np.ndarray, reference: np.ndarray, prefix: str) -> dict:
    mean = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(stderr > 0, (mean - reference) / stderr, 0.0)
    key = prefix or ""
    return {f"{key}mean": mean, f"{key}stderr": stderr, f"{key}z": z,
            **({} if prefix else {"rhs": reference})}


def drift_figure(checks: list[dict], path: str) -> None:
    """z = (measured mean increment - ODE) / standard error per state entry, one row of panels
    per checked meta-time: total, and for one-step windows the drift and the lr^2 term."""
    parts = [("", "total")] + ([("drift_", "drift"), ("diffusion_", "lr$^2$ term")]
                               if checks and checks[0]["window"] == 1 else [])
    fig = Figure(figsize=(4.2 * len(parts), 2.6 * len(checks)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(checks), len(parts), squeeze=False)
    for row, check in zip(axes, checks, strict=True):
        names = check["names"]
        for ax, (prefix, label) in zip(row, parts, strict=True):
            z = np.asarray(check[f"{prefix}z"])
            ax.bar(range(len(z)), z, color=np.where(np.abs(z) > 3, "C3", "C0"))
            ax.axhspan(-3, 3, color="0.9", zorder=0)
            ax.set_xticks(range(len(z)), names, rotation=90, fontsize=7)
            ax.set_title(f"alpha = {check['alpha0']:g}: {label}", fontsize=9)
            ax.set_ylabel("z (Monte Carlo s.e.)")
    fig.suptitle(f"one-step increments of a network against the ODE (N = {checks[0]['N']}, "
                 f"{checks[0]['repeats']} continuations); band: |z| < 3")
    save_figure(fig, path)
