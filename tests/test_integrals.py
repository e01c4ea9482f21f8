"""The numba kernels of ``theory.activations.erf_kernels`` against independent numerical
integration.

g(z) = erf(z / sqrt 2), g'(z) = sqrt(2 / pi) exp(-z^2 / 2), z ~ N(0, C). Reference values are
tensor-product Gauss-Hermite sums over z = L xi, L the Cholesky factor of C (of C with its rows
permuted where stated), xi ~ N(0, I). Every reference is computed at two node counts and the test
first asserts that the quadrature has converged to QUAD_TOL (three orders below the 1e-8 the
kernels are held to); only then is the kernel compared.

Then the slices I4(k, l, ., .) of ``I4_forms`` (erf's tilted-covariance form and the registry's
entry-by-entry fallback) against the I4 kernel, ``theory.fields.diffusion`` (the lr^2 term of dQ)
and ``theory.fields.population_error`` against Monte Carlo estimates and exact sums written out
here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numba
import numpy as np
import pytest
from numba import njit
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import erf
from states import ERF

from metaode.theory.activations import I4_forms, I4_forms_from_I4
from metaode.theory.activations.erf_kernels import I2, I3, I4, J2, dI2_dc11, dI2_dc12, dI2_dc22
from metaode.theory.fields import (
    PARALLEL_ENTRIES,
    add_diffusion,
    diffusion,
    field_covariance,
    noise_weights,
    population_error,
    signed_i4_tensor,
    student_pairs,
)

SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)

# Kernel accuracy demanded by the task. The closed forms are evaluated in double precision with no
# cancellation worse than ~1e-15, so any error above 1e-8 is a wrong formula, not rounding.
KERNEL_RTOL = 1e-8
# Integrals that can vanish (I2, dI2_dc11/dc22, I3, I4: odd in a field) are compared relative to
# max(|value|, ZERO_LEVEL * size), size = sqrt(E[f^2]) of the integrand f, or for I4 the bound
# E[g'(z1) g'(z2)] >= |I4|. Near a zero the value is a cancellation between parts of that size,
# which double precision resolves only to ~1e-16 * size (measured: kernel and quadrature differ by
# <= 3e-17 * size in the exact-zero cases). ZERO_LEVEL = 1e-4 makes the floor 1e-12 * size, and
# every random case has |value| >= 2.5e-4 * size, so those are all held to the relative 1e-8.
ZERO_LEVEL = 1e-4
# The two node counts of a reference must agree to QUAD_TOL times the same reference, three orders
# below KERNEL_RTOL, so the quadrature error cannot matter in the comparison. Measured differences
# (100 vs 140 nodes per axis) are <= 5.2e-16 relative and <= 3.3e-17 * size at the zeros; the
# floor QUAD_TOL * ZERO_LEVEL * size = 1e-15 * size keeps a factor 30 above the latter.
QUAD_TOL = 1e-11
NODES = (100, 140)


def g(z: np.ndarray) -> np.ndarray:
    """The erf activation g(z) = erf(z / sqrt 2)."""
    return erf(z / np.sqrt(2.0))


def g_prime(z: np.ndarray) -> np.ndarray:
    """g'(z) = sqrt(2 / pi) exp(-z^2 / 2)."""
    return SQRT_2_OVER_PI * np.exp(-0.5 * z**2)


