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

from theory.activation import g, g_prime
from theory.anil import (
    chain_to_overlaps,
    inner_loop,
    meta_gradient,
    meta_loss,
    metatest_errors,
)
from theory.config import Config
from theory.erf_kernels import J2
from theory.fields import (
    error_blocks,
    field_covariance,
    signed_i4_tensor,
    task_basis,
)
from theory.fourpoint import four_point, pair_i4, path_rule
from theory.state import pack, unpack
from theory.system import ODESystem

_PAIRS = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1))


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
def one_step_test_quadratic(Q, R, T, w, u0, task_std, noise, P, nodes, weights):
    """(L0, b, a) with E_{tau,S} eps(w - eta ghat0; u) = L0 - eta b + 1/2 eta^2 a, exactly:
    b = E_u |v|^2 and a = E_u[v^T C v] + Xi / P (P = 0 means the population support, Xi / P = 0).
    The error after one test step is minimal at eta* = b / a."""
    K = R.shape[0]
    C, D, E = error_blocks(Q, R, T)
    F = four_point_tensor(field_covariance(Q, R, T), K, nodes, weights)
    _, _, v0, Evv, xi = support_fluctuation(C, D, F, w, u0, task_std, noise)
    U, S = task_basis(u0, task_std)
    Zs = inner_loop(C, D, w, U, 0.0, 0)
    L0 = meta_loss(Zs[0], C, D, E, U, S)
    b = np.trace(Evv)
    a = np.sum(C * Evv) + (xi / P if P > 0 else 0.0)
    return L0, b, a


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
    M2, Y, v0, Evv, xi = support_fluctuation(C, D, F, w, u0, task_std, noise)
    coef = inner_lr * inner_lr / (2.0 * P)
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


@njit(cache=True)
def _inner_forward(phi, y, w, inner_lr, steps):
    """Heads w^(0..s) of the inner loop on the support set (phi: P x K features, y: labels)."""
    P, K = phi.shape
    ws = np.empty((steps + 1, K))
    ws[0] = w
    for r in range(steps):
        resid = phi @ ws[r] - y
        ws[r + 1] = ws[r] - (inner_lr / P) * (phi.T @ resid)
    return ws


@njit(cache=True)
def _inner_backward(phi, y, ws, inner_lr, wbar_s):
    """Reverse pass of ``_inner_forward``: cotangent on w^(s) -> (phibar (P x K), wbar^(0))."""
    P, K = phi.shape
    steps = ws.shape[0] - 1
    phibar = np.zeros((P, K))
    wb = wbar_s.copy()
    for r in range(steps - 1, -1, -1):
        resid = phi @ ws[r] - y
        proj = phi @ wb
        for p in range(P):
            phibar[p] -= (inner_lr / P) * (wb * resid[p] + proj[p] * ws[r])
        wb = wb - (inner_lr / P) * (phi.T @ proj)
    return phibar, wb


