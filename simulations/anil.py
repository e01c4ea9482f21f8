"""ANIL with the population inner loop (docs/model.md §4.2, support = "population"), numba.

One outer step: for each of ``meta_batch`` fresh tasks u = u0 + task_std xi (e = (1, task_std xi)),
the adapted head is w' = Z e with Z = Z^(s) of ``theory.anil.inner_loop`` evaluated on the exact
population matrices C(Q), D(Q, R) of the current networks; then ``query`` fresh examples give
Delta = w' . g(lambda) - u . g(nu) - noise zeta. The outer gradient of the mean query loss L_q is
    grad_{J_k} L_q = mean_i[Delta_i w'_k g'(lambda_ik) x_i] / sqrt(N)     (through the fields)
                   + (2 G J + H B)_k / N                                   (second order only),
where (G, H) = dL_q/d(Q, R) through w'(C, D): the cotangent on Z is
Zbar = mean_i Delta_i g(lambda_i) e_i^T (w' = Z e), pulled back by ``theory.anil.inner_loop_vjp``
and ``chain_to_overlaps`` - the same code as the theory's drift, here applied to one sample instead
of its expectation. The head moves by -(lr_head / N) wbar with wbar = A^T mean_i[Delta_i
g(lambda_i)] (second order, from the same pull-back) or mean_i[Delta_i g(lambda_i)] (first order).

Q, R are carried along exactly: the update is J' = a J + h B + sum_i c_i x_i^T with
a = I - 2 lr G / N, h = -lr H / N, i.e. J' = W V with W = [a | h | c^T] and V the rows
[J; B; x_1 .. x_n]. The Gram matrix V V^T / N of those rows is known without touching N-sized data,

    Gamma = [[Q, R, lambda^T / sqrt N], [R^T, T, nu^T / sqrt N], [., ., X X^T / N]]  (symmetric),

so Q' = J' J'^T / N = W Gamma W^T and R' = J' B^T / N = (W Gamma)[:, K:K+M], O(K^2) work per step;
they are recomputed from J at every record, so rounding errors cannot accumulate. J' = W V itself is
formed in place in one blocked pass over J, B and the inputs (``mix_rows``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from metaode.simulations.kernels import (
    dot,
    draw_input,
    error_signal,
    fields,
    g,
    g_prime,
    teacher_label,
)
from metaode.theory.anil import inner_loop, inner_loop_vjp
from metaode.theory.fields import error_blocks, task_basis
from metaode.theory.flow import chain_to_overlaps

BLOCK = 2048  # columns of J per pass of ``mix_rows`` (K x 16 kB of buffer, cache-resident)


@njit(cache=True)
def _row(J: np.ndarray, B: np.ndarray, xs: np.ndarray, j: int, start: int,
         stop: int) -> np.ndarray:
    """Columns start:stop of row j of V = [J; B; xs]."""
    K, M = J.shape[0], B.shape[0]
    if j < K:
        return J[j, start:stop]
    if j < K + M:
        return B[j - K, start:stop]
    return xs[j - K - M, start:stop]


@njit(cache=True)
def mix_rows(J: np.ndarray, B: np.ndarray, xs: np.ndarray, W: np.ndarray,
             buf: np.ndarray) -> np.ndarray:
    """J <- W V in place, V = [J; B; xs] (rows: J_k <- sum_j W_kj V_j), and return the Gram matrix
    xs xs^T / N of the inputs; one pass over memory.

    The columns are processed in blocks of ``buf.shape[1]``: the new block of J is assembled in
    ``buf`` (K x block) and copied back, so no N-sized temporary is allocated and each block of
    J, B and xs is read from memory once.
    """
    K, N = J.shape
    n_ex = xs.shape[0]
    gram = np.zeros((n_ex, n_ex))
    for start in range(0, N, buf.shape[1]):
        stop = min(start + buf.shape[1], N)
        for k in range(K):
            out = buf[k, : stop - start]
            out[:] = 0.0
            for j in range(W.shape[1]):
                src, c = _row(J, B, xs, j, start, stop), W[k, j]
                for i in range(out.shape[0]):
                    out[i] += c * src[i]
        J[:, start:stop] = buf[:, : stop - start]
        for q in range(n_ex):
            for r in range(q + 1):
                gram[q, r] += dot(xs[q, start:stop], xs[r, start:stop])
    for q in range(n_ex):
        for r in range(q):
            gram[r, q] = gram[q, r]
    return gram / N


@njit(cache=True)
def anil_population_steps(acts, J, B, w, Q, R, T, u0, task_std, noise, inner_lr, inner_steps,
                          second_order, lr, lr_head, query, meta_batch, n_steps, rng):
    """Advance (J, w) and the carried (Q, R) in place by ``n_steps`` outer steps."""
    K, N = J.shape
    M = B.shape[0]
    n_ex = query * meta_batch
    sqrt_n = math.sqrt(N)
    U, _ = task_basis(u0, task_std)
    xs = np.empty((n_ex, N))
    lam = np.empty((n_ex, K))
    nu = np.empty((n_ex, M))
    e = np.empty(M + 1)
    e[0] = 1.0
    buf = np.empty((K, BLOCK))
    W = np.zeros((K, K + M + n_ex))  # J' = W [J; B; xs]: columns a | h | c^T
    gamma = np.empty((K + M + n_ex, K + M + n_ex))  # Gram matrix of the rows [J; B; xs] / N
    for _ in range(n_steps):
        C, D, _E = error_blocks(acts, Q, R, T)
        Zs = inner_loop(C, D, w, U, inner_lr, inner_steps)
        Z = Zs[inner_steps]
        Zbar = np.zeros((K, M + 1))
        i = 0
        for _b in range(meta_batch):
            for m in range(M):
                e[m + 1] = task_std * rng.standard_normal()
            w_ad = Z @ e
            u = U @ e
            for _q in range(query):
                x = xs[i]
                draw_input(rng, x)
                fields(J, x, lam[i])
                fields(B, x, nu[i])
                delta = error_signal(acts, w_ad, lam[i], teacher_label(acts, u, nu[i], noise, rng))
                for k in range(K):
                    W[k, K + M + i] = (-lr * delta * w_ad[k] * g_prime(acts.student, lam[i, k])
                                       / (n_ex * sqrt_n))
                    for j in range(M + 1):
                        Zbar[k, j] += delta * g(acts.student, lam[i, k]) * e[j] / n_ex
                i += 1
        # a = I - 2 lr G / N and h = -lr H / N (second order), a = I and h = 0 (first order)
        for k in range(K):
            for l in range(K):
                W[k, l] = 1.0 if k == l else 0.0
        if second_order:
            Cbar, Dbar, wbar = inner_loop_vjp(Zs, C, U, inner_lr, Zbar)
            G, H = chain_to_overlaps(acts, Q, R, T, Cbar, Dbar)
            W[:, :K] -= (2.0 * lr / N) * G
            W[:, K:K + M] = -(lr / N) * H
        else:
            wbar = Zbar[:, 0].copy()
        gamma[:K, :K] = Q
        gamma[:K, K:K + M] = R
        gamma[K:K + M, K:K + M] = T
        gamma[:K, K + M:] = lam.T / sqrt_n
        gamma[K:K + M, K + M:] = nu.T / sqrt_n
        gamma[K + M:, K + M:] = mix_rows(J, B, xs, W, buf)  # J <- W V, and X X^T / N
        gamma[K:K + M, :K] = R.T
        gamma[K + M:, :K + M] = gamma[:K + M, K + M:].T
        for k in range(K):
            w[k] -= lr_head / N * wbar[k]
        W_gamma = W @ gamma
        Q_new = W_gamma @ W.T
        Q[:, :] = 0.5 * (Q_new + Q_new.T)
        R[:, :] = W_gamma[:, K:K + M]
