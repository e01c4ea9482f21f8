"""Few-shot ANIL: the inner loop on P support examples (docs/model.md §4.2, §9).

With a finite support set the adapted head is random. For one task (head u, c = (w, -u)) write
phi_p = g(lambda_p), psi_p = g(nu_p) for the fields of the P support examples,
C^ = mean_p phi_p phi_p^T, D^ = mean_p phi_p psi_p^T, n^ = noise mean_p zeta_p phi_p; then
w^(r+1) = (I - inner_lr C^) w^(r) + inner_lr (D^ u + n^).

Exact part (inner_steps = 1). w' = w - inner_lr mean_p phi_p Delta0_p with
Delta0 = phi . w - psi . u - noise zeta, whose mean is v = C w - D u, so E_S w' is the population
adapted head and Cov_S w' = (inner_lr^2 / P) (E[phi phi^T Delta0^2] - v v^T), with
E[phi_k phi_l Delta0^2] = sum_ab c_a c_b F_klab + noise^2 C_kl and F_klab = E[g(z_k) g(z_l) g(z_a)
g(z_b)] the four-point moments (``F4`` of the activations). As eps is quadratic in w'
with Hessian C,

    L_P = L_meta^pop + inner_lr^2 / (2 P) Xi,
    Xi  = E_u[ sum_kl C_kl (sum_ab c_a c_b F_klab + noise^2 C_kl) - v^T C v ],

with E_u exact (c and v are linear in u): E[c c^T] = cbar cbar^T + task_std^2 (0 (+) I_M),
E[v^T C v] = v0^T C v0 + task_std^2 tr(D^T C D), v0 = C w - D u0. Its gradient (the drift) needs
dF/dOmega (``F4_gradient``; by Price's theorem dF/dC4_pq = E[g'_p g'_q g_r g_s] for p != q and
dF/dC4_pp = 1/2 E[g''_p g_q g_r g_s], in closed form for erf).

Numerical part. The lr^2 (diffusion) term for any inner_steps, and the loss and drift for
inner_steps > 1 (the loss then involves moments of C^ of order 2 s, not four-point moments), are
expectations over the fields of the P support examples; given those fields everything is exact in
the task and the label noise, and the fields are sampled (``theory.support_mc``: scrambled Sobol
streams symmetrised under unit permutations, the exact one-step terms as control variates). The
solver turns the spread of the independent streams into the trajectory's uncertainty
(``solvers.integrate.solve``).

Compiled form. ``FewShotFlow`` holds the parameters and the support sets of one estimate (a
stream's, or all streams'), and ``fewshot_estimate`` computes the drift and Phi from them, so the
compiled integrator (``solvers.dop853``) runs a few-shot curve without returning to Python.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange
from numba.extending import overload

from metaode.config import Config, TheoryUnavailable
from metaode.theory.activations import F4, Activations, F4_gradient, activation, path_rule
from metaode.theory.anil import (
    ANILSystem,
    inner_loop,
    meta_gradient,
    meta_loss,
    metatest_errors,
)
from metaode.theory.fields import (
    common_observables,
    error_blocks,
    field_covariance,
    task_basis,
)
from metaode.theory.flow import chain_to_overlaps, flow_of_drift
from metaode.theory.state import unpack
from metaode.theory.support_mc import (
    SupportSample,
    controlled_mean,
    drift_map,
    drift_of_terms,
    drift_vector,
    support_sample,
    support_statistics,
    terms_size,
)
from metaode.theory.system import ODESystem, flow_observables, flow_rhs, is_flow


@njit(cache=True)
def covariance_factor(omega: np.ndarray) -> np.ndarray:
    """L with L L^T = Omega + eps I: Cholesky with a relative jitter eps = 1e-12 tr(Omega) / n, so
    that a singular Omega (a student unit equal to a teacher unit, lambda_k = nu_m) is factorised;
    the jitter changes the sampled moments by O(1e-12) relative."""
    n = omega.shape[0]
    return np.linalg.cholesky(omega + (1e-12 * np.trace(omega) / n) * np.eye(n))


@njit(cache=True)
def _sub_covariance(omega, i0, i1, i2, i3):
    idx = (i0, i1, i2, i3)
    C4 = np.empty((4, 4))
    for p in range(4):
        for q in range(4):
            C4[p, q] = omega[idx[p], idx[q]]
    return C4


@njit(cache=True)
def _f4(acts, omega, K, k, l, a, b, nodes, weights):
    """F4 of the fields (lambda_k, lambda_l, z_a, z_b), k, l < K, a <= b: the student's activation
    on student fields, the teacher's on z_a, z_b >= K."""
    s, t = acts.student, acts.teacher
    C4 = _sub_covariance(omega, k, l, a, b)
    if b < K:
        return F4(s, s, s, s, C4, nodes, weights)
    if a < K:
        return F4(s, s, s, t, C4, nodes, weights)
    return F4(s, s, t, t, C4, nodes, weights)


