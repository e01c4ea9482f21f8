"""The linear activation g(z) = z: its marker, derivatives and Gaussian integrals, alone and
paired with erf.

g' = 1 and g'' = 0. A product of erf and linear factors with at least one linear field has an
elementary Gaussian expectation: ``metaode.theory.derive_linear`` derives each one with sympy
(tilting away every erf g', Stein's lemma on every linear field, the arcsine kernel for what
remains) into ``linear_kernels``, this module's only source of formulas. For two linear fields
I2 = c12, so a linear network's C = Q, D = R and E = T (docs/model.md §6.5).

The kernels are written for one order of the activations of their fields; a call with another
order is routed here to the kernel of its kinds (``_kinds``). The four-point moments are derived
with the erf fields first: ``_F4`` permutes the covariance to that order and ``_F4_gradient``
permutes the gradient back. ``I4_forms`` is the registry's entry-by-entry default.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.extending import overload

from metaode.theory.activations import linear_kernels as kernels
from metaode.theory.activations import registry as act
from metaode.theory.activations.erf import Erf


class Linear(NamedTuple):
    """The marker of g(z) = z (no parameters)."""


def _kinds(*types_) -> str | None:
    """The kinds ("e" erf, "l" linear) of the markers' types, or None when one of them is neither
    or none is linear (then the integral is not this module's)."""
    kinds = ""
    for t in types_:
        if act.is_marker(t, Linear):
            kinds += "l"
        elif act.is_marker(t, Erf):
            kinds += "e"
        else:
            return None
    return kinds if "l" in kinds else None


def _kernel(name: str, kinds: str):
    return getattr(kernels, f"{name}_{kinds}")


@overload(act.g)
def _g(a, z):
    if _kinds(a) == "l":
        return lambda a, z: z


@overload(act.g_prime)
def _g_prime(a, z):
    if _kinds(a) == "l":
        return lambda a, z: 1.0


@overload(act.g_second)
def _g_second(a, z):
    if _kinds(a) == "l":
        return lambda a, z: 0.0


act.route_two_field_integrals(_kinds, kernels)


@overload(act.J2)
def _J2(s, c11, c22, c12):
    if _kinds(s) == "l":
        return lambda s, c11, c22, c12: kernels.J2_l(c11, c22, c12)


@overload(act.J2_gradient)
def _J2_gradient(s, c11, c22, c12):
    if _kinds(s) == "l":
        return lambda s, c11, c22, c12: kernels.J2_gradient_l(c11, c22, c12)


def _three_field(name: str):
    """The overload of I3 or its gradient (s, f; c11, c22, c33, c12, c13, c23)."""
    def resolve(s, f, c11, c22, c33, c12, c13, c23):
        kinds = _kinds(s, f)
        if kinds is not None:
            kernel = _kernel(name, kinds)
            return lambda s, f, c11, c22, c33, c12, c13, c23: kernel(c11, c22, c33, c12, c13,
                                                                     c23)
    return resolve


for _name in ("I3", "I3_gradient"):
    overload(getattr(act, _name))(_three_field(_name))


def _four_field(name: str):
    """The overload of I4 or its gradient (s, f, h; c11, .., c34)."""
    def resolve(s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34):
        kinds = _kinds(s, f, h)
        if kinds is not None:
            kernel = _kernel(name, kinds)
            return lambda s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34: kernel(
                c11, c22, c33, c44, c12, c13, c14, c23, c24, c34)
    return resolve


for _name in ("I4", "I4_gradient"):
    overload(getattr(act, _name))(_four_field(_name))


def _erf_first(kinds: str) -> tuple[tuple[int, int, int, int], str]:
    """(order, sorted kinds): the positions of the four fields with the erf ones first (stable),
    and their kinds in that order (one of ``derive_linear.F4_KINDS``)."""
    order = tuple(sorted(range(4), key=lambda p: kinds[p] == "l"))
    return order, "".join(kinds[p] for p in order)


@njit(cache=True)
def permuted_entries(C4: np.ndarray, order: tuple) -> tuple:
    """(c11, .., c44, c12, c13, c14, c23, c24, c34) of the covariance of the fields in ``order``."""
    a, b, c, d = order
    return (C4[a, a], C4[b, b], C4[c, c], C4[d, d], C4[a, b], C4[a, c], C4[a, d], C4[b, c],
            C4[b, d], C4[c, d])


@njit(cache=True)
def gradient_in_order(partials: tuple, order: tuple) -> np.ndarray:
    """The 4 x 4 gradient (``F4_gradient``'s convention) of the partials in argument order of a
    kernel evaluated on the fields in ``order``, at the fields' own positions."""
    out = np.empty((4, 4))
    for i in range(4):
        out[order[i], order[i]] = partials[i]
    j = 4
    for p in range(4):
        for q in range(p + 1, 4):
            out[order[p], order[q]] = out[order[q], order[p]] = partials[j]
            j += 1
    return out


@overload(act.F4)
def _F4(f1, f2, f3, f4, C4, nodes, weights):
    kinds = _kinds(f1, f2, f3, f4)
    if kinds is not None:
        order, sorted_kinds = _erf_first(kinds)
        kernel = _kernel("F4", sorted_kinds)
        return lambda f1, f2, f3, f4, C4, nodes, weights: kernel(*permuted_entries(C4, order))


@overload(act.F4_gradient)
def _F4_gradient(f1, f2, f3, f4, C4, nodes, weights):
    kinds = _kinds(f1, f2, f3, f4)
    if kinds is not None:
        order, sorted_kinds = _erf_first(kinds)
        kernel = _kernel("F4_gradient", sorted_kinds)
        return lambda f1, f2, f3, f4, C4, nodes, weights: gradient_in_order(
            kernel(*permuted_entries(C4, order)), order)


act.register(act.Activation("linear", Linear(), "g(z) = z", identifiable=False), pairs=("erf",))
