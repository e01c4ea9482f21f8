"""Four-point moments F = E[g(z1) g(z2) g(z3) g(z4)] of the erf activation, z ~ N(0, C), and
their gradient dF/dC (the erf implementation of ``F4`` and ``F4_gradient``).

They are not elementary for erf, but their derivatives are (Price's theorem,
dE[f]/dC_ab = E[d^2 f / dz_a dz_b] for a != b). Along the path C_t = diag(C) + t offdiag(C),
t in [0, 1] (a covariance for every t, being a convex combination of two),

    dF(C_t)/dt = sum_{a<b} C_ab E_t[g'(z_a) g'(z_b) g(z_c) g(z_d)]
               = sum_{a<b} C_ab I4_t(a, b; c, d),

with {c, d} the other two positions and I4 the sympy-derived closed form (``erf_kernels``).
At t = 0 the fields are independent and F = prod_a E[g(z_a)] = 0 (g is odd), so

    F(C) = int_0^1 sum_{a<b} C_ab I4_t(a, b; c, d) dt,

integrated with the rule of ``quadrature.path_rule`` (which removes the sqrt(1 - t) branch point
of repeated fields). The gradient needs no quadrature: dF/dC_pq = I4(p, q; r, s) at t = 1 for
p != q, and on the diagonal Stein's lemma with g''(z) = -z g'(z) gives
dF/dC_pp = 1/2 E[g''(z_p) g_q g_r g_s] = -1/2 sum_{j != p} C_pj I4(p, j) / (1 + C_pp).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from metaode.theory.activations.erf_kernels import I4

_PAIRS = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1))


@njit(cache=True)
def pair_i4(C: np.ndarray, a: int, b: int, c: int, d: int, t: float) -> float:
    """E_t[g'(z_a) g'(z_b) g(z_c) g(z_d)] under C_t = diag(C) + t offdiag(C)."""
    return I4(C[a, a], C[b, b], C[c, c], C[d, d], t * C[a, b], t * C[a, c], t * C[a, d],
              t * C[b, c], t * C[b, d], t * C[c, d])


@njit(cache=True)
def linear_pair(C: np.ndarray, a: int, b: int, c: int, d: int, t: float) -> float:
    """The same pair term for the linear activation g(z) = z: E_t[z_c z_d] = t C_cd (c != d as
    positions), for which F reduces to Isserlis' C12 C34 + C13 C24 + C14 C23 (a check of the path
    integral and its quadrature)."""
    return t * C[c, d]


@njit(cache=True)
def four_point(C: np.ndarray, nodes: np.ndarray, weights: np.ndarray, pair=pair_i4) -> float:
    """F = E[g(z1) g(z2) g(z3) g(z4)] for a 4 x 4 covariance C (repeated fields allowed).

    ``pair(C, a, b, c, d, t)`` is E_t[g'(z_a) g'(z_b) g(z_c) g(z_d)] (erf: ``pair_i4``).
    """
    total = 0.0
    for i in range(nodes.shape[0]):
        t = nodes[i]
        acc = 0.0
        for p in range(6):
            a, b, c, d = _PAIRS[p]
            if C[a, b] != 0.0:
                acc += C[a, b] * pair(C, a, b, c, d, t)
        total += weights[i] * acc
    return total


@njit(cache=True)
def four_point_gradient(C: np.ndarray) -> np.ndarray:
    """dF/dC for a 4 x 4 covariance: off-diagonal (p, q) = derivative along the symmetric pair,
    I4(p, q; r, s); diagonal (p, p) = 1/2 E[g''(z_p) ...] = -1/2 sum_j C_pj I4(p, j) / (1 + C_pp).
    """
    grad = np.zeros((4, 4))
    for i in range(6):
        p, q, r, s = _PAIRS[i]
        v = pair_i4(C, p, q, r, s, 1.0)
        grad[p, q] = grad[q, p] = v
    for p in range(4):
        acc = 0.0
        for j in range(4):
            if j != p:
                acc += C[p, j] * grad[p, j]
        grad[p, p] = -0.5 * acc / (1.0 + C[p, p])
    return grad
