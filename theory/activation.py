"""The activation g(z) = erf(z / sqrt 2) and its derivative, as scalar numba functions."""

from __future__ import annotations

import math

from numba import njit

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)


@njit(cache=True, inline="always")
def g(z: float) -> float:
    """g(z) = erf(z / sqrt 2)."""
    return math.erf(z * INV_SQRT_2)


@njit(cache=True, inline="always")
def g_prime(z: float) -> float:
    """g'(z) = sqrt(2 / pi) exp(-z^2 / 2)."""
    return SQRT_2_OVER_PI * math.exp(-0.5 * z * z)