@njit(cache=True)
def _f4_gradient(acts, omega, K, k, l, a, b, nodes, weights):
    """F4_gradient of the fields (lambda_k, lambda_l, z_a, z_b), as ``_f4``."""
    s, t = acts.student, acts.teacher
    C4 = _sub_covariance(omega, k, l, a, b)
    if b < K:
        return F4_gradient(s, s, s, s, C4, nodes, weights)
    if a < K:
        return F4_gradient(s, s, s, t, C4, nodes, weights)
    return F4_gradient(s, s, t, t, C4, nodes, weights)


@njit(cache=True)
def _sorted4(q0, q1, q2, q3):
    """(q0, q1, q2, q3) in increasing order (a sorting network): F and its gradient depend on the
    multiset of the four fields only, and the sorted order keeps two student fields (< K) first."""
    if q1 < q0:
        q0, q1 = q1, q0
    if q3 < q2:
        q2, q3 = q3, q2
    if q2 < q0:
        q0, q2 = q2, q0
    if q3 < q1:
        q1, q3 = q3, q1
    if q2 < q1:
        q1, q2 = q2, q1
    return q0, q1, q2, q3


@njit(cache=True)
def four_point_multisets(K: int, n: int) -> np.ndarray:
    """The sorted index quadruples (k, l, a, b), k <= l < K, l <= a <= b < n: one per multiset of
    four fields with at least two student fields (the entries that ``four_point_tensor``
    computes; ``_sorted4`` keeps the student fields first)."""
    count = 0
    for k in range(K):
        for l in range(k, K):
            for a in range(l, n):
                count += n - a
    out = np.empty((count, 4), dtype=np.int64)
    i = 0
    for k in range(K):
        for l in range(k, K):
            for a in range(l, n):
                for b in range(a, n):
                    out[i, 0], out[i, 1], out[i, 2], out[i, 3] = k, l, a, b
                    i += 1
    return out


@njit(cache=True)
def four_point_orders(sets: np.ndarray, values: np.ndarray, K: int, n: int) -> np.ndarray:
    """F (K x K x n x n) with F[k, l, a, b] = values[i] for every order (k, l, a, b) of the
    multiset sets[i] (``four_point_multisets``) that puts two student fields first."""
    F = np.empty((K, K, n, n))
    for i in range(sets.shape[0]):
        k, l, a, b = sets[i, 0], sets[i, 1], sets[i, 2], sets[i, 3]
        for q in ((k, l, a, b), (k, a, l, b), (k, b, l, a), (l, a, k, b), (l, b, k, a),
                  (a, b, k, l)):
            if q[0] < K and q[1] < K:
                for x, y in ((q[0], q[1]), (q[1], q[0])):
                    F[x, y, q[2], q[3]] = F[x, y, q[3], q[2]] = values[i]
    return F


@njit(cache=True)
def four_point_tensor(acts: Activations, omega: np.ndarray, K: int, nodes: np.ndarray,
                      weights: np.ndarray) -> np.ndarray:
    """F[k, l, a, b] = E[g(lambda_k) g(lambda_l) g(z_a) g(z_b)] for k, l < K and all fields a, b
    (``F4`` of the activations), computed once per multiset of the four fields
    (``four_point_multisets``) and copied to the other orders (``four_point_orders``)."""
    n = omega.shape[0]
    sets = four_point_multisets(K, n)
    values = np.empty(sets.shape[0])
    for i in range(sets.shape[0]):
        values[i] = _f4(acts, omega, K, sets[i, 0], sets[i, 1], sets[i, 2], sets[i, 3], nodes,
                        weights)
    return four_point_orders(sets, values, K, n)


