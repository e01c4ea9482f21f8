"""Local fields and the population error, shared by every algorithm.

The local fields z = (lambda_1..lambda_K, nu_1..nu_M) of one input are jointly Gaussian with
covariance Omega = [[Q, R], [R^T, T]] (docs/model.md §3). Index a < K is student unit a, index
K + m is teacher unit m. The head of the pair network is c = (w, -u), so that the error signal is
Delta = yhat - y = sum_a c_a g(z_a) - noise zeta.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from metaode.theory.activations import I2, I4, J2, Activations


@njit(cache=True)
def field_covariance(Q: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Omega = [[Q, R], [R^T, T]], the covariance of (lambda, nu)."""
    K, M = R.shape
    omega = np.empty((K + M, K + M))
    omega[:K, :K] = Q
    omega[:K, K:] = R
    omega[K:, :K] = R.T
    omega[K:, K:] = T
    return omega


@njit(cache=True)
def i2_matrix(acts: Activations, omega: np.ndarray, K: int) -> np.ndarray:
    """I2(Omega)_ab = E[g_a(z_a) g_b(z_b)], g_a the student's activation for a < K and the
    teacher's for a >= K (erf: (2/pi) asin(Omega_ab / sqrt((1+Omega_aa)(1+Omega_bb))))."""
    n = omega.shape[0]
    out = np.empty((n, n))
    for a in range(n):
        for b in range(a, n):
            if b < K:
                v = I2(acts.student, acts.student, omega[a, a], omega[b, b], omega[a, b])
            elif a < K:
                v = I2(acts.student, acts.teacher, omega[a, a], omega[b, b], omega[a, b])
            else:
                v = I2(acts.teacher, acts.teacher, omega[a, a], omega[b, b], omega[a, b])
            out[a, b] = out[b, a] = v
    return out


@njit(cache=True)
def student_blocks(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray):
    """(C, D) of docs/model.md §3, the blocks a gradient needs: C_kl = I2(s, s; Q_kk, Q_ll, Q_kl),
    D_km = I2(s, t; Q_kk, T_mm, R_km)."""
    K, M = R.shape
    C = np.empty((K, K))
    for k in range(K):
        for l in range(k, K):
            C[k, l] = C[l, k] = I2(acts.student, acts.student, Q[k, k], Q[l, l], Q[k, l])
    D = np.empty((K, M))
    for k in range(K):
        for m in range(M):
            D[k, m] = I2(acts.student, acts.teacher, Q[k, k], T[m, m], R[k, m])
    return C, D


@njit(cache=True)
def error_blocks(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray):
    """(C, D, E) of docs/model.md §3: ``student_blocks`` and E_mn = I2(t, t; T_mm, T_nn, T_mn)."""
    C, D = student_blocks(acts, Q, R, T)
    M = T.shape[0]
    E = np.empty((M, M))
    for m in range(M):
        for n in range(m, M):
            E[m, n] = E[n, m] = I2(acts.teacher, acts.teacher, T[m, m], T[n, n], T[m, n])
    return C, D, E


@njit(cache=True)
def meta_loss(Z: np.ndarray, C: np.ndarray, D: np.ndarray, E: np.ndarray, U: np.ndarray,
              S: np.ndarray) -> float:
    """E_e eps(Z e; U e) = 1/2 tr(S Z^T C Z) - tr(S Z^T D U) + 1/2 tr(S U^T E U): the square
    loss 1/2 E[Delta^2] of heads linear in a Gaussian e with E[e e^T] = diag(S), the one loss of
    every algorithm (one fixed head: Z = w, U = u, S = 1)."""
    quad = np.sum(Z * (0.5 * (C @ Z) - D @ U), axis=0) + 0.5 * np.sum(U * (E @ U), axis=0)
    return float(np.sum(S * quad))


