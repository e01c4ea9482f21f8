"""Construction of teacher and student networks with prescribed overlaps."""

from __future__ import annotations

import numpy as np


def networks_with_overlaps(Q: np.ndarray, R: np.ndarray, T: np.ndarray, N: int,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """First layers J (K x N) and B (M x N) with J J^T/N = Q, J B^T/N = R, B B^T/N = T exactly.

    With Omega = [[Q, R], [R^T, T]] = L L^T (L from the eigen-decomposition, so a semi-definite
    Omega is allowed) and O an N x (K + M) matrix with orthonormal columns spanning a uniformly
    random subspace, the rows of sqrt(N) L O^T have Gram matrix N Omega, up to rounding.
    """
    K, M = R.shape
    if N < K + M:
        raise ValueError(f"N = {N} must be at least K + M = {K + M}")
    omega = np.block([[Q, R], [R.T, T]])
    vals, vecs = np.linalg.eigh(omega)
    L = vecs * np.sqrt(np.clip(vals, 0.0, None))
    O, _ = np.linalg.qr(rng.standard_normal((N, K + M)))
    W = np.sqrt(N) * (L @ O.T)
    return np.ascontiguousarray(W[:K]), np.ascontiguousarray(W[K:])
