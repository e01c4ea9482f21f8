"""Exact properties of the ANIL ODEs with the population inner loop (no simulation).

* Reductions: without task variability and without an inner loop ANIL is plain online SGD (rhs
  and whole trajectories); without an inner loop the first and second order coincide.
* Perfect representation: for Q = R = T (J = B, so C = D = E) and w = u0 the adapted head obeys
  w' - u = P^s (u0 - u) with P = I - inner_lr E, hence (docs/model.md §3, §4.2)
      L_meta = 1/2 task_std^2 tr(P^s E P^s),   error before adaptation = 1/2 task_std^2 tr(E),
  and the representation error is 0.
* The meta-test curve on the population loss is gradient descent on a quadratic with Hessian C:
  decreasing for inner_lr < 2 / lambda_max(C) with limit the representation error, growing for
  inner_lr > 2 / lambda_max(C).
* Fixed points: for a single task (task_std = 0, noise = 0), J = B and w = u0 make Delta = 0 for
  every input, so the whole rhs (drift and lr^2 term) vanishes, for any inner loop. With task
  variability this holds for the drift only without an inner loop: for s >= 1 the teacher is
  not meta-optimal (the meta-loss 1/2 task_std^2 tr(P^s E P^s) depends on J through P), and the
  drift there is non-zero.
* ``meta_gradient`` against central finite differences of ``meta_loss``.
"""

from __future__ import annotations

import numpy as np
import pytest
from states import ERF, random_state, sgd_i3_rhs

from metaode.config import Config
from metaode.solvers.integrate import solve
from metaode.theory.anil import anil_rhs, inner_loop, meta_gradient, metatest_errors
from metaode.theory.fields import (
    CHOLESKY_FLOOR,
    error_blocks,
    meta_loss,
    psd_solve,
    representation_error,
    task_basis,
)
from metaode.theory.state import pack
from metaode.theory.system import build_system

SHAPES = [(2, 2), (3, 2), (2, 3)]
# Two routes to the same rhs (sgd: I3 integrals; anil: dI2/dc chain rule of the error) evaluate
# different closed forms in double precision; measured differences <= 5e-16 relative. 1e-13 is
# rounding with margin; any mistake in either (a factor, a missing term) is O(1).
RHS_RTOL = 1e-13


def config(K: int, M: int, Q, R, T, w, u0, **training) -> Config:
    """ANIL (unless overridden) config with explicit initial state; teacher/training extras."""
    teacher = {k: training.pop(k) for k in ("task_std", "noise") if k in training}
    return Config.from_dict({
        "teacher": {"M": M, "u0": np.asarray(u0).tolist(), "T": np.asarray(T).tolist(),
                    **teacher},
        "student": {"K": K, "Q0": np.asarray(Q).tolist(), "R0": np.asarray(R).tolist(),
                    "w0": np.asarray(w).tolist()},
        "training": {"algorithm": "anil", **training},
        "output": {"points": 21},
    })


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# -- reductions --------------------------------------------------------------------------------

@pytest.mark.parametrize("second_order", [True, False])
@pytest.mark.parametrize(("K", "M"), SHAPES)
def test_single_task_without_inner_loop_is_sgd_i3_form(K: int, M: int, second_order: bool) -> None:
    """task_std = 0, inner_steps = 0: anil_rhs = the I3 form of the sgd ODEs (Stein's lemma;
    noise, batch, both rates included)."""
    for seed in range(5):
        Q, R, T, w, u0 = random_state(K, M, seed)
        y = pack(Q, R, w)
        sgd = sgd_i3_rhs(ERF, y, K, M, T, u0, 0.3, 0.7, 0.4, 3)
        anil = anil_rhs(ERF, y, K, M, T, u0, 0.0, 0.3, 0.9, 0, second_order, 0.7, 0.4, 3)
        assert rel_diff(anil, sgd) <= RHS_RTOL