@njit(cache=True, parallel=True)
def four_point_tensor_threads(student, teacher, omega: np.ndarray, K: int, nodes: np.ndarray,
                              weights: np.ndarray) -> np.ndarray:
    """``four_point_tensor`` with the multisets in numba's threads (the path quadratures are
    independent; the few-shot right-hand side's serial part), for code that starts the threads
    (``fewshot_flow``): the activations as their two markers, as ``support_statistics``."""
    n = omega.shape[0]
    sets = four_point_multisets(K, n)
    values = np.empty(sets.shape[0])
    for i in prange(sets.shape[0]):
        values[i] = _f4(Activations(student, teacher), omega, K, sets[i, 0], sets[i, 1],
                        sets[i, 2], sets[i, 3], nodes, weights)
    return four_point_orders(sets, values, K, n)


@njit(cache=True)
def four_point_pullback(acts: Activations, omega: np.ndarray, K: int, Fbar: np.ndarray,
                        nodes: np.ndarray, weights: np.ndarray):
    """(G, H) contributions of sum_klab Fbar_klab F_klab(Omega), in the convention of
    ``theory.flow.chain_to_overlaps`` (G symmetrised: G_kl = 1/2 dL/d(pair kl) for k != l).
    The weights of the orders of one multiset of fields are summed first, so that its gradient
    (``F4_gradient``) is computed once."""
    n = omega.shape[0]
    total = np.zeros((K, K, n, n))  # summed weight at the sorted indices of each multiset
    for k in range(K):
        for l in range(K):
            for a in range(n):
                for b in range(n):
                    q0, q1, q2, q3 = _sorted4(k, l, a, b)
                    total[q0, q1, q2, q3] += Fbar[k, l, a, b]
    pair = np.zeros((n, n))  # derivative along each symmetric pair {i, j}, stored at i <= j
    for k in range(K):
        for l in range(k, K):
            for a in range(l, n):
                for b in range(a, n):
                    wgt = total[k, l, a, b]
                    if wgt == 0.0:
                        continue
                    idx = (k, l, a, b)
                    grad = _f4_gradient(acts, omega, K, k, l, a, b, nodes, weights)
                    for p in range(4):
                        for q in range(p, 4):
                            i, j = min(idx[p], idx[q]), max(idx[p], idx[q])
                            pair[i, j] += wgt * grad[p, q]
    M = n - K
    G = np.zeros((K, K))
    H = np.zeros((K, M))
    for k in range(K):
        G[k, k] = pair[k, k]
        for l in range(k + 1, K):
            G[k, l] = G[l, k] = 0.5 * pair[k, l]
        for m in range(M):
            H[k, m] = pair[k, K + m]
    return G, H


@njit(cache=True)
def second_moment_of_signs(w: np.ndarray, u0: np.ndarray, task_std: float) -> np.ndarray:
    """E_u[c c^T] for c = (w, -u), u ~ N(u0, task_std^2 I)."""
    K, M = w.shape[0], u0.shape[0]
    cbar = np.empty(K + M)
    cbar[:K] = w
    cbar[K:] = -u0
    M2 = np.outer(cbar, cbar)
    for m in range(M):
        M2[K + m, K + m] += task_std * task_std
    return M2


@njit(cache=True)
def support_fluctuation(C, D, F, w, u0, task_std, noise):
    """Moments of the one-step support gradient ghat0 = mean_p phi_p Delta0_p (module docstring).

    Returns (E[c c^T], Y, v0, E_u[v v^T], Xi) with Y_kl = sum_ab E[c_a c_b] F_klab, v0 = C w - D u0
    and Xi = E_u[sum_kl C_kl (Y_kl + noise^2 C_kl) - v^T C v], so that P Cov_S(ghat0) averaged over
    tasks is Y + noise^2 C - E_u[v v^T] and E_u tr(C Cov_S ghat0) = Xi / P.
    """
    K = C.shape[0]
    M2 = second_moment_of_signs(w, u0, task_std)
    Y = np.zeros((K, K))
    for k in range(K):
        for l in range(K):
            Y[k, l] = np.sum(M2 * F[k, l])
    v0 = C @ w - D @ u0
    DDt = D @ D.T
    Evv = np.outer(v0, v0) + task_std**2 * DDt
    xi = np.sum(C * (Y + noise**2 * C)) - v0 @ C @ v0 - task_std**2 * np.sum(C * DDt)
    return M2, Y, v0, Evv, xi


