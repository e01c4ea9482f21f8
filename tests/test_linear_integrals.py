"""The Gaussian integrals with linear fields (``theory.activations.linear``, derived by
``theory.derive_linear``) against an independent numerical integration.

Every integral is E[prod_i f_i(z_i)] for z ~ N(0, C) with smooth, polynomially bounded factors
(z, erf(z / sqrt 2), sqrt(2 / pi) exp(-z^2 / 2)), so a tensor Gauss-Hermite rule on z = L x
(L L^T = C, x standard normal) converges geometrically in its nodes; the kernels must agree to
TOL plus the rule's error bound (``reference``). Covariances: random ones, and singular ones with
a field repeated (a student unit equal to a teacher unit, lambda_k = nu_m; the four-point moments
of the few-shot theory always repeat fields), where the closed forms meet their boundary. Each
integral is called through the generic functions of the registry, so the routing of every order
of activations (and the permutation of the four-point moments to erf-first order) is tested too.
Gradients: against central differences of the same kernels (the derivative along the symmetric
pair off the diagonal).
"""

import functools
import itertools

import numpy as np
import pytest
from numba import njit
from scipy.special import erf, roots_hermitenorm

from metaode.theory import activations as act
from metaode.theory.activations.erf import Erf
from metaode.theory.activations.linear import Linear
from metaode.theory.derive_linear import F4_KINDS

#: Gauss-Hermite nodes per dimension, by the number of fields.
NODES = {2: 200, 3: 80, 4: 40}
TOL = 1e-9
MARKERS = {"e": Erf(), "l": Linear()}
VALUE = {"e": lambda z: erf(z / np.sqrt(2.0)), "l": lambda z: z}
SLOPE = {"e": lambda z: np.sqrt(2.0 / np.pi) * np.exp(-0.5 * z * z), "l": np.ones_like}
NO_RULE = np.zeros(1)


def _words(n: int) -> list[str]:
    """Every word of n activation kinds with at least one linear field."""
    return ["".join(w) for w in itertools.product("el", repeat=n) if "l" in w]


def covariances() -> list[np.ndarray]:
    """Two random 4 x 4 covariances and two singular ones (fields 1 and 4 equal; fields 2 and 4
    equal up to sign), with variances up to ~3 (the rule's accuracy falls at larger ones, where
    erf(z / sqrt 2) is a step on the scale of the nodes: at variance ~9, 40 nodes are 5e-5 off a
    kernel value that 60 nodes reach to 1e-6)."""
    rng = np.random.default_rng(3)
    out = []
    for scale in (0.4, 0.6):
        A = rng.normal(size=(4, 4)) * scale
        out.append(A @ A.T + 0.1 * np.eye(4))
    B = rng.normal(size=(3, 4)) * 0.5
    out.append(np.vstack([B, B[0]]) @ np.vstack([B, B[0]]).T)
    X = rng.normal(size=(4, 4)) * 0.6
    X[3] = -X[1]
    out.append(X @ X.T)
    return out


