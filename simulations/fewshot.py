"""Meta-learning with a finite support set (docs/model.md §4): anil (support = P) and maml, numba.

One task. Head u = u0 + task_std xi; n = P + query inputs x_i (support p < P first, then the query
inputs), fields lambda_i = J x_i / sqrt N, nu_i = B x_i / sqrt N, labels y_i = u . g(nu_i)
+ noise zeta_i. The inner loop takes s = inner_steps gradient steps with rate eta = inner_lr on the
support loss L_S = (1/P) sum_p 1/2 Delta_p^2, Delta_p = w . g(lambda_p) - y_p, the same P examples
at every step, from (J^(0), w^(0)) = (J, w):

    w^(r+1) = w^(r) - (eta/P) sum_p Delta_p^(r) g(lambda_p^(r)),
    J^(r+1) = J^(r) - (eta/P) sum_p c_p^(r) x_p^T / sqrt N,
    c_pk^(r) = Delta_p^(r) w_k^(r) g'(lambda_pk^(r))

(the J step only for maml, ``adapt_J``). Because J^(r) - J lies in the span of the support inputs,
every adapted field follows from the initial ones and the Gram matrix G_pi = x_p . x_i / N
(P x n, |x_p|^2 / N on the diagonal, exact):

    lambda_i^(r+1) = lambda_i^(r) - (eta/P) sum_p c_p^(r) G_pi,

so the inner loop, the query loss L_q = (1/query) sum_q 1/2 (w' . g(lambda'_q) - y_q)^2 at the
adapted (lambda', w') = (lambda^(s), w^(s)) and its reverse pass are computations on
(lambda^(0), y, G, w) alone (``inner_loop_fields``, ``task_gradients``). For anil the fields stay
at lambda^(0).

Outer step. J enters L_q only through lambda_i^(0), so with lambdabar_i = dL_q/dlambda_i^(0) and
wbar = dL_q/dw (exact reverse pass through the inner loop, order = "second")

    grad_J L_q = sum_i lambdabar_i x_i^T / sqrt N,    grad_w L_q = wbar;

order = "first" (first-order MAML) uses instead the gradient at the adapted parameters, through the
query inputs only: lambdabar_q = dL_q/dlambda'_q (support entries zero) and wbar = dL_q/dw'.
Averaged over ``meta_batch`` tasks, J <- J - lr grad_J and w <- w - (lr_head / N) grad_w
(``fewshot_steps``).

Draw order per task (deterministic, the same for anil and maml, so that runs with one seed see the
same tasks and data - paired streams): M standard normals xi (drawn even if task_std = 0), then for
each support input its N entries followed by its label noise zeta_p, then the same for each query
input; zeta is drawn only if noise > 0 (as in ``simulations.sgd``).

The first-layer step moves the adapted overlaps only by O(1/N) (J^(s) - J lies in the span of the
P support inputs); maml differs from anil at O(1/P) through the support fields' shift of O(eta/P)
per inner step, which changes w' from the second inner step on (docs/model.md §11). The
observables of a run are the theory's, evaluated on the networks' exact overlaps
(``simulations.run``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from metaode.simulations.kernels import (
    draw_input,
    error_signal,
    fields,
    g,
    g_prime,
    g_second,
    teacher_label,
)


@njit(cache=True)
def draw_task(acts, J: np.ndarray, B: np.ndarray, u0: np.ndarray, task_std: float, noise: float,
              xs: np.ndarray, lam: np.ndarray, nu: np.ndarray, y: np.ndarray, u: np.ndarray,
              rng: np.random.Generator) -> None:
    """One task in the documented draw order: u = u0 + task_std xi, then the inputs xs (n x N) with
    their fields lam = J x / sqrt N (n x K), nu = B x / sqrt N (n x M) and labels
    y = u . g(nu) + noise zeta; all outputs are written in place.
    """
    M = B.shape[0]
    for m in range(M):
        u[m] = u0[m] + task_std * rng.standard_normal()
    for i in range(xs.shape[0]):
        draw_input(rng, xs[i])
        fields(J, xs[i], lam[i])
        fields(B, xs[i], nu[i])
        y[i] = teacher_label(acts, u, nu[i], noise, rng)


@njit(cache=True)
def gram(xs: np.ndarray, P: int, out: np.ndarray) -> None:
    """out_pi = x_p . x_i / N for the P support inputs p and all n inputs i (P x n, in place)."""
    N = xs.shape[1]
    for p in range(P):
        for i in range(p, xs.shape[0]):
            out[p, i] = np.dot(xs[p], xs[i]) / N
            if i < P:
                out[i, p] = out[p, i]


@njit(cache=True)
def inner_loop_fields(acts, lam0: np.ndarray, y: np.ndarray, G: np.ndarray, w: np.ndarray,
                      inner_lr: float, steps: int, P: int,
                      adapt_J: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward inner loop in field space: (lams, ws, shift).

    lams[r] = lambda^(r) (n x K) of all n inputs, ws[r] = w^(r), r = 0..steps (module docstring);
    shift (P x K) gives J^(s) = J + sum_p shift_p x_p^T / sqrt N, shift_p = -(eta/P) sum_r c_p^(r)
    (zero for anil). G (P x n) is read only if adapt_J.
    """
    n, K = lam0.shape
    lams = np.empty((steps + 1, n, K))
    ws = np.empty((steps + 1, K))
    lams[0] = lam0
    ws[0] = w
    shift = np.zeros((P, K))
    c = np.empty((P, K))
    step = inner_lr / P
    for r in range(steps):
        lam, wr = lams[r], ws[r]
        w_next = wr.copy()
        for p in range(P):
            delta = error_signal(acts, wr, lam[p], y[p])
            for k in range(K):
                w_next[k] -= step * delta * g(acts.student, lam[p, k])
                c[p, k] = delta * wr[k] * g_prime(acts.student, lam[p, k])
        ws[r + 1] = w_next
        lams[r + 1] = lam
        if adapt_J:
            for k in range(K):
                for p in range(P):
                    shift[p, k] -= step * c[p, k]
                for i in range(n):
                    acc = 0.0
                    for p in range(P):
                        acc += c[p, k] * G[p, i]
                    lams[r + 1, i, k] -= step * acc
    return lams, ws, shift


