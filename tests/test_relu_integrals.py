"""The Gaussian integrals with ReLU fields (``theory.activations.relu``, derived by
``theory.derive_relu``; the orthant moment ``orthant.sign4``) against an independent numerical
integration.

The reference (``nested_gauss``) integrates over the Cholesky coordinates, each one-dimensional
integral split at the kink of ReLU (z_i = 0) and done by Gauss-Legendre on both pieces; its own
error is the difference of two rules. Every kernel must agree to TOL plus that error. The factors
of the reference are written from the definitions of the activations (z Theta(z), Theta, erf and
its derivative), not from the derivation's rules. Fields that coincide (I4(k, k, a, b), a student
field equal to k, a repeated teacher field) are integrated over the distinct fields with the
product of their factors on each, as the kernels of each partition must be. The slices of
``I4_forms`` are compared entry by entry, so the routing by indices is tested with the formulas.
"""

import itertools

import numpy as np
import pytest
from nested_gauss import reference
from numba import njit

from metaode.theory import activations as act
from metaode.theory.activations import orthant
from metaode.theory.activations import relu_kernels as kernels
from metaode.theory.activations.erf import Erf
from metaode.theory.activations.linear import Linear
from metaode.theory.activations.relu import COLLINEAR, ReLU, fields_of
from metaode.theory.derive_relu import I4_kernels
from metaode.theory.derive_relu import partition_code as derived_code

TOL = 1e-10
MARKERS = {"e": Erf(), "l": Linear(), "r": ReLU()}
#: (power of z, Theta, power of erf, power of erf') of g and of g' per kind.
VALUE = {"e": (0, 0, 1, 0), "l": (1, 0, 0, 0), "r": (1, 1, 0, 0)}
SLOPE = {"e": (0, 0, 0, 1), "l": (0, 0, 0, 0), "r": (0, 1, 0, 0)}
NODES = {1: (80, 100), 2: (48, 64), 3: (32, 40), 4: (20, 28)}


@njit(cache=True)
def _I2(f, h, c11, c22, c12):
    """(I2, dI2/dc11, dI2/dc22, dI2/dc12) through the registry's generic functions."""
    return (act.I2(f, h, c11, c22, c12), act.dI2_dc11(f, h, c11, c22, c12),
            act.dI2_dc22(f, h, c11, c22, c12), act.dI2_dc12(f, h, c11, c22, c12))


@njit(cache=True)
def _J2(s, c11, c22, c12):
    return act.J2(s, c11, c22, c12)


@njit(cache=True)
def _forms(s, t, omega, K, pairs, X, out):
    act.I4_forms(s, t, omega, K, pairs, X, False, out)


