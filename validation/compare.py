"""Agreement figures of theory against simulation, column by column (docs/model.md §15.3).

For every column c shared by the theory and the simulations (the observables ``error``,
``error_before_adaptation``, ..., and the order parameters ``Q_k_l``, ``R_k_m``, ``w_k``), at the
simulation's recorded meta-times alpha_i and over the S seeds s:

    mean_i   = (1/S) sum_s c_s(alpha_i)                     (seed mean)
    stderr_i = std_s(c_s(alpha_i)) / sqrt(S)                 (standard error; std with ddof = 1)
    d_i      = mean_i - c_theory(alpha_i)
    max_abs_deviation = max_i |d_i|,   rms_deviation = sqrt((1/n) sum_i d_i^2),
    max_abs_z         = max_i |d_i / stderr_i|              (S >= 2; see ``ROUNDING``),
    max_rel_deviation = max_i |d_i| / c_theory(alpha_i)     (error columns only).

A Monte Carlo theory (few-shot anil) also reports its own uncertainty e_i (``mc_err_c``):
``theory_uncertainty`` and max_abs_z_with_theory_uncertainty = max_i |d_i| / sqrt(stderr_i^2 +
e_i^2).

If the simulation's times (round(alpha N) / N) do not coincide with the theory's, the theory is
evaluated there by a cubic spline through its records (error O(h^4) for a smooth trajectory with
record spacing h). As N grows, d_i -> 0 like (S N)^-1/2 (fluctuations) plus O(1/N) (bias).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from metaode.trajectory import UNCERTAINTY_PREFIX, Trajectory

#: Standard errors below ROUNDING * max(1, |theory|) are rounding, not sampling: at alpha = 0 every
#: seed starts from the same overlaps up to floating point (relative error ~ sqrt(N) 1e-16 <= 1e-12
#: for N <= 1e8), whereas a sampling fluctuation is O(N^-1/2) >= 1e-4. Such points carry no z.
ROUNDING = 1e-10


def seed_table(sims: list[Trajectory], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, values): the column ``name`` of every seed, shape S x n, on the records they share.

    Seeds that stopped early (divergence) cut the table to the records every seed reached.
    """
    n = min(len(s.alpha) for s in sims)
    alpha = sims[0].alpha[:n]
    for s in sims[1:]:
        if not np.array_equal(s.alpha[:n], alpha):
            raise ValueError(f"seed {s.seed} was recorded at other times than seed {sims[0].seed}")
    return alpha, np.array([s.column(name)[:n] for s in sims])


def _same_times(theory: Trajectory, alpha: np.ndarray) -> bool:
    """Whether the theory's first records are at the times ``alpha`` (up to rounding)."""
    return len(theory.alpha) >= len(alpha) and np.allclose(
        theory.alpha[: len(alpha)], alpha, rtol=0, atol=1e-12 * max(1.0, float(alpha[-1])))


def theory_at(theory: Trajectory, name: str, alpha: np.ndarray) -> np.ndarray:
    """The theory's column ``name`` at the times ``alpha`` (its own records if they coincide).

    Times beyond the theory's last record (a diverged solve) give NaN: nothing is extrapolated.
    """
    values = theory.column(name)
    if _same_times(theory, alpha):
        return values[: len(alpha)].copy()
    out = np.full(len(alpha), np.nan)
    inside = (alpha >= theory.alpha[0]) & (alpha <= theory.alpha[-1])
    if len(theory.alpha) >= 2:
        out[inside] = CubicSpline(theory.alpha, values)(alpha[inside])
    else:
        out[inside] = values[0]
    return out


def _column_figures(name: str, theory: np.ndarray, table: np.ndarray, alpha: np.ndarray,
                    uncertainty: np.ndarray | None) -> dict[str, Any]:
    S = table.shape[0]
    mean = table.mean(axis=0)
    stderr = table.std(axis=0, ddof=1) / math.sqrt(S) if S >= 2 else None
    ok = np.isfinite(theory)
    dev = (mean - theory)[ok]
    figures: dict[str, Any] = {
        "max_abs_deviation": float(np.max(np.abs(dev))) if dev.size else None,
        "alpha_of_max_abs_deviation": (float(alpha[ok][np.argmax(np.abs(dev))])
                                       if dev.size else None),
        "rms_deviation": float(np.sqrt(np.mean(dev**2))) if dev.size else None,
    }
    if name.startswith("error"):
        positive = ok & (theory > 0)
        rel = np.abs(mean - theory)[positive] / theory[positive]
        figures["max_rel_deviation"] = float(rel.max()) if rel.size else None
    if stderr is not None:
        sampled = ok & (stderr > ROUNDING * np.maximum(1.0, np.abs(theory)))
        z = (mean - theory)[sampled] / stderr[sampled]
        figures["max_abs_z"] = float(np.max(np.abs(z))) if z.size else None
        if uncertainty is not None:
            combined = np.sqrt(stderr**2 + uncertainty**2)[sampled]
            z = (mean - theory)[sampled] / combined
            figures["max_abs_z_with_theory_uncertainty"] = (float(np.max(np.abs(z))) if z.size
                                                           else None)
    if uncertainty is not None:
        figures["theory_uncertainty"] = uncertainty.tolist()
    figures["theory"] = theory.tolist()
    figures["mean"] = mean.tolist()
    figures["stderr"] = stderr.tolist() if stderr is not None else None
    return figures


def compare(theory: Trajectory, sims: list[Trajectory], N: int | None = None) -> dict[str, Any]:
    """Agreement figures of ``theory`` against the seeds ``sims`` (formulas in the module doc).

    Returns ``{"N", "seeds", "n_seeds", "points", "theory_interpolated", "alpha", "columns"}``
    where ``columns[name]`` holds max_abs_deviation, alpha_of_max_abs_deviation, rms_deviation,
    max_rel_deviation (error columns), max_abs_z (S >= 2) and the per-time arrays theory, mean,
    stderr. ``N`` is the simulated width, recorded as given.
    """
    if not sims:
        raise ValueError("compare needs at least one simulated seed")
    alpha, _ = seed_table(sims, "alpha")
    names = [c for c in theory.columns()[1:] if c in sims[0].columns()]
    columns = {}
    for name in names:
        _, table = seed_table(sims, name)
        err = (theory_at(theory, UNCERTAINTY_PREFIX + name, alpha) if name in theory.uncertainty
               else None)
        columns[name] = _column_figures(name, theory_at(theory, name, alpha), table, alpha, err)
    return {
        "N": N,
        "seeds": [s.seed for s in sims],
        "n_seeds": len(sims),
        "points": len(alpha),
        "theory_interpolated": not _same_times(theory, alpha),
        "alpha": alpha.tolist(),
        "columns": columns,
    }
