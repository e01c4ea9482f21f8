"""Four-point moments F = E[g(z1) g(z2) g(z3) g(z4)], g(z) = erf(z / sqrt 2), z ~ N(0, C).

``theory.activations.erf_fourpoint.four_point`` (the path integral of Price's theorem along
C_t, Gauss-Legendre in s with t = 1 - s^2) is checked against

- Monte Carlo with 10^7 samples (fixed seed, chunks of 10^6), tolerance 5 standard errors of the
  Monte Carlo mean computed from the same samples, on three random 4 x 4 covariances and on the
  singular covariances of repeated fields E[g(x)^2 g(y)^2], E[g(x)^3 g(y)], E[g(x)^4];
- Gauss-Hermite references for the repeated-field cases (1D for g^4 and for g^3 g, using the closed
  form E[g(y) | x] = erf(m / sqrt(2 (1 + s^2))) for y | x ~ N(m, s^2); 2D for g^2 g^2);
- Isserlis' theorem for the linear activation (``linear_pair``);
- its own value with 4x the quadrature nodes (convergence).

Then ``erf_fourpoint.four_point_gradient`` (Price's theorem at t = 1, Stein's lemma on the
diagonal) against central finite differences of ``four_point``, also at singular covariances along
directions that keep the fields repeated (the way the few-shot drift uses it), and the symmetries
of ``theory.fewshot.four_point_tensor`` (which reaches both through the generic ``F4``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import erf
from states import ERF

from metaode.theory.activations.erf_fourpoint import four_point, four_point_gradient, linear_pair
from metaode.theory.activations.quadrature import DEFAULT_NODES, path_rule
from metaode.theory.fewshot import four_point_tensor

RULE = path_rule()
FINE_RULE = path_rule(4 * DEFAULT_NODES)

MC_SAMPLES = 10**7
MC_CHUNK = 10**6
MC_SEED = 20240611
Z_MC = 5.0


def g(z: np.ndarray) -> np.ndarray:
    """g(z) = erf(z / sqrt 2)."""
    return erf(z / np.sqrt(2.0))


def random_covariance(seed: int, n: int = 4) -> np.ndarray:
    """C = A A^T / n + 0.1 I, A with i.i.d. N(0, 1) entries: diagonals ~0.3 .. 3, correlations of
    both signs, well conditioned."""
    A = np.random.default_rng(seed).standard_normal((n, n))
    return A @ A.T / n + 0.1 * np.eye(n)


def repeated(C_small: np.ndarray, fields: list[int]) -> np.ndarray:
    """The singular 4 x 4 covariance of (x_fields[0], .., x_fields[3]), x ~ N(0, C_small)."""
    S = np.zeros((4, C_small.shape[0]))
    S[np.arange(4), fields] = 1.0
    return S @ C_small @ S.T


C_XY = np.array([[1.3, 0.6], [0.6, 0.8]])
C_XY_NEG = np.array([[0.9, -0.5], [-0.5, 1.4]])
C_X = np.array([[1.7]])

# name -> (C_small, fields); C = repeated(C_small, fields), random ones use the identity map
CASES = {
    **{f"random{s}": (random_covariance(s), [0, 1, 2, 3]) for s in range(3)},
    "g2g2": (C_XY, [0, 0, 1, 1]),
    "g3g": (C_XY_NEG, [0, 0, 0, 1]),
    "g4": (C_X, [0, 0, 0, 0]),
}


def covariance(name: str) -> np.ndarray:
    return repeated(*CASES[name])


@njit(cache=True)
def product_sums(xi: np.ndarray, L: np.ndarray, fields: np.ndarray) -> tuple[float, float]:
    """Sum and sum of squares over samples i of prod_a erf(z_i[fields[a]] / sqrt 2), z_i = L xi_i
    (libm's erf, independent of the closed forms under test)."""
    r = L.shape[0]
    s1 = s2 = 0.0
    gz = np.empty(r)
    for i in range(xi.shape[0]):
        for j in range(r):
            acc = 0.0
            for m in range(r):
                acc += L[j, m] * xi[i, m]
            gz[j] = math.erf(acc / math.sqrt(2.0))
        f = gz[fields[0]] * gz[fields[1]] * gz[fields[2]] * gz[fields[3]]
        s1 += f
        s2 += f * f
    return s1, s2


@pytest.fixture(scope="module")
def monte_carlo() -> dict[str, tuple[float, float]]:
    """name -> (mean, standard error) of prod_a g(z_a) over 10^7 samples z = S L xi, L L^T =
    C_small (S repeats the fields), the same xi for every case."""
    rng = np.random.default_rng(MC_SEED)
    sums = dict.fromkeys(CASES, 0.0)
    squares = dict.fromkeys(CASES, 0.0)
    for _ in range(MC_SAMPLES // MC_CHUNK):
        xi = rng.standard_normal((MC_CHUNK, 4))
        for name, (C_small, fields) in CASES.items():
            s1, s2 = product_sums(xi, np.linalg.cholesky(C_small), np.array(fields))
            sums[name] += s1
            squares[name] += s2
    out = {}
    for name in CASES:
        mean = sums[name] / MC_SAMPLES
        var = squares[name] / MC_SAMPLES - mean**2
        out[name] = (mean, float(np.sqrt(var / (MC_SAMPLES - 1))))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_four_point_against_monte_carlo(name: str, monte_carlo) -> None:
    """|F - MC mean| <= 5 s.e.: a false alarm has probability ~6e-7 per case. The standard errors
    (1.5e-5 .. 1.1e-4) are below 1/600 of |F| (0.0115 .. 0.30), so a value wrong by 1 % would be
    caught."""
    mean, se = monte_carlo[name]
    value = four_point(covariance(name), *RULE)
    assert se < abs(value) / 500.0
    assert abs(value - mean) <= Z_MC * se, (value, mean, se)


# --- quadrature references for repeated fields -------------------------------------------------

# Gauss-Hermite node counts of a reference and the agreement demanded between them: measured
# <= 4e-16 relative (100 against 140 nodes still differ by 5e-14 for g^4), so REF_TOL = 1e-13
# leaves two orders; the path integral is then held to FOUR_POINT_TOL = 1e-12 (measured
# deviations <= 5e-16: the path integral is exact up to rounding).
REF_NODES = (150, 200)
REF_TOL = 1e-13
FOUR_POINT_TOL = 1e-12


def standard_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of E[f(xi)], xi ~ N(0, 1)."""
    x, w = hermegauss(n)
    return x, w / np.sqrt(2.0 * np.pi)


def reference_g4(n: int) -> float:
    """E[g(x)^4], x ~ N(0, a): 1D Gauss-Hermite."""
    x, w = standard_rule(n)
    return float(w @ g(np.sqrt(C_X[0, 0]) * x) ** 4)


def conditional(C_small: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean m(x) and std s of y given x for (x, y) ~ N(0, C_small), x = sqrt(C_xx) xi."""
    a, b, c = C_small[0, 0], C_small[1, 1], C_small[0, 1]
    return c / np.sqrt(a) * x, float(np.sqrt(b - c * c / a))


def reference_g3g(n: int) -> float:
    """E[g(x)^3 g(y)] = E_x[g(x)^3 erf(m(x) / sqrt(2 (1 + s^2)))]: 1D Gauss-Hermite."""
    x, w = standard_rule(n)
    m, s = conditional(C_XY_NEG, x)
    return float(w @ (g(np.sqrt(C_XY_NEG[0, 0]) * x) ** 3 * erf(m / np.sqrt(2.0 * (1.0 + s * s)))))


def reference_g2g2(n: int) -> float:
    """E[g(x)^2 g(y)^2]: tensor-product 2D Gauss-Hermite over (x, y | x)."""
    x, w = standard_rule(n)
    m, s = conditional(C_XY, x)
    inner = g(m[:, None] + s * x[None, :]) ** 2 @ w  # E[g(y)^2 | x] at every outer node
    return float(w @ (g(np.sqrt(C_XY[0, 0]) * x) ** 2 * inner))


@pytest.mark.parametrize("name, reference", [("g4", reference_g4), ("g3g", reference_g3g),
                                             ("g2g2", reference_g2g2)])
def test_four_point_against_quadrature(name: str, reference) -> None:
    coarse, fine = (reference(n) for n in REF_NODES)
    assert abs(fine - coarse) <= REF_TOL * abs(fine), (coarse, fine)
    value = four_point(covariance(name), *RULE)
    assert abs(value - fine) <= FOUR_POINT_TOL * abs(fine), (value, fine)


# --- linear activation and quadrature convergence ----------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("nodes", [2, DEFAULT_NODES])
def test_linear_activation_gives_isserlis(name: str, nodes: int) -> None:
    """With E_t[z_c z_d] = t C_cd the integrand is t sum_{a<b} C_ab C_cd, a polynomial of degree
    3 in s, integrated exactly by >= 2 Gauss-Legendre nodes: the result is Isserlis' sum up to
    rounding (measured <= 9e-16 relative to the sum of |products|), held to 1e-13."""
    C = covariance(name)
    terms = np.array([C[0, 1] * C[2, 3], C[0, 2] * C[1, 3], C[0, 3] * C[1, 2]])
    value = four_point(C, *path_rule(nodes), linear_pair)
    assert abs(value - terms.sum()) <= 1e-13 * np.abs(terms).sum(), (value, terms.sum())


@pytest.mark.parametrize("name", list(CASES))
def test_quadrature_converged(name: str) -> None:
    """Default nodes against 4x the nodes: after t = 1 - s^2 the integrand is analytic in s, so
    Gauss-Legendre converges geometrically and the values differ only by rounding (measured
    <= 6e-15 relative for these cases, also the singular ones; 16 nodes already give 2e-14)."""
    C = covariance(name)
    value, fine = four_point(C, *RULE), four_point(C, *FINE_RULE)
    assert abs(value - fine) <= 1e-13 * abs(fine), (value, fine)


# --- the gradient --------------------------------------------------------------------------------

# Central differences with step H: truncation H^2 / 6 |F'''| (up to 5.5e-10 at H = 1e-4, at the
# repeated fields, falling as H^2) and rounding ~1e-16 |F| / H ~ 3e-12: at H = 1e-5 the measured
# deviations are <= 8e-12, and GRAD_TOL = 1e-10 is 12x above them, while a wrong term (e.g. a
# factor 2 in a symmetric pair or on the diagonal) errs by >= 1e-3.
H = 1e-5
GRAD_TOL = 1e-10


def central_difference(C: np.ndarray, direction: np.ndarray) -> float:
    return (four_point(C + H * direction, *RULE) - four_point(C - H * direction, *RULE)) / (2 * H)


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("random")])
def test_gradient_finite_differences(name: str) -> None:
    """grad[p, q], p != q: derivative along the symmetric pair (C_pq and C_qp moved together);
    grad[p, p]: along the diagonal entry alone."""
    C = covariance(name)
    grad = four_point_gradient(C)
    np.testing.assert_array_equal(grad, grad.T)
    for p in range(4):
        for q in range(p, 4):
            direction = np.zeros((4, 4))
            direction[p, q] = direction[q, p] = 1.0
            fd = central_difference(C, direction)
            assert abs(grad[p, q] - fd) <= GRAD_TOL, (p, q, grad[p, q], fd)


