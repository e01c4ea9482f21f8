"""The quadrature rule along the Price path, which the four-point moments ``F4`` receive.

Price's theorem (dE[f]/dC_ab = E[d^2 f / dz_a dz_b] for a != b) turns a Gaussian moment of a
covariance C into an integral along C_t = diag(C) + t offdiag(C), t in [0, 1]: a covariance for
every t, its moment at t = 0 a product of one-dimensional ones. With repeated fields (C singular,
e.g. E[g(z)^2 g(y)^2]) the integrand behaves like sqrt(1 - t) at t = 1; the substitution
t = 1 - s^2 removes that branch point, and Gauss-Legendre quadrature in s converges geometrically
(tests/test_fourpoint.py measures it for erf). ``theory.quadrature_nodes`` sets the number of nodes.
"""

from __future__ import annotations

import numpy as np

#: Gauss-Legendre nodes on s in [0, 1] used by default (near machine precision for erf).
DEFAULT_NODES = 32


def path_rule(n: int = DEFAULT_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t_i and weights W_i with int_0^1 f(t) dt ~ sum_i W_i f(t_i), after t = 1 - s^2."""
    x, wx = np.polynomial.legendre.leggauss(n)
    s = 0.5 * (x + 1.0)
    return 1.0 - s * s, wx * s  # dt = 2 s ds, ds = dx / 2
