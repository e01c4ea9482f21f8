"""Symbolic derivation of the Gaussian integrals with linear fields: the linear activation g(z) = z
and its pairs with erf.

Every integral the ODEs need (docs/model.md §6) is the expectation of a product of factors, one
per field: g(z_i) or g'(z_i) of erf, z_i or 1 of the linear activation (its g' is 1). With at
least one linear field such a product has an elementary expectation, reached by the rules of
``theory.derive`` applied in a fixed order (``theory.derive_relu.expectation``, whose rules for
erf and linear factors are these three):

1. **Tilting** removes every erf g'(z_i) = sqrt(2 / pi) exp(-z_i^2 / 2):
   E[prod_{i in S} g'(z_i) f(z)] = (2 / pi)^(|S| / 2) det(I + C_SS)^(-1/2) E'[f(z)], with
   z ~ N(0, C') under E', C' = C - C_:S (I + C_SS)^-1 C_S:.
2. **Stein's lemma** removes a linear factor: E[z_i f(z)] = sum_j C_ij E[df / dz_j], where
   d/dz_j turns z_j into 1 and an erf g(z_j) into g'(z_j) (which rule 1 then removes).
3. What is left is a product of erf g's: 1 for none, 0 for an odd number (g is odd), the arcsine
   kernel I2 of ``theory.derive`` for two. Four erf g's (the four-point moment of four erf
   fields) are not elementary and are not asked for here (``erf_fourpoint``).

Each rule is exact, so the kernels are exact; nothing is typed in by hand. ``kernel_specs``
lists the kernels of the linear activation's module (``theory.activations.linear``): I2 and its
partials, I3, I4, J2 and their gradients for every (student, teacher) pair with a linear member,
and the four-point moments F4 and their gradients with the erf fields first (the module permutes
the covariance to that order). ``python -m metaode.theory.derive`` writes them to
``theory/activations/linear_kernels.py``; ``tests/test_derivation.py`` checks that the committed
file is current.
"""

from __future__ import annotations

import itertools

import sympy as sp

from metaode.theory.derive import (
    _args,
    _function_source,
    covariance,
    derive_gradient,
    generated_header,
)
from metaode.theory.derive_relu import ERF, GP, LINEAR, Factor, G, Z, expectation


def value(kind: str, i: int) -> tuple[Factor, ...]:
    """The factor g(z_i) of an activation kind (erf g or the linear z_i)."""
    return ((G, i),) if kind == ERF else ((Z, i),)


def slope(kind: str, i: int) -> tuple[Factor, ...]:
    """The factor g'(z_i) of an activation kind (erf g', none for the linear 1)."""
    return ((GP, i),) if kind == ERF else ()


def integral_I2(f: str, h: str) -> sp.Expr:
    """I2 = E[f(z1) h(z2)]."""
    return sp.simplify(expectation(covariance(2), value(f, 0) + value(h, 1)))


def integral_J2(s: str) -> sp.Expr:
    """J2 = E[s'(z1) s'(z2)]."""
    return sp.simplify(expectation(covariance(2), slope(s, 0) + slope(s, 1)))


def integral_I3(s: str, f: str) -> sp.Expr:
    """I3 = E[s'(z1) z2 f(z3)]."""
    return sp.simplify(expectation(covariance(3), slope(s, 0) + ((Z, 1),) + value(f, 2)))


def integral_I4(s: str, f: str, h: str) -> sp.Expr:
    """I4 = E[s'(z1) s'(z2) f(z3) h(z4)]."""
    return expectation(covariance(4), slope(s, 0) + slope(s, 1) + value(f, 2) + value(h, 3))


def integral_F4(kinds: str) -> sp.Expr:
    """F4 = E[f1(z1) f2(z2) f3(z3) f4(z4)] for the activation kinds of the four fields."""
    factors = tuple(itertools.chain.from_iterable(value(k, i) for i, k in enumerate(kinds)))
    return expectation(covariance(4), factors)


def _with_linear(n: int) -> list[str]:
    """Every word of n kinds with at least one linear field."""
    return ["".join(w) for w in itertools.product((ERF, LINEAR), repeat=n) if LINEAR in w]


#: Four-point kinds with the erf fields first: the module permutes the fields to this order.
F4_KINDS = ("eeel", "eell", "elll", "llll")


def kernel_specs() -> list[tuple[str, sp.Expr | tuple[sp.Expr, ...], list[sp.Symbol], str]]:
    """Every kernel of ``linear_kernels``: (name, expression or tuple, arguments, docstring); names
    end in the activation kinds of the fields (e = erf, l = linear)."""
    C2 = covariance(2)
    specs = []
    for fh in _with_linear(2):
        I2 = integral_I2(*fh)
        specs.append((f"I2_{fh}", I2, _args(2), f"I2 = E[f(z1) h(z2)], (f, h) = {fh}."))
        for name, sym in (("dI2_dc11", C2[0, 0]), ("dI2_dc22", C2[1, 1]), ("dI2_dc12", C2[0, 1])):
            specs.append((f"{name}_{fh}", sp.simplify(sp.diff(I2, sym)), _args(2),
                          f"d(I2_{fh})/d{str(sym)}."))
    J2 = integral_J2(LINEAR)
    specs.append(("J2_l", J2, _args(2), "J2 = E[s'(z1) s'(z2)] = 1, s linear."))
    specs.append(("J2_gradient_l", derive_gradient(J2, 2), _args(2), "Gradient of J2_l."))
    for sf in _with_linear(2):
        I3 = integral_I3(*sf)
        specs.append((f"I3_{sf}", I3, _args(3), f"I3 = E[s'(z1) z2 f(z3)], (s, f) = {sf}."))
        specs.append((f"I3_gradient_{sf}", derive_gradient(I3, 3), _args(3),
                      f"Gradient of I3_{sf} (argument order)."))
    for sfh in _with_linear(3):
        I4 = integral_I4(*sfh)
        specs.append((f"I4_{sfh}", I4, _args(4),
                      f"I4 = E[s'(z1) s'(z2) f(z3) h(z4)], (s, f, h) = {sfh}."))
        specs.append((f"I4_gradient_{sfh}", derive_gradient(I4, 4), _args(4),
                      f"Gradient of I4_{sfh} (argument order)."))
    for kinds in F4_KINDS:
        F4 = integral_F4(kinds)
        specs.append((f"F4_{kinds}", F4, _args(4),
                      f"F4 = E[f1(z1) f2(z2) f3(z3) f4(z4)], kinds {kinds}."))
        specs.append((f"F4_gradient_{kinds}", derive_gradient(F4, 4), _args(4),
                      f"Gradient of F4_{kinds} (argument order; off-diagonal: the symmetric "
                      f"pair)."))
    return specs


HEADER = generated_header(
    "Closed-form Gaussian integrals with linear fields (the linear activation\ng(z) = z and its "
    "pairs with erf) as numba kernels. Names end in the activation kinds of the\nfields "
    "(e = erf, l = linear).", "theory/derive_linear.py")


def generated_source() -> str:
    """The full text of theory/activations/linear_kernels.py."""
    blocks = [HEADER.rstrip()]
    for name, expr, args, doc in kernel_specs():
        blocks.append(_function_source(name, expr, args, doc))
    return "\n\n\n".join(blocks) + "\n"
