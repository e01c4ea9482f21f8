"""numba building blocks shared by the simulations: activation, fields, fresh inputs.

The loops over the N input dimensions are written out instead of calling ``np.dot``: numba's
``np.dot`` of two vectors is OpenBLAS's ``ddot``, which splits long vectors over threads, and at
N >= 10^5 the synchronisation made a step ~10x slower than its arithmetic (and oversubscribed the
cores when seeds run in parallel processes). The sums of products (``dot``) are compiled with the
``reassoc`` and ``contract`` fast-math flags so that LLVM vectorises them (several partial sums,
fused multiply-adds); the result is a deterministic function of the inputs on a given machine
(same compiled code), not the left-to-right sum.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from metaode.theory.activations import g, g_prime, g_second  # noqa: F401  (the activations)


@njit(cache=True)
def draw_input(rng: np.random.Generator, x: np.ndarray) -> None:
    """Fill x with i.i.d. N(0, 1) entries (the same stream as numpy's ``standard_normal``)."""
    for i in range(x.shape[0]):
        x[i] = rng.standard_normal()


@njit(cache=True, fastmath={"reassoc", "contract"})
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum_i a_i b_i (vectorised: the order of the additions is the compiler's)."""
    total = 0.0
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total


@njit(cache=True)
def fields(W: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out_k = W_k . x / sqrt(N): the local fields of the rows of W (lambda for J, nu for B)."""
    scale = 1.0 / math.sqrt(x.shape[0])
    for k in range(W.shape[0]):
        out[k] = dot(W[k], x) * scale


@njit(cache=True)
def overlaps(J: np.ndarray, B: np.ndarray):
    """Exact order parameters (Q, R, T) = (J J^T, J B^T, B B^T) / N."""
    N = J.shape[1]
    return J @ J.T / N, J @ B.T / N, B @ B.T / N


@njit(cache=True)
def network_output(a, head: np.ndarray, z: np.ndarray) -> float:
    """sum_k head_k g(z_k): the output of a two-layer network with activation a (marker), head
    and local fields z (the student's yhat with (w, lambda), the teacher's with (u, nu))."""
    total = 0.0
    for k in range(head.shape[0]):
        total += head[k] * g(a, z[k])
    return total


@njit(cache=True)
def teacher_label(acts, u: np.ndarray, nu: np.ndarray, noise: float,
                  rng: np.random.Generator) -> float:
    """y = sum_m u_m g(nu_m) + noise zeta, zeta ~ N(0, 1) drawn from rng (only if noise > 0)."""
    label = network_output(acts.teacher, u, nu)
    if noise > 0.0:
        label += noise * rng.standard_normal()
    return label


@njit(cache=True)
def error_signal(acts, w: np.ndarray, lam: np.ndarray, y: float) -> float:
    """Delta = yhat - y = sum_k w_k g(lambda_k) - y: the error signal of the square loss
    1/2 Delta^2 (docs/model.md §3), whose gradient every simulated update follows."""
    return network_output(acts.student, w, lam) - y
