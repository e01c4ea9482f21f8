"""Local fields and the population error, shared by every algorithm.

The local fields z = (lambda_1..lambda_K, nu_1..nu_M) of one input are jointly Gaussian with
covariance Omega = [[Q, R], [R^T, T]] (docs/model.md §3). Index a < K is student unit a, index
K + m is teacher unit m. The head of the pair network is c = (w, -u), so that the error signal is
Delta = yhat - y = sum_a c_a g(z_a) - noise zeta.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from metaode.theory.activations import I2, J2, Activations, I4_forms, quadratic_forms

#: I4 entries (pairs k <= l times n (n + 1) / 2 entries a <= b) from which ``diffusion`` runs its
#: pairs (k, l) in numba's threads; below it, waking the threads costs more than they save.
PARALLEL_ENTRIES = 20000


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
    every algorithm (one fixed head: Z = w, U = u, S = 1): ``loss_of_products`` with D U and the
    head term 1/2 tr(S U^T E U) (``head_loss``) formed here."""
    return loss_of_products(Z, C, small_product(D, U), S, head_loss(E, U, S))


@njit(cache=True)
def small_product(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A B written out (no BLAS call: the theory's blocks are a few rows and columns, for which a
    BLAS call costs more than the arithmetic)."""
    n, r = A.shape
    m = B.shape[1]
    out = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            acc = 0.0
            for k in range(r):
                acc += A[i, k] * B[k, j]
            out[i, j] = acc
    return out


@njit(cache=True)
def head_loss(E: np.ndarray, U: np.ndarray, S: np.ndarray) -> float:
    """1/2 tr(S U^T E U), the teacher's part of ``meta_loss`` (its value at Z = 0)."""
    M, n = U.shape
    total = 0.0
    for j in range(n):
        quad = 0.0
        for m in range(M):
            acc = 0.0
            for o in range(M):
                acc += E[m, o] * U[o, j]
            quad += U[m, j] * acc
        total += S[j] * quad
    return 0.5 * total


@njit(cache=True, inline="always")
def loss_of_products(Z: np.ndarray, C: np.ndarray, DU: np.ndarray, S: np.ndarray,
                     head: float) -> float:
    """``meta_loss`` = sum_j S_j sum_k Z_kj (1/2 (C Z)_kj - (D U)_kj) + head from the products
    D U and head = ``head_loss`` (written out, no BLAS call: the matrices are small, and the
    few-shot Monte Carlo evaluates it once per support set with both given)."""
    K, d = Z.shape
    loss = 0.0
    for j in range(d):
        acc = 0.0
        for k in range(K):
            cz = 0.0
            for l in range(K):
                cz += C[k, l] * Z[l, j]
            acc += Z[k, j] * (0.5 * cz - DU[k, j])
        loss += S[j] * acc
    return loss + head


@njit(cache=True)
def population_error(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray,
                     w: np.ndarray, u: np.ndarray) -> float:
    """eps(w; u) = 1/2 [w^T C w - 2 w^T D u + u^T E u] (``meta_loss`` of one head), without
    the noise^2 / 2 floor."""
    C, D, E = error_blocks(acts, Q, R, T)
    return meta_loss(np.ascontiguousarray(w).reshape(-1, 1), C, D, E,
                     np.ascontiguousarray(u).reshape(-1, 1), np.ones(1))


@njit(cache=True)
def student_pairs(K: int) -> np.ndarray:
    """The pairs (k, l), k <= l < K, in row-major order: shape (K (K + 1) / 2, 2)."""
    pairs = np.empty((K * (K + 1) // 2, 2), dtype=np.int64)
    p = 0
    for k in range(K):
        for l in range(k, K):
            pairs[p, 0], pairs[p, 1] = k, l
            p += 1
    return pairs


@njit(cache=True)
def signed_i4_tensor(acts: Activations, omega: np.ndarray, K: int) -> np.ndarray:
    """W[k, l, a, b] = S_a S_b I4(k, l, a, b), I4(k, l, a, b) = E[g'(z_k) g'(z_l) g_a(z_a)
    g_b(z_b)], with S_a = +1 for a student field (a < K) and -1 for a teacher field
    (c = (w', -u) = S y); g' the student's, g_a as in ``i2_matrix`` (``I4_forms`` with X = diag S
    at k <= l)."""
    n = omega.shape[0]
    pairs = student_pairs(K)
    signs = np.zeros((n, n))
    for a in range(n):
        signs[a, a] = 1.0 if a < K else -1.0
    slices = np.empty((pairs.shape[0], n, n))
    I4_forms(acts.student, acts.teacher, omega, K, pairs, signs, False, slices)
    W = np.empty((K, K, n, n))
    for p in range(pairs.shape[0]):
        W[pairs[p, 0], pairs[p, 1]] = W[pairs[p, 1], pairs[p, 0]] = slices[p]
    return W


@njit(cache=True)
def noise_weights(acts: Activations, omega: np.ndarray, K: int, noise: float) -> np.ndarray:
    """N_kl = noise^2 J2(k, l), the weight of E[y_k y_l] in Phi (``diffusion_of_forms``)."""
    N = np.empty((K, K))
    for k in range(K):
        for l in range(k, K):
            N[k, l] = N[l, k] = noise * noise * J2(acts.student, omega[k, k], omega[l, l],
                                                   omega[k, l])
    return N


@njit(cache=True)
def diffusion_of_forms(forms: np.ndarray, X: np.ndarray, pairs: np.ndarray, N: np.ndarray,
                       scale: float, out: np.ndarray, at: int) -> None:
    """out[at + p] += scale Phi_kl for the pairs (k, l) = pairs[p] of a Gaussian y = (w', u) with
    mean X[:, 0] and covariance V V^T, V = X[:, 1:] (n x r; r = 0 for one fixed head), from the
    quadratic forms G = forms[p] = X^T W_kl X of the signed I4 slices W_kl = S I4(k, l, ., .) S
    (S_a = +1 for a student field, -1 for a teacher field, so that c = (w', -u) = S y), and
    N = ``noise_weights``. Isserlis' theorem with a mean reduces sum_ab W_klab E[y_k y_l y_a y_b]
    to (docs/model.md §5.3, §8.3)

        Phi_kl = E[y_k y_l] (G_00 + sum_j G_jj + N_kl) + 2 sum_j (y_k V_lj + y_l V_kj) G_0j
                 + 2 sum_ij V_ki V_lj G_ij,   E[y_k y_l] = y_k y_l + sum_j V_kj V_lj,

    with y = X[:, 0] and i, j = 1..r (the sign of a student row is +1: X[k] is y's)."""
    r = X.shape[1] - 1
    for p in range(pairs.shape[0]):
        k, l = pairs[p, 0], pairs[p, 1]
        G = forms[p]
        second, trace, cross, outer = X[k, 0] * X[l, 0], G[0, 0], 0.0, 0.0
        for i in range(1, r + 1):
            second += X[k, i] * X[l, i]
            trace += G[i, i]
            cross += (X[k, 0] * X[l, i] + X[l, 0] * X[k, i]) * G[0, i]
            for j in range(1, r + 1):
                outer += X[k, i] * X[l, j] * G[i, j]
        out[at + p] += scale * (second * (trace + N[k, l]) + 2.0 * cross + 2.0 * outer)


@njit(cache=True)
def add_diffusion(W: np.ndarray, N: np.ndarray, pairs: np.ndarray, X: np.ndarray, scale: float,
                  out: np.ndarray, at: int, Y: np.ndarray, forms: np.ndarray) -> None:
    """``diffusion_of_forms`` with the forms X^T W[k, l] X computed from the stored signed tensor
    W of ``signed_i4_tensor`` (``quadratic_forms``): many Gaussians at one Omega (the few-shot
    theory's support sets), unsigned X = [mean | V] (n x (r + 1)). Y (n x (r + 1)) and forms
    (pairs x (r + 1) x (r + 1)): workspace."""
    for p in range(pairs.shape[0]):
        quadratic_forms(W[pairs[p, 0], pairs[p, 1]], X, Y, forms[p])
    diffusion_of_forms(forms, X, pairs, N, scale, out, at)


@njit(cache=True)
def diffusion(acts: Activations, omega: np.ndarray, K: int, mean: np.ndarray, spread: np.ndarray,
              noise: float) -> np.ndarray:
    """The lr^2 term Phi (K x K) of ``diffusion_of_forms`` for a Gaussian y = (w', u) over tasks
    with ``mean`` and covariance spread spread^T (spread: n x r; r = 0 for one fixed task),
    without the K x K x n x n tensors of the moments and of W: the forms X^T I4(k, l, ., .) X on
    the columns of X = S [mean | spread] come from ``I4_forms``, which with PARALLEL_ENTRIES
    entries of I4 or more may run the pairs in numba's threads."""
    n, r = spread.shape
    X = np.empty((n, r + 1))
    for a in range(n):
        sign = 1.0 if a < K else -1.0
        X[a, 0] = sign * mean[a]
        for j in range(r):
            X[a, 1 + j] = sign * spread[a, j]
    pairs = student_pairs(K)
    forms = np.empty((pairs.shape[0], r + 1, r + 1))
    parallel = pairs.shape[0] * (n * (n + 1) // 2) >= PARALLEL_ENTRIES
    I4_forms(acts.student, acts.teacher, omega, K, pairs, X, parallel, forms)
    packed = np.zeros(pairs.shape[0])
    diffusion_of_forms(forms, X, pairs, noise_weights(acts, omega, K, noise), 1.0, packed,
                       np.int64(0))  # not a literal 0: one compiled copy with add_diffusion's call
    out = np.empty((K, K))
    for p in range(pairs.shape[0]):
        out[pairs[p, 0], pairs[p, 1]] = out[pairs[p, 1], pairs[p, 0]] = packed[p]
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


#: ``psd_solve`` uses its Cholesky factor while every pivot L_jj^2 is at least this fraction of
#: C's largest diagonal entry (a condition number below ~1e8); a more nearly singular C (two
#: student units alike, as on a plateau) goes to the least-squares solve.
CHOLESKY_FLOOR = 1e-8


@njit(cache=True)
def cholesky_factor(A: np.ndarray, shift: float, floor: float):
    """(ok, L): the lower Cholesky factor L L^T = A + shift I of a symmetric A, written out for
    the small matrices of the theory (no LAPACK call); ok is False, and L incomplete, as soon as a
    pivot L_jj^2 is not above ``floor``."""
    n = A.shape[0]
    L = np.zeros((n, n))
    for j in range(n):
        acc = A[j, j] + shift
        for i in range(j):
            acc -= L[j, i] * L[j, i]
        if not acc > floor:
            return False, L
        L[j, j] = np.sqrt(acc)
        for k in range(j + 1, n):
            acc = A[k, j]
            for i in range(j):
                acc -= L[k, i] * L[j, i]
            L[k, j] = acc / L[j, j]
    return True, L


@njit(cache=True)
def psd_solve(C: np.ndarray, D: np.ndarray) -> np.ndarray:
    """C^+ D for a positive semi-definite C: by Cholesky (``cholesky_factor``, then forward and
    back substitution, written out for the small K x K blocks) while C is well conditioned
    (CHOLESKY_FLOOR), otherwise the least-squares solution with singular values below 1e-12 of
    the largest dropped (``np.linalg.lstsq``, which costs ~5 us per call even for K = 2)."""
    K, M = D.shape
    top = 0.0
    for k in range(K):
        top = max(top, C[k, k])
    ok, L = cholesky_factor(C, 0.0, CHOLESKY_FLOOR * top)
    if not ok:
        return np.linalg.lstsq(C, D, rcond=1e-12)[0]
    X = np.empty((K, M))
    for m in range(M):
        for k in range(K):  # L v = D
            acc = D[k, m]
            for i in range(k):
                acc -= L[k, i] * X[i, m]
            X[k, m] = acc / L[k, k]
        for k in range(K - 1, -1, -1):  # L^T x = v
            acc = X[k, m]
            for i in range(k + 1, K):
                acc -= L[i, k] * X[i, m]
            X[k, m] = acc / L[k, k]
    return X


@njit(cache=True)
def representation_error(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray,
                         u0: np.ndarray, task_std: float) -> float:
    """E_tau min_w eps(w; u_tau) = 1/2 tr(S U^T (E - D^T C^+ D) U): the best head per task
    (C^+ D by ``psd_solve``)."""
    C, D, E = error_blocks(acts, Q, R, T)
    U, S = task_basis(u0, task_std)
    schur = E - D.T @ psd_solve(C, D)
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
