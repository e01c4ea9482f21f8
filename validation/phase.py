"""Phase diagrams of a parameter sweep (``solvers.sweep``): heat maps and line plots of its columns.

Two swept parameters: a heat map (``pcolormesh``, one cell per grid point, cell edges halfway
between grid values, geometric halfway and log axes for a log grid) of any numeric sweep.csv
column, with a colour bar and the contour of one level of that column. More than two: the same
heat map over the first two parameters, one panel per combination of the others, on one colour
scale. One parameter: a line plot. Points whose status is not "success" (diverged, failed) and
undefined values (NaN, e.g. the escape time of a run without a plateau) are left grey.
Figures use the Agg canvas and are saved atomically (``validation.plots.save_figure``).
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from metaode.io import atomic_write
from metaode.solvers.sweep import Axis
from metaode.validation.plots import save_figure

#: The columns drawn by ``phase_figures`` (``metaode sweep``), the first one also as phase.png.
MAIN_COLUMNS = ("error", "plateau_length", "escape_time", "specialisation")
#: Grid values are the tick labels up to this many (beyond, matplotlib's own ticks).
MAX_TICKS = 12
LABELS = {
    "error": r"final error $\epsilon(\alpha_{\max})$ (after adaptation)",
    "error_before_adaptation": r"final error before adaptation",
    "plateau_length": r"plateau length $\Delta\alpha$",
    "escape_time": r"escape time $\alpha_{\rm esc}$",
    "specialisation": r"final specialisation",
    "nfev": "right-hand-side evaluations",
    "wall_time_s": "wall time per point (s)",
}


def cell_edges(values: Sequence[float], log: bool) -> np.ndarray:
    """Edges of the cells centred on sorted grid ``values``: midpoints between neighbours (in log
    for a log grid), the outer edges half a spacing beyond the end values; a single value gets a
    cell of +-5 % (a factor 1.1 on a log grid)."""
    x = np.log(np.asarray(values, float)) if log else np.asarray(values, float)
    if len(x) == 1:
        half = math.log(1.1) / 2 if log else 0.05 * max(abs(x[0]), 1.0)
        edges = np.array([x[0] - half, x[0] + half])
    else:
        mid = (x[:-1] + x[1:]) / 2
        edges = np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])
    return np.exp(edges) if log else edges


def column_grid(rows: Sequence[dict[str, Any]], axes: Sequence[Axis],
                column: str) -> np.ma.MaskedArray:
    """The column as an array of shape (len(axis_0), len(axis_1), ...) in grid order (rows sorted
    by grid index), masked where the point did not succeed or the value is not finite."""
    shape = tuple(len(a.values) for a in axes)
    if len(rows) != math.prod(shape):
        raise ValueError(f"{len(rows)} rows for a grid of {math.prod(shape)} points")
    values = np.array([float(r[column]) for r in rows]).reshape(shape)
    ok = np.array([r["status"] == "success" for r in rows]).reshape(shape)
    return np.ma.masked_where(~ok | ~np.isfinite(values), values)


def _norm(column: str, data: np.ma.MaskedArray) -> Normalize:
    """Log colour scale for the errors (positive, spanning decades), linear otherwise."""
    finite = data.compressed()
    if column.startswith("error") and finite.size and finite.min() > 0:
        return LogNorm(vmin=finite.min(), vmax=finite.max())
    if finite.size:
        return Normalize(vmin=finite.min(), vmax=finite.max())
    return Normalize(vmin=0.0, vmax=1.0)


def _default_level(data: np.ma.MaskedArray) -> float | None:
    """The median of the defined values: the contour splits the diagram into halves."""
    finite = data.compressed()
    return float(np.median(finite)) if finite.size else None


def _grey_note(rows: Sequence[dict[str, Any]], data: np.ma.MaskedArray) -> str:
    failed = sum(r["status"] != "success" for r in rows)
    undefined = int(np.ma.count_masked(data)) - failed
    parts = [f"{failed} diverged/failed" if failed else "", f"{undefined} undefined"
             if undefined else ""]
    parts = [p for p in parts if p]
    return f"grey: {', '.join(parts)}" if parts else ""


def _heatmap(ax: Axes, x: Axis, y: Axis, z: np.ma.MaskedArray, norm: Normalize,
             level: float | None):
    """One heat map z[i_x, i_y] with the contour z = level (if inside the range of z)."""
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    mesh = ax.pcolormesh(cell_edges(x.values, x.log), cell_edges(y.values, y.log), z.T,
                         cmap=cmap, norm=norm, shading="flat")
    contour = None
    finite = z.compressed()
    if (level is not None and min(z.shape) >= 2 and finite.size
            and finite.min() < level < finite.max()):
        contour = ax.contour(np.asarray(x.values, float), np.asarray(y.values, float), z.T,
                             levels=[level], colors="white", linewidths=1.5)
        ax.clabel(contour, fmt=lambda v: f"{v:.3g}", fontsize=8)
    _grid_ticks(ax, "x", x)
    _grid_ticks(ax, "y", y)
    ax.set_xlabel(x.key)
    ax.set_ylabel(y.key)
    return mesh, contour


def _grid_ticks(ax: Axes, which: str, grid: Axis) -> None:
    """Log scale of the ``which`` ("x" or "y") axis for a log grid; ticks at the grid values
    when there are few of them."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log" if grid.log else "linear")
    axis = ax.xaxis if which == "x" else ax.yaxis
    if len(grid.values) <= MAX_TICKS:
        axis.set_ticks([float(v) for v in grid.values], [f"{v:.3g}" for v in grid.values])
        axis.set_minor_locator(NullLocator())


