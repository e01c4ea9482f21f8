"""An independent numerical Gaussian integration for kinked integrands (the ReLU integrals' tests).

E[prod_i f_i(z_i)] for z ~ N(0, C) with n <= 4 fields, each factor a product
f_i(z) = z^p Theta(z)^theta erf(z / sqrt 2)^r (sqrt(2 / pi) exp(-z^2 / 2))^q. With z = L x
(L the lower Cholesky factor, x standard normal) the integral is nested over x_1, .., x_n; at level
i the factor f_i is kinked where z_i = 0, i.e. at x_i = -(sum_{j<i} L_ij x_j) / L_ii, so each
one-dimensional integral is split there and each piece (on [-R, R], R = 8.5: the normal tail
beyond is 1e-17) is done by Gauss-Legendre with ``nodes`` points. Every piece is smooth; the inner
integrals are smooth functions of the outer x's as long as C is well conditioned, so the rule
converges geometrically (``reference`` takes the difference of two rules as its error).
Nothing here shares code or formulas with the kernels it checks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

RANGE = 8.5


@njit(cache=True)
def _factor(z, p, theta, r, q):
    if theta and z <= 0.0:
        return 0.0
    v = z ** p
    if r:
        v *= math.erf(z / math.sqrt(2.0)) ** r
    if q:
        v *= (math.sqrt(2.0 / math.pi) * math.exp(-0.5 * z * z)) ** q
    return v


@njit(cache=True)
def _level_nodes(b, x0, w0, xs, ws):
    """Nodes and normal-density weights on [-R, b] and [b, R] (b clipped to [-R, R])."""
    b = min(RANGE, max(-RANGE, b))
    m = x0.shape[0]
    for j in range(m):
        h, c = 0.5 * (b + RANGE), 0.5 * (b - RANGE)
        x = c + h * x0[j]
        xs[j], ws[j] = x, h * w0[j] * math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        h, c = 0.5 * (RANGE - b), 0.5 * (RANGE + b)
        x = c + h * x0[j]
        xs[m + j], ws[m + j] = x, h * w0[j] * math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@njit(cache=True)
def _nested(L, codes, x0, w0):
    n = L.shape[0]
    m2 = 2 * x0.shape[0]
    xs = np.empty((4, m2))
    ws = np.empty((4, m2))
    x = np.zeros(4)
    total = 0.0
    _level_nodes(0.0, x0, w0, xs[0], ws[0])
    for i0 in range(m2):
        x[0] = xs[0, i0]
        f0 = ws[0, i0] * _factor(L[0, 0] * x[0], *codes[0])
        if f0 == 0.0:
            continue
        if n == 1:
            total += f0
            continue
        _level_nodes(-L[1, 0] * x[0] / L[1, 1], x0, w0, xs[1], ws[1])
        for i1 in range(m2):
            x[1] = xs[1, i1]
            f1 = f0 * ws[1, i1] * _factor(L[1, 0] * x[0] + L[1, 1] * x[1], *codes[1])
            if f1 == 0.0:
                continue
            if n == 2:
                total += f1
                continue
            _level_nodes(-(L[2, 0] * x[0] + L[2, 1] * x[1]) / L[2, 2], x0, w0, xs[2], ws[2])
            for i2 in range(m2):
                x[2] = xs[2, i2]
                z2 = L[2, 0] * x[0] + L[2, 1] * x[1] + L[2, 2] * x[2]
                f2 = f1 * ws[2, i2] * _factor(z2, *codes[2])
                if f2 == 0.0:
                    continue
                if n == 3:
                    total += f2
                    continue
                _level_nodes(-(L[3, 0] * x[0] + L[3, 1] * x[1] + L[3, 2] * x[2]) / L[3, 3],
                             x0, w0, xs[3], ws[3])
                for i3 in range(m2):
                    z3 = L[3, 0] * x[0] + L[3, 1] * x[1] + L[3, 2] * x[2] + L[3, 3] * xs[3, i3]
                    total += f2 * ws[3, i3] * _factor(z3, *codes[3])
    return total


def integrate(C: np.ndarray, codes: list[tuple[int, int, int, int]], nodes: int) -> float:
    """E[prod_i f_i(z_i)], z ~ N(0, C), codes[i] = (p, theta, r, q) of f_i (module docstring)."""
    x0, w0 = np.polynomial.legendre.leggauss(nodes)
    padded = list(codes) + [(0, 0, 0, 0)] * (4 - len(codes))  # a factor 1 beyond n
    typed = tuple(tuple(int(v) for v in c) for c in padded)
    return _nested(np.linalg.cholesky(np.asarray(C, dtype=float)), typed, x0, w0)


def reference(C: np.ndarray, codes: list[tuple[int, int, int, int]],
              nodes: tuple[int, int]) -> tuple[float, float]:
    """(value, error): ``integrate`` with the larger number of nodes, and its difference from the
    smaller one (an error estimate of the smaller rule, so a bound for the larger one)."""
    coarse, fine = (integrate(C, codes, n) for n in nodes)
    return fine, abs(fine - coarse)