@njit(cache=True)
def monte_carlo_terms(Q, R, T, w, u0, task_std, noise, inner_lr, steps, P, query, second_order,
                      xi_task, xi_fields, zeta, nodes, weights):
    """Monte Carlo (common random numbers) over tasks and support fields of every ODE term.

    For sample i: u = u0 + task_std xi_task[i], support fields z_p = L xi_fields[i, p] with
    Omega = L L^T, labels y_p = u . g(nu_p) + noise zeta[i, p]; the inner loop gives w' and the
    query loss has the exact mean eps(w'; u) and gradient gbar = C w' - D u at w'. Returns the means
    over samples of:
      loss            eps(w'; u), and its standard error;
      Cbar, Dbar      1/2 w' w'^T and -w' u^T (the query-field part of the J gradient);
      SQ, SR, wbar    sum_p lambdabar_p lambda_p^T, sum_p lambdabar_p nu_p^T and dL/dw (second
                      order: backpropagated through the inner loop; first order: SQ = SR = 0,
                      wbar = gbar);
      Phi             the lr^2 term per task (multiply by lr^2 / meta_batch): the query part
                      E_x[Delta^2 w'_k w'_l g'_k g'_l] / query = y_k y_l (y^T W_kl y + noise^2
                      J2_kl) / query with y = (w', u) (``theory.fields.signed_i4_tensor``), plus
                      the support part sum_p E[lambdabar_p lambdabar_p^T] over the query noise
                      (second order only): lambdabar_p = Jac_p ghat is linear in the task's query
                      gradient ghat = mean_q Delta_q g(lambda_q), whose second moment is
                      Gamma = gbar gbar^T (1 - 1/query)
                              + (sum_ab c_a c_b F_..ab + noise^2 C) / query;
      and the standard error of tr(Phi) per unit of its mean.
    """
    K, M = R.shape
    n = K + M
    C, D, E = error_blocks(Q, R, T)
    omega = field_covariance(Q, R, T)
    L = covariance_factor(omega)
    W = signed_i4_tensor(omega, K)
    F = four_point_tensor(omega, K, nodes, weights) if second_order else np.zeros((K, K, n, n))
    n_mc = xi_task.shape[0]
    loss_sum = loss_sq = 0.0
    Cbar = np.zeros((K, K))
    Dbar = np.zeros((K, M))
    SQ = np.zeros((K, K))
    SR = np.zeros((K, M))
    wbar = np.zeros(K)
    PhiQ = np.zeros((K, K))
    SD = np.zeros((K, K))
    unit = np.eye(K)
    J2mat = np.empty((K, K))
    for k in range(K):
        for l in range(K):
            J2mat[k, l] = J2(omega[k, k], omega[l, l], omega[k, l])
    tr_sum = tr_sq = 0.0
    y_pair = np.empty(n)
    c = np.empty(n)
    for i in range(n_mc):
        u = u0 + task_std * xi_task[i]
        z = xi_fields[i] @ L.T  # P x n
        lam = z[:, :K]
        phi = np.empty((P, K))
        gp = np.empty((P, K))
        for p in range(P):
            for k in range(K):
                phi[p, k] = g(lam[p, k])
                gp[p, k] = g_prime(lam[p, k])
        labels = np.empty(P)
        for p in range(P):
            acc = 0.0
            for m in range(M):
                acc += u[m] * g(z[p, K + m])
            labels[p] = acc + noise * zeta[i, p]
        ws = _inner_forward(phi, labels, w, inner_lr, steps)
        wp = ws[steps]
        gbar = C @ wp - D @ u
        eps = 0.5 * wp @ (C @ wp) - wp @ (D @ u) + 0.5 * u @ (E @ u)
        loss_sum += eps
        loss_sq += eps * eps
        Cbar += 0.5 * np.outer(wp, wp)
        Dbar -= np.outer(wp, u)
        y_pair[:K] = wp
        y_pair[K:] = u
        c[:K] = wp
        c[K:] = -u
        tr_i = 0.0
        for k in range(K):
            for l in range(K):
                ywy = 0.0  # y^T W[k, l] y
                for a in range(n):
                    for b in range(n):
                        ywy += W[k, l, a, b] * y_pair[a] * y_pair[b]
                contrib = y_pair[k] * y_pair[l] * (ywy + noise**2 * J2mat[k, l])
                PhiQ[k, l] += contrib
                if k == l:
                    tr_i += contrib / query
        if second_order:
            phibar, w0bar = _inner_backward(phi, labels, ws, inner_lr, gbar)
            lb = phibar * gp
            SQ += lb.T @ lam
            SR += lb.T @ z[:, K:]
            wbar += w0bar
            # Gamma = E[ghat ghat^T] over the task's query examples
            Gamma = np.empty((K, K))
            for k in range(K):
                for l in range(K):
                    cfc = 0.0
                    for a in range(n):
                        for b in range(n):
                            cfc += F[k, l, a, b] * c[a] * c[b]
                    Gamma[k, l] = (gbar[k] * gbar[l] * (1.0 - 1.0 / query)
                                   + (cfc + noise**2 * C[k, l]) / query)
            # lambdabar_p = Jac_p ghat (linear): columns from K unit cotangents
            jac = np.empty((P, K, K))
            for j in range(K):
                pb, _ = _inner_backward(phi, labels, ws, inner_lr, unit[j])
                jac[:, :, j] = pb * gp
            for p in range(P):
                contrib = jac[p] @ Gamma @ jac[p].T
                SD += contrib
                tr_i += np.trace(contrib)
        else:
            wbar += gbar
        tr_sum += tr_i
        tr_sq += tr_i * tr_i
    inv = 1.0 / n_mc
    loss = loss_sum * inv
    loss_se = np.sqrt(max(loss_sq * inv - loss * loss, 0.0) * inv)
    tr_mean = tr_sum * inv
    tr_rel_se = np.sqrt(max(tr_sq * inv - tr_mean**2, 0.0) * inv) / max(abs(tr_mean), 1e-300)
    return (loss, loss_se, Cbar * inv, Dbar * inv, SQ * inv, SR * inv, wbar * inv,
            PhiQ * inv / query + SD * inv, tr_rel_se)


