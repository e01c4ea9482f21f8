"""The quadrivariate sign moment sign4 = E[sign(u1) sign(u2) sign(u3) sign(u4)], u ~ N(0, C): the
one Gaussian integral of the ReLU activation that is not elementary (``theory.derive_relu``).

By Price's theorem along C_t = diag(C) + t offdiag(C), t in [0, 1] (sign4 = 0 at t = 0, where
the u's are independent and centred), with r the correlations of C,

    sign4 = int_0^1 sum_{a<b} r_ab (2 / pi) (1 - t^2 r_ab^2)^(-1/2) (2 / pi) asin(rho_cd|ab(t)) dt,

(c, d) the other two fields and rho_cd|ab(t) the correlation of (u_c, u_d) given u_a = u_b = 0
under C_t: the derivative d sign4 / dC_ab = E[2 delta(u_a) 2 delta(u_b) sign(u_c) sign(u_d)] is
four times the density of (u_a, u_b) at 0 times the arcsine moment of the conditional pair. The
integrand is elementary; where two fields are (nearly) collinear, 1 - t^2 r_ab^2 vanishes (nearly)
at t = 1 like 1 - t, an integrable endpoint singularity, which the tanh-sinh (double exponential)
rule ``NODES`` integrates to ~1e-14 also at r_ab = 1 (tests/test_relu_integrals.py measures it
against an independent integration). 1 - t^2 r^2 is formed as (1 - t)(1 + t) + t^2 (1 - r^2),
with 1 - t stored with the nodes and 1 - r^2 = (c_aa c_bb - c_ab^2) / (c_aa c_bb) from the
entries, so that no cancellation happens near t = 1.

Two rules. The integrand's singularities in t are where C_t or one of its 2 x 2 blocks is
singular: t = 1 / (1 - mu) for each eigenvalue mu of the correlation matrix of C (and
t = +-1 / r_ab, no closer), so the nearest lies a distance ~mu_min beyond t = 1 and at least 1/3
before t = 0. Where mu_min is not small (``FAST_RULES``: mu_min above a floor, tested by a
Cholesky factorisation of the correlation matrix minus the floor), Gauss-Legendre in s,
t = 1 - s^2 (``quadrature.path_rule``, the rule of the four-point moments, which also removes
a square-root branch point at t = 1), converges geometrically with 16 or 24 nodes; elsewhere
the tanh-sinh rule takes the near-singular endpoint (77 nodes).
Against a finer tanh-sinh rule (tests/test_relu_integrals.py) the rules below err by at most
8e-14 where they are taken, and by 8e-12 between half their floor and the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from metaode.theory.activations.quadrature import path_rule

#: Step and half-width of the tanh-sinh rule in its variable x (t = (1 + tanh(pi/2 sinh x)) / 2).
STEP = 1.0 / 12.0
HALF_WIDTH = 3.2


def tanh_sinh(step: float = STEP, half_width: float = HALF_WIDTH):
    """(t, 1 - t, weights) of the tanh-sinh rule on [0, 1]."""
    x = np.arange(-half_width, half_width + step / 2, step)
    u = 0.5 * np.pi * np.sinh(x)
    t = 0.5 * (1.0 + np.tanh(u))
    rest = 1.0 / (1.0 + np.exp(2.0 * u))  # 1 - t without cancellation
    w = step * 0.25 * np.pi * np.cosh(x) / np.cosh(u) ** 2
    keep = (w > 1e-300) & (t > 0.0) & (rest > 0.0)
    return t[keep], rest[keep], w[keep]


def gauss_legendre(n: int):
    """(t, 1 - t, weights) of ``quadrature.path_rule``: Gauss-Legendre with n nodes in s on
    [0, 1], t = 1 - s^2."""
    t, weights = path_rule(n)
    return t, 1.0 - t, weights


def _constants(rule):
    """A rule as tuples of floats: numba compiles tuples in as constants, while a global array
    of this size would be a "dynamic global" that keeps every caller out of the disk cache."""
    return tuple(tuple(float(v) for v in x) for x in rule)


#: The tanh-sinh rule (any covariance).
NODES, REST, WEIGHTS = _constants(tanh_sinh())
#: (floor on the smallest eigenvalue of the correlation matrix, Gauss-Legendre nodes in s):
#: the cheaper rules, tried in order.
FAST_RULES = ((0.1, 16), (0.02, 24))
_GL16 = _constants(gauss_legendre(FAST_RULES[0][1]))
_GL24 = _constants(gauss_legendre(FAST_RULES[1][1]))

#: The pairs (a, b) of four fields, in the order of the kernel arguments c12 .. c34, each with its
#: complement (c, d).
PAIRS = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1))


@njit(cache=True)
def sign4_of(C: np.ndarray) -> float:
    """sign4 of a 4 x 4 covariance C (module docstring). Two fields of correlation exactly +-1
    are one sign (up to its sign): then sign4 = +-(2 / pi) asin(r_cd) of the other two."""
    r = np.empty((4, 4))
    gap = np.empty((4, 4))  # 1 - r_ab^2
    for a in range(4):
        for b in range(4):
            scale = C[a, a] * C[b, b]
            r[a, b] = C[a, b] / math.sqrt(scale)
            gap[a, b] = max(0.0, (scale - C[a, b] * C[a, b]) / scale)
    for p in range(6):
        a, b, c, d = PAIRS[p]
        if gap[a, b] == 0.0:
            return np.sign(r[a, b]) * 2.0 / math.pi * math.asin(min(1.0, max(-1.0, r[c, d])))
    if _eigenvalues_above(r, FAST_RULES[0][0]):
        return path_sum(r, gap, *_GL16)
    if _eigenvalues_above(r, FAST_RULES[1][0]):
        return path_sum(r, gap, *_GL24)
    return path_sum(r, gap, NODES, REST, WEIGHTS)


@njit(cache=True)
def _eigenvalues_above(r: np.ndarray, floor: float) -> bool:
    """Whether every eigenvalue of the 4 x 4 correlation matrix r exceeds ``floor``: the
    Cholesky factorisation of r - floor I has positive pivots."""
    L = np.zeros((4, 4))
    for j in range(4):
        pivot = r[j, j] - floor
        for k in range(j):
            pivot -= L[j, k] * L[j, k]
        if not pivot > 0.0:
            return False
        L[j, j] = math.sqrt(pivot)
        for i in range(j + 1, 4):
            acc = r[i, j]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            L[i, j] = acc / L[j, j]
    return True


@njit(cache=True)
def path_sum(r: np.ndarray, gap: np.ndarray, nodes: Sequence[float], rest: Sequence[float],
             weights: Sequence[float]) -> float:
    """sign4 by the rule (t_i, 1 - t_i, W_i) on the Price path (module docstring), from the
    correlations r and the gaps 1 - r_ab^2; the rule as tuples (compiled in as constants) or
    arrays."""
    total = 0.0
    for i in range(len(nodes)):
        t, one_minus_t = nodes[i], rest[i]
        value = 0.0
        for p in range(6):
            a, b, c, d = PAIRS[p]
            rab = r[a, b]
            if rab == 0.0:
                continue
            det = one_minus_t * (1.0 + t) + t * t * gap[a, b]
            xc1, xc2, xd1, xd2 = t * r[c, a], t * r[c, b], t * r[d, a], t * r[d, b]
            tr = t * rab
            vc = 1.0 - (xc1 * xc1 + xc2 * xc2 - 2.0 * tr * xc1 * xc2) / det
            vd = 1.0 - (xd1 * xd1 + xd2 * xd2 - 2.0 * tr * xd1 * xd2) / det
            cd = t * r[c, d] - (xc1 * xd1 + xc2 * xd2 - tr * (xc1 * xd2 + xc2 * xd1)) / det
            norm = vc * vd
            rho = cd / math.sqrt(norm) if norm > 0.0 else 0.0
            value += rab / math.sqrt(det) * math.asin(min(1.0, max(-1.0, rho)))
        total += weights[i] * value
    return total * 4.0 / (math.pi * math.pi)


@njit(cache=True)
def sign4(c11, c22, c33, c44, c12, c13, c14, c23, c24, c34):
    """sign4 of the covariance with these entries (the argument order of the kernels)."""
    C = np.empty((4, 4))
    C[0, 0], C[1, 1], C[2, 2], C[3, 3] = c11, c22, c33, c44
    C[0, 1] = C[1, 0] = c12
    C[0, 2] = C[2, 0] = c13
    C[0, 3] = C[3, 0] = c14
    C[1, 2] = C[2, 1] = c23
    C[1, 3] = C[3, 1] = c24
    C[2, 3] = C[3, 2] = c34
    return sign4_of(C)