def phase_figure(rows: Sequence[dict[str, Any]], axes: Sequence[Axis], column: str,
                 path: str | Path, *, level: float | None = None) -> None:
    """Heat map of ``column`` over the first two swept parameters (a panel per combination of the
    others), its colour bar and the contour at ``level`` (default: the median of the column);
    a line plot for one swept parameter. Saved to ``path``."""
    axes = list(axes)
    data = column_grid(rows, axes, column)
    if level is None:
        level = _default_level(data)
    label = LABELS.get(column, column)
    if len(axes) == 1:
        line_figure(rows, axes[0], [column], path, levels={column: level})
        return
    rest = axes[2:]
    combos = list(itertools.product(*(range(len(a.values)) for a in rest)))
    ncols = math.ceil(math.sqrt(len(combos)))
    nrows = math.ceil(len(combos) / ncols)
    fig = Figure(figsize=(5.2 * ncols + 1.2, 4.2 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(nrows, ncols, squeeze=False).ravel()
    norm = _norm(column, data)
    mesh = contour = None
    for ax, combo in zip(panels, combos, strict=False):
        mesh, drawn = _heatmap(ax, axes[0], axes[1], data[(slice(None), slice(None), *combo)],
                               norm, level)
        if contour is None:
            contour = drawn
        if rest:
            ax.set_title(", ".join(f"{a.key} = {a.values[i]:g}"
                                   for a, i in zip(rest, combo, strict=True)), fontsize=9)
    for ax in panels[len(combos):]:
        ax.set_axis_off()
    bar = fig.colorbar(mesh, ax=list(panels[:len(combos)]), label=label)
    if contour is not None:
        bar.add_lines(contour)
    notes = [f"contour: {column} = {level:.3g}" if contour is not None else "",
             _grey_note(rows, data)]
    fig.suptitle(f"{label}   " + "; ".join(n for n in notes if n), fontsize=10)
    save_figure(fig, path)


def line_figure(rows: Sequence[dict[str, Any]], axis: Axis, columns: Sequence[str],
                path: str | Path, *, levels: dict[str, float | None] | None = None) -> None:
    """One panel per column against the one swept parameter (log x axis for a log grid); a
    dashed line at each column's level, crosses at the bottom for points that did not succeed."""
    fig = Figure(figsize=(5.0 * min(len(columns), 2), 3.6 * math.ceil(len(columns) / 2)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(math.ceil(len(columns) / 2), min(len(columns), 2), squeeze=False)
    x = np.asarray(axis.values, float)
    bad = np.array([r["status"] != "success" for r in rows])
    for ax, column in zip(panels.ravel(), columns, strict=False):
        data = column_grid(rows, [axis], column)
        ax.plot(x, data, "o-", ms=4)
        if bad.any():
            ax.plot(x[bad], np.zeros(bad.sum()), "x", color="tab:red", clip_on=False,
                    transform=ax.get_xaxis_transform(), label="diverged/failed")
            ax.legend(fontsize=8)
        level = (levels or {}).get(column)
        if level is not None:
            ax.axhline(level, color="grey", ls="--", lw=1)
        _grid_ticks(ax, "x", axis)
        if column.startswith("error") and data.compressed().size and data.min() > 0:
            ax.set_yscale("log")
        ax.set_xlabel(axis.key)
        ax.set_ylabel(LABELS.get(column, column))
        ax.grid(alpha=0.3)
    for ax in panels.ravel()[len(columns):]:
        ax.set_axis_off()
    save_figure(fig, path)


def phase_figures(rows: Sequence[dict[str, Any]], axes: Sequence[Axis], out: str | Path,
                  levels: dict[str, float] | None = None) -> list[Path]:
    """The figures of ``metaode sweep``: ``out/phase.png`` (the final error; for one swept
    parameter a line plot of every main column) and, for two or more parameters, one heat map
    ``out/phase_COLUMN.png`` per main column. ``levels`` overrides the contour levels (default:
    each column's median). Returns the paths written."""
    out, levels = Path(out), levels or {}
    if len(axes) == 1:
        data = {c: _default_level(column_grid(rows, axes, c)) for c in MAIN_COLUMNS}
        line_figure(rows, axes[0], MAIN_COLUMNS, out / "phase.png",
                    levels={**data, **levels})
        return [out / "phase.png"]
    paths = []
    for column in MAIN_COLUMNS:
        paths.append(out / f"phase_{column}.png")
        phase_figure(rows, axes, column, paths[-1], level=levels.get(column))
    first = out / f"phase_{MAIN_COLUMNS[0]}.png"
    atomic_write(out / "phase.png", lambda tmp: shutil.copyfile(first, tmp))
    return [out / "phase.png", *paths]