@njit(cache=True)
def monte_carlo_adaptation_curve(Q, R, T, w, u0, task_std, noise, inner_lr, steps, P, xi_task,
                                 xi_fields, zeta):
    """E_{tau,S} eps(w^(r); u) for r = 0..steps on P support examples, and standard errors."""
    K, M = R.shape
    C, D, E = error_blocks(Q, R, T)
    L = covariance_factor(field_covariance(Q, R, T))
    n_mc = xi_task.shape[0]
    s1 = np.zeros(steps + 1)
    s2 = np.zeros(steps + 1)
    for i in range(n_mc):
        u = u0 + task_std * xi_task[i]
        z = xi_fields[i] @ L.T
        phi = np.empty((P, K))
        labels = np.empty(P)
        for p in range(P):
            for k in range(K):
                phi[p, k] = g(z[p, k])
            acc = 0.0
            for m in range(M):
                acc += u[m] * g(z[p, K + m])
            labels[p] = acc + noise * zeta[i, p]
        ws = _inner_forward(phi, labels, w, inner_lr, steps)
        for r in range(steps + 1):
            eps = 0.5 * ws[r] @ (C @ ws[r]) - ws[r] @ (D @ u) + 0.5 * u @ (E @ u)
            s1[r] += eps
            s2[r] += eps * eps
    mean = s1 / n_mc
    return mean, np.sqrt(np.maximum(s2 / n_mc - mean * mean, 0.0) / n_mc)


def common_random_numbers(n_tasks: int, P: int, K: int, M: int,
                          seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard normals (task heads xi, support fields, label noise) reused at every state."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_tasks, M)), rng.standard_normal((n_tasks, P, K + M)),
            rng.standard_normal((n_tasks, P)))


class FewShotANILSystem(ODESystem):
    """The ANIL ODEs with P support examples per task (module docstring).

    inner_steps = 1: loss and drift exact (four-point moments by quadrature); the diffusion term
    by Monte Carlo. inner_steps > 1: loss, drift and diffusion by Monte Carlo over
    ``theory.mc_tasks`` support sets with common random numbers. The observables
    ``error_mc_stderr`` (0 where exact) and ``diffusion_mc_rel_stderr`` report the Monte Carlo
    error at every record.
    """

    def __init__(self, config: Config):
        super().__init__(config)
        te, tr, th = config.teacher, config.training, config.theory
        self.u0 = np.ascontiguousarray(te.u0, dtype=float)
        self.task_std, self.noise = float(te.task_std), float(te.noise)
        self.inner_lr, self.steps, self.P = float(tr.inner_lr), int(tr.inner_steps), tr.support
        self.second = tr.order == "second"
        self.lr, self.lr_head = float(tr.lr), float(tr.lr_head)
        self.query, self.meta_batch = int(tr.query), int(tr.meta_batch)
        self.nodes, self.weights = path_rule(th.quadrature_nodes)
        self.crn = common_random_numbers(th.mc_tasks, self.P, self.K, self.M, th.mc_seed)

    def _terms(self, Q, R, w):
        return monte_carlo_terms(Q, R, self.T, w, self.u0, self.task_std, self.noise,
                                 self.inner_lr, self.steps, self.P, self.query, self.second,
                                 *self.crn, self.nodes, self.weights)

    def rhs(self, alpha: float, y: np.ndarray) -> np.ndarray:
        Q, R, w = unpack(y, self.K, self.M)
        (_, _, Cbar, Dbar, SQ, SR, wbar, phi, _) = self._terms(Q, R, w)
        if self.steps == 1:
            _, G, H, wbar = one_step_loss_and_gradient(
                Q, R, self.T, w, self.u0, self.task_std, self.noise, self.inner_lr, self.P,
                self.second, self.nodes, self.weights)
            SQ, SR = np.zeros_like(SQ), np.zeros_like(SR)
        else:
            G, H = chain_to_overlaps(Q, R, self.T, Cbar, Dbar)
        X = 2.0 * G @ Q + H @ R.T + SQ
        dQ = -self.lr * (X + X.T) + self.lr**2 / self.meta_batch * phi
        dR = -self.lr * (2.0 * G @ R + H @ self.T + SR)
        return pack(dQ, dR, -self.lr_head * wbar)

    def observables(self, y: np.ndarray) -> dict[str, float]:
        Q, R, w = unpack(y, self.K, self.M)
        loss, loss_se, *_, tr_rel_se = self._terms(Q, R, w)
        if self.steps == 1:
            loss_se = 0.0
            loss = one_step_loss_and_gradient(
                Q, R, self.T, w, self.u0, self.task_std, self.noise, self.inner_lr, self.P,
                self.second, self.nodes, self.weights)[0]
        before = metatest_errors(Q, R, self.T, w, self.u0, self.task_std, self.inner_lr, 0)[0]
        return {"error": float(loss), "error_before_adaptation": float(before),
                "error_mc_stderr": float(loss_se), "diffusion_mc_rel_stderr": float(tr_rel_se),
                **self.common_observables(Q, R, w)}
