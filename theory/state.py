"""The flat state vector y = (Q upper triangle row by row, R row-major, w) of the ODEs."""

from __future__ import annotations

import numpy as np
from numba import njit


def state_size(K: int, M: int) -> int:
    """Length of y: K (K + 1) / 2 entries of Q, K M of R, K of w."""
    return K * (K + 1) // 2 + K * M + K


@njit(cache=True)
def pack(Q: np.ndarray, R: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y from (Q, R, w); Q is read from its upper triangle."""
    K, M = R.shape
    y = np.empty(K * (K + 1) // 2 + K * M + K)
    i = 0
    for k in range(K):
        for l in range(k, K):
            y[i] = Q[k, l]
            i += 1
    for k in range(K):
        for m in range(M):
            y[i] = R[k, m]
            i += 1
    y[i:] = w
    return y


@njit(cache=True)
def unpack(y: np.ndarray, K: int, M: int):
    """(Q, R, w) from y, Q symmetric."""
    Q = np.empty((K, K))
    R = np.empty((K, M))
    i = 0
    for k in range(K):
        for l in range(k, K):
            Q[k, l] = Q[l, k] = y[i]
            i += 1
    for k in range(K):
        for m in range(M):
            R[k, m] = y[i]
            i += 1
    w = y[i : i + K].copy()
    return Q, R, w


def column_names(K: int, M: int) -> list[str]:
    """Column names of the state (docs/model.md §16), in the order of y: Q_k_l (k <= l), R_k_m,
    w_k."""
    names = [f"Q_{k}_{l}" for k in range(K) for l in range(k, K)]
    names += [f"R_{k}_{m}" for k in range(K) for m in range(M)]
    names += [f"w_{k}" for k in range(K)]
    return names