@njit(cache=True)
def task_gradients(acts, lam0: np.ndarray, y: np.ndarray, G: np.ndarray, w: np.ndarray,
                   inner_lr: float, steps: int, P: int, adapt_J: bool,
                   second_order: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """(L_q, lambdabar, wbar) of one task: the query loss and its gradients (module docstring).

    At the adapted parameters, lambdabar_q = dL_q/dlambda'_q and wbar = dL_q/dw' over the query
    inputs q >= P. first order: returned as they are (support rows of lambdabar zero). second
    order: carried back through the inner loop to lambdabar_i = dL_q/dlambda_i^(0) and
    wbar = dL_q/dw^(0) (``inner_loop_reverse``).
    """
    lams, ws, _ = inner_loop_fields(acts, lam0, y, G, w, inner_lr, steps, P, adapt_J)
    n, K = lam0.shape
    nq = n - P
    lb = np.zeros((n, K))
    wb = np.zeros(K)
    lam, wr = lams[steps], ws[steps]
    loss = 0.0
    for q in range(P, n):
        delta = error_signal(acts, wr, lam[q], y[q])
        loss += 0.5 * delta * delta / nq
        for k in range(K):
            wb[k] += delta * g(acts.student, lam[q, k]) / nq
            lb[q, k] = delta * wr[k] * g_prime(acts.student, lam[q, k]) / nq
    if not second_order:
        return loss, lb, wb
    return loss, lb, inner_loop_reverse(acts, lams, ws, y, G, inner_lr, P, adapt_J, lb, wb)


@njit(cache=True)
def inner_loop_reverse(acts, lams: np.ndarray, ws: np.ndarray, y: np.ndarray, G: np.ndarray,
                       inner_lr: float, P: int, adapt_J: bool, lb: np.ndarray,
                       wb: np.ndarray) -> np.ndarray:
    """Reverse pass of ``inner_loop_fields`` (its lams, ws): the cotangents lb (n x K, on the
    fields lambda^(s), updated in place to those on lambda^(0)) and wb (on w^(s); the cotangent on
    w^(0) is returned). With cbar_pk = -(eta/P) sum_i G_pi lambdabar_ik^(r+1) and
    Deltabar_p = -(eta/P) wbar^(r+1) . g(lambda_p) + sum_k cbar_pk w_k g'(lambda_pk), one step
    back is
        wbar^(r)   = wbar^(r+1) + sum_p [Deltabar_p g(lambda_p) + cbar_p * Delta_p g'(lambda_p)],
        lambdabar_pk^(r) = lambdabar_pk^(r+1) + g'(lambda_pk) [-(eta/P) Delta_p wbar_k^(r+1)
                           + Deltabar_p w_k] + cbar_pk Delta_p w_k g''(lambda_pk),
    all at step r, and lambdabar of the inputs i >= P unchanged (cbar = 0 for anil).
    """
    steps = ws.shape[0] - 1
    n, K = lb.shape
    step = inner_lr / P
    cbar = np.zeros((P, K))
    a = np.empty(K)
    d = np.empty(K)
    for r in range(steps - 1, -1, -1):
        lam, wr = lams[r], ws[r]
        if adapt_J:
            for p in range(P):
                for k in range(K):
                    acc = 0.0
                    for i in range(n):
                        acc += G[p, i] * lb[i, k]
                    cbar[p, k] = -step * acc
        wb_prev = wb.copy()
        for p in range(P):
            delta = error_signal(acts, wr, lam[p], y[p])
            for k in range(K):
                a[k] = g(acts.student, lam[p, k])
                d[k] = g_prime(acts.student, lam[p, k])
            dbar = 0.0
            for k in range(K):
                dbar += -step * wb[k] * a[k] + cbar[p, k] * wr[k] * d[k]
            for k in range(K):
                wb_prev[k] += dbar * a[k] + cbar[p, k] * delta * d[k]
                lb[p, k] += (d[k] * (-step * delta * wb[k] + dbar * wr[k])
                             + cbar[p, k] * delta * wr[k] * g_second(acts.student, lam[p, k]))
        wb = wb_prev
    return wb


@njit(cache=True)
def fewshot_steps(acts, J: np.ndarray, B: np.ndarray, w: np.ndarray, u0: np.ndarray,
                  task_std: float, noise: float, inner_lr: float, inner_steps: int, P: int,
                  adapt_J: bool, second_order: bool, lr: float, lr_head: float, query: int,
                  meta_batch: int, n_steps: int, rng: np.random.Generator) -> None:
    """Advance (J, w) in place by ``n_steps`` outer steps (module docstring):
    J <- J - (lr / meta_batch) sum_tasks sum_i lambdabar_i x_i^T / sqrt N,
    w <- w - (lr_head / (N meta_batch)) sum_tasks wbar.
    """
    K, N = J.shape
    M = B.shape[0]
    n = P + query
    xs = np.empty((n, N))
    lam0 = np.empty((n, K))
    nu = np.empty((n, M))
    y = np.empty(n)
    u = np.empty(M)
    G = np.empty((P, n)) if adapt_J else np.empty((0, 0))
    grad_J = np.empty((K, N))
    grad_w = np.empty(K)
    scale_J = lr / (meta_batch * math.sqrt(N))
    scale_w = lr_head / (meta_batch * N)
    for _ in range(n_steps):
        grad_J[:, :] = 0.0
        grad_w[:] = 0.0
        for _b in range(meta_batch):
            draw_task(acts, J, B, u0, task_std, noise, xs, lam0, nu, y, u, rng)
            if adapt_J:
                gram(xs, P, G)
            _, lb, wb = task_gradients(acts, lam0, y, G, w, inner_lr, inner_steps, P, adapt_J,
                                       second_order)
            for k in range(K):
                grad_w[k] += wb[k]
                row = grad_J[k]
                for i in range(n):
                    coef = lb[i, k]
                    if coef != 0.0:
                        x = xs[i]
                        for j in range(N):
                            row[j] += coef * x[j]
        for k in range(K):
            row, grad = J[k], grad_J[k]
            for j in range(N):
                row[j] -= scale_J * grad[j]
            w[k] -= scale_w * grad_w[k]