@pytest.mark.parametrize("name", ["g2g2", "g3g", "g4"])
def test_gradient_at_repeated_fields(name: str) -> None:
    """C = S C_small S^T stays singular (a covariance) when C_small moves; by the chain rule
    dF/dC_small[i, j] (symmetric pair for i != j) is the sum of grad[p, q] over p <= q with
    {fields[p], fields[q]} = {i, j}. The few-shot drift evaluates the gradient exactly there
    (sub-covariances such as (k, k, a, a))."""
    C_small, fields = CASES[name]
    grad = four_point_gradient(repeated(C_small, fields))
    n = C_small.shape[0]
    for i in range(n):
        for j in range(i, n):
            chained = sum(grad[p, q] for p in range(4) for q in range(p, 4)
                          if {fields[p], fields[q]} == {i, j})
            direction = np.zeros((n, n))
            direction[i, j] = direction[j, i] = 1.0
            fd = (four_point(repeated(C_small + H * direction, fields), *RULE)
                  - four_point(repeated(C_small - H * direction, fields), *RULE)) / (2 * H)
            assert abs(chained - fd) <= GRAD_TOL, (i, j, chained, fd)


# --- the tensor ----------------------------------------------------------------------------------

def test_four_point_tensor_symmetries() -> None:
    """F[k, l, a, b] = E[g(z_k) g(z_l) g(z_a) g(z_b)] for K = 3 student and 2 teacher fields.

    Each entry is the path integral of its sub-covariance (the same computation, compiled inside
    the tensor loop: equal up to ~1 ulp); it is invariant
    under every permutation of the four fields, which the path integral computes with different
    pair roles (agreement to rounding: measured <= 1.4e-17, held to 1e-14 absolute for values
    0.001 .. 0.16); entries with all four indices student fields are symmetric under (k, l) <->
    (a, b), computed independently (same bound).
    """
    K, n = 3, 5
    omega = random_covariance(7, n)
    F = four_point_tensor(ERF, omega, K, *RULE)
    assert F.shape == (K, K, n, n)
    perms = [(1, 0, 2, 3), (2, 3, 0, 1), (0, 2, 1, 3), (3, 1, 2, 0), (2, 0, 3, 1)]
    for k in range(K):
        for l in range(K):
            for a in range(n):
                for b in range(n):
                    idx = [k, l, a, b]
                    direct = four_point(omega[np.ix_(idx, idx)], *RULE)
                    assert abs(F[k, l, a, b] - direct) <= 1e-14
                    assert F[k, l, a, b] == F[l, k, a, b] == F[k, l, b, a]
                    for perm in perms:
                        p_idx = [idx[i] for i in perm]
                        value = four_point(omega[np.ix_(p_idx, p_idx)], *RULE)
                        assert abs(value - F[k, l, a, b]) <= 1e-14, (idx, perm)
                    if a < K and b < K:
                        assert abs(F[a, b, k, l] - F[k, l, a, b]) <= 1e-14
    # a repeated-field entry against its direct value: E[g(z_0)^2 g(z_1)^2]
    assert abs(F[0, 1, 0, 1] - F[0, 0, 1, 1]) <= 1e-14
