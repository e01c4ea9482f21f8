"""Four-point moments F = E[g(z1) g(z2) g(z3) g(z4)] of the erf activation, z ~ N(0, C).

They are not elementary for erf, but their derivatives are (Price's theorem,
dE[f]/dC_ab = E[d^2 f / dz_a dz_b] for a != b). Along the path C_t = diag(C) + t offdiag(C),
t in [0, 1] (a covariance for every t, being a convex combination of two),

    dF(C_t)/dt = sum_{a<b} C_ab E_t[g'(z_a) g'(z_b) g(z_c) g(z_d)]
               = sum_{a<b} C_ab I4_t(a, b; c, d),

with {c, d} the other two positions and I4 the sympy-derived closed form (``erf_kernels``).
At t = 0 the fields are independent and F = prod_a E[g(z_a)] = 0 (g is odd), so

    F(C) = int_0^1 sum_{a<b} C_ab I4_t(a, b; c, d) dt.

Repeated fields (C singular, e.g. F = E[g(z)^2 g(y)^2]) make the integrand behave like
sqrt(1 - t) at t = 1; the substitution t = 1 - s^2 removes that branch point, and Gauss-Legendre
quadrature in s converges geometrically (``tests/test_fourpoint.py`` measures it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from metaode.theory.activations.erf_kernels import I4

#: Gauss-Legendre nodes on s in [0, 1] used by default (near machine precision, see the tests).
DEFAULT_NODES = 32

_PAIRS = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1))


def path_rule(n: int = DEFAULT_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t_i and weights W_i with int_0^1 f(t) dt ~ sum_i W_i f(t_i), after t = 1 - s^2."""
    x, wx = np.polynomial.legendre.leggauss(n)
    s = 0.5 * (x + 1.0)
    return 1.0 - s * s, wx * s  # dt = 2 s ds, ds = dx / 2


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