def test_single_task_without_inner_loop_is_sgd_trajectory() -> None:
    """Whole solved trajectories (state and error) of sgd and the reduced anil coincide.

    Both are integrated by the same adaptive DOP853 at rtol 1e-8, atol 1e-10 from the same state;
    the right-hand sides differ by rounding only, so the step sequences can differ at most by
    rounding-level step-size choices, whose effect is bounded by the local error control: 1e-7
    (ten times rtol, for the ~20 accepted steps) absolute on O(1) quantities. Measured: 1.2e-14,
    with identical step sequences (260 rhs evaluations each).
    """
    K, M = 2, 2
    Q = [[0.4, 0.05], [0.05, 0.3]]
    R = [[0.1, 0.0], [0.02, 0.08]]
    T, w, u0 = np.eye(2), [0.2, 0.1], [1.0, 0.7]
    common = {"lr": 0.8, "lr_head": 0.5, "noise": 0.2, "alpha_max": 30.0}
    sgd = solve(build_system(config(K, M, Q, R, T, w, u0, **{**common, "algorithm": "sgd"})))
    anil = solve(build_system(config(K, M, Q, R, T, w, u0, **common, task_std=0.0,
                                     inner_steps=0, inner_lr=0.7)))
    assert sgd.status == anil.status == 0
    np.testing.assert_array_equal(sgd.alpha, anil.alpha)
    assert np.abs(sgd.states - sgd.states[0]).max() > 0.1  # the trajectory goes somewhere
    assert np.abs(anil.states - sgd.states).max() <= 1e-7
    for name in ("error", "error_before_adaptation"):
        assert np.abs(anil.column(name) - sgd.column(name)).max() <= 1e-7


@pytest.mark.parametrize(("K", "M"), SHAPES)
def test_orders_coincide_without_inner_loop(K: int, M: int) -> None:
    """inner_steps = 0 (w' = w), task_std > 0: first- and second-order rhs are the same."""
    for seed in range(5):
        Q, R, T, w, u0 = random_state(K, M, seed)
        y = pack(Q, R, w)
        args = (T, u0, 0.6, 0.3, 0.9, 0)
        first = anil_rhs(ERF, y, K, M, *args, False, 0.7, 0.4, 2)
        second = anil_rhs(ERF, y, K, M, *args, True, 0.7, 0.4, 2)
        assert rel_diff(first, second) <= RHS_RTOL


# -- perfect representation --------------------------------------------------------------------

def i2_model(T: np.ndarray) -> np.ndarray:
    """E_mn = (2 / pi) arcsin(T_mn / sqrt((1 + T_mm)(1 + T_nn))) (docs/model.md §3)."""
    d = np.sqrt(1.0 + np.diag(T))
    return 2.0 / np.pi * np.arcsin(T / np.outer(d, d))


@pytest.mark.parametrize("T", [np.eye(2), np.array([[1.0, 0.4], [0.4, 0.7]])],
                         ids=["identity", "correlated"])
@pytest.mark.parametrize("s", [0, 1, 2, 5])
def test_perfect_representation_meta_error(s: int, T: np.ndarray) -> None:
    """J = B, w = u0: error = 1/2 sigma^2 tr(P^s E P^s), before = 1/2 sigma^2 tr E, repr. 0.

    The identities are exact; the code's values differ by rounding (1e-12 relative is generous
    for sums of a few O(1) terms).
    """
    sigma, eta, u0 = 0.7, 0.8, np.array([1.0, -0.6])
    cfg = config(2, 2, T, T, T, u0, u0, task_std=sigma, inner_lr=eta, inner_steps=s)
    system = build_system(cfg)
    obs = system.observables(system.initial_state())
    E = i2_model(T)
    Ps = np.linalg.matrix_power(np.eye(2) - eta * E, s)
    expected = 0.5 * sigma**2 * np.trace(Ps @ E @ Ps)
    before = 0.5 * sigma**2 * np.trace(E)
    assert abs(obs["error"] - expected) <= 1e-12 * expected
    assert abs(obs["error_before_adaptation"] - before) <= 1e-12 * before
    assert abs(obs["representation_error"]) <= 1e-12 * before
    if s > 0:  # adaptation helps: P is a contraction for eta < 2 / lambda_max(E)
        assert expected < before


