"""The population-support ANIL simulation applies the exact gradient of the query loss.

One outer step of ``simulations.anil.anil_population_steps`` moves J by -lr grad_J L_q and w by
-(lr_head / N) grad_w L_q, where L_q is the mean query loss of the adapted heads
w'_b = Z(J, w) e_b, Z from the population inner loop on C(J J^T / N), D(J J^T / N, J B^T / N).
With lr = lr_head = 1 the step itself is the gradient. The reference replays the kernel's draws
(per task: the M task normals, then per query example its N inputs and, with label noise, its
noise draw) and differentiates L_q by central differences; second order includes the dependence
of w' on J and w through the inner loop, first order holds w' fixed.
"""

import math

import numpy as np
import pytest
from scipy.special import erf
from states import ERF

from metaode.simulations.anil import anil_population_steps
from metaode.simulations.networks import networks_with_overlaps
from metaode.theory.anil import inner_loop
from metaode.theory.fields import error_blocks, task_basis

N, K, M = 40, 2, 2
QUERY, META_BATCH = 2, 2
TASK_STD, NOISE, INNER_LR = 0.6, 0.3, 0.4


def g(z):
    return erf(z / math.sqrt(2))


def draws(seed):
    """Replay of the kernel's draws for one outer step: per task (e, inputs, noises)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(META_BATCH):
        e = np.concatenate([[1.0], TASK_STD * rng.standard_normal(M)])
        xs, zetas = [], []
        for _ in range(QUERY):
            xs.append(rng.standard_normal(N))
            zetas.append(rng.standard_normal())
        tasks.append((e, np.array(xs), np.array(zetas)))
    return tasks


def query_loss(J, w, B, u0, steps, tasks, w_fixed=None):
    """L_q = mean over tasks and query examples of 1/2 (w' . g(lambda) - y)^2."""
    Q, R, T = J @ J.T / N, J @ B.T / N, B @ B.T / N
    C, D, _ = error_blocks(ERF, Q, R, T)
    U, _ = task_basis(u0, TASK_STD)
    Z = inner_loop(C, D, w, U, INNER_LR, steps)[steps]
    total = 0.0
    for b, (e, xs, zetas) in enumerate(tasks):
        w_ad = Z @ e if w_fixed is None else w_fixed[b]
        u = U @ e
        for x, zeta in zip(xs, zetas, strict=True):
            y = u @ g(B @ x / math.sqrt(N)) + NOISE * zeta
            total += 0.5 * (w_ad @ g(J @ x / math.sqrt(N)) - y) ** 2
    return total / (QUERY * META_BATCH), [Z @ e for e, _, _ in tasks]


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("order", ["second", "first"])
def test_one_step_is_the_exact_query_loss_gradient(steps, order):
    rng = np.random.default_rng(7)
    Q0 = np.array([[0.6, 0.1], [0.1, 0.5]])
    R0 = np.array([[0.3, 0.05], [0.02, 0.25]])
    J, B = networks_with_overlaps(Q0, R0, np.eye(M), N, rng)
    w = np.array([0.4, -0.3])
    u0 = np.array([1.0, 0.7])
    seed = 11
    J1, w1 = J.copy(), w.copy()
    Q, R, T = J @ J.T / N, J @ B.T / N, B @ B.T / N
    anil_population_steps(ERF, J1, B, w1, Q.copy(), R.copy(), T, u0, TASK_STD, NOISE, INNER_LR,
                          steps, order == "second", 1.0, 1.0, QUERY, META_BATCH, 1,
                          np.random.default_rng(seed))
    grad_J = -(J1 - J)
    grad_w = -(w1 - w) * N
    tasks = draws(seed)
    _, w_adapted = query_loss(J, w, B, u0, steps, tasks)
    fixed = None if order == "second" else w_adapted

    h = 1e-5  # central differences: truncation ~h^2 |L'''|, rounding ~1e-16/h; both ~1e-10

    def fd_grad_J(held):
        out = np.zeros_like(J)
        for k in range(K):
            for i in range(N):
                d = np.zeros_like(J)
                d[k, i] = h
                out[k, i] = (query_loss(J + d, w, B, u0, steps, tasks, held)[0]
                             - query_loss(J - d, w, B, u0, steps, tasks, held)[0]) / (2 * h)
        return out

    fd_J = fd_grad_J(fixed)
    if order == "second":
        fd_w = np.array([(query_loss(J, w + h * dw, B, u0, steps, tasks)[0]
                          - query_loss(J, w - h * dw, B, u0, steps, tasks)[0]) / (2 * h)
                         for dw in np.eye(K)])
    else:  # first order: the head moves along the gradient with respect to w'
        fd_w = np.zeros(K)
        for b in range(META_BATCH):
            for dw in np.eye(K):
                plus = [wa + (h * dw if c == b else 0) for c, wa in enumerate(w_adapted)]
                minus = [wa - (h * dw if c == b else 0) for c, wa in enumerate(w_adapted)]
                fd_w += dw * (query_loss(J, w, B, u0, steps, tasks, plus)[0]
                              - query_loss(J, w, B, u0, steps, tasks, minus)[0]) / (2 * h)
    scale_J, scale_w = np.abs(fd_J).max(), np.abs(fd_w).max()
    assert np.abs(grad_J - fd_J).max() <= 1e-7 * scale_J
    assert np.abs(grad_w - fd_w).max() <= 1e-7 * scale_w
    if order == "second":
        # the test is sharp: the second-order term (through w'(J)) is far above the tolerance
        first_order = fd_grad_J(w_adapted)
        assert np.abs(grad_J - first_order).max() > 1e-3 * scale_J