@njit(cache=True)
def population_error(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray,
                     w: np.ndarray, u: np.ndarray) -> float:
    """eps(w; u) = 1/2 [w^T C w - 2 w^T D u + u^T E u] (``meta_loss`` of one head), without
    the noise^2 / 2 floor."""
    C, D, E = error_blocks(acts, Q, R, T)
    return meta_loss(np.ascontiguousarray(w).reshape(-1, 1), C, D, E,
                     np.ascontiguousarray(u).reshape(-1, 1), np.ones(1))


@njit(cache=True)
def signed_i4_tensor(acts: Activations, omega: np.ndarray, K: int) -> np.ndarray:
    """W[k, l, a, b] = S_a S_b I4(k, l, a, b), I4(k, l, a, b) = E[g'(z_k) g'(z_l) g_a(z_a)
    g_b(z_b)], with S_a = +1 for a student field (a < K) and -1 for a teacher field
    (c = (w', -u) = S y); g' the student's, g_a as in ``i2_matrix``."""
    n = omega.shape[0]
    W = np.empty((K, K, n, n))
    for k in range(K):
        for l in range(k, K):
            for a in range(n):
                for b in range(a, n):
                    args = (omega[k, k], omega[l, l], omega[a, a], omega[b, b], omega[k, l],
                            omega[k, a], omega[k, b], omega[l, a], omega[l, b], omega[a, b])
                    if b < K:
                        v = I4(acts.student, acts.student, acts.student, *args)
                    elif a < K:
                        v = -I4(acts.student, acts.student, acts.teacher, *args)
                    else:
                        v = I4(acts.student, acts.teacher, acts.teacher, *args)
                    W[k, l, a, b] = W[l, k, a, b] = W[k, l, b, a] = W[l, k, b, a] = v
    return W


@njit(cache=True)
def noise_weights(acts: Activations, omega: np.ndarray, K: int, noise: float) -> np.ndarray:
    """N_kl = noise^2 J2(k, l), the weight of E[y_k y_l] in Phi (``add_diffusion``)."""
    N = np.empty((K, K))
    for k in range(K):
        for l in range(k, K):
            N[k, l] = N[l, k] = noise**2 * J2(acts.student, omega[k, k], omega[l, l], omega[k, l])
    return N


@njit(cache=True)
def add_diffusion(W: np.ndarray, N: np.ndarray, mean: np.ndarray, cov: np.ndarray, scale: float,
                  out: np.ndarray, at: int) -> None:
    """Add scale Phi_kl (k <= l, in the order of ``np.triu_indices(K)``) to out[at:] for a Gaussian
    y = (w', u) with ``mean`` and ``cov``, where

        Phi_kl = E_tau E_x[Delta^2 w'_k w'_l g'(lambda_k) g'(lambda_l)] (the lr^2 term of dQ)
               = sum_ab W[k, l, a, b] E[y_k y_l y_a y_b] + N_kl E[y_k y_l]

    (docs/model.md §5.3; W from ``signed_i4_tensor``, symmetric in (a, b); N from
    ``noise_weights``). With Isserlis' theorem, mu = mean, S = cov and W = W[k, l]:
    sum_ab W_ab E[y_k y_l y_a y_b] = (mu_k mu_l + S_kl)(mu.W mu + tr(W S))
    + 2 mu_k (W mu).S_l + 2 mu_l (W mu).S_k + 2 S_k.W S_l (S_k the k-th column of S)."""
    K = W.shape[0]
    n = mean.shape[0]
    i = at
    for k in range(K):
        for l in range(k, K):
            quad = trace = muk = mul = cross = 0.0
            for a in range(n):
                wmu = 0.0
                wsl = 0.0
                for b in range(n):
                    wab = W[k, l, a, b]
                    wmu += wab * mean[b]
                    wsl += wab * cov[b, l]
                    trace += wab * cov[b, a]
                quad += mean[a] * wmu
                muk += wmu * cov[a, k]
                mul += wmu * cov[a, l]
                cross += cov[a, k] * wsl
            second = mean[k] * mean[l] + cov[k, l]
            out[i] += scale * (second * (quad + trace + N[k, l]) + 2.0 * mean[k] * mul
                               + 2.0 * mean[l] * muk + 2.0 * cross)
            i += 1