@pytest.mark.parametrize("K,M", SHAPES + [(5, 3)])
def test_psd_solve_is_the_least_squares_solution(K: int, M: int) -> None:
    """``psd_solve`` (Cholesky while C is well conditioned) against numpy's least squares on the
    error blocks of random states, and on C made nearly singular (two student units alike, as
    on a plateau; gap 1e-3 stays on the Cholesky route, 1e-5 and 1e-9 fall below CHOLESKY_FLOOR
    and take the least-squares one, which the Schur complement D^T C^+ D must not notice). Measured:
    <= 2.7e-15 relative on the random states (condition numbers <= 41); 1e-12 is rounding times
    the condition number with margin; a wrong substitution is O(1)."""
    for seed in range(20):
        Q, R, T, _, _ = random_state(K, M, seed)
        C, D, _ = error_blocks(ERF, Q, R, T)
        expected = np.linalg.lstsq(C, D, rcond=1e-12)[0]
        assert np.linalg.cond(C) < 1e3
        np.testing.assert_allclose(psd_solve(C, D), expected, rtol=1e-12,
                                   atol=1e-12 * np.abs(expected).max())
    for gap in (1e-3, 1e-5, 1e-9):  # student unit 1 -> unit 0 as gap -> 0
        Q, R, T, _, _ = random_state(K, M, 3)
        J = np.linalg.cholesky(np.block([[Q, R], [R.T, T]]) + 1e-14 * np.eye(K + M))
        J[1] = J[0] + gap * J[1]
        omega = J @ J.T
        C, D, _ = error_blocks(ERF, omega[:K, :K], omega[:K, K:], omega[K:, K:])
        schur = D.T @ psd_solve(C, D)
        reference = D.T @ np.linalg.lstsq(C, D, rcond=1e-12)[0]
        np.testing.assert_allclose(schur, reference, rtol=1e-8, atol=1e-10)
        assert (smallest_pivot(C) / C.diagonal().max() < CHOLESKY_FLOOR) == (gap <= 1e-5)


