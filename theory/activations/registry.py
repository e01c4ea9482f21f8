"""The activation registry and the generic functions that compiled code calls on activations.

An activation is a numba *marker*: an instance of a ``typing.NamedTuple`` class (with fields if
the activation has parameters). Compiled code receives the markers of the student and the teacher
(``Activations``) as an argument and calls the generic functions below on them; numba resolves
each call at compile time from the marker's type (``numba.extending.overload``), so a kernel is
compiled once per activation pair, inlined like a direct call, and cached on disk like any other
``cache=True`` function. Nothing outside an activation's own module names its formulas.

Scalar functions of one activation a (docs/model.md §2):

    g(a, z), g_prime(a, z), g_second(a, z)

Gaussian integrals over centred fields with covariance entries c_ij (arguments: the diagonal
first, then c12, c13, ... row-major), s the student's activation and f, h either one:

    I2(f, h; c11, c22, c12)              = E[f(z1) h(z2)]
    I3(s, f; c11, c22, c33, c12, c13, c23) = E[s'(z1) z2 f(z3)]
    I4(s, f, h; c11, .., c34)            = E[s'(z1) s'(z2) f(z3) h(z4)]
    J2(s; c11, c22, c12)                 = E[s'(z1) s'(z2)]
    dI2_dc11, dI2_dc22, dI2_dc12 (f, h; ..): the partial derivatives of I2
    J2_gradient, I3_gradient, I4_gradient: tuples of all partial derivatives

Four-point moments (the few-shot theory, docs/model.md §9), f1..f4 the activations of the four
fields, C4 a 4 x 4 covariance (repeated fields allowed, so C4 may be singular) and (nodes, weights)
the rule of ``quadrature.path_rule``, which an implementation may use or ignore:

    F4(f1, f2, f3, f4; C4, nodes, weights)          = E[f1(z1) f2(z2) f3(z3) f4(z4)]
    F4_gradient(f1, f2, f3, f4; C4, nodes, weights) = dF4/dC4, a 4 x 4 array: off the diagonal
        the derivative along the symmetric pair (C4_pq and C4_qp moved together), on it d/dC4_pp

The theory calls them with the student's activation in the first two positions (and wherever a
field is a student's), so a pair's module implements the orders (s, s, s, s), (s, s, s, t) and
(s, s, t, t).

An integral of two different activations belongs to their pair: it is registered by the module of
whichever activation comes second, for both orders of (f, h).

Adding an activation: one module that defines its marker class, registers
``numba.extending.overload`` implementations of the functions above for its markers (each returns
an implementation when ``is_marker`` says the argument types are its own, None otherwise) and
calls ``register``; then ``import`` it before building a config that names it.
``metaode.theory.activations.erf`` is the example, tests/test_activation_registry.py a test-only
one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from metaode.theory.generic import generic_function, is_instance_of


def _unresolved(name: str) -> Callable[..., Any]:
    return generic_function(f"metaode.theory.activations.{name}", "the activation markers")


g = _unresolved("g")
g_prime = _unresolved("g_prime")
g_second = _unresolved("g_second")
I2 = _unresolved("I2")
I3 = _unresolved("I3")
I4 = _unresolved("I4")
J2 = _unresolved("J2")
dI2_dc11 = _unresolved("dI2_dc11")
dI2_dc22 = _unresolved("dI2_dc22")
dI2_dc12 = _unresolved("dI2_dc12")
J2_gradient = _unresolved("J2_gradient")
I3_gradient = _unresolved("I3_gradient")
I4_gradient = _unresolved("I4_gradient")
F4 = _unresolved("F4")
F4_gradient = _unresolved("F4_gradient")

class Activations(NamedTuple):
    """The markers of the student's and the teacher's activation, as compiled code receives them."""

    student: Any
    teacher: Any


@dataclass(frozen=True)
class Activation:
    """A registered activation: its config name, its marker, a one-line formula and whether g is
    smooth (twice continuously differentiable: the maml theory's pathwise reverse pass through
    the support fields' shift needs g'', docs/model.md §11)."""

    name: str
    marker: Any
    formula: str
    smooth: bool = True


_REGISTRY: dict[str, Activation] = {}
_PAIRS: set[tuple[str, str]] = set()


#: Whether an overload's argument type is that of the marker class ``cls`` (``theory.generic``).
is_marker = is_instance_of


def register(activation: Activation, pairs: tuple[str, ...] = ()) -> None:
    """Make ``activation`` available to configs by its name; ``pairs`` names the registered
    activations whose mixed integrals with it its module implements (itself is implied)."""
    if activation.name in _REGISTRY:
        raise ValueError(f"an activation named {activation.name!r} is already registered")
    for other in pairs:
        if other not in _REGISTRY:
            raise ValueError(f"register {other!r} before its pair with {activation.name!r}")
    _REGISTRY[activation.name] = activation
    for other in (activation.name, *pairs):
        _PAIRS.update({(activation.name, other), (other, activation.name)})


def names() -> tuple[str, ...]:
    """The names of the registered activations."""
    return tuple(_REGISTRY)


def activation(name: str) -> Activation:
    """The registered activation ``name`` (KeyError naming the registered ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no activation {name!r}; registered: {', '.join(_REGISTRY)}") from None


def has_pair(student: str, teacher: str) -> bool:
    """Whether the mixed integrals of (student, teacher) are registered."""
    return (student, teacher) in _PAIRS


def activations(student: str, teacher: str) -> Activations:
    """The markers compiled code receives for a (student, teacher) pair of registered names."""
    if not has_pair(student, teacher):
        raise KeyError(f"no Gaussian integrals registered for the pair "
                       f"(student {student!r}, teacher {teacher!r})")
    return Activations(activation(student).marker, activation(teacher).marker)