def product(*codes: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The code of a product of factors on one field."""
    p, theta, r, q = (sum(c[i] for c in codes) for i in range(4))
    return p, min(theta, 1), r, q


def covariance(seed: int, n: int = 4) -> np.ndarray:
    """A random well-conditioned covariance with variances of order 0.3 - 3 and correlations of
    both signs."""
    A = np.random.default_rng(seed).normal(size=(n, n)) * 0.7
    return A @ A.T + 0.15 * np.eye(n)


def entries(C: np.ndarray) -> tuple[float, ...]:
    n = C.shape[0]
    return (tuple(C[i, i] for i in range(n))
            + tuple(C[i, j] for i in range(n) for j in range(i + 1, n)))


def check(value: float, C: np.ndarray, codes: list) -> None:
    expected, error = reference(C, codes, NODES[len(codes)])
    assert abs(value - expected) <= TOL + error, (value, expected, error)


@pytest.mark.parametrize("kinds", ["er", "re", "rr", "lr", "rl"])
@pytest.mark.parametrize("seed", [0, 1])
def test_I2_and_its_slope(kinds, seed):
    C = covariance(seed, 2)
    f, h = (MARKERS[k] for k in kinds)
    values = _I2(f, h, *entries(C))
    check(values[0], C, [VALUE[kinds[0]], VALUE[kinds[1]]])
    check(values[3], C, [SLOPE[kinds[0]], SLOPE[kinds[1]]])


def _central(fn, c11, c22, c12, which: int, step: float = 1e-6) -> float:
    up, down = [c11, c22, c12], [c11, c22, c12]
    up[which] += step
    down[which] -= step
    return (fn(*up) - fn(*down)) / (2 * step)


@pytest.mark.parametrize("kinds", ["er", "re", "rr", "lr", "rl"])
def test_I2_partials_against_differences(kinds):
    f, h = (MARKERS[k] for k in kinds)
    c = entries(covariance(3, 2))

    def I2(*args):
        return _I2(f, h, *args)[0]

    for which in range(3):
        assert _I2(f, h, *c)[1 + which] == pytest.approx(_central(I2, *c, which), abs=1e-8)


def test_arc_cosine_kernel_and_repeated_field():
    """I2 of two ReLU fields is the arc-cosine kernel; at a repeated field (C singular, as the
    diagonal of C = I2(Q) has) I2 = E[relu(z)^2] = c / 2, and its partials are finite: dI2/dc12 =
    E[Theta] = 1/2, dI2/dc11 = E[delta relu] / 2 = 0."""
    r = MARKERS["r"]
    c11, c22, c12 = 1.3, 0.7, -0.4
    theta = np.arccos(c12 / np.sqrt(c11 * c22))
    arc = np.sqrt(c11 * c22) / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    assert _I2(r, r, c11, c22, c12)[0] == pytest.approx(arc, rel=1e-14)
    value, d11, d22, d12 = _I2(r, r, 0.8, 0.8, 0.8)
    assert value == pytest.approx(0.4, rel=1e-14)
    assert d12 == pytest.approx(0.5, rel=1e-14)
    assert d11 == d22 == 0.0
    assert _J2(r, 0.8, 0.8, 0.8) == pytest.approx(0.5, rel=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_J2(seed):
    C = covariance(seed, 2)
    check(_J2(MARKERS["r"], *entries(C)), C, [SLOPE["r"], SLOPE["r"]])


def test_sign4_closed_cases():
    """Equicorrelated 1/2: the orthant probability is 1/5, so sign4 = 16/5 - 1 - 6 (2/pi)
    asin(1/2) = 1/5; independent pairs: the product of arcsines, also at a correlation 1 - 1e-12
    (the endpoint singularity of the path); collinear fields reduce exactly."""
    C = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
    assert orthant.sign4_of(C) == pytest.approx(0.2, abs=1e-14)
    for r, s in ((0.7, -0.3), (1 - 1e-8, 0.4), (1 - 1e-12, -0.6)):
        C = np.array([[1, r, 0, 0], [r, 1, 0, 0], [0, 0, 1, s], [0, 0, s, 1.0]]) * 1.7
        expected = (2 / np.pi) ** 2 * np.arcsin(r) * np.arcsin(s)
        assert orthant.sign4_of(C) == pytest.approx(expected, abs=1e-9)
    assert orthant.sign4_of(np.ones((4, 4))) == 1.0
    X = np.random.default_rng(5).normal(size=(3, 4))
    X = np.vstack([X, -X[0]])
    C = X @ X.T
    expected = -(2 / np.pi) * np.arcsin(C[1, 2] / np.sqrt(C[1, 1] * C[2, 2]))
    assert orthant.sign4_of(C) == pytest.approx(expected, abs=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign4_against_the_orthant_probability(seed):
    """sign4 = 16 P(u > 0) - 1 - sum_ab (2/pi) asin(r_ab), P by the reference."""
    C = covariance(seed)
    P, error = reference(C, [SLOPE["r"]] * 4, NODES[4])
    d = np.sqrt(np.diag(C))
    pairs = sum(2 / np.pi * np.arcsin(C[a, b] / (d[a] * d[b]))
                for a in range(4) for b in range(a + 1, 4))
    assert abs(orthant.sign4_of(C) - (16 * P - 1 - pairs)) <= TOL + 16 * error


def _covariances_by_smallest_eigenvalue(count: int) -> list[tuple[float, np.ndarray]]:
    """(smallest eigenvalue of the correlation matrix, covariance) of ``count`` 4 x 4 covariances
    from random vectors, one in three made nearly dependent (the fourth near the span of two
    others, or the second near the first) at a log-uniform distance 1e-4 .. 3."""
    rng = np.random.default_rng(11)
    out = []
    for _ in range(count):
        V = rng.standard_normal((4, 6))
        eps = 10 ** rng.uniform(-4, 0.5)
        kind = rng.integers(3)
        if kind == 0:
            V[3] = rng.standard_normal() * V[0] + rng.standard_normal() * V[1] + eps * V[3]
        elif kind == 1:
            V[1] = V[0] + eps * V[1]
        V *= rng.uniform(0.3, 2.0, size=(4, 1))
        C = V @ V.T / 6
        d = np.sqrt(np.diag(C))
        out.append((np.linalg.eigvalsh(C / np.outer(d, d))[0], C))
    return out


def _by_rule(C: np.ndarray, rule) -> float:
    """sign4 of C by one rule (t, 1 - t, weights) of the Price path."""
    d = np.sqrt(np.diag(C))
    r = C / np.outer(d, d)
    # the rule as arrays: as a tuple of the fine rule's ~400 nodes numba compiles it for ~10 s
    return orthant.path_sum(r, np.maximum(0.0, 1.0 - r * r), *rule)


def test_sign4_rules_agree_with_a_finer_rule():
    """``sign4_of`` picks Gauss-Legendre in s (16 nodes above the first floor on the smallest
    eigenvalue mu of the correlation matrix, 24 above the second) or tanh-sinh; against tanh-sinh
    with a quarter of the step and a wider range, over 3000 covariances: <= 2e-13 wherever a
    Gauss-Legendre rule is taken (measured 8e-14) and <= 1e-13 for tanh-sinh down to mu = 1e-3
    (measured 1e-14). Power: each Gauss-Legendre rule applied between half its floor and the floor
    errs by > 1e-12 somewhere (measured 8e-12), so a floor set too low would fail."""
    fine = orthant.tanh_sinh(orthant.STEP / 4, 4.5)
    (floor16, n16), (floor24, n24) = orthant.FAST_RULES
    worst = {"gl16": 0.0, "gl24": 0.0, "tanh-sinh": 0.0, "gl16 below": 0.0, "gl24 below": 0.0}
    seen = dict.fromkeys(worst, 0)
    for mu, C in _covariances_by_smallest_eigenvalue(3000):
        exact = _by_rule(C, fine)
        rule = "gl16" if mu > floor16 else "gl24" if mu > floor24 else "tanh-sinh"
        if rule != "tanh-sinh" or mu > 1e-3:
            worst[rule] = max(worst[rule], abs(orthant.sign4_of(C) - exact))
            seen[rule] += 1
        for name, floor, n in (("gl16 below", floor16, n16), ("gl24 below", floor24, n24)):
            if floor / 2 < mu <= floor:
                error = abs(_by_rule(C, orthant.gauss_legendre(n)) - exact)
                worst[name] = max(worst[name], error)
                seen[name] += 1
    assert min(seen.values()) >= 50, seen
    assert max(worst["gl16"], worst["gl24"]) <= 2e-13, worst
    assert worst["tanh-sinh"] <= 1e-13, worst
    assert min(worst["gl16 below"], worst["gl24 below"]) > 1e-12, worst


def test_partition_codes_agree():
    """The compiled code of the partition of fields (k, l, a, b) equal by index (``fields_of``,
    no field merged as collinear) is the derivation's."""
    omega = covariance(2, 3)
    for idx in itertools.product(range(3), repeat=4):
        labels = "".join(str(idx.index(x)) for x in idx)
        assert fields_of(omega, idx, (False,) * 4, COLLINEAR)[0] == derived_code(labels)


def _i4_case(kinds: str, partition: str, C: np.ndarray) -> tuple[float, np.ndarray, list]:
    """(kernel value, covariance of the distinct fields, their codes) of I4 of ``kinds`` with
    the fields equal as ``partition`` (distinct fields take C's entries)."""
    labels = [int(x) for x in partition]
    distinct = sorted(set(labels))
    full = C[np.ix_(labels, labels)]
    value = getattr(kernels, f"I4_{kinds}")(derived_code(partition), *entries(full))
    factors = [SLOPE[kinds[0]], SLOPE[kinds[1]], VALUE[kinds[2]], VALUE[kinds[3]]]
    codes = [product(*(factors[i] for i in range(4) if labels[i] == j)) for j in distinct]
    return value, C[np.ix_(distinct, distinct)], codes


@pytest.mark.parametrize("kinds", list(I4_kernels()))
def test_I4_every_partition(kinds):
    C = covariance(11)
    for partition in I4_kernels()[kinds]:
        value, Cd, codes = _i4_case(kinds, partition, C)
        check(value, Cd, codes)


@pytest.mark.parametrize("pair", ["rr", "re", "er", "rl", "lr"])
def test_I4_forms_entry_by_entry(pair):
    """Every entry I4(k, l, a, b) of the slices of K = 2 students and M = 2 teachers, fields
    repeated as the indices say, against the reference over the distinct fields."""
    s, t = pair
    K, n = 2, 4
    omega = covariance(21)
    pairs = np.array([[0, 0], [0, 1], [1, 1]])
    out = np.empty((3, n, n))
    _forms(MARKERS[s], MARKERS[t], omega, K, pairs, np.eye(n), out)
    kind = [s] * K + [t] * (n - K)
    for p, (k, l) in enumerate(pairs):
        for a in range(n):
            for b in range(a, n):
                idx = (k, l, a, b)
                factors = [SLOPE[s], SLOPE[s], VALUE[kind[a]], VALUE[kind[b]]]
                distinct = sorted(set(idx))
                codes = [product(*(factors[i] for i in range(4) if idx[i] == j))
                         for j in distinct]
                check(out[p, a, b], omega[np.ix_(distinct, distinct)], codes)


def test_nearly_coincident_fields_approach_the_merged_kernel():
    """A student field a hair from a teacher field (r = 1 - 1e-12 after the perturbation): the
    generic kernel (all fields distinct) stays finite and meets the kernel of the coincident
    fields, which the reference checks above, as the gap closes."""
    C = covariance(31)
    merged, _, _ = _i4_case("rrrr", "0122", C)
    for eps in (1e-4, 1e-6):
        X = np.linalg.cholesky(C)
        Y = np.vstack([X, X[2] + eps * np.random.default_rng(1).normal(size=4)])[[0, 1, 2, 4]]
        near = kernels.I4_rrrr(derived_code("0123"), *entries(Y @ Y.T))
        assert np.isfinite(near)
        assert abs(near - merged) < 50 * eps


@pytest.mark.parametrize("gap", [0.0, 1e-10, 1e-5])
def test_I4_forms_at_a_student_unit_parallel_to_a_teacher_unit(gap):
    """Student unit 0 = 1.3 x teacher unit 0 and student unit 1 = 0.8 x teacher unit 1 (the
    specialised state, where the generic closed form is 0 / 0): the collinear ReLU fields are one
    field, relu(s z) = s relu(z), against the reference over the distinct (teacher) fields. A
    student unit 1e-10 off its teacher unit (1 - r^2 ~ 1e-20, below the snap ``relu.COLLINEAR``:
    merged too) and one 1e-5 off (1 - r^2 ~ 1e-10: the generic closed form, near its 0 / 0) give
    the same slices to 1e-4 (the slices move by O(1e-5))."""
    K, n = 2, 4
    X = np.random.default_rng(41).normal(size=(n, n)) * 0.7
    X[0] = 1.3 * X[2] + gap * X[1]
    X[1] = 0.8 * X[3]
    omega = X @ X.T
    pairs = np.array([[0, 0], [0, 1], [1, 1]])
    out = np.empty((3, n, n))
    _forms(MARKERS["r"], MARKERS["r"], omega, K, pairs, np.eye(n), out)
    scale = {0: 1.3, 1: 0.8, 2: 1.0, 3: 1.0}  # field a = scale[a] x field partner[a]
    partner = {0: 2, 1: 3, 2: 2, 3: 3}
    for p, (k, l) in enumerate(pairs):
        for a in range(n):
            for b in range(a, n):
                fields = [partner[i] for i in (k, l, a, b)]
                factors = [SLOPE["r"], SLOPE["r"], VALUE["r"], VALUE["r"]]
                distinct = sorted(set(fields))
                codes = [product(*(factors[i] for i in range(4) if fields[i] == j))
                         for j in distinct]
                expected, error = reference(omega[np.ix_(distinct, distinct)], codes,
                                            NODES[len(codes)])
                expected *= scale[a] * scale[b]
                tol = TOL + error if gap == 0.0 else 1e-4
                assert abs(out[p, a, b] - expected) <= tol, (k, l, a, b)


@njit(cache=True)
def _F4(f1, f2, f3, f4, C):
    return act.F4(f1, f2, f3, f4, C, NO_RULE, NO_RULE)


@njit(cache=True)
def _F4_gradient(f1, f2, f3, f4, C):
    return act.F4_gradient(f1, f2, f3, f4, C, NO_RULE, NO_RULE)


NO_RULE = np.zeros(1)
F4_WORDS = list(I4_kernels())


@pytest.mark.parametrize("kinds", F4_WORDS)
def test_four_point_moments_every_partition(kinds):
    """F4 and the off-diagonal of its gradient (E[f_p' f_q' f_r f_s], Price's theorem) through
    the generic functions, at a covariance with the fields equal as each partition says (as the
    few-shot theory builds them, by repeating indices), against the reference over the distinct
    fields."""
    C = covariance(13)
    markers = [MARKERS[k] for k in kinds]
    for partition in I4_kernels()[kinds]:
        labels = [int(x) for x in partition]
        distinct = sorted(set(labels))
        full = C[np.ix_(labels, labels)]
        Cd = C[np.ix_(distinct, distinct)]
        values = [VALUE[k] for k in kinds]
        codes = [product(*(values[i] for i in range(4) if labels[i] == j)) for j in distinct]
        check(_F4(*markers, full), Cd, codes)
        grad = _F4_gradient(*markers, full)
        for p, q in itertools.combinations(range(4), 2):
            factors = [SLOPE[k] if i in (p, q) else VALUE[k] for i, k in enumerate(kinds)]
            codes = [product(*(factors[i] for i in range(4) if labels[i] == j))
                     for j in distinct]
            check(grad[p, q], Cd, codes)


@pytest.mark.parametrize("kinds", F4_WORDS)
def test_four_point_gradient_against_differences(kinds):
    """The whole gradient, diagonal included (homogeneity for ReLU and linear positions, Stein's
    lemma for erf ones), against central differences of F4 at a generic covariance."""
    markers = [MARKERS[k] for k in kinds]
    C = covariance(17)
    grad = _F4_gradient(*markers, C)
    h = 1e-6
    for p in range(4):
        for q in range(p, 4):
            up, down = C.copy(), C.copy()
            up[p, q] += h
            down[p, q] -= h
            if p != q:
                up[q, p] += h
                down[q, p] -= h
            central = (_F4(*markers, up) - _F4(*markers, down)) / (2 * h)
            assert grad[p, q] == pytest.approx(central, abs=1e-7), (p, q)
