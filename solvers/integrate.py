"""Integration of an ODE system into a trajectory (adaptive scipy integrators).

``solve`` advances one of scipy's adaptive solvers (DOP853 by default) step by step and records the
state at the requested meta-times by the solver's dense output. It checks every accepted step
(``ODESystem.invalid``: a non-finite state, an entry beyond DIVERGENCE_BOUND, or Omega no longer a
covariance) and every record (the same, since the dense output between two valid steps can leave the
covariances on a coarse step; ``ODESystem.runaway``: a student unit longer than solver.max_norm
allows; ``non_finite``: an observable that is not finite). A failed check, a failed step or a
right-hand side that raised stops the integration, and the returned trajectory keeps every record up
to that point with ``status = DIVERGED`` and a message saying at which alpha and why (the solve_ivp
convention: failures are reported in the result, not raised). A ``stop`` callable that returns True
(e.g. after SIGINT) ends it the same way with ``status = INTERRUPTED``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np
from scipy import integrate

from metaode.solvers import dop853
from metaode.theory.metatest import metatest_curve
from metaode.theory.state import column_names
from metaode.theory.system import DIVERGENCE_BOUND, ODESystem, state_message
from metaode.trajectory import DIVERGED, INTERRUPTED, SUCCESS, Trajectory, metatest_curves

#: The default method: ``solvers.dop853``, DOP853 compiled with the system's flow.
COMPILED = "numba-DOP853"
#: scipy's message for a step below 10 ulp of alpha, which the compiled method repeats.
TOO_SMALL_STEP = "Required step size is less than spacing between numbers."
#: With a ``stop`` callable, the compiled method returns to poll it about this often (seconds).
CHUNK_SECONDS = 0.05

_METHODS = {
    "DOP853": integrate.DOP853,
    "RK45": integrate.RK45,
    "Radau": integrate.Radau,
    "BDF": integrate.BDF,
    "LSODA": integrate.LSODA,
}

#: The streams of a Monte Carlo theory are integrated at rtol = max(solver.rtol, this * mc_rtol).
STREAM_RTOL_FRACTION = 1e-2
#: The convergence rate of the trajectory's Monte Carlo error in the budget n (error ~ n^-rate)
#: that the budget control assumes until two budgets have measured it: scrambled Sobol points on
#: a smooth integrand (measured 0.97 on the built-in experiment with support 5 and 2 inner steps,
#: between 2048 and 8192 support sets).
FIRST_RATE = 1.0
#: A column's scale in the mc_rtol check is at least this fraction of the largest column scale.
SCALE_FLOOR = 1e-3

#: Errors of a right-hand side evaluated where its integrals break down (a division by zero in a
#: compiled kernel, an overflow, a failed factorisation): reported as a divergence at that alpha.
RHS_ERRORS = (ArithmeticError, ValueError)


class _Stopped(Exception):
    """The right-hand side raised one of RHS_ERRORS at alpha (carried for the message)."""

    def __init__(self, alpha: float, err: Exception):
        super().__init__(f"the right-hand side failed at alpha = {alpha:.6g}: "
                         f"{type(err).__name__}: {err}")


def _guarded(rhs: Callable[[float, np.ndarray], np.ndarray]) -> Callable:
    """rhs, raising _Stopped where it raises one of RHS_ERRORS or returns a value that is not
    finite (scipy's step control would shrink the step on NaN until it is too small)."""
    def f(alpha: float, y: np.ndarray) -> np.ndarray:
        try:
            out = rhs(alpha, y)
        except RHS_ERRORS as err:
            raise _Stopped(alpha, err) from err
        if not np.all(np.isfinite(out)):
            i = int(np.argmax(~np.isfinite(out)))
            raise _Stopped(alpha, FloatingPointError(
                f"component {i} of the right-hand side is not finite ({out[i]})"))
        return out

    return f


def solve(system: ODESystem, times: np.ndarray | None = None, *, method: str | None = None,
          rtol: float | None = None, atol: float | None = None, y0: np.ndarray | None = None,
          stop: Callable[[], bool] | None = None) -> Trajectory:
    """The trajectory of ``system`` from y0 (default: the config's initial state) over ``times``.

    Defaults for ``times``, ``method``, ``rtol`` and ``atol`` come from the system's config
    (``output`` and ``solver`` sections). ``stop`` is polled after every accepted step.

    A system whose right-hand side is a Monte Carlo estimate (``system.monte_carlo``: few-shot
    anil) has a frozen sampling error in its right-hand side, which the dynamics integrate. Its
    sample is split into ``theory.mc_streams`` = B independent streams; each stream's system is
    integrated on its own, and the spread of the B stream trajectories gives the uncertainty of the
    trajectory integrated on all points together, column by column and record by record:

        mc_err_c(alpha) = std_b c_b(alpha) / sqrt(B)

    (the pooled right-hand side is the mean of the streams', so to first order in the sampling
    error the pooled trajectory's deviation is the mean of the streams' deviations). While the
    largest mc_err_c / max_alpha |c| over the controlled columns (``controlled_columns``; the scale
    floored at SCALE_FLOOR of the largest, ``worst_relative``) exceeds
    ``theory.mc_rtol``, the budget grows up to ``theory.mc_max_tasks``, to the smallest budget that
    the convergence of the error, ~ n^-rate, predicts to meet the tolerance: by ratio^(1/rate),
    at least doubling and at most 16-fold (``support_mc.points_per_stream`` rounds the points per
    stream up to a power of two), with rate = FIRST_RATE at first and then measured from the last
    two budgets (clipped to [0.5, 1]). The prediction aims at mc_rtol itself, without a margin:
    with the noise of a spread of B = 8 streams (~25 %), a doubling that the prediction puts at
    the tolerance succeeds about half the time, and one that falls short costs one more set of
    stream solves at that budget, ~1/5 of the cost (streams and final solve) of the next budget
    that a margin would choose. Then the values come from one solve
    on all points of the final budget (not from averaging the streams' trajectories, which keeps
    the bias of the nonlinear dynamics of their smaller samples). ``Trajectory.monte_carlo``
    records the budget and whether the tolerance was met. The streams, which only give the error
    bar, are integrated at rtol = max(solver.rtol, STREAM_RTOL_FRACTION mc_rtol): their
    integration error is then at most a hundredth of the tolerance that the error bar is checked
    against, and a stream's own deviation at that tolerance is sqrt(B) mc_err ~ 3 mc_rtol |c|, so
    the integration error changes the spread by < 1e-4 of itself in quadrature (and less, as it is
    nearly common to the streams); the solve that gives the values keeps the solver's tolerances.
    """
    if not system.monte_carlo:
        return integrate(system, times, method=method, rtol=rtol, atol=atol, y0=y0, stop=stop)
    th = system.config.theory
    args = dict(times=times, method=method, rtol=rtol, atol=atol, y0=y0, stop=stop)
    rtol = system.config.solver.rtol if rtol is None else rtol
    loose = {**args, "rtol": max(rtol, STREAM_RTOL_FRACTION * th.mc_rtol)}
    rate, previous = FIRST_RATE, None
    while True:
        streams = [integrate(s, **loose, metatest=False) for s in system.stream_systems()]
        errors = stream_uncertainty(streams)
        worst, where = worst_relative(streams, errors)
        interrupted = any(s.status == INTERRUPTED for s in streams)
        diverged = any(s.status == DIVERGED for s in streams)  # no budget makes it converge
        if (interrupted or diverged or worst <= th.mc_rtol or th.mc_rtol == 0
                or system.sample.size >= th.mc_max_tasks):
            break
        if previous is not None and np.isfinite(worst) and previous[1] > worst:
            rate = float(np.clip(np.log(previous[1] / worst)
                                 / np.log(system.sample.size / previous[0]), 0.5, 1.0))
        previous = (system.sample.size, worst)
        grow = min(16.0, max(2.0, (worst / th.mc_rtol) ** (1.0 / rate)))
        system = system.with_budget(min(th.mc_max_tasks, int(np.ceil(system.sample.size * grow))))
    theory = integrate(system, **args)
    n = len(theory.alpha)
    theory.uncertainty = {name: _padded(err, n) for name, err in errors.items()}
    met = th.mc_rtol == 0 or worst <= th.mc_rtol
    theory.monte_carlo = {"tasks": system.sample.size, "streams": system.sample.streams,
                          "rtol": th.mc_rtol, "max_relative_error": worst, "where": where,
                          "tolerance_met": bool(met)}
    if not met and not interrupted:
        theory.monte_carlo["warning"] = (
            f"the Monte Carlo tolerance theory.mc_rtol = {th.mc_rtol:g} was not met within "
            f"theory.mc_max_tasks = {th.mc_max_tasks}: the largest relative uncertainty is "
            f"{worst:.3g} ({where}) with {system.sample.size} support sets")
    return theory


def controlled_columns(run: Trajectory) -> list[str]:
    """The columns whose uncertainty ``theory.mc_rtol`` bounds: the errors and the state (not
    ``specialisation``, a difference of overlaps that vanishes on a symmetric run, nor the labels
    ``align_k``)."""
    return ["error", "error_before_adaptation", "representation_error",
            *column_names(run.K, run.M)]


def stream_uncertainty(streams: list[Trajectory]) -> dict[str, np.ndarray]:
    """std over the B stream trajectories / sqrt(B) of every continuous column (all but the labels
    ``align_k``), record by record over the streams that reached it (``worst_relative`` reports
    streams that stopped early); records that fewer than two streams reached carry the last
    value."""
    n = max(len(s.alpha) for s in streams)
    first = next(s for s in streams if len(s.alpha) == n)
    names = [c for c in first.columns()[1:] if not c.startswith("align_")]
    out = {}
    for c in names:
        table = np.full((len(streams), n), np.nan)
        for b, s in enumerate(streams):
            table[b, : len(s.alpha)] = s.column(c) if len(s.alpha) else []
        reached = np.sum(np.isfinite(table), axis=0)
        err = np.zeros(n)
        for i in range(n):
            if reached[i] >= 2:
                err[i] = np.nanstd(table[:, i], ddof=1) / np.sqrt(reached[i])
            elif i:
                err[i] = err[i - 1]
        out[c] = err
    return out


def worst_relative(streams: list[Trajectory], errors: dict[str, np.ndarray]) -> tuple[float, str]:
    """(largest mc_err_c / scale_c, where) over ``controlled_columns``, scale_c = max_alpha |c|
    but at least SCALE_FLOOR times the largest scale of those columns (an entry that stays near 0,
    e.g. an off-diagonal overlap of a nearly symmetric run, has no meaningful relative error);
    inf when a stream stopped before the others (its records are missing)."""
    shortest = min(streams, key=lambda s: len(s.alpha))
    if len({len(s.alpha) for s in streams}) > 1 or not len(shortest.alpha):
        return float("inf"), (f"a stream stopped at alpha = {shortest.alpha[-1]:g}"
                              if len(shortest.alpha) else "a stream stopped at its first record")
    names = controlled_columns(streams[0])
    scales = {c: np.abs(np.mean([s.column(c) for s in streams], axis=0)).max() for c in names}
    floor = SCALE_FLOOR * max(scales.values())
    worst, where = 0.0, ""
    for c in names:
        scale = max(scales[c], floor)
        if scale == 0.0:
            continue
        i = int(np.argmax(errors[c]))
        if errors[c][i] / scale > worst:
            worst, where = float(errors[c][i] / scale), f"{c} at alpha = {streams[0].alpha[i]:g}"
    return worst, where


def _padded(err: np.ndarray, n: int) -> np.ndarray:
    """err for the n records of the pooled trajectory (the last value where every stream stopped
    before it; ``worst_relative`` reports that)."""
    last = err[-1:] if len(err) else np.zeros(1)
    return np.concatenate([err[:n], np.repeat(last, max(0, n - len(err)))])


def integrate(system: ODESystem, times: np.ndarray | None = None, *, method: str | None = None,
              rtol: float | None = None, atol: float | None = None,
              y0: np.ndarray | None = None, stop: Callable[[], bool] | None = None,
              metatest: bool = True) -> Trajectory:
    """One integration of ``system``'s right-hand side as it is (``solve``'s arguments); the
    meta-test curves at metatest.at only with ``metatest``.

    ``COMPILED`` (the default method) runs ``solvers.dop853`` on the system's compiled flow (every
    built-in system has one), a system without one with scipy's DOP853, the same method; any
    other method name is scipy's solver of that name.
    """
    cfg = system.config
    times = cfg.times() if times is None else np.asarray(times, dtype=float)
    method = method or cfg.solver.method
    rtol = cfg.solver.rtol if rtol is None else rtol
    atol = cfg.solver.atol if atol is None else atol
    y = system.initial_state() if y0 is None else np.asarray(y0, dtype=float)
    reason = system.invalid(y) or system.runaway(y)
    if reason:
        states, status, nfev = np.empty((0, y.size)), DIVERGED, 0
        message = f"invalid initial state at alpha = {times[0]:.6g}: {reason}"
    elif method == COMPILED and system.flow is not None:
        states, status, message, nfev = _compiled(system, times, y, rtol, atol, stop)
    else:
        scipy_method = "DOP853" if method == COMPILED else method
        states, status, message, nfev = _scipy(system, times, y, scipy_method, rtol, atol, stop)
    values = system.record_observables(states) if len(states) else np.empty((0, 0))
    bad = ~np.all(np.isfinite(values), axis=1) if len(states) else np.zeros(0, bool)
    if bad.any():
        i = int(np.argmax(bad))  # the first record with an observable that is not finite
        j = int(np.argmax(~np.isfinite(values[i])))
        message = (f"diverged at alpha = {times[i]:.6g}: the observable "
                   f"{system.observable_names[j]} is not finite ({values[i, j]})")
        status, states, values = DIVERGED, states[:i], values[:i]
    recorded = len(states)
    names = system.observable_names if len(states) else ["error", "error_before_adaptation"]
    return Trajectory(
        alpha=times[:recorded].copy(), states=states, K=system.K, M=system.M,
        observables={n: (values[:, j].copy() if len(states) else np.empty(0))
                     for j, n in enumerate(names)},
        status=status, message=message, nfev=nfev,
        metatest=metatest_curves(times[:recorded], states, cfg.metatest.at,
                                 partial(metatest_curve, cfg)) if metatest else {})


def _compiled(system: ODESystem, times: np.ndarray, y0: np.ndarray, rtol: float, atol: float,
              stop: Callable[[], bool] | None) -> tuple[np.ndarray, int, str, int]:
    """(states, status, message, nfev) of ``solvers.dop853`` from y0 over ``times``. Without
    ``stop`` one compiled call runs to the end; with it, chunks of records that double while a
    chunk takes under CHUNK_SECONDS, with ``stop`` polled in between."""
    flow, n = system.flow, len(times)
    states = np.empty((n, y0.size))
    states[0] = y0
    if n == 1:
        return states, SUCCESS, "", 0
    y, f = y0.copy(), np.empty(y0.size)
    clock = np.array([times[0], 0.0, 0.0])  # nfev = 0: advance starts from y
    check = (system.K, system.M, system.T, DIVERGENCE_BOUND, system.psd_tolerance,
             float(system.config.solver.max_norm))
    recorded, chunk = 1, n if stop is None else 1
    while True:
        started = time.perf_counter()
        code, recorded, kind, index, value = dop853.advance(
            flow, check, times, states, recorded, min(n, recorded + chunk), y, f, clock, rtol,
            atol, np.inf)
        alpha, nfev = clock[0], int(clock[2])
        if code == dop853.FINISHED:
            return states, SUCCESS, "", nfev
        if code == dop853.STEP_TOO_SMALL:
            return states[:recorded], DIVERGED, (f"integrator failed at alpha = {alpha:.6g}: "
                                                 f"{TOO_SMALL_STEP}"), nfev
        if code == dop853.RHS_FAILED:
            return states[:recorded], DIVERGED, _rhs_failure(system, alpha, y), nfev
        if code == dop853.INVALID_STATE:
            reason = state_message(kind, index, value, system.K, system.M)
            return states[:recorded], DIVERGED, f"diverged at alpha = {alpha:.6g}: {reason}", nfev
        if code == dop853.RUNAWAY:
            reason = system.runaway(states[recorded])
            return (states[:recorded], DIVERGED,
                    f"diverged at alpha = {times[recorded]:.6g}: {reason}", nfev)
        if stop is not None and stop():
            return states[:recorded], INTERRUPTED, f"interrupted at alpha = {alpha:.6g}", nfev
        if time.perf_counter() - started < CHUNK_SECONDS:
            chunk *= 2


def _rhs_failure(system: ODESystem, alpha: float, y: np.ndarray) -> str:
    """The message of a right-hand side that raised or was not finite in compiled code at y: what
    the same compiled function gives when called from Python there (``_guarded``)."""
    try:
        _guarded(system.rhs)(alpha, y)
    except _Stopped as err:
        return str(err)
    return f"the right-hand side failed at alpha = {alpha:.6g}"


def _scipy(system: ODESystem, times: np.ndarray, y: np.ndarray, method: str, rtol: float,
           atol: float, stop: Callable[[], bool] | None) -> tuple[np.ndarray, int, str, int]:
    """(states, status, message, nfev) of scipy's ``method`` stepped by hand: every accepted step
    checked (``ODESystem.invalid``), the records by dense output, each checked for validity and a
    runaway."""
    states = np.empty((len(times), y.size))
    states[0] = y
    recorded, status, message = 1, SUCCESS, ""
    if len(times) == 1:
        return states, status, message, 0
    try:
        stepper = _METHODS[method](_guarded(system.rhs), times[0], y, times[-1], rtol=rtol,
                                   atol=atol)
    except _Stopped as err:
        return states[:1], DIVERGED, str(err), 0
    while recorded < len(times):
        try:
            step_message = stepper.step()
        except _Stopped as err:
            status, message = DIVERGED, str(err)
            break
        if stepper.status == "failed":
            status, message = DIVERGED, (f"integrator failed at alpha = {stepper.t:.6g}: "
                                         f"{step_message}")
            break
        reason = system.invalid(stepper.y)
        if reason:
            status = DIVERGED
            message = f"diverged at alpha = {stepper.t:.6g}: {reason}"
            break
        upto = np.searchsorted(times, stepper.t, side="right")
        if upto > recorded:
            states[recorded:upto] = stepper.dense_output()(times[recorded:upto]).T
        if stepper.status == "finished":
            states[upto:] = stepper.y
            upto = len(times)
        if upto > recorded:
            for i in range(recorded, upto):
                reason = system.invalid(states[i]) or system.runaway(states[i])
                if reason:
                    status, message = DIVERGED, f"diverged at alpha = {times[i]:.6g}: {reason}"
                    upto = i
                    break
            recorded = upto
            if status == DIVERGED:
                break
        if stop is not None and stop() and recorded < len(times):
            status, message = INTERRUPTED, f"interrupted at alpha = {stepper.t:.6g}"
            break
    return states[:recorded], status, message, stepper.nfev
