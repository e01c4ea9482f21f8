"""numba building blocks shared by the simulations: activation, fields, fresh inputs."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from theory.activation import g, g_prime  # noqa: F401  (the simulations' activation)


@njit(cache=True)
def draw_input(rng: np.random.Generator, x: np.ndarray) -> None:
    """Fill x with i.i.d. N(0, 1) entries (the same stream as numpy's ``standard_normal``)."""
    for i in range(x.shape[0]):
        x[i] = rng.standard_normal()


@njit(cache=True)
def fields(W: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out_k = W_k . x / sqrt(N): the local fields of the rows of W (lambda for J, nu for B)."""
    scale = 1.0 / math.sqrt(x.shape[0])
    for k in range(W.shape[0]):
        out[k] = np.dot(W[k], x) * scale


@njit(cache=True)
def overlaps(J: np.ndarray, B: np.ndarray):
    """Exact order parameters (Q, R, T) = (J J^T, J B^T, B B^T) / N."""
    N = J.shape[1]
    return J @ J.T / N, J @ B.T / N, B @ B.T / N
