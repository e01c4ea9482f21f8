"""Integration of an ODE system into a trajectory (adaptive scipy integrators).

``solve`` advances one of scipy's adaptive solvers (DOP853 by default) step by step, records the
state at the requested meta-times by the solver's dense output, and checks every accepted step:
a non-finite state, a runaway (|y| > DIVERGENCE_BOUND) or a state that is no longer a covariance
stops the integration, and the returned trajectory keeps every record up to that point with
``status = DIVERGED`` and a message saying at which alpha and why (the solve_ivp convention:
failures are reported in the result, not raised).
"""

from __future__ import annotations

import numpy as np
from scipy import integrate

from theory.system import ODESystem
from theory.trajectory import DIVERGED, SUCCESS, Trajectory, metatest_curves

_METHODS = {
    "DOP853": integrate.DOP853,
    "RK45": integrate.RK45,
    "Radau": integrate.Radau,
    "BDF": integrate.BDF,
    "LSODA": integrate.LSODA,
}


def solve(system: ODESystem, times: np.ndarray | None = None, *, method: str | None = None,
          rtol: float | None = None, atol: float | None = None,
          y0: np.ndarray | None = None) -> Trajectory:
    """Integrate ``system`` from y0 (default: the config's initial state) over ``times``.

    Defaults for ``times``, ``method``, ``rtol`` and ``atol`` come from the system's config
    (``output`` and ``solver`` sections).
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
    reason = system.invalid(y)
    if reason:
        status, message, recorded = DIVERGED, f"invalid initial state: {reason}", 0
    elif len(times) > 1:
        stepper = _METHODS[method](system.rhs, times[0], y, times[-1], rtol=rtol, atol=atol)
        while recorded < len(times):
            step_message = stepper.step()
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
                dense = stepper.dense_output()
                states[recorded:upto] = dense(times[recorded:upto]).T
                recorded = upto
            if stepper.status == "finished":
                states[recorded:] = stepper.y
                recorded = len(times)
        nfev = stepper.nfev
    states = states[:recorded]
    obs = [system.observables(s) for s in states]
    names = list(obs[0]) if obs else ["error", "error_before_adaptation"]
    return Trajectory(
        alpha=times[:recorded].copy(), states=states, K=system.K, M=system.M,
        observables={n: np.array([o[n] for o in obs]) for n in names},
        status=status, message=message, nfev=nfev,
        metatest=metatest_curves(times[:recorded], states, cfg.metatest.at, system.metatest))
