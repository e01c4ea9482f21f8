"""Few-shot ANIL: the inner loop on P support examples (MODEL.md §3 "anil", §4 last point).

With a finite support set the adapted head is random. For one task (head u, c = (w, -u)) write
phi_p = g(lambda_p), psi_p = g(nu_p) for the fields of the P support examples,
C^ = mean_p phi_p phi_p^T, D^ = mean_p phi_p psi_p^T, n^ = noise mean_p zeta_p phi_p; then
w^(r+1) = (I - inner_lr C^) w^(r) + inner_lr (D^ u + n^).

Exact part (inner_steps = 1). w' = w - inner_lr mean_p phi_p Delta0_p with
Delta0 = phi . w - psi . u - noise zeta, whose mean is v = C w - D u, so E_S w' is the population
adapted head and Cov_S w' = (inner_lr^2 / P) (E[phi phi^T Delta0^2] - v v^T), with
E[phi_k phi_l Delta0^2] = sum_ab c_a c_b F_klab + noise^2 C_kl and F_klab = E[g(z_k) g(z_l) g(z_a)
g(z_b)] the four-point moments (theory.fourpoint). As eps is quadratic in w' with Hessian C,

    L_P = L_meta^pop + inner_lr^2 / (2 P) Xi,
    Xi  = E_u[ sum_kl C_kl (sum_ab c_a c_b F_klab + noise^2 C_kl) - v^T C v ],

with E_u exact (c and v are linear in u): E[c c^T] = cbar cbar^T + task_std^2 (0 (+) I_M),
E[v^T C v] = v0^T C v0 + task_std^2 tr(D^T C D), v0 = C w - D u0. Its gradient (the drift) needs
dF/dOmega, which Price's theorem gives in closed form: dF/dC4_pq = E[g'_p g'_q g_r g_s] = I4 for
p != q and dF/dC4_pp = 1/2 E[g''_p g_q g_r g_s] = -1/2 sum_{j != p} C4_pj I4(p, j) / (1 + C4_pp)
(Stein's lemma with g''(z) = -z g'(z)).

Numerical part. The lr^2 (diffusion) term for any inner_steps, and the loss and drift for
inner_steps > 1 (the loss then involves moments of C^ of order 2 s, not four-point moments), are
expectations over the low-dimensional fields of the P support examples and the task; they are
evaluated by Monte Carlo with common random numbers (the same standard normals at every state, so
the right-hand side is a smooth function of (Q, R, w) and adaptive integration works), with the
user's number of sampled tasks and the standard error reported.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from theory.anil import chain_to_overlaps, meta_gradient, meta_loss
from theory.fields import error_blocks, field_covariance, task_basis
from theory.fourpoint import four_point, pair_i4

_PAIRS = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1))


@njit(cache=True)
def _sub_covariance(omega, i0, i1, i2, i3):
    idx = (i0, i1, i2, i3)
    C4 = np.empty((4, 4))
    for p in range(4):
        for q in range(4):
            C4[p, q] = omega[idx[p], idx[q]]
    return C4


@njit(cache=True)
def four_point_tensor(omega: np.ndarray, K: int, nodes: np.ndarray,
                      weights: np.ndarray) -> np.ndarray:
    """F[k, l, a, b] = E[g(lambda_k) g(lambda_l) g(z_a) g(z_b)] for k, l < K and all fields a, b."""
    n = omega.shape[0]
    F = np.empty((K, K, n, n))
    for k in range(K):
        for l in range(k, K):
            for a in range(n):
                for b in range(a, n):
                    v = four_point(_sub_covariance(omega, k, l, a, b), nodes, weights)
                    F[k, l, a, b] = F[l, k, a, b] = F[k, l, b, a] = F[l, k, b, a] = v
    return F


@njit(cache=True)
def four_point_gradient(C4: np.ndarray) -> np.ndarray:
    """dF/dC4 for a 4 x 4 covariance: off-diagonal (p, q) = derivative along the symmetric pair,
    I4(p, q; r, s); diagonal (p, p) = 1/2 E[g''(z_p) ...] = -1/2 sum_j C4_pj I4(p, j) / (1 + C4_pp).
    """
    grad = np.zeros((4, 4))
    for i in range(6):
        p, q, r, s = _PAIRS[i]
        v = pair_i4(C4, p, q, r, s, 1.0)
        grad[p, q] = grad[q, p] = v
    for p in range(4):
        acc = 0.0
        for j in range(4):
            if j != p:
                acc += C4[p, j] * grad[p, j]
        grad[p, p] = -0.5 * acc / (1.0 + C4[p, p])
    return grad


@njit(cache=True)
def four_point_pullback(omega: np.ndarray, K: int, Fbar: np.ndarray):
    """(G, H) contributions of sum_klab Fbar_klab F_klab(Omega), in the convention of
    ``theory.anil.chain_to_overlaps`` (G symmetrised: G_kl = 1/2 dL/d(pair kl) for k != l)."""
    n = omega.shape[0]
    pair = np.zeros((n, n))  # derivative along each symmetric pair {i, j}, stored at i <= j
    for k in range(K):
        for l in range(K):
            for a in range(n):
                for b in range(n):
                    wgt = Fbar[k, l, a, b]
                    if wgt == 0.0:
                        continue
                    idx = (k, l, a, b)
                    grad = four_point_gradient(_sub_covariance(omega, k, l, a, b))
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
def one_step_loss_and_gradient(Q, R, T, w, u0, task_std, noise, inner_lr, P, second_order,
                               nodes, weights):
    """(L_P, G, H, wbar) for inner_steps = 1 on P support examples, exact (module docstring)."""
    K, M = R.shape
    C, D, E = error_blocks(Q, R, T)
    U, S = task_basis(u0, task_std)
    G, H, wbar, Zs = meta_gradient(Q, R, T, w, U, S, inner_lr, 1, second_order)
    loss = meta_loss(Zs[1], C, D, E, U, S)
    omega = field_covariance(Q, R, T)
    F = four_point_tensor(omega, K, nodes, weights)
    M2 = second_moment_of_signs(w, u0, task_std)
    Y = np.zeros((K, K))  # Y_kl = sum_ab E[c_a c_b] F_klab
    for k in range(K):
        for l in range(K):
            Y[k, l] = np.sum(M2 * F[k, l])
    v0 = C @ w - D @ u0
    DDt = D @ D.T
    Evv = np.outer(v0, v0) + task_std**2 * DDt
    coef = inner_lr * inner_lr / (2.0 * P)
    xi = np.sum(C * (Y + noise**2 * C)) - v0 @ C @ v0 - task_std**2 * np.sum(C * DDt)
    loss += coef * xi
    if not second_order:
        # first order: only Cbar = 1/2 E[w' w'^T] changes, by 1/2 Cov_S(w')
        cov = 2.0 * coef * (Y + noise**2 * C - Evv)
        G2, H2 = chain_to_overlaps(Q, R, T, 0.5 * cov, np.zeros((K, M)))
        return loss, G + G2, H + H2, wbar
    Cv0 = C @ v0
    dV_dC = 2.0 * np.outer(Cv0, w) + Evv
    dV_dD = -2.0 * np.outer(Cv0, u0) + 2.0 * task_std**2 * (C @ D)
    Cbar = coef * (Y + 2.0 * noise**2 * C - dV_dC)
    Dbar = -coef * dV_dD
    G2, H2 = chain_to_overlaps(Q, R, T, Cbar, Dbar)
    Fbar = np.empty_like(F)
    for k in range(K):
        for l in range(K):
            Fbar[k, l] = coef * C[k, l] * M2
    G3, H3 = four_point_pullback(omega, K, Fbar)
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
