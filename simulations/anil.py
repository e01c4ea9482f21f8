"""ANIL with the population inner loop (MODEL.md §3 "anil", support = "population"), numba.

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
a = I - 2 lr G / N, h = -lr H / N, so Q' = J' J'^T / N and R' = J' B^T / N follow from Q, R, T,
the fields and the Gram matrix of the inputs in O(K^2) work per step; they are recomputed from J
at every record, so rounding errors cannot accumulate.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from simulations.kernels import draw_input, fields, g, g_prime
from theory.anil import chain_to_overlaps, inner_loop, inner_loop_vjp
from theory.fields import error_blocks, task_basis


@njit(cache=True)
def anil_population_steps(J, B, w, Q, R, T, u0, task_std, noise, inner_lr, inner_steps,
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
    coef = np.empty((n_ex, K))
    e = np.empty(M + 1)
    e[0] = 1.0
    new_J = np.empty_like(J)
    for _ in range(n_steps):
        C, D, _E = error_blocks(Q, R, T)
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
                delta = 0.0
                for k in range(K):
                    delta += w_ad[k] * g(lam[i, k])
                for m in range(M):
                    delta -= u[m] * g(nu[i, m])
                if noise > 0.0:
                    delta -= noise * rng.standard_normal()
                for k in range(K):
                    coef[i, k] = -lr * delta * w_ad[k] * g_prime(lam[i, k]) / (n_ex * sqrt_n)
                    for j in range(M + 1):
                        Zbar[k, j] += delta * g(lam[i, k]) * e[j] / n_ex
                i += 1
        # J' = a J + h B + sum_i coef_i x_i^T, head and carried overlaps
        a = np.eye(K)
        h = np.zeros((K, M))
        if second_order:
            Cbar, Dbar, wbar = inner_loop_vjp(Zs, C, U, inner_lr, Zbar)
            G, H = chain_to_overlaps(Q, R, T, Cbar, Dbar)
            a -= (2.0 * lr / N) * G
            h = -(lr / N) * H
        else:
            wbar = Zbar[:, 0].copy()
        for k in range(K):
            row = new_J[k]
            row[:] = 0.0
            for l in range(K):
                row += a[k, l] * J[l]
            for m in range(M):
                row += h[k, m] * B[m]
            for i in range(n_ex):
                row += coef[i, k] * xs[i]
        J[:, :] = new_J
        for k in range(K):
            w[k] -= lr_head / N * wbar[k]
        # carried overlaps: cross terms with the inputs through the fields and their Gram matrix
        Jx = a @ lam.T / sqrt_n + h @ nu.T / sqrt_n  # (a J + h B) x_i / N, shape K x n_ex
        gram = xs @ xs.T / N
        Q_new = a @ Q @ a.T + a @ R @ h.T + h @ R.T @ a.T + h @ T @ h.T
        Q_new += Jx @ coef + coef.T @ Jx.T + coef.T @ gram @ coef
        R_new = a @ R + h @ T + coef.T @ nu / sqrt_n
        Q[:, :] = 0.5 * (Q_new + Q_new.T)
        R[:, :] = R_new
