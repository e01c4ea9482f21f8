"""Plateaus of a learning curve, their escape, and the escape law of the unstable fixed point.

Definitions (on the records alpha_i, eps_i of a trajectory; eps = the ``error`` observable):

* relative rate r_i = |d ln eps / d alpha| at alpha_i, by second-order finite differences on the
  (possibly non-uniform) record grid (``numpy.gradient``), on the records before the error first
  drops below 1e-9 max eps (an error converging to zero is a cancellation of O(1) terms with
  rounding ~1e-16, which would dominate ln eps there);
* slow records: r_i < threshold * max_i r_i (threshold dimensionless, default 0.02: the error
  changes 50 times slower than at its fastest, which is in the initial fall or the escape);
* plateau = the longest run of consecutive slow records that the trajectory leaves again (a later
  record is not slow), so that the final convergence to an attractor, also slow, is not taken
  for a plateau; if it leaves none, the slow run it ends in (it ends on its plateau).
  ``start`` and ``end`` are its first and last alpha, ``length = end - start``;
* centre = the record of smallest r_i within the plateau (the trajectory's closest approach to the
  fixed point it sits on, where the flow is slowest); ``height`` = eps at the centre;
* escape time = the first alpha after the centre where the specialisation index
  (``theory.fields.specialisation``, the ``specialisation`` observable) reaches ``level``
  (default 1/2: halfway between the symmetric plateau, 0, and one teacher unit per student unit,
  1), or, with criterion "error", where eps falls to ``fraction`` * height; linear interpolation
  between records (of ln eps for the error criterion); nan if it does not happen.

Escape law. Near the plateau fixed point y* the asymmetric part of y - y* grows like
delta exp(lambda_u alpha), with lambda_u the largest (unstable) eigenvalue of the Jacobian at y*
(``solvers.fixedpoints.stability``) and delta the initial asymmetry (the size of the symmetry-
breaking part of the initial state, ``solvers.fixedpoints.asymmetry``); the dynamics before and
after the linear regime do not depend on delta, so the escape time is

    alpha_esc(delta) = alpha_0 + ln(c / delta) / lambda_u,

with alpha_0 and c depending on the initial symmetric state, the direction of the perturbation and
the escape criterion, not on delta: alpha_esc is linear in ln(1 / delta) with slope 1 / lambda_u.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metaode.solvers.fixedpoints import FixedPoint, Stability, stability, symmetric_plateau
from metaode.theory.system import ODESystem
from metaode.trajectory import Trajectory

#: Errors below this fraction of the largest are not resolved in ln eps (module docstring).
RESOLVED = 1e-9


@dataclass
class Plateau:
    """Measured plateau of a trajectory (module docstring): ``start``, ``end``, ``length``,
    ``centre`` (alpha) and ``centre_index`` (record), ``height``, ``escape`` (nan if no escape
    within the trajectory) and the escape ``criterion`` used."""

    start: float
    end: float
    length: float
    centre: float
    centre_index: int
    height: float
    escape: float
    criterion: str


@dataclass
class EscapeFit:
    """Least-squares line alpha_esc = intercept + slope ln(1 / delta): ``slope`` estimates
    1 / lambda_u, ``intercept`` alpha_0 + ln(c) / lambda_u, ``residual`` the largest deviation."""

    slope: float
    intercept: float
    residual: float

    @property
    def rate(self) -> float:
        """1 / slope, the growth rate lambda_u the escape times imply."""
        return 1.0 / self.slope


def relative_rate(alpha: np.ndarray, error: np.ndarray) -> np.ndarray:
    """|d ln eps / d alpha| at the records (second-order finite differences)."""
    return np.abs(np.gradient(np.log(error), alpha))


def measure_plateau(trajectory: Trajectory, *, threshold: float = 0.02,
                    criterion: str = "specialisation", level: float = 0.5,
                    fraction: float = 0.5) -> Plateau:
    """The plateau (start, end, length, centre, height) and escape time of ``trajectory``.

    ``criterion`` "specialisation": escape where the specialisation index reaches ``level``;
    "error": where the error falls to ``fraction`` * height (module docstring).
    """
    if criterion == "specialisation" and "specialisation" not in trajectory.observables:
        raise ValueError("this trajectory has no specialisation index (a linear student's "
                         "units are not identifiable): use criterion='error'")
    alpha, error = trajectory.alpha, trajectory.error
    resolved = np.nonzero(error <= RESOLVED * error.max())[0]
    n = int(resolved[0]) if resolved.size else len(alpha)
    if n < 3:
        raise ValueError("a plateau needs at least three records with a resolved error")
    rate = relative_rate(alpha[:n], error[:n])
    slow = rate < threshold * rate.max()
    if not slow.any():
        raise ValueError(f"no record with a relative rate below {threshold} times the largest")
    # runs of consecutive slow records [starts, stops); the longest one left again, else the last
    edges = np.diff(np.concatenate(([0], slow.astype(int), [0])))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    left = stops < n
    if left.any():
        starts, stops = starts[left], stops[left]
    longest = int(np.argmax(stops - starts))
    first, last = int(starts[longest]), int(stops[longest]) - 1
    centre = first + int(np.argmin(rate[first : last + 1]))
    height = float(error[centre])
    if criterion == "specialisation":
        escape = _first_crossing(alpha[centre:], trajectory.column("specialisation")[centre:],
                                 level)
    elif criterion == "error":
        # an error that reached zero (rounding) has crossed any level
        log_error = np.log(np.maximum(error[centre:], np.finfo(float).tiny))
        escape = _first_crossing(alpha[centre:], -log_error, -math.log(fraction * height))
    else:
        raise ValueError(f"criterion must be 'specialisation' or 'error', got {criterion!r}")
    return Plateau(start=float(alpha[first]), end=float(alpha[last]),
                   length=float(alpha[last] - alpha[first]), centre=float(alpha[centre]),
                   centre_index=centre, height=height, escape=escape, criterion=criterion)


def _first_crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """First x where y reaches level from below, linearly interpolated (nan if never)."""
    above = np.nonzero(y >= level)[0]
    if above.size == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(x[0])
    return float(x[i - 1] + (level - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))


def predicted_escape(lambda_u: float, delta: float, reference_delta: float,
                     reference_escape: float) -> float:
    """alpha_esc(delta) = alpha_esc(delta_ref) + ln(delta_ref / delta) / lambda_u: the escape law
    with alpha_0 + ln(c) / lambda_u calibrated on one reference run (module docstring)."""
    return reference_escape + math.log(reference_delta / delta) / lambda_u


def fit_escape_law(deltas: np.ndarray, escapes: np.ndarray) -> EscapeFit:
    """Least-squares fit of alpha_esc = intercept + slope ln(1 / delta) to measured escapes."""
    x = np.log(1.0 / np.asarray(deltas, dtype=float))
    y = np.asarray(escapes, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.abs(intercept + slope * x - y).max())
    return EscapeFit(slope=float(slope), intercept=float(intercept), residual=residual)


@dataclass
class PlateauSaddle:
    """The plateau of a trajectory and the fixed point it sits on: ``plateau`` (measured),
    ``fixed_point`` (Newton in the permutation-symmetric subspace from the plateau centre) and its
    ``stability``; ``lambda_u`` is the largest unstable eigenvalue (nan if none)."""

    plateau: Plateau
    fixed_point: FixedPoint
    stability: Stability

    @property
    def lambda_u(self) -> float:
        unstable = self.stability.unstable.real
        return float(unstable.max()) if unstable.size else math.nan


def plateau_saddle(system: ODESystem, trajectory: Trajectory, **measure) -> PlateauSaddle:
    """``measure_plateau`` (keywords passed on), then ``symmetric_plateau`` from the state at the
    plateau centre and ``stability`` there. A guess far from the fixed point (a wide student still
    drifting along a slow direction) may not converge: check ``fixed_point.converged``; an exactly
    symmetric run's end state is then a better guess for ``symmetric_plateau``."""
    plateau = measure_plateau(trajectory, **measure)
    fixed = symmetric_plateau(system, trajectory.states[plateau.centre_index])
    return PlateauSaddle(plateau, fixed, stability(system, fixed.y))
