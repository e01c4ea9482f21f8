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
    """Integrate ``system`` from y0 (default: the config's initial state) over ``times``.

    Defaults for ``times``, ``method``, ``rtol`` and ``atol`` come from the system's config
    (``output`` and ``solver`` sections). ``stop`` is polled after every accepted step.
    """
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
                                 partial(metatest_curve, cfg)))