@njit(cache=True)
def one_step_test_quadratic(acts, Q, R, T, w, u0, task_std, noise, P, nodes, weights):
    """(L0, b, a) with E_{tau,S} eps(w - eta ghat0; u) = L0 - eta b + 1/2 eta^2 a, exactly:
    b = E_u |v|^2 and a = E_u[v^T C v] + Xi / P (P = 0 means the population support, Xi / P = 0).
    The error after one test step is minimal at eta* = b / a."""
    F = four_point_tensor(acts, field_covariance(Q, R, T), R.shape[0], nodes, weights)
    return one_step_quadratic(acts, Q, R, T, w, u0, task_std, noise, P, F)


@njit(cache=True)
def one_step_quadratic(acts, Q, R, T, w, u0, task_std, noise, P, F):
    """``one_step_test_quadratic`` with the four-point tensor F of Omega given."""
    C, D, E = error_blocks(acts, Q, R, T)
    _, _, v0, Evv, xi = support_fluctuation(C, D, F, w, u0, task_std, noise)
    U, S = task_basis(u0, task_std)
    Zs = inner_loop(C, D, w, U, 0.0, np.int64(0))  # np.int64: a literal 0 compiles its own copy
    L0 = meta_loss(Zs[0], C, D, E, U, S)
    b = np.trace(Evv)
    a = np.sum(C * Evv) + (xi / P if P > 0 else 0.0)
    return L0, b, a


@njit(cache=True)
def one_step_loss_and_gradient(acts, Q, R, T, w, u0, task_std, noise, inner_lr, P, second_order,
                               nodes, weights):
    """(L_P, G, H, wbar) for inner_steps = 1 on P support examples, exact (module docstring)."""
    F = four_point_tensor(acts, field_covariance(Q, R, T), R.shape[0], nodes,
                          weights)
    return one_step_terms(acts, Q, R, T, w, u0, task_std, noise, inner_lr, P, second_order, F,
                          nodes, weights)


@njit(cache=True)
def one_step_terms(acts, Q, R, T, w, u0, task_std, noise, inner_lr, P, second_order, F, nodes,
                   weights):
    """``one_step_loss_and_gradient`` with the four-point tensor F of Omega given."""
    K, M = R.shape
    C, D, E = error_blocks(acts, Q, R, T)
    U, S = task_basis(u0, task_std)
    # np.int64: a literal 1 would compile a second meta_gradient (and inner_loop) per activation
    G, H, wbar, Zs = meta_gradient(acts, Q, R, T, w, U, S, inner_lr, np.int64(1), second_order)
    loss = meta_loss(Zs[1], C, D, E, U, S)
    omega = field_covariance(Q, R, T)
    M2, Y, v0, Evv, xi = support_fluctuation(C, D, F, w, u0, task_std, noise)
    coef = inner_lr * inner_lr / (2.0 * P)
    loss += coef * xi
    if not second_order:
        # first order: only Cbar = 1/2 E[w' w'^T] changes, by 1/2 Cov_S(w')
        cov = 2.0 * coef * (Y + noise**2 * C - Evv)
        G2, H2 = chain_to_overlaps(acts, Q, R, T, 0.5 * cov, np.zeros((K, M)))
        return loss, G + G2, H + H2, wbar
    Cv0 = C @ v0
    dV_dC = 2.0 * np.outer(Cv0, w) + Evv
    dV_dD = -2.0 * np.outer(Cv0, u0) + 2.0 * task_std**2 * (C @ D)
    Cbar = coef * (Y + 2.0 * noise**2 * C - dV_dC)
    Dbar = -coef * dV_dD
    G2, H2 = chain_to_overlaps(acts, Q, R, T, Cbar, Dbar)
    Fbar = np.empty_like(F)
    for k in range(K):
        for l in range(K):
            Fbar[k, l] = coef * C[k, l] * M2
    G3, H3 = four_point_pullback(acts, omega, K, Fbar, nodes, weights)
    # dXi/dw: sum_ab Y'_ab E[c_a c_b] depends on w through cbar; Y'_ab = sum_kl C_kl F_klab
    Yp = np.zeros((K + M, K + M))
    for k in range(K):
        for l in range(K):
            Yp += C[k, l] * F[k, l]
    cbar = np.empty(K + M)
    cbar[:K] = w
    cbar[K:] = -u0
    dxi_dw = 2.0 * (Yp @ cbar)[:K] - 2.0 * C @ Cv0
    return loss, G + G2 + G3, H + H2 + H3, wbar + coef * dxi_dw


