"""Random valid states shared by the tests."""

import numpy as np


def random_state(K: int, M: int, seed: int):
    """A valid (Q, R, T): blocks of Omega = L L^T / (K + M + 1), L a Gaussian matrix; w, u0."""
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((K + M, K + M + 1))
    omega = L @ L.T / (K + M + 1)
    omega = 0.5 * (omega + omega.T)
    return (omega[:K, :K].copy(), omega[:K, K:].copy(), omega[K:, K:].copy(),
            rng.standard_normal(K), rng.standard_normal(M))