def reference(C: np.ndarray, factors: list) -> tuple[float, float]:
    """(value, error bound) of E[prod_i factors[i](z_i)]: the rule of NODES points per dimension
    and, as its error bound, its difference from the rule of 3/4 as many (the rule converges
    geometrically in the nodes, so the larger rule's own error is far below that difference)."""
    n = len(factors)
    value = gauss_hermite(C, factors, NODES[n])
    return value, abs(value - gauss_hermite(C, factors, 3 * NODES[n] // 4))


def close(value: float, C: np.ndarray, factors: list) -> bool:
    """Whether a kernel's value is within TOL + the error bound of ``reference``."""
    exact, bound = reference(C, factors)
    return abs(value - exact) <= TOL + bound


def gauss_hermite(C: np.ndarray, factors: list, nodes: int) -> float:
    """E[prod_i factors[i](z_i)], z ~ N(0, C[:n, :n]), by the tensor Gauss-Hermite rule."""
    n = len(factors)
    grid, weights = _rule(n, nodes)
    z = grid @ _root(C[:n, :n]).T
    integrand = np.ones(len(z))
    for i, f in enumerate(factors):
        integrand *= f(z[:, i])
    return float(weights @ integrand)


@functools.cache
def _rule(n: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor Gauss-Hermite rule for N(0, I_n): (points, weights)."""
    x, w = roots_hermitenorm(nodes)
    grids = np.meshgrid(*[x] * n, indexing="ij")
    weights = np.ones(1)
    for _ in range(n):
        weights = np.multiply.outer(weights, w / w.sum())
    return np.stack([g.ravel() for g in grids], axis=1), weights.ravel()


def _root(C: np.ndarray) -> np.ndarray:
    """A square root L L^T = C (also of a singular covariance: eigenvalues below 0 set to 0)."""
    vals, vecs = np.linalg.eigh(C)
    return vecs * np.sqrt(np.maximum(vals, 0.0))


@njit(cache=True)
def _I2(f, h, C):
    return act.I2(f, h, C[0, 0], C[1, 1], C[0, 1])


@njit(cache=True)
def _dI2(f, h, C):
    return (act.dI2_dc11(f, h, C[0, 0], C[1, 1], C[0, 1]),
            act.dI2_dc22(f, h, C[0, 0], C[1, 1], C[0, 1]),
            act.dI2_dc12(f, h, C[0, 0], C[1, 1], C[0, 1]))


@njit(cache=True)
def _J2(s, C):
    return act.J2(s, C[0, 0], C[1, 1], C[0, 1]), act.J2_gradient(s, C[0, 0], C[1, 1], C[0, 1])


@njit(cache=True)
def _I3(s, f, C):
    args = (C[0, 0], C[1, 1], C[2, 2], C[0, 1], C[0, 2], C[1, 2])
    return act.I3(s, f, *args), act.I3_gradient(s, f, *args)


@njit(cache=True)
def _I4(s, f, h, C):
    args = (C[0, 0], C[1, 1], C[2, 2], C[3, 3], C[0, 1], C[0, 2], C[0, 3], C[1, 2], C[1, 3],
            C[2, 3])
    return act.I4(s, f, h, *args), act.I4_gradient(s, f, h, *args)


@njit(cache=True)
def _F4(f1, f2, f3, f4, C):
    return (act.F4(f1, f2, f3, f4, C, NO_RULE, NO_RULE),
            act.F4_gradient(f1, f2, f3, f4, C, NO_RULE, NO_RULE))


def _moved(C: np.ndarray, i: int, j: int, h: float) -> np.ndarray:
    """C with entry (i, j) and (j, i) moved by h (once on the diagonal)."""
    out = C.copy()
    out[i, j] += h
    if i != j:
        out[j, i] += h
    return out


def _pairs(n: int) -> list[tuple[int, int]]:
    """Kernel argument order: the diagonal, then (i, j), i < j, row-major."""
    return [(i, i) for i in range(n)] + [(i, j) for i in range(n) for j in range(i + 1, n)]


def _central(f, C: np.ndarray, i: int, j: int, h: float = 1e-6) -> float:
    return (f(_moved(C, i, j, h)) - f(_moved(C, i, j, -h))) / (2.0 * h)


@pytest.mark.parametrize("kinds", _words(2))
def test_I2_and_its_partials(kinds):
    f, h = (MARKERS[k] for k in kinds)
    for C in covariances():
        assert close(_I2(f, h, C), C, [VALUE[k] for k in kinds]), (kinds, C)
        partials = _dI2(f, h, C)
        for (i, j), d in zip(_pairs(2), partials, strict=True):
            assert abs(d - _central(lambda c: _I2(f, h, c), C, i, j)) <= 1e-6


def test_J2_of_the_linear_activation_is_one():
    for C in covariances():
        value, gradient = _J2(MARKERS["l"], C)
        assert value == 1.0 and gradient == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("kinds", _words(2))
def test_I3(kinds):
    s, f = (MARKERS[k] for k in kinds)
    for C in covariances():
        value, gradient = _I3(s, f, C)
        assert close(value, C, [SLOPE[kinds[0]], lambda z: z, VALUE[kinds[1]]]), (kinds, C)
        for (i, j), d in zip(_pairs(3), gradient, strict=True):
            assert abs(d - _central(lambda c: _I3(s, f, c)[0], C, i, j)) <= 1e-6


@pytest.mark.parametrize("kinds", _words(3))
def test_I4(kinds):
    s, f, h = (MARKERS[k] for k in kinds)
    for C in covariances():
        value, gradient = _I4(s, f, h, C)
        assert close(value, C, [SLOPE[kinds[0]], SLOPE[kinds[0]], VALUE[kinds[1]],
                                VALUE[kinds[2]]]), (kinds, C)
        for (i, j), d in zip(_pairs(4), gradient, strict=True):
            assert abs(d - _central(lambda c: _I4(s, f, h, c)[0], C, i, j)) <= 1e-6


@pytest.mark.parametrize("kinds", F4_KINDS)
def test_four_point_moments(kinds):
    """F4 and its gradient with the erf fields first (the order of the derived kernels)."""
    markers = [MARKERS[k] for k in kinds]
    for C in covariances():
        value, gradient = _F4(*markers, C)
        assert close(value, C, [VALUE[k] for k in kinds]), (kinds, C)
        assert np.array_equal(gradient, gradient.T)
        for i, j in _pairs(4):
            assert abs(gradient[i, j] - _central(lambda c: _F4(*markers, c)[0], C, i, j)) <= 1e-6


@pytest.mark.parametrize("kinds", _words(4))
def test_four_point_moments_in_every_order(kinds):
    """Any order of the four fields: the value and gradient of the erf-first order on the
    permuted covariance (the module's permutation, and its inverse for the gradient)."""
    order = sorted(range(4), key=lambda p: kinds[p] == "l")
    markers = [MARKERS[k] for k in kinds]
    first = [MARKERS[kinds[p]] for p in order]
    for C in covariances():
        value, gradient = _F4(*markers, C)
        reference, ref_gradient = _F4(*first, C[np.ix_(order, order)])
        assert value == reference
        assert np.array_equal(gradient[np.ix_(order, order)], ref_gradient)


def test_linear_network_moments():
    """For two linear fields the integrals are the moments themselves: I2 = c12, I3 = c23,
    I4 = c34, F4 = Isserlis' c12 c34 + c13 c24 + c14 c23."""
    lin = MARKERS["l"]
    C = covariances()[0]
    assert _I2(lin, lin, C) == pytest.approx(C[0, 1], abs=1e-15)
    assert _I3(lin, lin, C)[0] == pytest.approx(C[1, 2], abs=1e-15)
    assert _I4(lin, lin, lin, C)[0] == pytest.approx(C[2, 3], abs=1e-15)
    isserlis = C[0, 1] * C[2, 3] + C[0, 2] * C[1, 3] + C[0, 3] * C[1, 2]
    assert _F4(lin, lin, lin, lin, C)[0] == pytest.approx(isserlis, abs=1e-14)