@njit(cache=True)
def fewshot_estimate(flow, Q: np.ndarray, R: np.ndarray, w: np.ndarray, lr2_term: bool):
    """(loss and drift vector of ``drift_vector``, Phi) at (Q, R, w) on the flow's support sets;
    Phi only with ``lr2_term`` (zero otherwise).

    inner_steps = 1: the loss and drift are exact (``one_step_terms``), the Monte Carlo gives Phi
    alone. inner_steps > 1: the loss and drift are Monte Carlo means corrected by the control
    variates of known mean (``support_statistics``, ``controlled_mean``): the one-step terms
    (mean ``one_step_terms``) and the support moments (mean C and D). Phi is the Monte Carlo mean
    of the support sets' Phi (``query_diffusion``, ``support_diffusion``) corrected by the support
    moments. maml (``flow.maml``, docs/model.md §11): with inner_steps > 1 every support set's
    responses also carry its maml - anil difference (``support_mc.maml_difference``), in the same
    pass and with the same controls; with one inner step maml is few-shot anil exactly.
    """
    K, M, T = flow.K, flow.M, flow.T
    C, D, E = error_blocks(flow.acts, Q, R, T)
    omega = field_covariance(Q, R, T)
    F = four_point_tensor_threads(flow.acts.student, flow.acts.teacher, omega, K, flow.nodes,
                                  flow.weights)
    loss1, G1, H1, wbar1 = one_step_terms(flow.acts, Q, R, T, w, flow.u0, flow.task_std,
                                          flow.noise, flow.inner_lr, flow.P, flow.second_order,
                                          F, flow.nodes, flow.weights)
    drift = drift_vector(loss1, G1, H1, np.zeros((K, K)), np.zeros((K, M)), wbar1, Q, R, T)
    phi = np.zeros((K, K))
    several = flow.steps > 1
    if not (several or lr2_term):
        return drift, phi
    L = drift_map(flow.acts, Q, R, T, K, M) if several else np.zeros((0, terms_size(K, M)))
    mean_h, mean_r, S_hh, S_hr = support_statistics(
        flow.acts.student, flow.acts.teacher, Q, R, T, w, flow.u0, flow.task_std, flow.noise,
        flow.inner_lr, flow.steps, flow.second_order, flow.query, flow.fields, flow.task, C, D, E,
        F, L, drift, several, lr2_term, flow.maml and several, np.bool_(False))
    nx = L.shape[0] if several else 0
    size = terms_size(K, M) if several else 0
    n = flow.fields.shape[0]
    if several:
        first = np.int64(0)  # not a literal 0: one compiled controlled_mean for both calls
        drift = drift_of_terms(flow.acts, controlled_mean(mean_h, mean_r, S_hh, S_hr, first,
                                                          mean_h.shape[0], first, size, n),
                               Q, R, T, K, M)
    if lr2_term:
        packed = controlled_mean(mean_h, mean_r, S_hh, S_hr, nx, mean_h.shape[0], size,
                                 mean_r.shape[0], n)
        i = 0
        for k in range(K):
            for l in range(k, K):
                phi[k, l] = phi[l, k] = packed[i]
                i += 1
    return drift, phi