def smallest_pivot(C: np.ndarray) -> float:
    """The smallest L_jj^2 of the Cholesky factorisation of C, up to the first pivot <= 0."""
    L = np.zeros_like(C)
    pivots = []
    for j in range(C.shape[0]):
        pivots.append(C[j, j] - L[j, :j] @ L[j, :j])
        if pivots[-1] <= 0.0:
            break
        L[j, j] = np.sqrt(pivots[-1])
        L[j + 1:, j] = (C[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return min(pivots)


# -- meta-test curve -----------------------------------------------------------------------------

def test_metatest_curve_decreases_to_the_representation_error_for_stable_inner_lr() -> None:
    """inner_lr < 2 / lambda_max(C): strictly decreasing; its limit is E_tau min_w eps."""
    Q, R, T, w, u0 = random_state(3, 2, 7)
    sigma = 0.5
    lam = np.linalg.eigvalsh(error_blocks(ERF, Q, R, T)[0])
    for eta in (0.5 / lam[-1], 1.0 / lam[-1], 1.9 / lam[-1]):
        curve = metatest_errors(ERF, Q, R, T, w, u0, sigma, eta, 30)
        assert np.all(np.diff(curve) < 0), eta
    # the slowest mode contracts by (1 - eta lambda_min) per step; run until it is below 1e-8
    eta = 1.0 / lam[-1]
    steps = int(np.ceil(np.log(1e-8) / np.log(1.0 - eta * lam[0])))
    assert steps < 20000  # a well-conditioned C, so that the check is cheap
    limit = metatest_errors(ERF, Q, R, T, w, u0, sigma, eta, steps)[-1]
    # excess error ~ (1e-8)^2 times O(1); 1e-10 relative covers that and lstsq's rounding
    assert abs(limit - representation_error(ERF, Q, R, T, u0, sigma)) <= 1e-10 * limit


def test_metatest_curve_grows_for_too_large_inner_lr() -> None:
    """inner_lr > 2 / lambda_max(C): the top mode is amplified by |1 - eta lambda_max| > 1."""
    Q, R, T, w, u0 = random_state(3, 2, 7)
    lam_max = np.linalg.eigvalsh(error_blocks(ERF, Q, R, T)[0])[-1]
    curve = metatest_errors(ERF, Q, R, T, w, u0, 0.5, 2.2 / lam_max, 30)
    assert curve[-1] > 100 * curve[0]
    assert np.all(np.diff(curve[10:]) > 0)


# -- fixed points ------------------------------------------------------------------------------

def split_rhs(y, K, M, T, u0, task_std, s, second_order, lr=0.5, lr_head=0.5):
    """(rhs, drift): the drift is linear in (lr, lr_head), the rest ~ lr^2, so doubling both
    rates separates them exactly: drift = 2 f(lr) - f(2 lr) / 2."""
    f1 = anil_rhs(ERF, y, K, M, T, u0, task_std, 0.0, 0.6, s, second_order, lr, lr_head, 1)
    f2 = anil_rhs(ERF, y, K, M, T, u0, task_std, 0.0, 0.6, s, second_order, 2 * lr, 2 * lr_head, 1)
    return f1, 2.0 * f1 - 0.5 * f2


T_CORRELATED = np.array([[1.0, 0.3], [0.3, 0.8]])
U0 = np.array([1.0, -0.5])


@pytest.mark.parametrize("second_order", [True, False])
@pytest.mark.parametrize("s", [0, 1, 3])
def test_teacher_is_a_fixed_point_of_single_task_anil(s: int, second_order: bool) -> None:
    """task_std = noise = 0, Q = R = T, w = u0: the whole rhs vanishes (Delta = 0 identically).

    The rhs is a sum of O(1) terms that cancel; 1e-14 absolute is rounding (measured 1e-18).
    """
    y = pack(T_CORRELATED, T_CORRELATED, U0)
    rhs, _ = split_rhs(y, 2, 2, T_CORRELATED, U0, 0.0, s, second_order)
    assert np.abs(rhs).max() <= 1e-14


@pytest.mark.parametrize("second_order", [True, False])
@pytest.mark.parametrize("s", [0, 1, 3])
def test_teacher_under_task_variability(s: int, second_order: bool) -> None:
    """task_std > 0 at Q = R = T, w = u0: drift 0 for s = 0; for s >= 1 it is not (see top).

    For s >= 1 the measured max |drift| is 0.008 - 0.017 (lr = 0.5), far above rounding; the
    test demands 1e-3. The lr^2 term is non-zero in both cases (Delta != 0 when u != u0).
    """
    y = pack(T_CORRELATED, T_CORRELATED, U0)
    rhs, drift = split_rhs(y, 2, 2, T_CORRELATED, U0, 0.5, s, second_order)
    assert np.abs(rhs - drift).max() > 1e-3
    if s == 0:
        assert np.abs(drift).max() <= 1e-14
    else:
        assert np.abs(drift).max() > 1e-3


# -- meta_gradient by finite differences -------------------------------------------------------

# Central differences with step h: truncation h^2/6 |L'''| ~ 2e-11 and rounding eps |L| / h ~ 1e-11
# for the O(1) meta-loss here; measured agreement is 2.7e-10 relative or better. 1e-7 is loose for
# that and still five orders below a wrong term.
FD_STEP, FD_RTOL = 1e-5, 1e-7


@pytest.mark.parametrize("second_order", [True, False])
@pytest.mark.parametrize("s", [0, 1, 3])
def test_meta_gradient_finite_differences(s: int, second_order: bool) -> None:
    """(G, H, wbar) of ``meta_gradient`` = central differences of the meta-loss.

    Second order: L(Q, R, w) = meta_loss(Z^(s)(Q, R, w), C, D, E); G_kl = dL/dq_kl with the K^2
    entries independent and L on (q + q^T)/2, so the off-diagonal difference moves Q_kl and Q_lk
    by h/2 each. First order: w'_tau held fixed, L1(Q, R) = meta_loss(Z_fixed, C(Q), D(Q, R), E)
    and wbar = dL1/dv for a common shift v of the adapted heads (Z_fixed[:, 0] += v).
    """
    K, M = 3, 2
    Q, R, T, w, u0 = random_state(K, M, 11)
    eta, sigma = 0.6, 0.7
    U, S = task_basis(u0, sigma)
    G, H, wbar, Zs = meta_gradient(ERF, Q, R, T, w, U, S, eta, s, second_order)
    Z_fixed = Zs[s]

    def loss(Qp, Rp, wp, shift):
        C, D, E = error_blocks(ERF, Qp, Rp, T)
        Z = inner_loop(C, D, wp, U, eta, s)[s] if second_order else Z_fixed.copy()
        Z[:, 0] += shift
        return meta_loss(Z, C, D, E, U, S)

    zero = np.zeros(K)

    def central(dQ=None, dR=None, dw=None, dv=None):
        def at(sign):
            h = sign * FD_STEP
            return loss(Q + h * dQ if dQ is not None else Q, R + h * dR if dR is not None else R,
                        w + h * dw if dw is not None else w, h * dv if dv is not None else zero)
        return (at(1) - at(-1)) / (2 * FD_STEP)

    G_fd = np.empty((K, K))
    for k in range(K):
        for l in range(K):
            E_kl = np.zeros((K, K))
            E_kl[k, l] += 0.5
            E_kl[l, k] += 0.5
            G_fd[k, l] = central(dQ=E_kl)
    H_fd = np.array([[central(dR=_unit(K, M, k, m))
                      for m in range(M)] for k in range(K)])
    units = np.eye(K)
    w_fd = np.array([central(dw=units[k]) if second_order else central(dv=units[k])
                     for k in range(K)])
    for name, ours, fd in (("G", G, G_fd), ("H", H, H_fd), ("wbar", wbar, w_fd)):
        assert rel_diff(ours, fd) <= FD_RTOL, name


def _unit(K: int, M: int, k: int, m: int) -> np.ndarray:
    out = np.zeros((K, M))
    out[k, m] = 1.0
    return out
