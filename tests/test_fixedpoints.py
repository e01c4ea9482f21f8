"""Fixed points of the ODEs, their stability, and the escape law of the sgd plateau.

The exact Jacobian (``theory.jacobian``: the chain rule through the sympy-derived gradients of I3,
I4, J2, I2) is checked against central differences; Newton with it finds the plateau of the K = M
= 3 soft committee machine (Saad & Solla 1995, lr = 0.1) that the integrated trajectory sits on,
whose unstable eigenvalue lambda_u predicts the growth of the escape time with the log of the
initial asymmetry, and the specialised fixed point, which is stable.

What the fixed points look like at lr = 0.1 (measured with this code). In the symmetric subspace
(Q_kk = q, Q_kl = c, R_km = r, w = 1) there are two fixed points:
  A: q = c = 0.20105, r = 0.25845 (all student vectors identical, the boundary q = c of the
     physical states; the continuation of Saad & Solla's q = c = 1/5, r = 1/sqrt(15)), with one
     weakly unstable symmetric direction (+2.6e-4) pointing into q > c;
  B: q = 0.21459, c = 0.19766, r = 0.25990 (the lr^2 term keeps the student vectors apart),
     attracting within the symmetric subspace (-2.56e-4, -0.114, -0.292).
They merge as lr -> 0 (the degenerate Saad-Solla point). The trajectory from Q0 = 0.5 I sits on B,
but it approaches B along the slow symmetric mode -2.56e-4 and is still ~1e-2 away when it escapes
(alpha ~ 3000); a start on B's strong-stable manifold (tuned initial correlation c0 of the student
vectors, found by shooting) reaches B within 1e-7 by alpha ~ 150. B has a fourfold degenerate
unstable eigenvalue lambda_u = 4.5346e-3 (the 4-dimensional irreducible representation std x std
of S_3 x S_3 in the asymmetric part of R).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from states import ERF, sgd_i3_rhs

import metaode.theory.activations.erf_kernels as kernels
from metaode.config import Config
from metaode.solvers.fixedpoints import (
    asymmetry,
    find_fixed_point,
    specialised_fixed_point,
    stability,
    symmetric_basis,
    symmetric_plateau,
)
from metaode.solvers.integrate import solve
from metaode.solvers.plateau import fit_escape_law, measure_plateau, predicted_escape
from metaode.theory.jacobian import central_difference_jacobian, jacobian, sgd_jacobian
from metaode.theory.state import pack, unpack
from metaode.theory.system import build_system
from metaode.trajectory import SUCCESS

# --------------------------------------------------------------------------------------------------
# The exact Jacobian.


def random_covariance(n: int, rng: np.random.Generator) -> np.ndarray:
    """A generic positive definite n x n covariance (Wishart with n + 3 degrees of freedom)."""
    A = rng.standard_normal((n, n + 3))
    return A @ A.T / (n + 3)


def kernel_args(C: np.ndarray) -> list[float]:
    """Kernel arguments of C: diagonals first, then the upper triangle row-major."""
    n = C.shape[0]
    return [C[i, i] for i in range(n)] + [C[i, j] for i in range(n) for j in range(i + 1, n)]


@pytest.mark.parametrize("name, n", [("J2", 2), ("I3", 3), ("I4", 4)])
def test_gradient_kernels_match_central_differences(name: str, n: int) -> None:
    """Each generated gradient kernel equals central differences of its integral kernel.

    Step 1e-5 on O(1) arguments: truncation h^2 f''' / 6 ~ 1e-11 and rounding 1e-16 / h ~ 1e-11;
    1e-8 relative to the largest partial leaves a margin of 1000, a wrong partial is O(1) off.
    """
    value, gradient = getattr(kernels, name), getattr(kernels, f"{name}_gradient")
    rng = np.random.default_rng(n)
    h = 1e-5
    for _ in range(3):
        args = kernel_args(random_covariance(n, rng))
        exact = np.array(gradient(*args))
        numeric = np.empty_like(exact)
        for j in range(len(args)):
            up, down = list(args), list(args)
            up[j] += h
            down[j] -= h
            numeric[j] = (value(*up) - value(*down)) / (2 * h)
        assert np.abs(exact - numeric).max() <= 1e-8 * np.abs(exact).max(), (exact, numeric)


def random_sgd_arguments(K: int, M: int, lr_head: float, noise: float, seed: int):
    """A generic state y = (Q, R, w) and sgd_rhs arguments: overlaps of random J (K x N) and B
    (M x N) at N = 7 (so T is not the identity), random heads, lr = 0.7, two examples a step."""
    rng = np.random.default_rng(seed)
    N = 7
    J, B = rng.standard_normal((K, N)), rng.standard_normal((M, N))
    y = pack(J @ J.T / N, J @ B.T / N, rng.standard_normal(K))
    return y, (K, M, B @ B.T / N, rng.standard_normal(M), noise, 0.7, lr_head, 2)


@pytest.mark.parametrize("K, M", [(2, 2), (3, 2), (2, 3)])
@pytest.mark.parametrize("lr_head, noise", [(0.0, 0.0), (0.4, 0.0), (0.4, 0.3)])
def test_sgd_jacobian_matches_central_differences(K: int, M: int, lr_head: float,
                                                  noise: float) -> None:
    """sgd_jacobian equals central differences of sgd_rhs at random states, to 1e-7 relative.

    Step 1e-5: the difference quotient errs by ~h^2 f''' + 1e-16 |f| / h ~ 1e-10 relative
    (measured 1e-11 .. 2e-10); a missing or wrong chain-rule term is O(1e-2 .. 1) relative.
    """
    for seed in range(2):
        y, args = random_sgd_arguments(K, M, lr_head, noise, seed)
        exact = sgd_jacobian(ERF, y, *args)
        h = 1e-5
        numeric = np.empty_like(exact)
        for i in range(y.size):
            step = np.zeros(y.size)
            step[i] = h
            numeric[:, i] = (sgd_i3_rhs(ERF, y + step, *args)
                             - sgd_i3_rhs(ERF, y - step, *args)) / (2 * h)
        scale = np.abs(exact).max()
        assert np.abs(exact - numeric).max() <= 1e-7 * scale, np.abs(exact - numeric).max() / scale


def test_central_difference_jacobian_has_the_documented_accuracy() -> None:
    """The central-difference Jacobian used for anil and few-shot anil, applied to sgd, agrees with
    the exact one to 1e-9 relative (documented ~1e-11 per entry; measured 4e-11 .. 6e-11)."""
    y, args = random_sgd_arguments(3, 3, 0.4, 0.3, 5)
    K, M, T, u, noise, lr, lr_head, _ = args
    Q, R, w = unpack(y, K, M)
    system = build_system(Config.from_dict({
        "teacher": {"M": M, "u0": u.tolist(), "noise": noise, "T": T.tolist()},
        "student": {"K": K, "Q0": Q.tolist(), "R0": R.tolist(), "w0": w.tolist()},
        "training": {"algorithm": "sgd", "lr": lr, "lr_head": lr_head, "query": 2},
    }))
    exact = jacobian(system, y)
    # sgd dispatches to the exact one
    assert np.array_equal(exact, sgd_jacobian(system.acts, y, *system.args))
    numeric = central_difference_jacobian(system, y)
    assert np.abs(exact - numeric).max() <= 1e-9 * np.abs(exact).max()


# --------------------------------------------------------------------------------------------------
# The K = M = 3 soft committee plateau at lr = 0.1.
K3, LR = 3, 0.1
RTOL, ATOL = 1e-10, 1e-13  # the solver's; local errors far below the 1e-6 compared below
DIRECTION = np.random.default_rng(0).standard_normal((K3, K3))  # initial asymmetry R0 = delta X


def committee(Q0: np.ndarray, R0: np.ndarray, alpha_max: float) -> Config:
    """K = M = 3, w = u0 = 1 fixed (lr_head = 0), T = I, no noise, lr = 0.1; records every 2."""
    return Config.from_dict({
        "teacher": {"M": K3, "u0": [1.0] * K3, "noise": 0.0},
        "student": {"K": K3, "Q0": Q0.tolist(), "R0": R0.tolist(), "w0": [1.0] * K3},
        "training": {"algorithm": "sgd", "lr": LR, "lr_head": 0.0, "alpha_max": alpha_max},
        "output": {"points": int(alpha_max / 2) + 1},
        "solver": {"rtol": RTOL, "atol": ATOL},
    })


def correlated(c0: float) -> np.ndarray:
    """Q0 with diagonal 0.5 and off-diagonal c0 (initial correlation of the student vectors)."""
    return c0 * np.ones((K3, K3)) + (0.5 - c0) * np.eye(K3)


def run(c0: float, delta: float, alpha_max: float):
    system = build_system(committee(correlated(c0), delta * DIRECTION, alpha_max))
    trajectory = solve(system)
    assert trajectory.status == SUCCESS, trajectory.message
    return system, trajectory


@pytest.fixture(scope="module")
def plateau_b():
    """Q0 = 0.5 I, R0 = 1e-6 X (as in test_sgd_literature): Newton from the plateau centre."""
    system, trajectory = run(0.0, 1e-6, 4500.0)
    centre = measure_plateau(trajectory).centre_index
    found = find_fixed_point(system, trajectory.states[centre])
    return system, trajectory, centre, found


@pytest.fixture(scope="module")
def tuned_c0(plateau_b) -> float:
    """The initial correlation c0 for which the symmetric start (Q0 = correlated(c0), R0 = 0) lands
    on B's strong-stable manifold: the component along B's slow symmetric mode (left eigenvector l
    of eigenvalue -2.56e-4) vanishes at alpha = 200, where the fast modes (e^{-0.114 alpha})
    have decayed to 1e-10. It is positive for c0 = 0.45 and negative for c0 = 0.499."""
    system, _, _, found = plateau_b
    V = symmetric_basis(K3, K3, head=False)
    values, left = np.linalg.eig((V.T @ jacobian(system, found.y) @ V).T)
    slow = left[:, np.argmax(values.real)].real

    def slow_component(c0: float) -> float:
        y0 = pack(correlated(c0), np.zeros((K3, K3)), np.ones(K3))
        end = solve(system, np.array([0.0, 200.0]), y0=y0).states[-1]
        return float(slow @ (V.T @ (end - found.y)))

    return brentq(slow_component, 0.45, 0.499, xtol=1e-15)


def test_newton_finds_the_plateau_of_the_trajectory(plateau_b, tuned_c0) -> None:
    system, trajectory, centre, found = plateau_b
    # Newton with the exact Jacobian converges quadratically to rounding (||f|| ~ 1e-17).
    assert found.converged and found.iterations <= 10, found
    Q, R, _ = unpack(found.y, K3, K3)
    # The fixed point is permutation symmetric to rounding (Newton ran in the full 15-dimensional
    # space from the plateau centre, alpha = 2178, asymmetry 5e-3, 0.019 away): it is B, q > c.
    assert asymmetry(found.y, K3, K3) < 1e-12
    assert Q[0, 0] == pytest.approx(0.21459, abs=1e-5) and Q[0, 1] == pytest.approx(0.19766,
                                                                                   abs=1e-5)
    # The same point by Newton restricted to the symmetric subspace (3 unknowns).
    restricted = symmetric_plateau(system, trajectory.states[centre])
    assert restricted.converged
    assert np.abs(restricted.y - found.y).max() < 1e-12

    # The trajectory from the tuned start sits on it: at the plateau centre (the slowest record)
    # every order parameter is within 1e-6 of the fixed point (measured 2.6e-8 for delta = 1e-8:
    # the asymmetry grown over alpha = 184), and Newton from there finds the same point.
    system, tuned = run(tuned_c0, 1e-8, 600.0)
    centre = measure_plateau(tuned).centre_index
    assert np.abs(tuned.states[centre] - found.y).max() < 1e-6
    again = find_fixed_point(system, tuned.states[centre])
    assert again.converged and np.abs(again.y - found.y).max() < 1e-12
    # The error of the trajectory there is the fixed point's (0.021882) to the same accuracy.
    assert tuned.error[centre] == pytest.approx(system.observables(found.y)["error"], abs=1e-6)


def test_plateau_eigenvalues(plateau_b) -> None:
    """B: a fourfold degenerate unstable eigenvalue, all others negative, no zero modes; in the
    symmetric subspace all three negative (B attracts the symmetric states)."""
    system, _, _, found = plateau_b
    full = stability(system, found.y)
    assert full.n_unstable == 4 and full.n_zero == 0
    lambda_u = full.eigenvalues[:4].real
    # Degenerate by symmetry: equal to rounding (the exact Jacobian; measured spread 1e-17).
    assert np.ptp(lambda_u) < 1e-12 and lambda_u[0] == pytest.approx(4.5346e-3, rel=1e-4)
    assert np.all(full.eigenvalues[4:].real < 0)
    symmetric = stability(system, found.y, basis=symmetric_basis(K3, K3, head=False))
    assert symmetric.n_unstable == 0 and symmetric.eigenvalues[0].real == pytest.approx(
        -2.5617e-4, rel=1e-3)


def test_saad_solla_guess_gives_the_identical_student_fixed_point(plateau_b) -> None:
    """From Saad & Solla's lr -> 0 point (q = c = 1/5, r = 1/sqrt 15) Newton finds A, q = c to
    rounding (identical students), with one unstable direction inside the symmetric subspace,
    and an error close to B's (0.021890 against 0.021882, 3.5e-4 relative; asserted within 1e-3):
    the two points merge as lr -> 0."""
    system, _, _, found = plateau_b
    guess = pack(0.2 * np.ones((K3, K3)), np.full((K3, K3), 1 / math.sqrt(15)), np.ones(K3))
    a = symmetric_plateau(system, guess)
    assert a.converged
    Q, _, _ = unpack(a.y, K3, K3)
    assert Q[0, 0] - Q[0, 1] == pytest.approx(0.0, abs=1e-12)
    symmetric = stability(system, a.y, basis=symmetric_basis(K3, K3, head=False))
    assert symmetric.n_unstable == 1 and symmetric.eigenvalues[0].real == pytest.approx(
        2.618e-4, rel=1e-3)
    error_a, error_b = (system.observables(y)["error"] for y in (a.y, found.y))
    assert error_a == pytest.approx(error_b, rel=1e-3) and error_a > error_b


DELTAS = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8)


@pytest.mark.parametrize("tuned", [True, False], ids=["on-plateau", "Q0=0.5I"])
def test_escape_time_grows_like_log_asymmetry_over_lambda_u(plateau_b, tuned_c0, tuned) -> None:
    """alpha_esc = alpha_0 + ln(c / delta) / lambda_u: the slope of the escape time (specialisation
    index 1/2) against ln(1 / delta) is 1 / lambda_u = 220.53 within 5 %.

    Measured: 220.49 (-0.02 %) from the tuned start, which sits on B; 225.4 (+2.2 %) from
    Q0 = 0.5 I, whose symmetric part is still approaching B (the asymmetry grows at the local
    rate of the states on the way, 4.72e-3 at A to 4.53e-3 at B).
    """
    system, _, _, found = plateau_b
    lambda_u = stability(system, found.y).eigenvalues[0].real
    c0 = tuned_c0 if tuned else 0.0
    escapes = []
    for delta in DELTAS:
        _, trajectory = run(c0, delta, 4700.0 if tuned else 5200.0)
        escapes.append(measure_plateau(trajectory).escape)
    fit = fit_escape_law(np.array(DELTAS), np.array(escapes))
    assert fit.slope * lambda_u == pytest.approx(1.0, abs=0.05), (fit.slope, 1 / lambda_u)
    if tuned:
        # The law calibrated on delta = 1e-4 predicts the escape at delta = 1e-8, 2030 later, to
        # within 5 % of that shift (as the slope).
        predicted = predicted_escape(lambda_u, DELTAS[-1], DELTAS[0], escapes[0])
        assert predicted == pytest.approx(escapes[-1], abs=0.05 * (escapes[-1] - escapes[0]))


# --------------------------------------------------------------------------------------------------
# The specialised fixed point.


def test_specialised_fixed_point_is_stable(plateau_b) -> None:
    """Newton from the end of the trajectory (alpha = 4500, error 4e-4) finds the specialised
    point: R a permutation matrix, Q = I, error 0 (to rounding). It is stable: all eigenvalues
    negative (largest -4.36e-3). Zero modes: there are none on the evolving coordinates (Q, R): the
    permutations of the units are a discrete symmetry, the rotations of J that fix B are already
    divided out by the order parameters, and erf has no rescaling symmetry between w and J; the
    only zero modes of the full Jacobian are the K fixed head coordinates (dw = 0 identically)."""
    system, trajectory, _, _ = plateau_b
    found = specialised_fixed_point(system, trajectory.states[-1])
    assert found.converged, found
    Q, R, _ = unpack(found.y, K3, K3)
    P = np.zeros((K3, K3))
    P[np.arange(K3), np.argmax(R, axis=1)] = 1.0
    assert sorted(np.argmax(R, axis=1)) == list(range(K3))
    # Newton's residual ~1e-17 on a Jacobian with condition ~40: the point to ~1e-15.
    assert np.abs(R - P).max() < 1e-12 and np.abs(Q - np.eye(K3)).max() < 1e-12
    assert abs(system.observables(found.y)["error"]) < 1e-14
    free = stability(system, found.y)
    assert free.n_unstable == 0 and free.n_zero == 0
    assert free.eigenvalues[0].real == pytest.approx(-4.3635e-3, rel=1e-3)
    full = stability(system, found.y, basis=np.eye(found.y.size))
    assert full.n_zero == K3 and full.n_unstable == 0


def test_specialised_fixed_point_with_noise_is_goldts() -> None:
    """Both layers trained, label noise 0.2, K = M = 2, lr = lr_head = 0.01 (Goldt et al. 2019):
    Newton from the teacher finds a stable fixed point whose error is lr sigma^2 K / (2 sqrt(3) pi)
    up to its O(lr) correction, 0.12 % at lr = 0.005 by test_sgd_literature's measurement of
    eps*(2 lr) / eps*(lr), so ~0.25 % here: 1 % allows a factor 4."""
    K, noise, lr = 2, 0.2, 0.01
    system = build_system(Config.from_dict({
        "teacher": {"M": K, "u0": [1.0] * K, "noise": noise},
        "student": {"K": K, "w0": [1.0] * K},
        "training": {"algorithm": "sgd", "lr": lr, "lr_head": lr},
    }))
    found = specialised_fixed_point(system)
    assert found.converged, found
    free = stability(system, found.y)
    assert free.n_unstable == 0 and free.n_zero == 0
    goldt = lr * noise**2 * K / (2 * math.sqrt(3) * math.pi)
    assert system.observables(found.y)["error"] == pytest.approx(goldt, rel=1e-2)
