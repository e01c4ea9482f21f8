"""Jacobians df/dy of the ODE right-hand sides f(y) = dy/dalpha, y = pack(Q, R, w).

sgd (``sgd_jacobian``): exact, by the chain rule through the sympy-derived gradients of the
elementary integrals (``theory.derive``: J2_gradient, I3_gradient, I4_gradient, dI2_dc..). Every
integral is a function of entries Omega_pq of the field covariance, and each entry is a coordinate
of y (Q_pq for two student fields, R_km for a student and a teacher field) or a constant (T), so

    d I(Omega_{p1 q1}, ..., Omega_{pr qr}) / dy_i = sum_j dI/dc_j [index(p_j, q_j) = i].

With c = (w, -u), the sgd right-hand side (``theory.sgd``) is

    dQ_kl = -lr [w_k F_kl + w_l F_lk] + lr^2 / B w_k w_l P_kl,   dR_km = -lr w_k F_k,K+m,
    dw_k  = -lr_head sum_a c_a I2(k, a),
    F_kb  = sum_a c_a I3(k, b, a),   P_kl = sum_ab c_a c_b I4(k, l, a, b) + noise^2 J2(k, l),

and its Jacobian follows by the product rule (dc_a / dw_a = 1 for a < K; I4 is symmetric in its
last two fields, so d P_kl / dw_a = 2 sum_b c_b I4(k, l, a, b) + the chain through Omega).

A ReLU network (an activation that is not ``smooth``: no I3 / I4 gradients are derived for it) and
other systems (anil, few-shot anil): ``central_difference_jacobian`` of the exact right-hand side,
column i = [f(y + h_i e_i) - f(y - h_i e_i)] / (2 h_i) with h_i = 6e-6 max(1, |y_i|), about
eps^(1/3) for double precision eps = 2.2e-16: the truncation error h^2 f''' / 6 and the rounding
error eps |f| / h are then both ~1e-11 relative to the O(1) derivatives.

The right-hand side of a ReLU student is not differentiable where a student unit is collinear with
a teacher unit or with another student unit (its integrals have terms in
sqrt(Omega_pp Omega_qq - Omega_pq^2), e.g. the arc-cosine kernel, whose derivatives diverge
there; the specialised state Q = R = T is such a point): ``require_differentiable`` refuses a
state within DIFFERENTIABLE_GAP of one, instead of returning central differences across the kink.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from metaode.theory.activations import (
    I3,
    I4,
    J2,
    Activations,
    I3_gradient,
    I4_gradient,
    J2_gradient,
    activation,
    dI2_dc11,
    dI2_dc12,
    dI2_dc22,
)
from metaode.theory.fields import field_covariance, i2_matrix
from metaode.theory.state import unpack
from metaode.theory.system import ODESystem

#: Relative step of ``central_difference_jacobian`` (~ eps^(1/3), see the module docstring).
CENTRAL_DIFFERENCE_STEP = 6e-6
#: ``require_differentiable`` refuses a ReLU student's state where 1 - r^2 < this for two fields
#: (r their correlation): ~15 central-difference steps, below which the differences straddle the
#: kink of sqrt(1 - r^2).
DIFFERENTIABLE_GAP = 1e-4


@njit(cache=True)
def state_index(K: int, M: int) -> np.ndarray:
    """index[p, q]: the position in y of Omega_pq (Q_pq for p, q < K, R_p,q-K for a student and a
    teacher field, in either order), -1 for a teacher-teacher entry (T, a constant)."""
    n = K + M
    index = -np.ones((n, n), dtype=np.int64)
    i = 0
    for k in range(K):
        for l in range(k, K):
            index[k, l] = index[l, k] = i
            i += 1
    for k in range(K):
        for m in range(M):
            index[k, K + m] = index[K + m, k] = i
            i += 1
    return index


@njit(cache=True)
def _scatter(row: np.ndarray, index: np.ndarray, coef: float, grad, ps, qs) -> None:
    """row[index[ps[j], qs[j]]] += coef * grad[j] for every argument j that is a coordinate."""
    for j in range(len(ps)):
        i = index[ps[j], qs[j]]
        if i >= 0:
            row[i] += coef * grad[j]


@njit(cache=True)
def sgd_jacobian(acts: Activations, y: np.ndarray, K: int, M: int, T: np.ndarray, u: np.ndarray,
                 noise: float, lr: float, lr_head: float, batch: int) -> np.ndarray:
    """Exact Jacobian dy'/dy of the sgd flow at y (``theory.sgd.SGDSystem.args``), from its
    I3 form: dR_km = -lr w_k F_k,K+m, dQ_kl = -lr (w_k F_kl + w_l F_lk) + lr^2 / batch w_k w_l
    P_kl, dw_k = -lr_head sum_a c_a I2(k, a), F_kb = sum_a c_a I3(k, b, a) (Stein's lemma turns
    the gradient of ``theory.flow`` into this form)."""
    s, t = acts.student, acts.teacher
    Q, R, w = unpack(y, K, M)
    omega = field_covariance(Q, R, T)
    n = K + M
    size = y.shape[0]
    iw = size - K  # position of w_0 in y
    index = state_index(K, M)
    c = np.empty(n)
    c[:K] = w
    c[K:] = -u

    # F_kb = sum_a c_a I3(k, b, a) and its gradient dF[k, b, :]
    F = np.zeros((K, n))
    dF = np.zeros((K, n, size))
    for k in range(K):
        for b in range(n):
            for a in range(n):
                args = (omega[k, k], omega[b, b], omega[a, a], omega[k, b], omega[k, a],
                        omega[b, a])
                if a < K:
                    value, grad = I3(s, s, *args), I3_gradient(s, s, *args)
                else:
                    value, grad = I3(s, t, *args), I3_gradient(s, t, *args)
                F[k, b] += c[a] * value
                _scatter(dF[k, b], index, c[a], grad, (k, b, a, k, k, b), (k, b, a, b, a, a))
                if a < K:
                    dF[k, b, iw + a] += value

    # P_kl = sum_ab c_a c_b I4(k, l, a, b) + noise^2 J2(k, l) and its gradient, k <= l
    P = np.zeros((K, K))
    dP = np.zeros((K, K, size))
    for k in range(K):
        for l in range(k, K):
            for a in range(n):
                cI4 = 0.0  # sum_b c_b I4(k, l, a, b)
                for b in range(n):
                    args = (omega[k, k], omega[l, l], omega[a, a], omega[b, b], omega[k, l],
                            omega[k, a], omega[k, b], omega[l, a], omega[l, b], omega[a, b])
                    if a < K and b < K:
                        value, grad = I4(s, s, s, *args), I4_gradient(s, s, s, *args)
                    elif a < K:
                        value, grad = I4(s, s, t, *args), I4_gradient(s, s, t, *args)
                    elif b < K:
                        value, grad = I4(s, t, s, *args), I4_gradient(s, t, s, *args)
                    else:
                        value, grad = I4(s, t, t, *args), I4_gradient(s, t, t, *args)
                    cI4 += c[b] * value
                    _scatter(dP[k, l], index, c[a] * c[b], grad,
                             (k, l, a, b, k, k, k, l, l, a), (k, l, a, b, l, a, b, a, b, b))
                P[k, l] += c[a] * cI4
                if a < K:
                    dP[k, l, iw + a] += 2.0 * cI4
            args2 = (omega[k, k], omega[l, l], omega[k, l])
            P[k, l] += noise * noise * J2(s, *args2)
            _scatter(dP[k, l], index, noise * noise, J2_gradient(s, *args2), (k, l, k), (k, l, l))

    jac = np.zeros((size, size))
    diffusion = lr * lr / batch
    for k in range(K):
        for l in range(k, K):
            row = jac[index[k, l]]
            row += -lr * (w[k] * dF[k, l] + w[l] * dF[l, k]) + diffusion * w[k] * w[l] * dP[k, l]
            row[iw + k] += -lr * F[k, l] + diffusion * w[l] * P[k, l]
            row[iw + l] += -lr * F[l, k] + diffusion * w[k] * P[k, l]
        for m in range(M):
            row = jac[index[k, K + m]]
            row += -lr * w[k] * dF[k, K + m]
            row[iw + k] += -lr * F[k, K + m]

    # dw_k = -lr_head sum_a c_a I2(k, a)
    i2 = i2_matrix(acts, omega, K)
    for k in range(K):
        row = jac[iw + k]
        for a in range(n):
            args2 = (omega[k, k], omega[a, a], omega[k, a])
            if a < K:
                grad = (dI2_dc11(s, s, *args2), dI2_dc22(s, s, *args2), dI2_dc12(s, s, *args2))
            else:
                grad = (dI2_dc11(s, t, *args2), dI2_dc22(s, t, *args2), dI2_dc12(s, t, *args2))
            _scatter(row, index, -lr_head * c[a], grad, (k, a, k), (k, a, a))
            if a < K:
                row[iw + a] -= lr_head * i2[k, a]
    return jac


def central_difference_jacobian(system: ODESystem, y: np.ndarray,
                                rel_step: float = CENTRAL_DIFFERENCE_STEP) -> np.ndarray:
    """Central differences of ``system.rhs``: column i = [f(y + h_i e_i) - f(y - h_i e_i)]
    / (2 h_i), h_i = rel_step max(1, |y_i|) (module docstring: error ~1e-11 relative at the
    default step)."""
    y = np.asarray(y, dtype=float)
    jac = np.empty((y.size, y.size))
    for i in range(y.size):
        h = rel_step * max(1.0, abs(y[i]))
        up, down = y.copy(), y.copy()
        up[i] += h
        down[i] -= h
        jac[:, i] = (system.rhs(0.0, up) - system.rhs(0.0, down)) / (2.0 * h)
    return jac


def require_differentiable(system: ODESystem, y: np.ndarray) -> None:
    """ValueError at a state of a non-smooth student (ReLU) within ``DIFFERENTIABLE_GAP`` of a
    point where the right-hand side is not differentiable (module docstring), naming the fields."""
    name = system.config.student.activation
    if activation(name).smooth:
        return
    Q, R, _ = unpack(np.asarray(y, dtype=float), system.K, system.M)
    omega = field_covariance(Q, R, system.T)
    labels = ([f"student unit {k}" for k in range(system.K)]
              + [f"teacher unit {m}" for m in range(system.M)])
    for p in range(system.K):
        for q in range(p + 1, omega.shape[0]):
            scale = omega[p, p] * omega[q, q]
            gap = 1.0 - omega[p, q] ** 2 / scale if scale > 0 else 0.0
            if gap < DIFFERENTIABLE_GAP:
                raise ValueError(f"the right-hand side of a {name} student is not differentiable "
                                 f"where two fields are collinear, and {labels[p]} and "
                                 f"{labels[q]} are here (1 - r^2 = {gap:.2e} < "
                                 f"{DIFFERENTIABLE_GAP:g}): no Jacobian, fixed point or "
                                 f"stability is computed at this state")


def jacobian(system: ODESystem, y: np.ndarray) -> np.ndarray:
    """df/dy of ``system`` at y: exact for sgd of smooth activations (``sgd_jacobian``), central
    differences of the exact right-hand side otherwise (``central_difference_jacobian``); a
    ReLU student's state where the right-hand side is not differentiable is refused
    (``require_differentiable``)."""
    from metaode.theory.sgd import SGDSystem

    y = np.ascontiguousarray(y, dtype=float)
    require_differentiable(system, y)
    config = system.config
    smooth = (activation(config.student.activation).smooth
              and activation(config.teacher.activation).smooth)
    if isinstance(system, SGDSystem) and smooth:
        return sgd_jacobian(system.acts, y, *system.args)
    return central_difference_jacobian(system, y)
