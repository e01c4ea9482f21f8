"""Overlay figure of theory (lines) and simulation (markers, mean +- std over seeds).

Four panels against the meta-time alpha: the error (log scale; the generalisation error
epsilon_g for sgd, without the noise^2/2 floor), the student-teacher overlaps R_km, the student
overlaps Q_kl and the head w_k. One colour per entry, shared by its theory line and its markers.
The figure is drawn with the Agg canvas (no display, no pyplot state) and saved atomically. Its
panels are drawn by ``error_panel`` and ``overlay_columns`` (markers by ``seed_markers``), which
the live explorer (``validation.explorer``) shares.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from metaode.io import atomic_write
from metaode.trajectory import Trajectory
from metaode.validation.compare import seed_table

#: At most this many markers per curve (every record would bury the lines on a long run).
MAX_MARKERS = 41


def entry_label(name: str) -> str:
    """``R_0_1`` -> ``$R_{0,1}$`` (0-based indices, as in the CSV columns)."""
    symbol, *index = name.split("_")
    return rf"${symbol}_{{{','.join(index)}}}$" if index else f"${symbol}$"


def _colours(n: int) -> list:
    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"] if n <= 20 else None
    if cmap is not None:
        return [cmap(i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, n)]


def _marker_indices(n: int) -> np.ndarray:
    stride = max(1, math.ceil(n / MAX_MARKERS))
    return np.unique(np.append(np.arange(0, n, stride), n - 1))


def seed_markers(ax: Axes, x: np.ndarray, table: np.ndarray, colour: Any) -> None:
    """Markers at x of the seed mean of ``table`` (one row per seed) with error bars +- its
    standard deviation over seeds (ddof = 1; none for one seed)."""
    mean = table.mean(axis=0)
    std = table.std(axis=0, ddof=1) if len(table) >= 2 else np.zeros_like(mean)
    ax.errorbar(x, mean, yerr=std, fmt="o", ms=3.5, color=colour, mfc="white", mew=1.0,
                elinewidth=0.8, capsize=0, zorder=3)


def overlay_columns(ax: Axes, theory: Trajectory, sims: list[Trajectory], names: list[str],
                    labels: list[str], linestyle: str = "-") -> list[float]:
    """Theory line and simulation markers of each column against alpha; returns every plotted
    value."""
    values: list[float] = []
    for name, label, colour in zip(names, labels, _colours(len(names)), strict=True):
        ax.plot(theory.alpha, theory.column(name), color=colour, lw=1.5, ls=linestyle,
                label=label)
        if name in theory.uncertainty:  # the Monte Carlo theory's band, +- 2 mc_err
            band = 2.0 * theory.uncertainty[name]
            ax.fill_between(theory.alpha, theory.column(name) - band,
                            theory.column(name) + band, color=colour, alpha=0.25, lw=0)
        values.extend(theory.column(name))
        if sims:
            alpha, table = seed_table(sims, name)
            idx = _marker_indices(len(alpha))
            seed_markers(ax, alpha[idx], table[:, idx], colour)
            values.extend(table.mean(axis=0))
    ax.set_xlabel(r"meta-time $\alpha$ = steps / $N$")
    ax.grid(alpha=0.3)
    return values


def error_panel(ax: Axes, theory: Trajectory, sims: list[Trajectory],
                algorithm: str | None) -> None:
    """The error panel against alpha, log scale: epsilon_g for sgd (or wherever adaptation
    changes nothing), else L_meta after adaptation and E_tau eps(w; u_tau) before it."""
    err, before = theory.column("error"), theory.column("error_before_adaptation")
    if algorithm == "sgd" or np.array_equal(err, before):
        names, labels = ["error"], [r"$\epsilon_g$"]
    else:
        names = ["error", "error_before_adaptation"]
        labels = [r"$\mathcal{L}_{\rm meta}$ (after adaptation)", r"$\epsilon$ before adaptation"]
    values = np.array(overlay_columns(ax, theory, sims, names, labels))
    positive = values[np.isfinite(values) & (values > 0)]
    ax.set_yscale("log")
    if positive.size:  # data range plus 5% of it (at least 0.05 decades) on either side
        lo, hi = np.log10(positive.min()), np.log10(positive.max())
        pad = max(0.05 * (hi - lo), 0.05)
        ax.set_ylim(10 ** (lo - pad), 10 ** (hi + pad))
    ax.set_ylabel(r"error (without the noise$^2$/2 floor)")
    handles, _ = ax.get_legend_handles_labels()
    style = [Line2D([], [], color="k", lw=1.5, label="theory (ODE)")]
    if sims:
        style.append(Line2D([], [], color="k", marker="o", mfc="white", ls="none",
                            label=f"simulation, mean $\\pm$ std over {len(sims)} seeds"))
    ax.legend(handles=handles + style, fontsize=9)
    ax.set_title("generalisation error" if len(names) == 1 else "meta-generalisation error")


def overlay_figure(theory: Trajectory, sims: list[Trajectory], path: str | Path, *,
                   N: int | None = None, algorithm: str | None = None,
                   activations: tuple[str, str] | None = None) -> None:
    """Write the theory-vs-simulation figure to ``path`` (PNG), atomically.

    Markers are the seed mean of the simulated column with error bars +- its standard deviation
    over seeds (ddof = 1); lines are the ODE solution, with a shaded band of +- 2 mc_err where the
    theory is a Monte Carlo estimate (few-shot anil). ``N``, ``algorithm`` and ``activations``
    (the student's and the teacher's) go into the title.
    """
    K, M = theory.K, theory.M
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)

    error_panel(axes[0, 0], theory, sims, algorithm)

    panels = [
        (axes[0, 1], [f"R_{k}_{m}" for k in range(K) for m in range(M)],
         r"$R_{km} = J_k \cdot B_m / N$", "student-teacher overlaps"),
        (axes[1, 0], [f"Q_{k}_{l}" for k in range(K) for l in range(k, K)],
         r"$Q_{kl} = J_k \cdot J_l / N$", "student-student overlaps"),
        (axes[1, 1], [f"w_{k}" for k in range(K)], r"$w_k$", "head"),
    ]
    for ax, names, ylabel, title in panels:
        overlay_columns(ax, theory, sims, names, [entry_label(n) for n in names])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=9, ncol=max(1, math.ceil(len(names) / 8)))

    parts = [algorithm or ""]
    if activations is not None:
        parts.append(f"student {activations[0]}, teacher {activations[1]}")
    parts += [f"K = {K}", f"M = {M}"]
    if N is not None:
        parts.append(f"N = {N}")
    parts.append(f"{len(sims)} seeds")
    fig.suptitle(", ".join(p for p in parts if p) + "   (lines: theory, markers: simulation)")
    save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path) -> None:
    """Save a figure atomically (``theory.trajectory.atomic_write``), format from the suffix."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png",
                                               dpi=110))
