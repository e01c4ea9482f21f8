"""Fixed-step explicit Euler on our right-hand side: the scheme of nn2pp (Goldt et al. 2019).

The public C++ integrator of Goldt et al. advances the order parameters by
y(alpha + dt) = y(alpha) + dt f(alpha, y(alpha)) with dt = 0.01. This is that scheme applied to
``system.rhs`` (the same ODEs our adaptive solver integrates), so that the benchmark can compare the
accuracy of both schemes against a tight-tolerance solution of one and the same system, and time
the scheme here. It is a reference for the benchmark only: its global error is O(dt) and it has no
error control, which is why ``solvers.integrate`` uses an adaptive Runge-Kutta method instead.
"""

from __future__ import annotations

import numpy as np

from metaode.theory.system import ODESystem


def euler(system: ODESystem, times: np.ndarray, dt: float = 0.01) -> np.ndarray:
    """States at ``times`` (shape (len(times), size)) of y_{n+1} = y_n + dt f(n dt, y_n), from the
    system's initial state at alpha = 0; a time is recorded at the step n = round(alpha / dt)
    (exactly alpha on a grid of multiples of dt).
    """
    steps = np.rint(np.asarray(times, dtype=float) / dt).astype(np.int64)
    y = system.initial_state().astype(float)
    states = np.empty((len(steps), y.size))
    recorded = 0
    rhs = system.rhs
    for n in range(int(steps[-1]) + 1):
        while recorded < len(steps) and steps[recorded] == n:
            states[recorded] = y
            recorded += 1
        if n < steps[-1]:
            y = y + dt * rhs(n * dt, y)
    return states