@njit(cache=True)
def fewshot_loss(flow, Q: np.ndarray, R: np.ndarray, w: np.ndarray) -> float:
    """The meta-loss L_P at (Q, R, w) on the flow's support sets, without the drift (the
    observables' error).

    inner_steps = 1: exact, L0 - inner_lr b + 1/2 inner_lr^2 a of ``one_step_quadratic``
    (the loss of ``one_step_terms`` without its gradient). inner_steps > 1 (anil): the Monte Carlo
    mean of the sets' loss after all steps controlled by their loss after one step (of known mean,
    the exact one-step loss) and the support moments: a pass of ``support_statistics`` with
    ``loss_only``, without the backward passes of the drift; maml: ``fewshot_estimate``'s loss.
    """
    if flow.maml and flow.steps > 1:
        return fewshot_estimate(flow, Q, R, w, np.bool_(False))[0][0]
    T = flow.T
    F = four_point_tensor_threads(flow.acts.student, flow.acts.teacher, field_covariance(Q, R, T),
                                  R.shape[0], flow.nodes, flow.weights)
    L0, b, a = one_step_quadratic(flow.acts, Q, R, T, w, flow.u0, flow.task_std, flow.noise,
                                  flow.P, F)
    loss1 = L0 - flow.inner_lr * b + 0.5 * flow.inner_lr * flow.inner_lr * a
    if flow.steps <= 1:  # no inner step: the loss of w, L0 (eta = 0)
        return loss1 if flow.steps == 1 else L0
    K, M = R.shape
    C, D, E = error_blocks(flow.acts, Q, R, T)
    known = np.full(1, loss1)
    no = np.bool_(False)  # not literals: the compiled support_statistics of fewshot_estimate
    mean_h, mean_r, S_hh, S_hr = support_statistics(
        flow.acts.student, flow.acts.teacher, Q, R, T, w, flow.u0, flow.task_std, flow.noise,
        flow.inner_lr, flow.steps, flow.second_order, flow.query, flow.fields, flow.task, C, D, E,
        np.zeros((K, K, K + M, K + M)), np.zeros((1, terms_size(K, M))), known, no, no, no,
        np.bool_(True))
    first = np.int64(0)
    return controlled_mean(mean_h, mean_r, S_hh, S_hr, first, mean_h.shape[0], first,
                           np.int64(1), flow.fields.shape[0])[0]


class FewShotFlow(NamedTuple):
    """The parameters of the few-shot ANIL ODEs and their support sets (``fields``, ``task`` of a
    ``SupportSample``): the compiled form of ``FewShotANILSystem`` (``fewshot_estimate``); with
    ``maml`` that of ``theory.maml.MAMLSystem`` (the inner loop moves the support fields too)."""

    acts: Activations
    K: int
    M: int
    T: np.ndarray
    u0: np.ndarray
    task_std: float
    noise: float
    inner_lr: float
    steps: int
    second_order: bool
    lr: float
    lr_head: float
    query: int
    meta_batch: int
    P: int
    nodes: np.ndarray
    weights: np.ndarray
    fields: np.ndarray
    task: np.ndarray
    maml: bool


@overload(flow_rhs)
def _fewshot_flow_rhs(flow, y):
    """dy/dalpha = ``theory.flow.flow_of_drift`` of the estimated drift and Phi with batch =
    meta_batch (Phi already holds the query average; docs/model.md §9.3, ``theory.support_mc``)."""
    if is_flow(flow, FewShotFlow):
        def rhs(flow, y):
            Q, R, w = unpack(y, flow.K, flow.M)
            # np.bool_: a bare True would be typed Literal[bool](True), and the observables'
            # False another literal: two compilations of the whole Monte Carlo (~90 s each)
            drift, phi = fewshot_estimate(flow, Q, R, w, np.bool_(True))
            return flow_of_drift(drift[1:], phi, flow.lr, flow.lr_head, flow.meta_batch)
        return rhs


@overload(flow_observables)
def _fewshot_flow_observables(flow, y):
    """error = L_P (``fewshot_loss``), error_before_adaptation = the population error of w, and
    ``theory.fields.common_observables``."""
    if is_flow(flow, FewShotFlow):
        def observables(flow, y):
            Q, R, w = unpack(y, flow.K, flow.M)
            out = np.empty(4 + flow.K)
            out[0] = fewshot_loss(flow, Q, R, w)
            out[1] = metatest_errors(flow.acts, Q, R, flow.T, w, flow.u0, flow.task_std,
                                     flow.inner_lr, np.int64(0))[0]  # as anil's: one compile
            common_observables(flow.acts, Q, R, flow.T, flow.u0, flow.task_std, out)
            return out
        return observables


