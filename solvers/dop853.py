"""Dormand-Prince 8(5,3) compiled with numba: ``solver.method = "numba-DOP853"``, the default.

The method of scipy's ``DOP853`` (Hairer, Norsett & Wanner, Solving Ordinary Differential
Equations I, §II.5 and §II.6; the tableau is read from ``scipy.integrate.DOP853``): per step the
12 stages k_1..k_12 of order 8 and f(y_new), the local error of the embedded 5th- and 3rd-order
pairs,

    err = |h| |e5|^2 / sqrt(n (|e5|^2 + 0.01 |e3|^2)),   e_j = (sum_s E_j,s k_s) / scale,
    scale_i = atol + rtol max(|y_i|, |y_new,i|),

the step accepted when err < 1; then h <- h min(10, 0.9 err^(-1/8)) (at most h right after a
rejection), on rejection h <- h max(0.2, 0.9 err^(-1/8)); a step below 10 ulp of alpha fails. The
first step is scipy's ``select_initial_step`` (Hairer et al. §II.4), the dense output the
7th-degree interpolant from 3 extra stages, computed only for a step that contains a record.

Everything runs inside compiled code: the right-hand side (``theory.system.flow_rhs`` of the
system's flow, resolved at compile time), the check of every accepted step
(``theory.system.state_check``), and the records with the same check and their runaway check.
``advance`` stops after a given record so that the caller can poll for an interruption between
chunks of records.

``advance`` is the one compiled entry point: the helpers that evaluate the right-hand side are
inlined into it (numba ``inline="always"``), since numba links and re-optimises a function's whole
call tree into every compiled function that calls it; the few-shot right-hand side then compiles
into the integrator once instead of once per helper and argument type (~25 s each).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.integrate import DOP853

from metaode.theory.system import flow_rhs, runaway_index, state_check

_A = np.ascontiguousarray(DOP853.A, dtype=float)
_B = np.ascontiguousarray(DOP853.B, dtype=float)
_C = np.ascontiguousarray(DOP853.C, dtype=float)
_E3 = np.ascontiguousarray(DOP853.E3, dtype=float)
_E5 = np.ascontiguousarray(DOP853.E5, dtype=float)
_D = np.ascontiguousarray(DOP853.D, dtype=float)
_A_EXTRA = np.ascontiguousarray(DOP853.A_EXTRA, dtype=float)
_C_EXTRA = np.ascontiguousarray(DOP853.C_EXTRA, dtype=float)
STAGES = 12
EXTENDED = 16

SAFETY, MIN_FACTOR, MAX_FACTOR, EXPONENT = 0.9, 0.2, 10.0, -1.0 / 8.0

#: ``advance`` status codes (the caller turns them into messages).
RUNNING, FINISHED, STEP_TOO_SMALL, RHS_FAILED, INVALID_STATE, RUNAWAY = 0, 1, 2, 3, 4, 5


@njit(cache=True)
def _rms(x: np.ndarray) -> float:
    return np.sqrt(np.sum(x * x) / x.shape[0])


@njit(cache=True, inline="always")
def _evaluate(flow, x, K, s) -> bool:
    """K[s] = f(x); False if the right-hand side raised (a compiled kernel's ZeroDivisionError, a
    failed factorisation) or is not finite: the integration stops there, as in
    ``solvers.integrate`` with scipy's solvers (a NaN would otherwise make the step size NaN)."""
    try:
        K[s] = flow_rhs(flow, x)
    except Exception:  # noqa: BLE001
        return False
    for i in range(K.shape[1]):
        if not np.isfinite(K[s, i]):
            return False
    return True


@njit(cache=True, inline="always")
def _stage(flow, y, h, K, s, a, ys) -> bool:
    """K[s] = f(ys), ys = y + h sum_{j<s} a_j K[j]."""
    for i in range(y.shape[0]):
        acc = 0.0
        for j in range(s):
            acc += a[j] * K[j, i]
        ys[i] = y[i] + h * acc
    return _evaluate(flow, ys, K, s)


