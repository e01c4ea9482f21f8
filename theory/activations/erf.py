"""The activation g(z) = erf(z / sqrt 2): its marker, derivatives and Gaussian integrals.

g'(z) = sqrt(2 / pi) exp(-z^2 / 2) and g''(z) = -z g'(z). The integrals are the closed forms that
``metaode.theory.derive`` derives with sympy into ``erf_kernels`` (docs/model.md §6): the
arcsine kernel I2, and I3, I4, J2 and their gradients by Gaussian integration of g'. The
four-point moments F4 are path integrals of I4 (``erf_fourpoint``). This module and
``erf_fourpoint`` are the only ones that import ``erf_kernels``.

``I4_forms`` (the slices I4(k, l, ., .) of given pairs (k, l) as quadratic forms) computes each
slice by ``i4_row``: I4's own derivation (tilting on (z_k, z_l), then I2 under the tilted
covariance) with the tilt computed once per pair.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, objmode, prange
from numba.extending import overload

from metaode.theory.activations import erf_fourpoint as fourpoint
from metaode.theory.activations import erf_kernels as kernels
from metaode.theory.activations import registry as act

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)


class Erf(NamedTuple):
    """The marker of g(z) = erf(z / sqrt 2) (no parameters)."""


def _erf(*types_) -> bool:
    return all(act.is_marker(t, Erf) for t in types_)


@overload(act.g)
def _g(a, z):
    if _erf(a):
        return lambda a, z: math.erf(z * INV_SQRT_2)


@overload(act.g_prime)
def _g_prime(a, z):
    if _erf(a):
        return lambda a, z: SQRT_2_OVER_PI * math.exp(-0.5 * z * z)


@overload(act.g_second)
def _g_second(a, z):
    if _erf(a):
        return lambda a, z: -z * SQRT_2_OVER_PI * math.exp(-0.5 * z * z)


@overload(act.I2)
def _I2(f, h, c11, c22, c12):
    if _erf(f, h):
        return lambda f, h, c11, c22, c12: kernels.I2(c11, c22, c12)


@overload(act.dI2_dc11)
def _dI2_dc11(f, h, c11, c22, c12):
    if _erf(f, h):
        return lambda f, h, c11, c22, c12: kernels.dI2_dc11(c11, c22, c12)


@overload(act.dI2_dc22)
def _dI2_dc22(f, h, c11, c22, c12):
    if _erf(f, h):
        return lambda f, h, c11, c22, c12: kernels.dI2_dc22(c11, c22, c12)


@overload(act.dI2_dc12)
def _dI2_dc12(f, h, c11, c22, c12):
    if _erf(f, h):
        return lambda f, h, c11, c22, c12: kernels.dI2_dc12(c11, c22, c12)


@overload(act.J2)
def _J2(s, c11, c22, c12):
    if _erf(s):
        return lambda s, c11, c22, c12: kernels.J2(c11, c22, c12)


@overload(act.J2_gradient)
def _J2_gradient(s, c11, c22, c12):
    if _erf(s):
        return lambda s, c11, c22, c12: kernels.J2_gradient(c11, c22, c12)


@overload(act.I3)
def _I3(s, f, c11, c22, c33, c12, c13, c23):
    if _erf(s, f):
        return lambda s, f, c11, c22, c33, c12, c13, c23: kernels.I3(c11, c22, c33, c12, c13,
                                                                     c23)


@overload(act.I3_gradient)
def _I3_gradient(s, f, c11, c22, c33, c12, c13, c23):
    if _erf(s, f):
        return lambda s, f, c11, c22, c33, c12, c13, c23: kernels.I3_gradient(
            c11, c22, c33, c12, c13, c23)


@overload(act.I4)
def _I4(s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34):
    if _erf(s, f, h):
        return lambda s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34: kernels.I4(
            c11, c22, c33, c44, c12, c13, c14, c23, c24, c34)


@overload(act.I4_gradient)
def _I4_gradient(s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34):
    if _erf(s, f, h):
        return lambda s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34: (
            kernels.I4_gradient(c11, c22, c33, c44, c12, c13, c14, c23, c24, c34))


@njit(cache=True)
def i4_row(omega: np.ndarray, k: int, l: int, out: np.ndarray, scaled: np.ndarray) -> None:
    """out[a, b] = I4(k, l, a, b) = E[g'(z_k) g'(z_l) g(z_a) g(z_b)], z ~ N(0, omega), for all a, b.

    Tilting by g'(z_k) g'(z_l) = (2 / pi) exp(-(z_k^2 + z_l^2) / 2) (docs/model.md §6.1) gives
    I4(k, l, a, b) = J2(k, l) I2'(a, b): with A = I + omega_SS, S = (k, l), and the tilted
    covariance omega' = omega - omega_:S A^-1 omega_S:,

        I4(k, l, a, b) = 4 / (pi^2 sqrt(det A)) asin(omega'_ab r_a r_b),
        r_a = (1 + omega'_aa)^-1/2,

    the closed form of §6.2 (Lambda_4 = det A, Lambda_0 = det A omega'_ab, Lambda_1 = det A
    (1 + omega'_33)). With the Cholesky factor A = L L^T and x_a = L^-1 (omega_ka, omega_la),
    omega'_ab = omega_ab - x_a . x_b, so after O(n) work per (k, l) an entry costs one arcsine
    (its argument clipped to [-1, 1] as in ``erf_kernels``); ``scaled`` (3 x n) is work space.
    tests/test_integrals.py checks it against ``erf_kernels.I4``."""
    n = omega.shape[0]
    L11 = np.sqrt(1.0 + omega[k, k])
    L21 = omega[k, l] / L11
    L22 = np.sqrt(1.0 + omega[l, l] - L21 * L21)
    prefactor = 4.0 / (np.pi * np.pi * L11 * L22)
    for a in range(n):  # scaled[:, a] = (r_a, r_a x_a1, r_a x_a2)
        x1 = omega[k, a] / L11
        x2 = (omega[l, a] - L21 * x1) / L22
        r = 1.0 / np.sqrt(1.0 + omega[a, a] - x1 * x1 - x2 * x2)
        scaled[0, a], scaled[1, a], scaled[2, a] = r, r * x1, r * x2
    for a in range(n):
        ra, ya1, ya2 = scaled[0, a], scaled[1, a], scaled[2, a]
        for b in range(a, n):
            arg = ra * scaled[0, b] * omega[a, b] - ya1 * scaled[1, b] - ya2 * scaled[2, b]
            out[a, b] = out[b, a] = prefactor * math.asin(min(1.0, max(-1.0, arg)))


@njit(cache=True)
def i4_forms(omega: np.ndarray, pairs: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """out[p] = X^T I4(k, l, ., .) X at (k, l) = pairs[p] (``I4_forms``: ``i4_row``, then
    ``quadratic_forms``), the pairs one after the other."""
    n = omega.shape[0]
    row, scaled, Y = np.empty((n, n)), np.empty((3, n)), np.empty((n, X.shape[1]))
    for p in range(pairs.shape[0]):
        i4_row(omega, pairs[p, 0], pairs[p, 1], row, scaled)
        act.quadratic_forms(row, X, Y, out[p])


@njit(cache=True, parallel=True, nogil=True)
def i4_forms_parallel(omega: np.ndarray, pairs: np.ndarray, X: np.ndarray,
                      out: np.ndarray) -> None:
    """``i4_forms`` with the pairs in numba's threads (each pair by one thread with the same
    arithmetic: the result does not depend on the number of threads)."""
    n = omega.shape[0]
    for p in prange(pairs.shape[0]):
        row, scaled, Y = np.empty((n, n)), np.empty((3, n)), np.empty((n, X.shape[1]))
        i4_row(omega, pairs[p, 0], pairs[p, 1], row, scaled)
        act.quadratic_forms(row, X, Y, out[p])


@njit(cache=True)
def i4_forms_threaded(omega: np.ndarray, pairs: np.ndarray, X: np.ndarray,
                      out: np.ndarray) -> None:
    """``i4_forms_parallel`` called through the interpreter (``objmode``, ~10 us): compiled code
    that links a parallel=True function and is loaded from numba's disk cache does not start
    numba's threading layer and crashes (numba issues #8578, #9938); the dispatcher does. The
    threads start in the process that first runs it, never in the fork server of
    ``metaode.processes`` (GNU OpenMP's threads do not survive a fork)."""
    with objmode():
        i4_forms_parallel(omega, pairs, X, out)


@overload(act.I4_forms)
def _I4_forms(s, t, omega, K, pairs, X, parallel, out):
    if _erf(s, t):
        def forms(s, t, omega, K, pairs, X, parallel, out):
            if parallel:
                i4_forms_threaded(omega, pairs, X, out)
            else:
                i4_forms(omega, pairs, X, out)
        return forms


@overload(act.F4)
def _F4(f1, f2, f3, f4, C4, nodes, weights):
    if _erf(f1, f2, f3, f4):
        return lambda f1, f2, f3, f4, C4, nodes, weights: fourpoint.four_point(C4, nodes, weights)


@overload(act.F4_gradient)
def _F4_gradient(f1, f2, f3, f4, C4, nodes, weights):
    if _erf(f1, f2, f3, f4):
        return lambda f1, f2, f3, f4, C4, nodes, weights: fourpoint.four_point_gradient(C4)


act.register(act.Activation("erf", Erf(), "g(z) = erf(z / sqrt 2)"))
act.own_I4_forms(Erf, Erf)