@cache
def _grid(nodes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product Gauss-Hermite nodes (d x P) and weights (P) for xi ~ N(0, I_d) (cached,
    read-only)."""
    rules = [hermegauss(n) for n in nodes]
    xs = np.meshgrid(*[x for x, _ in rules], indexing="ij")
    ws = np.meshgrid(*[w / np.sqrt(2.0 * np.pi) for _, w in rules], indexing="ij")
    xi, weights = np.stack([x.ravel() for x in xs]), np.prod([w.ravel() for w in ws], axis=0)
    xi.setflags(write=False)
    weights.setflags(write=False)
    return xi, weights


def gauss_expectation(f: Callable[[np.ndarray], np.ndarray], C: np.ndarray,
                      nodes: tuple[int, ...], order: list[int] | None = None) -> float:
    """E[f(z)], z ~ N(0, C) (dimension >= 2): sum_i w_i f(L xi_i), L L^T = C[order][:, order] (f
    gets z in the original order). Summed in slabs of fixed xi_1 to bound the memory."""
    order = list(range(C.shape[0])) if order is None else order
    L = np.linalg.cholesky(C[np.ix_(order, order)])
    first, first_weights = _grid(nodes[:1])
    rest, rest_weights = _grid(nodes[1:])
    total = 0.0
    for x, w in zip(first[0], first_weights, strict=True):
        z = np.empty((len(order), len(rest_weights)))
        z[order] = L[:, :1] * x + L[:, 1:] @ rest
        total += w * (rest_weights @ f(z))
    return float(total)


def converged(quadrature: Callable[[int], float], size: float,
              nodes: tuple[int, int] = NODES) -> float:
    """The quadrature at the larger node count, after asserting that it agrees with the smaller."""
    coarse, fine = (quadrature(n) for n in nodes)
    assert abs(fine - coarse) <= QUAD_TOL * max(abs(fine), ZERO_LEVEL * size), (coarse, fine)
    return fine


def assert_close(kernel: float, reference: float, size: float = 0.0) -> None:
    """|kernel - reference| <= KERNEL_RTOL * max(|reference|, ZERO_LEVEL * size); size = 0 (purely
    relative) for integrals bounded away from zero."""
    assert abs(kernel - reference) <= KERNEL_RTOL * max(abs(reference), ZERO_LEVEL * size), (
        kernel, reference, size)


# --- covariances ---------------------------------------------------------------------------------

def random_covariance(n: int, seed: int, rank: int | None = None) -> np.ndarray:
    """C_ij = s_i s_j v_i . v_j with unit v_i in R^rank (random) and s_i^2 log-uniform in
    [0.05, 3]; rank < n gives a rank-deficient C, returned with 1e-10 I added."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, rank or n))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    s = np.sqrt(np.exp(rng.uniform(np.log(0.05), np.log(3.0), n)))
    C = np.outer(s, s) * (v @ v.T)
    return C if rank is None else C + 1e-10 * np.eye(n)


def nearly_collinear(n: int, seed: int, i: int, j: int, rho: float = 0.999999) -> np.ndarray:
    """A random covariance in which fields i and j have correlation rho."""
    C = random_covariance(n, seed)
    s = np.sqrt(np.diag(C))
    corr = C / np.outer(s, s)
    # Rows of L are unit vectors v with corr = v v^T; replace v_j by rho v_i + sqrt(1 - rho^2) e,
    # e the unit vector along the part of v_j orthogonal to v_i.
    L = np.linalg.cholesky(corr)
    vi, vj = L[i], L[j]
    e = vj - (vi @ vj) * vi
    L[j] = rho * vi + np.sqrt(1.0 - rho**2) * e / np.linalg.norm(e)
    return np.outer(s, s) * (L @ L.T)


def covariance_cases(n: int) -> list[tuple[str, np.ndarray]]:
    """Four random covariances, every pair nearly collinear once, and two rank-deficient ones."""
    cases = [(f"seed{seed}", random_covariance(n, seed)) for seed in range(4)]
    cases += [(f"rho{i}{j}", nearly_collinear(n, 10 + i * n + j, i, j))
              for i in range(n) for j in range(i + 1, n)]
    cases += [(f"rank{r}", random_covariance(n, 20 + r, rank=r)) for r in (1, max(1, n - 2))]
    # dict() drops the duplicate rank for n <= 3
    return list(dict(cases).items())


def _cases(n: int) -> list:
    return [pytest.param(C, id=name) for name, C in covariance_cases(n)]


def test_covariance_cases_are_valid() -> None:
    """The generators give symmetric PSD matrices with diagonals in [0.05, 3] as intended."""
    for n in (2, 3, 4):
        for name, C in covariance_cases(n):
            assert np.allclose(C, C.T, rtol=0, atol=1e-15)
            assert np.all(np.linalg.eigvalsh(C) > 0), name
            assert np.all((np.diag(C) > 0.05 - 1e-9) & (np.diag(C) < 3.0 + 1e-9)), name
        rho = nearly_collinear(n, 0, 0, n - 1)
        assert rho[0, -1] / np.sqrt(rho[0, 0] * rho[-1, -1]) == pytest.approx(0.999999, abs=1e-12)


# --- two-point integrals -------------------------------------------------------------------------

@pytest.mark.parametrize("C", _cases(2))
def test_J2(C: np.ndarray) -> None:
    """J2 = E[g'(z1) g'(z2)] > 0, purely relative."""
    ref = converged(lambda n: gauss_expectation(lambda z: g_prime(z[0]) * g_prime(z[1]), C,
                                                (n, n)), 0.0)
    assert_close(J2(C[0, 0], C[1, 1], C[0, 1]), ref)


@pytest.mark.parametrize("C", _cases(2) + [pytest.param(np.diag([0.3, 2.0]), id="c12=0")])
def test_I2(C: np.ndarray) -> None:
    """I2 = E[g(z1) g(z2)] (zero at c12 = 0; size sqrt(E[g(z1)^2 g(z2)^2]))."""
    def quad(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[int], float]:
        return lambda n: gauss_expectation(f, C, (n, n))

    size = np.sqrt(converged(quad(lambda z: (g(z[0]) * g(z[1])) ** 2), 0.0))
    ref = converged(quad(lambda z: g(z[0]) * g(z[1])), size)
    assert_close(I2(C[0, 0], C[1, 1], C[0, 1]), ref, size)


@pytest.mark.parametrize("C", _cases(2))
def test_dI2_price(C: np.ndarray) -> None:
    """Price's theorem as numerical integrals: dI2/dc12 = E[g'(z1) g'(z2)] and
    dI2/dc11 = 1/2 E[g''(z1) g(z2)] = -1/2 E[z1 g'(z1) g(z2)] (likewise c22). Unlike finite
    differences in c, these need no step, so they cover the nearly singular cases too."""
    def quad(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[int], float]:
        return lambda n: gauss_expectation(f, C, (n, n))

    args = (C[0, 0], C[1, 1], C[0, 1])
    assert_close(dI2_dc12(*args), converged(quad(lambda z: g_prime(z[0]) * g_prime(z[1])), 0.0))
    for kernel, (a, b) in ((dI2_dc11, (0, 1)), (dI2_dc22, (1, 0))):
        def f(z: np.ndarray, a: int = a, b: int = b) -> np.ndarray:
            return -0.5 * z[a] * g_prime(z[a]) * g(z[b])

        size = np.sqrt(converged(quad(lambda z, f=f: f(z) ** 2), 0.0))
        assert_close(kernel(*args), converged(quad(f), size), size)


# Central differences of the quadrature I2 with one Richardson step, step H in c:
# D(h) = (I2(c + h) - I2(c - h)) / 2h = I2' + h^2 I2'''/6 + O(h^4), R = (4 D(H/2) - D(H)) / 3
# = I2' + O(H^4). With H = 1e-3 the truncation is ~1e-12 |I2^(5)| and the rounding of the
# quadrature (~1e-16, smooth in c since the Cholesky factor is) divided by H is ~1e-13;
# measured |R - kernel| / |kernel| <= 2.1e-12 (plain D(H): up to 5.5e-7, hence the Richardson
# step). FD_RTOL = 1e-9 is more than two orders above the measured error.
FD_STEP = 1e-3
FD_RTOL = 1e-9


@pytest.mark.parametrize("C", [pytest.param(random_covariance(2, s), id=f"seed{s}")
                               for s in (0, 1, 2, 5)])
def test_dI2_finite_differences(C: np.ndarray) -> None:
    """dI2/dc11, dI2/dc22, dI2/dc12 against Richardson-extrapolated central differences of the
    Gauss-Hermite I2 (140 nodes per axis; converged per test_I2). The stencil c +- H must stay
    positive definite: seeds 3 and 4 (smallest eigenvalues 9e-5, 2e-3) do not and, like the nearly
    singular cases, are covered by test_dI2_price."""
    assert np.linalg.eigvalsh(C).min() > 10 * FD_STEP

    def i2_quad(c11: float, c22: float, c12: float) -> float:
        cov = np.array([[c11, c12], [c12, c22]])
        return gauss_expectation(lambda z: g(z[0]) * g(z[1]), cov, (NODES[1], NODES[1]))

    args = np.array([C[0, 0], C[1, 1], C[0, 1]])
    for i, kernel in enumerate((dI2_dc11, dI2_dc22, dI2_dc12)):
        e = np.zeros(3)
        e[i] = 1.0

        def central(h: float, e: np.ndarray = e) -> float:
            return (i2_quad(*(args + h * e)) - i2_quad(*(args - h * e))) / (2.0 * h)

        richardson = (4.0 * central(FD_STEP / 2) - central(FD_STEP)) / 3.0
        value = kernel(*args)
        assert abs(value - richardson) <= FD_RTOL * abs(value), (kernel, value, richardson)


# --- I3 ------------------------------------------------------------------------------------------

def _i3_quadrature(f: Callable[[np.ndarray], np.ndarray], C: np.ndarray) -> Callable[[int], float]:
    # Cholesky in the order (z1, z3, z2): z2 is the only field carrying xi_3, and f (I3's
    # integrand or its square) is a polynomial of degree <= 2 in xi_3, which 2 Gauss-Hermite nodes
    # integrate exactly; the remaining 2D integral gets n nodes per axis.
    return lambda n: gauss_expectation(f, C, (n, n, 2), order=[0, 2, 1])


def _i3_integrand(z: np.ndarray) -> np.ndarray:
    return g_prime(z[0]) * z[1] * g(z[2])


def _i3_zero() -> np.ndarray:
    """A covariance with c23 (1 + c11) = c12 c13: by Stein's lemma and Price's theorem
    I3 = J2(c11, c33, c13) (c23 - c12 c13 / (1 + c11)) = 0, a zero the quadrature must find."""
    C = random_covariance(3, 6)
    # Move c23 only; C stays positive definite for this seed (asserted in the test).
    C[1, 2] = C[2, 1] = C[0, 1] * C[0, 2] / (1.0 + C[0, 0])
    return C


@pytest.mark.parametrize("C", _cases(3) + [pytest.param(_i3_zero(), id="zero")])
def test_I3(C: np.ndarray) -> None:
    """I3 = E[g'(z1) z2 g(z3)] (odd in z3, can be ~0; size sqrt(E[f^2]))."""
    assert np.all(np.linalg.eigvalsh(C) > 0)
    size = np.sqrt(converged(_i3_quadrature(lambda z: _i3_integrand(z) ** 2, C), 0.0))
    ref = converged(_i3_quadrature(_i3_integrand, C), size)
    assert_close(I3(C[0, 0], C[1, 1], C[2, 2], C[0, 1], C[0, 2], C[1, 2]), ref, size)


# --- I4 ------------------------------------------------------------------------------------------

def i4_quadrature(C: np.ndarray, n: int, with_erfs: bool = True) -> float:
    """E[g'(z1) g'(z2) h(z3, z4)], h = g(z3) g(z4) (or h = 1 with ``with_erfs=False``).

    Cholesky in the order (z3, z4, z1, z2): (z3, z4) = L_a xi_ab, (z1, z2) = P xi_ab + U xi_cd.
    The xi_cd integral is Gaussian and done exactly,
        E_cd[g'(z1) g'(z2)] = (2/pi) det(I + U U^T)^(-1/2) exp(-1/2 m^T (I + U U^T)^(-1) m),
    m = P xi_ab (completing the square); the xi_ab integral, which carries both erfs, by
    Gauss-Hermite with n nodes per axis.
    """
    order = [2, 3, 0, 1]
    L = np.linalg.cholesky(C[np.ix_(order, order)])
    P, U = L[2:, :2], L[2:, 2:]
    A = np.eye(2) + U @ U.T
    xi, weights = _grid((n, n))
    z34 = L[:2, :2] @ xi
    m = P @ xi
    gaussian = (2.0 / np.pi) / np.sqrt(np.linalg.det(A)) * np.exp(
        -0.5 * np.einsum("ip,ip->p", m, np.linalg.solve(A, m)))
    h = g(z34[0]) * g(z34[1]) if with_erfs else 1.0
    return float(weights @ (gaussian * h))


def _i4_args(C: np.ndarray) -> tuple[float, ...]:
    return (C[0, 0], C[1, 1], C[2, 2], C[3, 3], C[0, 1], C[0, 2], C[0, 3], C[1, 2], C[1, 3],
            C[2, 3])


def _i4_zero() -> np.ndarray:
    """z3 independent of the other fields: I4 = E[g'(z1) g'(z2) g(z4)] E[g(z3)] = 0."""
    C = random_covariance(4, 6)
    C[2, [0, 1, 3]] = C[[0, 1, 3], 2] = 0.0
    return C


@pytest.mark.parametrize("C", _cases(4) + [pytest.param(_i4_zero(), id="zero")])
def test_I4(C: np.ndarray) -> None:
    """I4 = E[g'(z1) g'(z2) g(z3) g(z4)]; |I4| <= E[g'(z1) g'(z2)] since |g| <= 1, and that bound
    (the same quadrature with g g -> 1) is the size for values near zero."""
    bound = converged(lambda n: i4_quadrature(C, n, with_erfs=False), 0.0)
    ref = converged(lambda n: i4_quadrature(C, n), bound)
    assert_close(I4(*_i4_args(C)), ref, bound)


def test_I4_reduction_matches_full_4d_quadrature() -> None:
    """The exact xi_cd integration in i4_quadrature against plain 4D Gauss-Hermite (one
    moderate covariance, diagonals <= 1; measured: 40 vs 48 nodes per axis differ by 1.7e-13 of
    the value, the reduced and the 48-node full quadrature by 3e-15)."""
    C = random_covariance(4, 7)
    C *= 1.0 / np.max(np.diag(C))

    def full(n: int) -> float:
        return gauss_expectation(lambda z: g_prime(z[0]) * g_prime(z[1]) * g(z[2]) * g(z[3]), C,
                                 (n,) * 4)

    bound = i4_quadrature(C, NODES[1], with_erfs=False)
    reduced = i4_quadrature(C, NODES[1])
    assert abs(converged(full, bound, nodes=(40, 48)) - reduced) <= QUAD_TOL * abs(reduced)


# --- I4 slices -----------------------------------------------------------------------------------

# erf's I4_forms evaluates the closed form of I4 through the tilted covariance of each pair (k, l)
# (``theory.activations.erf.i4_row``): the same formula with other rounding. Differences come
# from cancellation in the tilted covariance at ~1e-16 of the integrand's size, which the bound
# J2(k, l) = E[g'(z_k) g'(z_l)] >= |I4(k, l, a, b)| measures (|g| <= 1); measured <= 6e-16 J2 over
# these covariances, the nearly collinear and rank-deficient ones included.
SLICE_TOL = 1e-13


@njit
def _slices(acts, omega, K, pairs, X, parallel, out):
    I4_forms(acts.student, acts.teacher, omega, K, pairs, X, parallel, out)


@njit
def _slices_from_I4(acts, omega, K, pairs, X, out):
    I4_forms_from_I4(acts.student, acts.teacher, omega, K, pairs, X, out)


@pytest.mark.parametrize("n, K", [(3, 2), (5, 3), (6, 6)])
def test_i4_slices_match_the_kernel(n: int, K: int) -> None:
    """With X = I, I4_forms gives the slices I4(k, l, ., .) themselves: erf's against the kernel
    entry by entry (within SLICE_TOL J2(k, l)), and the registry's fallback, which calls the kernel
    per entry (its quadratic form with X = I adds only zeros), within 4e-15 J2(k, l): the kernel
    inlined into compiled code rounds differently in the last bits (measured <= 4e-16 J2)."""
    for _, omega in covariance_cases(n):
        pairs = student_pairs(K)
        fast, fallback = (np.empty((len(pairs), n, n)) for _ in range(2))
        _slices(ERF, omega, K, pairs, np.eye(n), False, fast)
        _slices_from_I4(ERF, omega, K, pairs, np.eye(n), fallback)
        for p, (k, l) in enumerate(pairs):
            kernel = np.array([[I4(*_i4_args(omega[np.ix_(idx, idx)])) for idx in
                                ([k, l, a, b] for b in range(n))] for a in range(n)])
            bound = J2(omega[k, k], omega[l, l], omega[k, l])
            assert np.abs(fallback[p] - kernel).max() <= 4e-15 * bound
            assert np.abs(fast[p] - kernel).max() <= SLICE_TOL * bound


def test_i4_forms_threads_give_the_serial_result() -> None:
    """A network large enough for the parallel path of ``diffusion`` (K = 24, M = 4): the forms
    computed in numba's threads, with all of them or one, equal the serial ones bit for bit (each
    pair is computed by one thread with the same arithmetic), and equal X^T I X of the slices."""
    K, M = 24, 4
    n = K + M
    omega = random_covariance(n, 31)
    pairs = student_pairs(K)
    assert len(pairs) * n * (n + 1) // 2 >= PARALLEL_ENTRIES
    X = np.random.default_rng(5).standard_normal((n, 3))
    serial, threads, one = (np.empty((len(pairs), 3, 3)) for _ in range(3))
    _slices(ERF, omega, K, pairs, X, False, serial)
    _slices(ERF, omega, K, pairs, X, True, threads)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _slices(ERF, omega, K, pairs, X, True, one)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(threads, serial)
    np.testing.assert_array_equal(one, serial)
    slices = np.empty((len(pairs), n, n))
    _slices(ERF, omega, K, pairs, np.eye(n), False, slices)
    np.testing.assert_allclose(serial, np.einsum("ai,pab,bj->pij", X, slices, X), rtol=1e-12,
                               atol=1e-13 * np.abs(serial).max())


# --- diffusion -----------------------------------------------------------------------------------

def _pair_problem(K: int, M: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Omega (random valid, K + M fields), mean of y = (w', u), and V with cov(y) = V V^T of rank
    M (w' = A w + F u is linear in the task head, so cov(y) has rank M in the ODEs)."""
    rng = np.random.default_rng(seed)
    omega = random_covariance(K + M, 100 + seed)
    mean = rng.normal(0.0, 1.0, K + M)
    V = rng.normal(0.0, 0.7, (K + M, M))
    return omega, mean, V


def _i4_tensor(omega: np.ndarray, K: int) -> np.ndarray:
    """T[k, l, a, b] = I4(k, l, a, b) = E[g'(z_k) g'(z_l) g(z_a) g(z_b)] from the kernel."""
    n = omega.shape[0]
    T = np.empty((K, K, n, n))
    for k in range(K):
        for l in range(K):
            for a in range(n):
                for b in range(n):
                    idx = [k, l, a, b]
                    T[k, l, a, b] = I4(*_i4_args(omega[np.ix_(idx, idx)]))
    return T


def _j2_matrix(omega: np.ndarray, K: int) -> np.ndarray:
    return np.array([[J2(omega[k, k], omega[l, l], omega[k, l]) for l in range(K)]
                     for k in range(K)])


def _phi_given_head(y: np.ndarray, T: np.ndarray, j2: np.ndarray, K: int,
                    noise: float) -> np.ndarray:
    """E_x[Delta^2 y_k y_l g'(lambda_k) g'(lambda_l)] for heads y (rows), written as a direct sum:
    c = (w', -u), Delta = sum_a c_a g(z_a) - noise zeta, so E_x = y_k y_l [c^T T_kl c
    + noise^2 J2_kl]. Returns shape (len(y), K, K)."""
    c = np.concatenate([y[:, :K], -y[:, K:]], axis=1)
    quad = np.einsum("sa,klab,sb->skl", c, T, c)
    return y[:, :K, None] * y[:, None, :K] * (quad + noise**2 * j2)


@pytest.mark.parametrize("K, M", [(2, 1), (2, 2)])
def test_diffusion_deterministic_head(K: int, M: int) -> None:
    """cov = 0: Phi_kl = w_k w_l [sum_ab c_a c_b I4(k, l, a, b) + noise^2 J2(k, l)] summed
    directly; same kernel values, different summation order, so 1e-12 relative (rounding)."""
    omega, mean, _ = _pair_problem(K, M, 0)
    n = K + M
    noise = 0.3
    expected = _phi_given_head(mean[None], _i4_tensor(omega, K), _j2_matrix(omega, K), K, noise)[0]
    phi = diffusion(ERF, omega, K, mean, np.zeros((n, 0)), noise)
    np.testing.assert_allclose(phi, expected, rtol=1e-12, atol=1e-14)


def test_diffusion_noise_term() -> None:
    """Phi(noise) - Phi(0) = noise^2 J2(k, l) E[y_k y_l], E[y y^T] = mean mean^T + cov. Absolute
    tolerance 1e-12 max|Phi| (cancellation in the difference, values O(1))."""
    K, M = 2, 2
    omega, mean, V = _pair_problem(K, M, 1)
    cov = V @ V.T
    noise = 0.7
    with_noise = diffusion(ERF, omega, K, mean, V, noise)
    without = diffusion(ERF, omega, K, mean, V, 0.0)
    second = (np.outer(mean, mean) + cov)[:K, :K]
    np.testing.assert_allclose(with_noise - without, noise**2 * _j2_matrix(omega, K) * second,
                               rtol=0, atol=1e-12 * np.max(np.abs(with_noise)))


@pytest.mark.parametrize("K, M", [(2, 1), (2, 2)])
def test_diffusion_task_average_exact(K: int, M: int) -> None:
    """Random head y = mean + V xi, xi ~ N(0, I_M): the per-head Phi is a polynomial of degree 4
    in xi, which Gauss-Hermite with 3 nodes per axis integrates exactly (degree <= 5). This tests
    the Isserlis fourth moment inside ``diffusion`` to rounding (1e-11 relative to max|Phi|)."""
    omega, mean, V = _pair_problem(K, M, 2)
    noise = 0.2
    xi, weights = _grid((3,) * M)
    heads = (mean[:, None] + V @ xi).T
    phi_heads = _phi_given_head(heads, _i4_tensor(omega, K), _j2_matrix(omega, K), K, noise)
    expected = np.einsum("s,skl->kl", weights, phi_heads)
    phi = diffusion(ERF, omega, K, mean, V, noise)
    np.testing.assert_allclose(phi, expected, rtol=0, atol=1e-11 * np.max(np.abs(expected)))


@pytest.mark.parametrize("K, M", [(2, 1), (2, 2)])
def test_diffusion_monte_carlo(K: int, M: int) -> None:
    """Phi against a Monte Carlo average over 2 * 10^5 Gaussian heads y (fixed seed), each with
    the exact E_x from the I4 kernel; tolerance 5 standard errors of that average per entry."""
    omega, mean, V = _pair_problem(K, M, 3)
    noise = 0.5
    rng = np.random.default_rng(12345)
    heads = mean + rng.standard_normal((200_000, M)) @ V.T
    samples = _phi_given_head(heads, _i4_tensor(omega, K), _j2_matrix(omega, K), K, noise)
    estimate = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    phi = diffusion(ERF, omega, K, mean, V, noise)
    assert np.all(np.abs(phi - estimate) <= 5.0 * stderr), (phi, estimate, stderr)


def test_diffusion_large_network_matches_the_fourth_moments() -> None:
    """K = 24, M = 4 (the parallel path): Phi against the contraction of the full Isserlis
    moments M4[k, l, a, b] = E[y_k y_l y_a y_b] (numpy, from mean and cov = V V^T) with the signed
    tensor W (``signed_i4_tensor``), and the few-shot theory's route, ``add_diffusion`` (the
    quadratic forms of the stored W, packed k <= l): the same terms summed in other orders, so to
    rounding (1e-12 relative to max|Phi|; measured 9e-16 for the moments)."""
    K, M = 24, 4
    omega, mean, V = _pair_problem(K, M, 4)
    noise = 0.4
    mu, S = mean, V @ V.T
    mk, Sk, Sa = mu[:K], S[:K, :K], S[:, :K]
    M4 = (np.einsum("k,l,a,b->klab", mk, mk, mu, mu) + np.einsum("a,b,kl->klab", mu, mu, Sk)
          + np.einsum("a,k,bl->klab", mu, mk, Sa) + np.einsum("a,l,bk->klab", mu, mk, Sa)
          + np.einsum("b,k,al->klab", mu, mk, Sa) + np.einsum("b,l,ak->klab", mu, mk, Sa)
          + np.einsum("k,l,ab->klab", mk, mk, S) + np.einsum("ab,kl->klab", S, Sk)
          + np.einsum("ak,bl->klab", Sa, Sa) + np.einsum("al,bk->klab", Sa, Sa))
    W = signed_i4_tensor(ERF, omega, K)
    N = noise_weights(ERF, omega, K, noise)
    expected = np.einsum("klab,klab->kl", W, M4) + N * (np.outer(mk, mk) + Sk)
    phi = diffusion(ERF, omega, K, mean, V, noise)
    np.testing.assert_allclose(phi, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    pairs = student_pairs(K)
    X = np.concatenate([mean[:, None], V], axis=1)
    packed = np.zeros(len(pairs))
    add_diffusion(W, N, pairs, X, 1.0, packed, 0, np.empty_like(X),
                  np.empty((len(pairs), M + 1, M + 1)))
    np.testing.assert_allclose(packed, expected[pairs[:, 0], pairs[:, 1]], rtol=0,
                               atol=1e-12 * np.abs(expected).max())


# --- population error ----------------------------------------------------------------------------

def test_population_error_monte_carlo() -> None:
    """eps(w; u) = 1/2 E[(w . g(lambda) - u . g(nu))^2] (no noise floor) against 10^6 samples of
    the fields (lambda, nu) ~ N(0, Omega), fixed seed; tolerance 5 standard errors."""
    K, M = 3, 2
    rng = np.random.default_rng(7)
    omega = random_covariance(K + M, 8)
    Q, R, T = omega[:K, :K].copy(), omega[:K, K:].copy(), omega[K:, K:].copy()
    w, u = rng.normal(0.0, 1.0, K), rng.normal(0.0, 1.0, M)
    np.testing.assert_array_equal(field_covariance(Q, R, T), omega)
    fields = rng.standard_normal((1_000_000, K + M)) @ np.linalg.cholesky(omega).T
    samples = 0.5 * (g(fields[:, :K]) @ w - g(fields[:, K:]) @ u) ** 2
    stderr = samples.std(ddof=1) / np.sqrt(len(samples))
    eps = population_error(ERF, Q, R, T, w, u)
    assert abs(eps - samples.mean()) <= 5.0 * stderr, (eps, samples.mean(), stderr)
