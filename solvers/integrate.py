"""Integration of an ODE system into a trajectory (adaptive scipy integrators).

``solve`` advances one of scipy's adaptive solvers (DOP853 by default) step by step and records the
state at the requested meta-times by the solver's dense output. It checks every accepted step
(``ODESystem.invalid``: a non-finite state, an entry beyond DIVERGENCE_BOUND, or Omega no longer a
covariance) and every record (``ODESystem.runaway``: a student unit longer than solver.max_norm
allows; ``non_finite``: an observable that is not finite). A failed check, a failed step or a
right-hand side that raised stops the integration, and the returned trajectory keeps every record
up to that point with ``status = DIVERGED`` and a message saying at which alpha and why (the
solve_ivp convention: failures are reported in the result, not raised). A ``stop`` callable that
returns True (e.g. after SIGINT) ends it the same way with ``status = INTERRUPTED``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from scipy import integrate

from theory.metatest import metatest_curve
from theory.state import column_names
from theory.system import ODESystem, non_finite
from theory.trajectory import DIVERGED, INTERRUPTED, SUCCESS, Trajectory, metatest_curves

_METHODS = {
    "DOP853": integrate.DOP853,
    "RK45": integrate.RK45,
    "Radau": integrate.Radau,
    "BDF": integrate.BDF,
    "LSODA": integrate.LSODA,
}

#: Errors of a right-hand side evaluated where its integrals break down (a division by zero in a
#: compiled kernel, an overflow, a failed factorisation): reported as a divergence at that alpha.
RHS_ERRORS = (ArithmeticError, ValueError)


class _Stopped(Exception):
    """The right-hand side raised one of RHS_ERRORS at alpha (carried for the message)."""

    def __init__(self, alpha: float, err: Exception):
        super().__init__(f"the right-hand side failed at alpha = {alpha:.6g}: "
                         f"{type(err).__name__}: {err}")


def _guarded(rhs: Callable[[float, np.ndarray], np.ndarray]) -> Callable:
    def f(alpha: float, y: np.ndarray) -> np.ndarray:
        try:
            return rhs(alpha, y)
        except RHS_ERRORS as err:
            raise _Stopped(alpha, err) from err

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
    largest mc_err_c / max_alpha |c| over the controlled columns (``controlled_columns``) exceeds
    ``theory.mc_rtol``, the budget grows up to ``theory.mc_max_tasks``: by (1.2 ratio)^(1/rate),
    at least doubling and at most 16-fold, with the convergence rate of the error in the budget
    (n^-rate) taken as 0.75 at first (scrambled Sobol points converge faster than n^-1/2) and then
    measured from the last two budgets (clipped to [0.5, 1]). Then the values come from one solve
    on all points of the final budget (not from averaging the streams' trajectories, which keeps
    the bias of the nonlinear dynamics of their smaller samples). ``Trajectory.monte_carlo``
    records the budget and whether the tolerance was met.
    """
    if not system.monte_carlo:
        return integrate(system, times, method=method, rtol=rtol, atol=atol, y0=y0, stop=stop)
    th = system.config.theory
    args = dict(times=times, method=method, rtol=rtol, atol=atol, y0=y0, stop=stop)
    rate, previous = 0.75, None
    while True:
        streams = [integrate(s, **args, metatest=False) for s in system.stream_systems()]
        errors = stream_uncertainty(streams)
        worst, where = worst_relative(streams, errors)
        interrupted = any(s.status == INTERRUPTED for s in streams)
        if (interrupted or worst <= th.mc_rtol or th.mc_rtol == 0
                or system.sample.size >= th.mc_max_tasks):
            break
        if previous is not None and np.isfinite(worst) and previous[1] > worst:
            rate = float(np.clip(np.log(previous[1] / worst)
                                 / np.log(system.sample.size / previous[0]), 0.5, 1.0))
        previous = (system.sample.size, worst)
        grow = min(16.0, max(2.0, (1.2 * worst / th.mc_rtol) ** (1.0 / rate)))
        system = system.with_budget(min(th.mc_max_tasks, int(system.sample.size * grow)))
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
    ``align_k``), at the records that every stream reached."""
    n = min(len(s.alpha) for s in streams)
    names = [c for c in streams[0].columns()[1:] if not c.startswith("align_")]
    return {c: np.array([s.column(c)[:n] for s in streams]).std(axis=0, ddof=1)
            / np.sqrt(len(streams)) for c in names}


def worst_relative(streams: list[Trajectory], errors: dict[str, np.ndarray]) -> tuple[float, str]:
    """(largest mc_err_c / max_alpha |c|, where) over ``controlled_columns``; inf when a stream
    stopped before the others (its records are missing)."""
    if len({len(s.alpha) for s in streams}) > 1 or not len(streams[0].alpha):
        return float("inf"), "a stream stopped early"
    worst, where = 0.0, ""
    for c in controlled_columns(streams[0]):
        scale = np.abs(np.mean([s.column(c) for s in streams], axis=0)).max()
        if scale == 0.0:
            continue
        i = int(np.argmax(errors[c]))
        if errors[c][i] / scale > worst:
            worst, where = float(errors[c][i] / scale), f"{c} at alpha = {streams[0].alpha[i]:g}"
    return worst, where


def _padded(err: np.ndarray, n: int) -> np.ndarray:
    """err for n records: inf where the streams stopped before the pooled trajectory."""
    return np.concatenate([err[:n], np.full(max(0, n - len(err)), np.inf)])


def integrate(system: ODESystem, times: np.ndarray | None = None, *, method: str | None = None,
              rtol: float | None = None, atol: float | None = None,
              y0: np.ndarray | None = None, stop: Callable[[], bool] | None = None,
              metatest: bool = True) -> Trajectory:
    """One integration of ``system``'s right-hand side as it is (``solve``'s arguments); the
    meta-test curves at metatest.at only with ``metatest``."""
    cfg = system.config
    times = cfg.times() if times is None else np.asarray(times, dtype=float)
    method = method or cfg.solver.method
    rtol = cfg.solver.rtol if rtol is None else rtol
    atol = cfg.solver.atol if atol is None else atol
    y = system.initial_state() if y0 is None else np.asarray(y0, dtype=float)
    states = np.empty((len(times), y.size))
    states[0] = y
    recorded, status, message, nfev = 1, SUCCESS, "", 0
    reason = system.invalid(y) or system.runaway(y)
    if reason:
        status, message, recorded = DIVERGED, f"invalid initial state at alpha = " \
            f"{times[0]:.6g}: {reason}", 0
    elif len(times) > 1:
        try:
            stepper = _METHODS[method](_guarded(system.rhs), times[0], y, times[-1], rtol=rtol,
                                       atol=atol)
        except _Stopped as err:
            stepper, status, message = None, DIVERGED, str(err)
        while stepper is not None and recorded < len(times):
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
                    reason = system.runaway(states[i])
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
        nfev = 0 if stepper is None else stepper.nfev
    states = states[:recorded]
    obs = [system.observables(s) for s in states]
    for i, values in enumerate(obs):
        reason = non_finite(values)
        if reason:
            status, message = DIVERGED, f"diverged at alpha = {times[i]:.6g}: {reason}"
            states, obs, recorded = states[:i], obs[:i], i
            break
    names = list(obs[0]) if obs else ["error", "error_before_adaptation"]
    return Trajectory(
        alpha=times[:recorded].copy(), states=states, K=system.K, M=system.M,
        observables={n: np.array([o[n] for o in obs]) for n in names},
        status=status, message=message, nfev=nfev,
        metatest=metatest_curves(times[:recorded], states, cfg.metatest.at,
                                 partial(metatest_curve, cfg)) if metatest else {})