@njit(cache=True)
def _error_norm(K, h, scale) -> float:
    """|h| |e5|^2 / sqrt(n (|e5|^2 + 0.01 |e3|^2)) with e_j = (K^T E_j) / scale (scipy's
    ``DOP853._estimate_error_norm``)."""
    n = scale.shape[0]
    s5 = 0.0
    s3 = 0.0
    for i in range(n):
        e5 = 0.0
        e3 = 0.0
        for s in range(STAGES + 1):
            e5 += K[s, i] * _E5[s]
            e3 += K[s, i] * _E3[s]
        e5 /= scale[i]
        e3 /= scale[i]
        s5 += e5 * e5
        s3 += e3 * e3
    if s5 == 0.0 and s3 == 0.0:
        return 0.0
    return abs(h) * s5 / np.sqrt((s5 + 0.01 * s3) * n)


@njit(cache=True, inline="always")
def _dense(flow, h, y_old, y_new, K, F, ys) -> int:
    """The interpolant's coefficients F (7 x n) of the step of length h from y_old to y_new, after
    the 3 extra stages (scipy's ``DOP853._dense_output_impl``); -1, or the extra stage whose
    right-hand side raised."""
    for e in range(EXTENDED - STAGES - 1):
        if not _stage(flow, y_old, h, K, STAGES + 1 + e, _A_EXTRA[e], ys):
            return e
    n = y_old.shape[0]
    for i in range(n):
        dy = y_new[i] - y_old[i]
        F[0, i] = dy
        F[1, i] = h * K[0, i] - dy
        F[2, i] = 2.0 * dy - h * (K[STAGES, i] + K[0, i])
        for r in range(4):
            acc = 0.0
            for s in range(EXTENDED):
                acc += _D[r, s] * K[s, i]
            F[3 + r, i] = h * acc
    return -1


@njit(cache=True)
def _interpolate(F, y_old, x, out) -> None:
    """y(t_old + x h) from the coefficients F (scipy's ``Dop853DenseOutput``: Horner's scheme in x
    and 1 - x from the last coefficient)."""
    m = F.shape[0]
    for i in range(y_old.shape[0]):
        acc = 0.0
        for j in range(m):
            acc += F[m - 1 - j, i]
            acc *= x if j % 2 == 0 else 1.0 - x
        out[i] = acc + y_old[i]


@njit(cache=True, inline="always")
def _start(flow, y0, t_end, rtol, atol, max_step, clock, f, K):
    """f = f(y0) and the first step into clock = [alpha, |h|, nfev] (scipy's
    ``select_initial_step``); False if the right-hand side raised. K: workspace (>= 2 rows)."""
    if not _evaluate(flow, y0, K, 0):
        return False
    f[:] = K[0]
    interval = abs(t_end - clock[0])
    clock[2] = 1
    if interval == 0.0:
        clock[1] = 0.0
        return True
    scale = atol + np.abs(y0) * rtol
    d0, d1 = _rms(y0 / scale), _rms(f / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, interval)
    ys = y0 + h0 * f
    if not _evaluate(flow, ys, K, 1):
        y0[:] = ys
        return False
    clock[2] = 2
    d2 = _rms((K[1] - f) / scale) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / 8.0)
    clock[1] = min(100.0 * h0, h1, interval, max_step)
    return True