@njit(cache=True)
def diffusion(acts: Activations, omega: np.ndarray, K: int, mean: np.ndarray, cov: np.ndarray,
              noise: float) -> np.ndarray:
    """The lr^2 term Phi (K x K) of ``add_diffusion`` for a Gaussian y = (w', u) over tasks
    (``cov`` zero for one fixed task)."""
    packed = np.zeros(K * (K + 1) // 2)
    add_diffusion(signed_i4_tensor(acts, omega, K), noise_weights(acts, omega, K, noise), mean,
                  cov, 1.0, packed, 0)
    out = np.empty((K, K))
    i = 0
    for k in range(K):
        for l in range(k, K):
            out[k, l] = out[l, k] = packed[i]
            i += 1
    return out


@njit(cache=True)
def task_basis(u0: np.ndarray, task_std: float):
    """(U, S): u = U e with U = [u0 | I_M] and E[e e^T] = S = diag(1, task_std^2, ...)."""
    M = u0.shape[0]
    U = np.zeros((M, M + 1))
    U[:, 0] = u0
    for m in range(M):
        U[m, m + 1] = 1.0
    S = np.zeros(M + 1)
    S[0] = 1.0
    S[1:] = task_std * task_std
    return U, S


@njit(cache=True)
def representation_error(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray,
                         u0: np.ndarray, task_std: float) -> float:
    """E_tau min_w eps(w; u_tau) = 1/2 tr(S U^T (E - D^T C^+ D) U): the best head per task."""
    C, D, E = error_blocks(acts, Q, R, T)
    U, S = task_basis(u0, task_std)
    schur = E - D.T @ np.linalg.lstsq(C, D, rcond=1e-12)[0]
    M = U.shape[0]
    total = 0.0
    for j in range(U.shape[1]):
        quad = 0.0
        for m in range(M):
            for n in range(M):
                quad += U[m, j] * schur[m, n] * U[n, j]
        total += S[j] * quad
    return 0.5 * total


@njit(cache=True)
def specialisation(Q: np.ndarray, R: np.ndarray, T: np.ndarray):
    """(index, alignment) of the normalised overlaps r_km = R_km / sqrt(Q_kk T_mm).

    alignment_k = argmax_m |r_km| is the teacher unit student unit k aligns with; the index is the
    mean over k of |r_k,align_k| minus the mean of |r_km| over the other m (0 on the symmetric
    plateau, 1 for a student whose units each copy one teacher unit; 0 when M = 1). A unit of
    zero norm (Q_kk = 0, hence R_km = 0 since Omega is PSD; or T_mm = 0) is aligned with nothing:
    r_km = 0, not 0/0.
    """
    K, M = R.shape
    align = np.zeros(K, dtype=np.int64)
    index = 0.0
    for k in range(K):
        best, total = -1.0, 0.0
        for m in range(M):
            norm = np.sqrt(Q[k, k] * T[m, m])
            r = abs(R[k, m]) / norm if norm > 0 else 0.0
            total += r
            if r > best:
                best, align[k] = r, m
        if M > 1:
            index += best - (total - best) / (M - 1)
    return index / K, align


@njit(cache=True)
def common_observables(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray,
                       u0: np.ndarray, task_std: float, out: np.ndarray) -> None:
    """out[2:] = (representation_error, specialisation index, align_0 .. align_{K-1}), the
    observables every algorithm records after its two errors."""
    out[2] = representation_error(acts, Q, R, T, u0, task_std)
    index, align = specialisation(Q, R, T)
    out[3] = index
    for k in range(align.shape[0]):
        out[4 + k] = align[k]
