"""Online SGD of the two-layer network (docs/model.md §4.1), numba-compiled.

One outer step draws ``batch = query * meta_batch`` fresh inputs x ~ N(0, I_N), computes at the
current (J, w) the errors Delta = sum_k w_k g(lambda_k) - sum_m u_m g(nu_m) - noise zeta, and
applies the averaged gradient steps
    J_k <- J_k - (lr / sqrt N) mean_b[Delta w_k g'(lambda_k) x],
    w   <- w   - (lr_head / N) mean_b[Delta g(lambda)].
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from metaode.simulations.kernels import draw_input, error_signal, fields, g, g_prime, teacher_label


@njit(cache=True)
def sgd_steps(acts, J: np.ndarray, B: np.ndarray, w: np.ndarray, u: np.ndarray, noise: float,
              lr: float, lr_head: float, batch: int, n_steps: int,
              rng: np.random.Generator) -> None:
    """Advance (J, w) in place by ``n_steps`` outer steps."""
    K, N = J.shape
    M = B.shape[0]
    xs = np.empty((batch, N))
    lam = np.empty(K)
    nu = np.empty(M)
    coef = np.empty((batch, K))
    dw = np.empty(K)
    step_J = lr / math.sqrt(N) / batch
    step_w = lr_head / N / batch
    for _ in range(n_steps):
        dw[:] = 0.0
        for b in range(batch):
            x = xs[b]
            draw_input(rng, x)
            fields(J, x, lam)
            fields(B, x, nu)
            delta = error_signal(acts, w, lam, teacher_label(acts, u, nu, noise, rng))
            for k in range(K):
                coef[b, k] = step_J * delta * w[k] * g_prime(acts.student, lam[k])
                dw[k] += step_w * delta * g(acts.student, lam[k])
        for k in range(K):
            row = J[k]
            for b in range(batch):
                c = coef[b, k]
                x = xs[b]
                for i in range(N):
                    row[i] -= c * x[i]
        for k in range(K):
            w[k] -= dw[k]