@njit(cache=True)
def advance(flow, check, times, states, recorded, until, y, f, clock, rtol, atol, max_step):
    """Integrate from the current point (clock = [alpha, |h|, nfev], y, f = f(y); on the first call,
    nfev = 0, from y alone: ``_start``) until at least
    the records times[:until] are in ``states`` (``recorded`` of them already are), checking each
    accepted step (``state_check``) and each record (``state_check``, ``runaway_index``) as
    ``solvers.integrate`` does with scipy's solvers.

    Returns (status, recorded, code, index, value): status RUNNING (``until`` reached), FINISHED
    (every record written), STEP_TOO_SMALL, RHS_FAILED (y holds the state where the right-hand
    side raised), INVALID_STATE (``state_check``'s code, index and value for the accepted step,
    or for the interpolated record ``recorded``, now in y) or RUNAWAY (the record ``recorded`` is
    one, not kept; its unit in ``index``); clock
    holds the alpha each refers to.
    """
    K_units, M_units, T, bound, tolerance, max_norm = check
    n = y.shape[0]
    t_end = times[-1]
    Kst = np.empty((EXTENDED, n))
    if clock[2] == 0 and not _start(flow, y, t_end, rtol, atol, max_step, clock, f, Kst):
        return RHS_FAILED, recorded, 0, -1, 0.0
    t, h_abs, nfev = clock[0], clock[1], int(clock[2])
    F = np.empty((7, n))
    ys = np.empty(n)
    y_new = np.empty(n)
    scale = np.empty(n)
    status, code, index, value = RUNNING, 0, -1, 0.0
    while recorded < until:
        min_step = 10.0 * abs(np.nextafter(t, np.inf) - t)
        if h_abs > max_step:
            h_abs = max_step
        elif h_abs < min_step:
            h_abs = min_step
        rejected = False
        while True:  # scipy's RungeKutta._step_impl
            if h_abs < min_step:
                status = STEP_TOO_SMALL
                break
            t_new = min(t + h_abs, t_end)
            h = t_new - t
            h_abs = abs(h)
            Kst[0] = f
            for s in range(1, STAGES):
                nfev += 1
                if not _stage(flow, y, h, Kst, s, _A[s], ys):
                    status, t_new = RHS_FAILED, t + _C[s] * h
                    break
            if status != RUNNING:
                break
            for i in range(n):
                acc = 0.0
                for s in range(STAGES):
                    acc += _B[s] * Kst[s, i]
                y_new[i] = y[i] + h * acc
            nfev += 1
            if not _evaluate(flow, y_new, Kst, STAGES):
                ys[:] = y_new
                status = RHS_FAILED
                break
            for i in range(n):
                scale[i] = atol + max(abs(y[i]), abs(y_new[i])) * rtol
            err = _error_norm(Kst, h, scale)
            if err < 1.0:
                factor = MAX_FACTOR if err == 0.0 else min(MAX_FACTOR, SAFETY * err ** EXPONENT)
                if rejected:
                    factor = min(1.0, factor)
                h_abs *= factor
                break
            h_abs *= max(MIN_FACTOR, SAFETY * err ** EXPONENT)
            rejected = True
        if status == RHS_FAILED:
            y[:] = ys
            t = t_new
        if status != RUNNING:
            break
        code, index, value = state_check(y_new, K_units, M_units, T, bound, tolerance)
        if code != 0:
            y[:] = y_new
            t = t_new
            status = INVALID_STATE
            break
        upto = np.searchsorted(times, t_new, side="right")
        if upto > recorded:
            failed = _dense(flow, h, y, y_new, Kst, F, ys)
            nfev += 3 if failed < 0 else failed + 1
            if failed >= 0:
                y[:] = ys
                t = t + _C_EXTRA[failed] * h
                status = RHS_FAILED
                break
            for i in range(recorded, upto):
                _interpolate(F, y, (times[i] - t) / h, states[i])
            for i in range(recorded, upto):
                code, index, value = state_check(states[i], K_units, M_units, T, bound,
                                                 tolerance)
                if code != 0:
                    status = INVALID_STATE
                    break
                k = runaway_index(states[i], K_units, M_units, T, max_norm)
                if k >= 0:
                    status, index = RUNAWAY, k
                    break
                recorded = i + 1
            if status == INVALID_STATE:
                y[:] = states[recorded]
            if status != RUNNING:
                t = times[recorded]
                break
        t = t_new
        y[:] = y_new
        f[:] = Kst[STAGES]
        if t == t_end:
            status = FINISHED
            break
    clock[0], clock[1], clock[2] = t, h_abs, nfev
    return status, recorded, code, index, value
