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
    I4_forms(s, t; omega, K, pairs, X, parallel, out) writes, for (k, l) = pairs[p],
        out[p, i, j] = sum_ab X_ai X_bj I4(k, l, a, b) = E[s'(z_k) s'(z_l) h_i(z) h_j(z)],
        h_i(z) = sum_a X_ai f_a(z_a), with z ~ N(0, omega) the n fields (f_a = s for a < K, t
        otherwise), X: n x m, out: P x m x m: the slices I4(k, l, ., .) of P pairs of student
        fields as quadratic forms on the columns of X; with ``parallel`` the pairs may run in
        numba's threads (each pair computed as without: the same result)
    dI2_dc11, dI2_dc22, dI2_dc12 (f, h; ..): the partial derivatives of I2
    J2_gradient, I3_gradient, I4_gradient: tuples of all partial derivatives

Four-point moments (the few-shot theory, docs/model.md §9), f1..f4 the activations of the four
fields, C4 a 4 x 4 covariance (repeated fields allowed, so C4 may be singular) and (nodes, weights)
the rule of ``quadrature.path_rule``, which an implementation may use or ignore:

    F4(f1, f2, f3, f4; C4, nodes, weights)          = E[f1(z1) f2(z2) f3(z3) f4(z4)]
    F4_gradient(f1, f2, f3, f4; C4, nodes, weights) = dF4/dC4, a 4 x 4 array: off the diagonal
        the derivative along the symmetric pair (C4_pq and C4_qp moved together), on it d/dC4_pp

``I4_forms`` is optional: a pair whose module does not implement it (``own_I4_forms``) gets
``I4_forms_from_I4``, the slices entry by entry from I4. An implementation that shares the work of
one (k, l) across its (a, b) and runs the pairs in parallel threads, as erf's does, is what makes
the lr^2 term of large networks affordable (numba cannot hand a marker to the threads of a
``prange`` loop, so the activation's module runs them itself, on marker-free kernels).

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

import numpy as np
from numba import njit, types
from numba.extending import overload

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
I4_forms = _unresolved("I4_forms")
F4 = _unresolved("F4")
F4_gradient = _unresolved("F4_gradient")

class Activations(NamedTuple):
    """The markers of the student's and the teacher's activation, as compiled code receives them."""

    student: Any
    teacher: Any


@dataclass(frozen=True)
class Activation:
    """A registered activation: its config name, its marker, a one-line formula, whether g is
    smooth (twice continuously differentiable: the maml theory's pathwise reverse pass through
    the support fields' shift needs g'', docs/model.md §11; the exact sgd Jacobian needs the
    gradients of I3 and I4, and the theory is differentiable everywhere), whether a student's
    hidden units are identifiable (False for the linear activation: the network depends on J
    only through w^T J, so a unit has no teacher unit of its own, and the specialisation index
    and align_k are not recorded) and whether its module implements the four-point moments F4
    of the few-shot theory (an activation registered without them, ``four_point=False``, is
    refused by the few-shot and finite-support maml theories and simulations,
    ``theory.fewshot.require_four_point``)."""

    name: str
    marker: Any
    formula: str
    smooth: bool = True
    identifiable: bool = True
    four_point: bool = True


_REGISTRY: dict[str, Activation] = {}
_PAIRS: set[tuple[str, str]] = set()
#: (student, teacher) marker classes whose module implements ``I4_forms`` itself.
_OWN_I4_FORMS: set[tuple[type, type]] = set()


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


def own_I4_forms(student: type, teacher: type) -> None:
    """Declare that the module of the pair (student, teacher) of marker classes implements
    ``I4_forms`` (its own overload); every other pair gets ``I4_forms_from_I4``."""
    _OWN_I4_FORMS.add((student, teacher))


def route_two_field_integrals(kinds_of: Callable[..., str | None], kernels: Any) -> None:
    """Overload I2 and its partials for the marker types whose ``kinds_of(f, h)`` is not None
    with the kernels ``kernels.<name>_<kinds>(c11, c22, c12)``: the routing of a module whose
    kernels are generated per word of activation kinds (linear, ReLU)."""
    def resolver(name: str):
        def resolve(f, h, c11, c22, c12):
            kinds = kinds_of(f, h)
            if kinds is not None:
                kernel = getattr(kernels, f"{name}_{kinds}")
                return lambda f, h, c11, c22, c12: kernel(c11, c22, c12)
        return resolve

    for name in ("I2", "dI2_dc11", "dI2_dc22", "dI2_dc12"):
        overload(globals()[name])(resolver(name))


@njit(cache=True)
def quadratic_forms(row: np.ndarray, X: np.ndarray, Y: np.ndarray, out: np.ndarray) -> None:
    """out = X^T row X for a symmetric n x n ``row`` and X: n x m, through Y = row X (n x m, work
    space); written out (no BLAS call: the threads of ``I4_forms`` run it side by side)."""
    n, m = X.shape
    for a in range(n):
        for j in range(m):
            acc = 0.0
            for b in range(n):
                acc += row[a, b] * X[b, j]
            Y[a, j] = acc
    for i in range(m):
        for j in range(i, m):
            acc = 0.0
            for a in range(n):
                acc += X[a, i] * Y[a, j]
            out[i, j] = out[j, i] = acc


@njit(cache=True)
def I4_forms_from_I4(s, t, omega, K, pairs, X, out):
    """``I4_forms`` from one I4 per entry a <= b of each slice, the pairs one after the other:
    I4(s, s, s; ..) for two student fields, I4(s, s, t; ..) for a student field a and a teacher
    field b, I4(s, t, t; ..) for two teacher fields."""
    n = omega.shape[0]
    row, Y = np.empty((n, n)), np.empty((n, X.shape[1]))
    for p in range(pairs.shape[0]):
        k, l = pairs[p, 0], pairs[p, 1]
        for a in range(n):
            for b in range(a, n):
                args = (omega[k, k], omega[l, l], omega[a, a], omega[b, b], omega[k, l],
                        omega[k, a], omega[k, b], omega[l, a], omega[l, b], omega[a, b])
                if b < K:
                    v = I4(s, s, s, *args)
                elif a < K:
                    v = I4(s, s, t, *args)
                else:
                    v = I4(s, t, t, *args)
                row[a, b] = row[b, a] = v
        quadratic_forms(row, X, Y, out[p])


@overload(I4_forms)
def _I4_forms_from_I4(s, t, omega, K, pairs, X, parallel, out):
    if not (isinstance(s, types.BaseNamedTuple) and isinstance(t, types.BaseNamedTuple)):
        return None
    if (s.instance_class, t.instance_class) not in _OWN_I4_FORMS:
        return lambda s, t, omega, K, pairs, X, parallel, out: I4_forms_from_I4(s, t, omega, K,
                                                                              pairs, X, out)
