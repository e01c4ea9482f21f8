"""The activation g(z) = erf(z / sqrt 2): its marker, derivatives and Gaussian integrals.

g'(z) = sqrt(2 / pi) exp(-z^2 / 2) and g''(z) = -z g'(z). The integrals are the closed forms that
``metaode.theory.derive`` derives with sympy into ``erf_kernels`` (docs/model.md §6): the
arcsine kernel I2, and I3, I4, J2 and their gradients by Gaussian integration of g'. The
four-point moments F4 are path integrals of I4 (``erf_fourpoint``). This module and
``erf_fourpoint`` are the only ones that import ``erf_kernels``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

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


@overload(act.F4)
def _F4(f1, f2, f3, f4, C4, nodes, weights):
    if _erf(f1, f2, f3, f4):
        return lambda f1, f2, f3, f4, C4, nodes, weights: fourpoint.four_point(C4, nodes, weights)


@overload(act.F4_gradient)
def _F4_gradient(f1, f2, f3, f4, C4, nodes, weights):
    if _erf(f1, f2, f3, f4):
        return lambda f1, f2, f3, f4, C4, nodes, weights: fourpoint.four_point_gradient(C4)


act.register(act.Activation("erf", Erf(), "g(z) = erf(z / sqrt 2)"))