def fewshot_flow(config: Config, sample: SupportSample) -> FewShotFlow:
    """The ``FewShotFlow`` of a config on the support sets of ``sample``.

    Starts numba's threads (``numba.get_num_threads``): a cached compiled function that calls the
    parallel ``support_statistics`` does not start them itself when loaded from the cache, and
    then crashes (numba issue #8578)."""
    numba.get_num_threads()
    te, tr = config.teacher, config.training
    nodes, weights = path_rule(config.theory.quadrature_nodes)
    return FewShotFlow(
        config.activations, int(config.K), int(config.M),
        np.ascontiguousarray(te.T, dtype=float), np.ascontiguousarray(te.u0, dtype=float),
        float(te.task_std), float(te.noise), float(tr.inner_lr), int(tr.inner_steps),
        tr.order == "second", float(tr.lr), float(tr.lr_head), int(tr.query),
        int(tr.meta_batch), int(tr.support), np.ascontiguousarray(nodes, dtype=float),
        np.ascontiguousarray(weights, dtype=float), sample.fields, sample.task,
        tr.algorithm == "maml")


def require_four_point(config: Config) -> None:
    """TheoryUnavailable (a ConfigError) for an activation whose module does not implement the
    four-point moments F4 (``Activation.four_point``; ReLU): the few-shot theory cannot be built
    for it, nor its simulation run, which records the theory's observables of its overlaps."""
    for role in ("student", "teacher"):
        name = getattr(config, role).activation
        if not activation(name).four_point:
            raise TheoryUnavailable(f"{role}.activation",
                              f"the few-shot theory (a finite training.support) needs the "
                              f"four-point moments F4 of the activation, which {name!r} does not "
                              f"implement yet (nor can its simulation run: it records the "
                              f"theory's errors of its overlaps); training.support = "
                              f"'population' runs")


class FewShotANILSystem(ODESystem):
    """The ANIL ODEs with P support examples per task (module docstring, ``theory.support_mc``).

    inner_steps = 1: loss and drift exact (four-point moments by quadrature), the lr^2 term by
    Monte Carlo over the support fields. inner_steps > 1: loss, drift and lr^2 term by that Monte
    Carlo, the loss and drift with the exact one-step terms as control variates. ``sample`` is the
    set of support sets of the estimate (default: ``theory.mc_tasks`` of them, all streams); the
    solver (``solvers.integrate.solve``) integrates the streams one by one for the trajectory's
    uncertainty and raises the budget until ``theory.mc_rtol`` is met. Right-hand side and
    observables are those of the compiled flow (``FewShotFlow``).
    """

    monte_carlo = True

    def __init__(self, config: Config, sample: SupportSample | None = None):
        require_four_point(config)
        super().__init__(config)
        self.sample = self.sample_of(config.theory.mc_tasks) if sample is None else sample
        self.flow = fewshot_flow(config, self.sample)

    def sample_of(self, budget: int) -> SupportSample:
        """About ``budget`` support sets in ``theory.mc_streams`` streams (``support_sample``)."""
        th = self.config.theory
        return support_sample(self.K, self.M, self.config.training.support,
                              np.ascontiguousarray(self.config.teacher.u0, dtype=float), self.T,
                              budget, th.mc_streams, th.mc_seed)

    def with_budget(self, budget: int) -> FewShotANILSystem:
        """The same system estimated on about ``budget`` support sets."""
        return type(self)(self.config, self.sample_of(budget))

    def stream_systems(self) -> list[FewShotANILSystem]:
        """One system per stream of the sample, each estimated on that stream's points alone."""
        return [type(self)(self.config, self.sample.only(b)) for b in range(self.sample.streams)]


def anil_system(config: Config) -> ODESystem:
    """The anil theory: population support (``theory.anil.ANILSystem``) or P examples
    (``FewShotANILSystem``); the ``metaode.algorithms`` entry of anil. Without an inner step the
    support set is never used (w' = w), and the population theory is exact for every P."""
    if config.training.support == "population" or config.training.inner_steps == 0:
        return ANILSystem(config)
    return FewShotANILSystem(config)
