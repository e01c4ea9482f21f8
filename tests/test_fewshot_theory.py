"""The few-shot ANIL theory ``theory.fewshot`` at fixed states (no simulation).

* ``one_step_loss_and_gradient`` (inner_steps = 1, P support examples, exact): its (G, H, wbar)
  against central finite differences (second order: of its own loss; first order: of the
  first-order objective, see ``first_order_objective``), its loss against a Monte Carlo over tasks
  and support sets written here in numpy.
* P -> infinity: the exact finite-P loss and drift minus the population ones (``theory.anil``) are
  exactly proportional to 1/P; with inner_steps = 2 (everything by Monte Carlo) the difference
  shrinks like 1/P into the Monte Carlo error.
* ``theory.support_mc.support_statistics`` with inner_steps = 1 reproduces the exact drift within
  its Monte Carlo error.
* The observables' loss ``fewshot_loss`` is the right-hand side's loss (one step: exactly; more
  steps: within the Monte Carlo error, a cheaper control of the same mean).
* The meta-test step: ``one_step_test_quadratic`` is the exact one-step loss for every eta, and
  ``solvers.metatest.optimal_test_inner_lr`` returns minima (one step: closed form; more steps: a
  bounded search on the Monte Carlo curve with common random numbers).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf
from states import ERF, random_state

from metaode.config import Config
from metaode.solvers.metatest import optimal_test_inner_lr
from metaode.theory.activations import path_rule
from metaode.theory.anil import meta_gradient, metatest_errors
from metaode.theory.fewshot import (
    fewshot_estimate,
    fewshot_loss,
    four_point_tensor,
    one_step_loss_and_gradient,
    one_step_test_quadratic,
)
from metaode.theory.fields import error_blocks, field_covariance, task_basis
from metaode.theory.metatest import adaptation_curve, metatest_curve
from metaode.theory.state import pack
from metaode.theory.support_mc import (
    drift_map,
    drift_of_terms,
    support_sample,
    support_statistics,
)
from metaode.theory.system import build_system
from metaode.validation.drift import rhs_parts

RULE = path_rule()
TASK_STD, NOISE, INNER_LR, P_SMALL = 0.6, 0.4, 0.8, 3


def blocks(Q: np.ndarray, R: np.ndarray, T: np.ndarray, K: int):
    """(C, D, E) = (2 / pi) arcsin(Omega_ab / sqrt((1 + Omega_aa)(1 + Omega_bb))), written out."""
    omega = field_covariance(Q, R, T)
    d = np.sqrt(1.0 + np.diag(omega))
    full = 2.0 / np.pi * np.arcsin(omega / np.outer(d, d))
    return full[:K, :K], full[:K, K:], full[K:, K:]


def config_at(Q, R, T, w, u0, support, order="second", inner_steps=1, mc_tasks=10,
              mc_seed=0) -> Config:
    """A few-shot (or population) ANIL config whose initial state is (Q, R, w)."""
    return Config.from_dict({
        "teacher": {"M": len(u0), "u0": u0.tolist(), "T": T.tolist(), "task_std": TASK_STD,
                    "noise": NOISE},
        "student": {"K": len(w), "Q0": Q.tolist(), "R0": R.tolist(), "w0": w.tolist()},
        "training": {"algorithm": "anil", "order": order, "inner_steps": inner_steps,
                     "inner_lr": INNER_LR, "support": support, "lr": 0.7, "lr_head": 0.9},
        "theory": {"mc_tasks": mc_tasks, "mc_seed": mc_seed},
    })


# --- gradients against finite differences --------------------------------------------------------

# Central differences with step 1e-5 of an O(0.5) loss: truncation h^2 L''' / 6 and rounding
# 1e-16 / h are both ~1e-11 (measured deviations <= 6e-12); FD_TOL = 1e-9 is 150x above, while
# the O(1/P) terms are far larger (at P = 3 the four-point pullback alone contributes up to 0.023
# to G and 0.055 to H).
FD_STEP, FD_TOL = 1e-5, 1e-9


def fd_gradients(objective, Q, R, wvec):
    """Central differences of objective(Q, R, v) in the convention of ``chain_to_overlaps``:
    G_kk = dL/dQ_kk, G_kl = 1/2 dL/d(Q_kl and Q_lk moved together), H = dL/dR; the third argument
    is moved by the unit vectors (the head w, or a common shift of the adapted heads)."""
    K, M = R.shape
    h = FD_STEP

    def central(dQ, dR, dv):
        return (objective(Q + h * dQ, R + h * dR, wvec + h * dv)
                - objective(Q - h * dQ, R - h * dR, wvec - h * dv)) / (2 * h)

    zQ, zR, zv = np.zeros((K, K)), np.zeros((K, M)), np.zeros(K)
    G = np.empty((K, K))
    for k in range(K):
        for l in range(K):
            E = np.zeros((K, K))
            E[k, l] = E[l, k] = 1.0
            G[k, l] = central(E, zR, zv) * (1.0 if k == l else 0.5)
    H = np.empty((K, M))
    for k in range(K):
        for m in range(M):
            E = np.zeros((K, M))
            E[k, m] = 1.0
            H[k, m] = central(zQ, E, zv)
    wbar = np.array([central(zQ, zR, np.eye(K)[k]) for k in range(K)])
    return G, H, wbar


def test_second_order_gradient_finite_differences() -> None:
    """Second order: (G, H, wbar) = the exact gradient of L_P(Q, R, w) (four-point pullback,
    Price's theorem on the diagonal included, the w-dependence of Xi through c = (w, -u))."""
    K, M = 3, 2
    Q, R, T, w, u0 = random_state(K, M, 5)

    def loss(Qp, Rp, wp):
        return one_step_loss_and_gradient(ERF, Qp, Rp, T, wp, u0, TASK_STD, NOISE, INNER_LR,
                                          P_SMALL, True, *RULE)[0]

    _, G, H, wbar = one_step_loss_and_gradient(ERF, Q, R, T, w, u0, TASK_STD, NOISE, INNER_LR,
                                               P_SMALL, True, *RULE)
    for name, ours, fd in zip(("G", "H", "wbar"), (G, H, wbar), fd_gradients(loss, Q, R, w),
                              strict=True):
        np.testing.assert_allclose(ours, fd, rtol=0, atol=FD_TOL, err_msg=name)


def first_order_objective(Q, R, T, w, u0, P):
    """The first-order (FOMAML) objective at a base state (Q, R, w), as a function of (Q', R', s).

    First order holds the adapted heads w'_tau fixed. The query examples are independent of the
    support set, so E_query L_q = eps(w'; u) evaluated with the current C(Q'), D(Q', R'), and the
    outer gradient is the gradient of

        Phi(Q', R', s) = E_{u,S}[eps_{Q',R'}(w' + s; u)]
                       = 1/2 <C(Q'), E[(w' + s)(w' + s)^T]> - <D(Q', R'), E[(w' + s) u^T]> + const

    with the moments of (w', u) frozen at the base state; wbar = dPhi/ds at s = 0 (the gradient
    with respect to w', averaged). Those moments, with w' = w - inner_lr ghat0:
      E[w'] = m = w - inner_lr (C w - D u0)  (the support mean of ghat0 is v = C w - D u),
      E[w' u^T] = (w - inner_lr C w) u0^T + inner_lr D E[u u^T]  (no support term: E_S[w'|u] is
      the population head),
      E[w' w'^T] = m m^T + inner_lr^2 task_std^2 D D^T + E_u Cov_S(w'),
      E_u Cov_S(w') = inner_lr^2 / P (sum_ab E[c_a c_b] F_klab + noise^2 C - E_u[v v^T]),
    F the four-point tensor (tests/test_fourpoint.py), c = (w, -u). So only the Cbar = 1/2
    E[w' w'^T] part of the drift carries the finite-P change, by 1/2 E_u Cov_S(w').
    """
    K, M = len(w), len(u0)
    C, D, E = blocks(Q, R, T, K)
    F = four_point_tensor(ERF, field_covariance(Q, R, T), K, *RULE)
    Euu = np.outer(u0, u0) + TASK_STD**2 * np.eye(M)
    m = w - INNER_LR * (C @ w - D @ u0)
    cbar = np.concatenate([w, -u0])
    Ecc = np.outer(cbar, cbar)
    Ecc[K:, K:] += TASK_STD**2 * np.eye(M)
    v0 = C @ w - D @ u0
    Evv = np.outer(v0, v0) + TASK_STD**2 * D @ D.T
    cov_S = INNER_LR**2 / P * (np.einsum("klab,ab->kl", F, Ecc) + NOISE**2 * C - Evv)
    Mww = np.outer(m, m) + INNER_LR**2 * TASK_STD**2 * D @ D.T + cov_S
    Mwu = np.outer(w - INNER_LR * C @ w, u0) + INNER_LR * D @ Euu

    def objective(Qp, Rp, s):
        Cp, Dp, _ = blocks(Qp, Rp, T, K)
        ws = Mww + np.outer(s, m) + np.outer(m, s) + np.outer(s, s)
        return 0.5 * np.sum(Cp * ws) - np.sum(Dp * (Mwu + np.outer(s, u0)))

    return objective, 0.5 * np.sum(E * Euu)


def test_first_order_gradient_finite_differences() -> None:
    """First order: (G, H, wbar) = central differences of ``first_order_objective``; that objective
    plus 1/2 E[u^T E u] also reproduces L_P at the base state (same moments, to rounding)."""
    K, M = 3, 2
    Q, R, T, w, u0 = random_state(K, M, 5)
    loss, G, H, wbar = one_step_loss_and_gradient(ERF, Q, R, T, w, u0, TASK_STD, NOISE, INNER_LR,
                                                  P_SMALL, False, *RULE)
    objective, constant = first_order_objective(Q, R, T, w, u0, P_SMALL)
    assert abs(objective(Q, R, np.zeros(K)) + constant - loss) <= 1e-14
    fd = fd_gradients(objective, Q, R, np.zeros(K))
    for name, ours, ref in zip(("G", "H", "wbar"), (G, H, wbar), fd, strict=True):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=FD_TOL, err_msg=name)


# --- the loss against Monte Carlo -----------------------------------------------------------------

def test_one_step_loss_against_monte_carlo() -> None:
    """L_P = E_{u,S} eps(w'; u) by 10^6 samples (numpy, chunks of 10^5): u = u0 + task_std xi, P
    support fields z_p ~ N(0, Omega), labels y_p = u . g(nu_p) + noise zeta_p, w' = w -
    (inner_lr / P) sum_p g(lambda_p) (g(lambda_p) . w - y_p). Tolerance 5 standard errors (s.e.
    2.7e-4, measured z = -0.80); the finite-P term inner_lr^2 Xi / (2P) = 0.059 is 215 s.e., so
    the check resolves it (asserted: > 100 s.e.)."""
    K, M, P = 3, 2, P_SMALL
    Q, R, T, w, u0 = random_state(K, M, 5)
    C, D, E = blocks(Q, R, T, K)
    L = np.linalg.cholesky(field_covariance(Q, R, T))
    rng = np.random.default_rng(31)
    total = squares = 0.0
    n_chunk, chunks = 10**5, 10
    for _ in range(chunks):
        u = u0 + TASK_STD * rng.standard_normal((n_chunk, M))
        z = rng.standard_normal((n_chunk, P, K + M)) @ L.T
        phi, psi = erf(z[..., :K] / np.sqrt(2.0)), erf(z[..., K:] / np.sqrt(2.0))
        y = np.einsum("ipm,im->ip", psi, u) + NOISE * rng.standard_normal((n_chunk, P))
        wp = w - INNER_LR / P * np.einsum("ipk,ip->ik", phi, phi @ w - y)
        eps = (0.5 * np.einsum("ik,kl,il->i", wp, C, wp) - np.einsum("ik,km,im->i", wp, D, u)
               + 0.5 * np.einsum("im,mn,in->i", u, E, u))
        total += eps.sum()
        squares += eps @ eps
    n = n_chunk * chunks
    mean = total / n
    se = np.sqrt((squares / n - mean**2) / (n - 1))
    exact = one_step_loss_and_gradient(ERF, Q, R, T, w, u0, TASK_STD, NOISE, INNER_LR, P, True,
                                       *RULE)[0]
    population = metatest_errors(ERF, Q, R, T, w, u0, TASK_STD, INNER_LR, 1)[1]
    assert abs(exact - mean) <= 5.0 * se, (exact, mean, se)
    assert abs(exact - population) > 100.0 * se


# --- P -> infinity --------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["second", "first"])
def test_exact_part_approaches_population_like_one_over_P(order: str) -> None:
    """inner_steps = 1: L_P - L_pop = inner_lr^2 Xi / (2P) exactly, and so is the drift difference
    (its gradient): P (L_P - L_pop) and P (drift_P - drift_pop) are the same for P = 10 .. 10^4,
    up to rounding (measured <= 4e-12 of their size; held to 1e-9). The drift is the lr-linear part
    of the rhs (``validation.drift.rhs_parts``: the Monte Carlo lr^2 term, the same common random
    numbers at lr and 2 lr, cancels exactly, so 10 tasks suffice). First order: the head drift is
    E[C w' - D u], which support noise does not change (difference 0 up to rounding)."""
    K, M = 2, 2
    Q, R, T, w, u0 = random_state(K, M, 5)
    y = pack(Q, R, w)
    population = config_at(Q, R, T, w, u0, "population", order)
    drift_pop = rhs_parts(population, y)[0]
    loss_pop = metatest_errors(ERF, Q, R, T, w, u0, TASK_STD, INNER_LR, 1)[1]
    scaled = []
    for P in (10, 100, 1000, 10**4):
        drift = rhs_parts(config_at(Q, R, T, w, u0, P, order), y)[0]
        loss = one_step_loss_and_gradient(ERF, Q, R, T, w, u0, TASK_STD, NOISE, INNER_LR, P,
                                          order == "second", *RULE)[0]
        scaled.append(np.concatenate([[loss - loss_pop], drift - drift_pop]) * P)
    scaled = np.array(scaled)
    size = np.abs(scaled[0]).max()
    assert size > 0.04
    assert np.abs(scaled - scaled[0]).max() <= 1e-9 * size
    if order == "first":  # unscaled: zero up to the rounding of two compiled paths (~1e-17)
        unscaled = scaled[:, -K:] / np.array([10, 100, 1000, 10**4])[:, None]
        assert np.abs(unscaled).max() <= 1e-14 * np.abs(drift_pop[-K:]).max()


def test_monte_carlo_theory_approaches_population() -> None:
    """inner_steps = 2, second order: loss, drift and lr^2 term all by Monte Carlo.

    The rhs and the loss at P = 10, 100, 1000 (2048, 1024, 256 support sets), each as the mean of
    its 8 independent Monte Carlo streams with their standard error (7 degrees of freedom), minus
    the population values. The difference is resolved at P = 10 (up to 500 s.e. measured; >= 10
    asserted) and scales like 1/P: 1000 d_1000 and 100 d_100 agree within 6 combined s.e. in all
    9 rhs entries and the loss (measured <= 2.7; P(|t| > 6) = 5e-4 per entry with 7 degrees of
    freedom). Between P = 10 and 100 the 1/P^2 part of the loss is resolved (measured 12 s.e.),
    which is why the scaling is checked at larger P.
    """
    K, M = 2, 2
    Q, R, T, w, u0 = random_state(K, M, 5)
    population = build_system(config_at(Q, R, T, w, u0, "population", inner_steps=2))
    y = population.initial_state()
    exact = np.append(population.rhs(0.0, y), population.observables(y)["error"])
    diff, se = {}, {}
    for P, tasks in ((10, 2048), (100, 1024), (1000, 256)):
        system = build_system(config_at(Q, R, T, w, u0, P, inner_steps=2, mc_tasks=tasks))
        streams = np.array([np.append(s.rhs(0.0, y), s.observables(y)["error"])
                            for s in system.stream_systems()])
        diff[P] = streams.mean(axis=0) - exact
        se[P] = streams.std(axis=0, ddof=1) / np.sqrt(len(streams))
    assert np.abs(diff[10] / se[10]).max() >= 10.0
    z = (1000 * diff[1000] - 100 * diff[100]) / np.hypot(1000 * se[1000], 100 * se[100])
    assert np.abs(z).max() <= 6.0, z


# --- Monte Carlo drift against the exact drift ----------------------------------------------------

def drift_vector(Q, R, T, G, H, wbar, SQ, SR) -> np.ndarray:
    """(dQ upper triangle, dR, dw) at lr = lr_head = 1 without the lr^2 term
    (docs/model.md §9.3)."""
    X = 2.0 * G @ Q + H @ R.T + SQ
    K = Q.shape[0]
    return np.concatenate([-(X + X.T)[np.triu_indices(K)], -(2.0 * G @ R + H @ T + SR).ravel(),
                           -wbar])


@pytest.mark.parametrize("second_order", [True, False])
def test_monte_carlo_drift_matches_exact_one_step(second_order: bool) -> None:
    """``support_statistics`` with inner_steps = 1 (P = 3): the drift assembled from its mean
    (Cbar, Dbar, SQ, SR, wbar) in 20 independent streams of 2048 support sets against the exact
    drift of ``one_step_loss_and_gradient``. With 20 batches the z-score of each of the 9 entries
    is t-distributed with 19 degrees of freedom: P(|t| > 5) = 8e-5 per entry (measured
    |z| <= 2.0). The population drift differs from the exact one by up to 220 s.e. (second order)
    and 140 s.e. (first order), so the check resolves the finite-P terms (asserted: > 20)."""
    K, M, P = 2, 2, P_SMALL
    Q, R, T, w, u0 = random_state(K, M, 5)
    _, G, H, wbar = one_step_loss_and_gradient(ERF, Q, R, T, w, u0, TASK_STD, NOISE, INNER_LR, P,
                                               second_order, *RULE)
    zero_Q, zero_R = np.zeros((K, K)), np.zeros((K, M))
    exact = drift_vector(Q, R, T, G, H, wbar, zero_Q, zero_R)
    U, S = task_basis(u0, TASK_STD)
    Gp, Hp, wp, _ = meta_gradient(ERF, Q, R, T, w, U, S, INNER_LR, 1, second_order)
    population = drift_vector(Q, R, T, Gp, Hp, wp, zero_Q, zero_R)
    sample = support_sample(K, M, P, u0, T, 20 * 2048, 20, 1000)
    C, D, E = error_blocks(ERF, Q, R, T)
    F = four_point_tensor(ERF, field_covariance(Q, R, T), K, *RULE)
    L = drift_map(ERF, Q, R, T, K, M)
    batches = []
    for b in range(20):
        mine = sample.stream == b
        # the mean responses of support_statistics: the stream's mean terms, uncontrolled
        terms = support_statistics(ERF.student, ERF.teacher, Q, R, T, w, u0, TASK_STD, NOISE,
                                   INNER_LR, 1, second_order, 1, sample.fields[mine],
                                   sample.task[mine], C, D, E, F, L, np.zeros(len(L)), True,
                                   False, False, False)[1]
        # drift_of_terms gives (loss, X + X^T, 2 G R + H T + SR, wbar); this test's sign: -
        batches.append(-drift_of_terms(ERF, terms, Q, R, T, K, M)[1:])
    batches = np.array(batches)
    mean = batches.mean(axis=0)
    se = batches.std(axis=0, ddof=1) / np.sqrt(len(batches))
    z = (mean - exact) / se
    assert np.abs(z).max() <= 5.0, z
    assert np.abs((population - exact) / se).max() > 20.0


# --- meta-test step -------------------------------------------------------------------------------

@pytest.mark.parametrize("P", [P_SMALL, 0])
def test_one_step_test_quadratic(P: int) -> None:
    """E_{tau,S} eps(w - eta ghat0; u) = L0 - eta b + eta^2 a / 2 equals the exact one-step loss
    (``one_step_loss_and_gradient`` for P support examples, ``metatest_errors`` for P = 0, the
    population) for several eta: two routes to the same polynomial, equal to rounding (measured
    <= 3e-17; held to 1e-13). Its minimiser eta* = b / a: the exact loss at eta* (1 +- 0.1) is
    larger, and ``optimal_test_inner_lr`` returns (eta*, loss at eta*)."""
    K, M = 2, 2
    Q, R, T, w, u0 = random_state(K, M, 5)

    def exact(eta):
        if P == 0:
            return metatest_errors(ERF, Q, R, T, w, u0, TASK_STD, eta, 1)[1]
        return one_step_loss_and_gradient(ERF, Q, R, T, w, u0, TASK_STD, NOISE, eta, P, True,
                                          *RULE)[0]

    L0, b, a = one_step_test_quadratic(ERF, Q, R, T, w, u0, TASK_STD, NOISE, P, *RULE)
    for eta in (0.2, 0.7, 1.5):
        assert abs(L0 - eta * b + 0.5 * eta**2 * a - exact(eta)) <= 1e-13
    eta_star = b / a
    best = exact(eta_star)
    assert exact(0.9 * eta_star) > best and exact(1.1 * eta_star) > best
    config = config_at(Q, R, T, w, u0, "population")
    eta_opt, error = optimal_test_inner_lr(config, pack(Q, R, w), P if P else "population", 1)
    assert abs(eta_opt - eta_star) <= 1e-12 * eta_star
    assert abs(error - best) <= 1e-13


@pytest.mark.parametrize("support", [P_SMALL, "population"])
@pytest.mark.parametrize("steps", [2, 5])
def test_optimal_test_inner_lr_is_a_minimum(support, steps: int) -> None:
    """steps > 1: the bounded search returns a minimum of the error after ``steps`` test steps
    (finite support: the Monte Carlo curve with common random numbers, a smooth function of eta,
    so the comparison is exact for that curve): the curve at eta* (1 +- 0.1) is larger, and the
    returned error is the curve at eta*. Measured: the error rises by 5e-5 .. 1e-3 at +-10 %."""
    K, M = 2, 2
    Q, R, T, w, u0 = random_state(K, M, 5)
    config = config_at(Q, R, T, w, u0, "population", mc_tasks=2000)
    y = pack(Q, R, w)
    eta, error = optimal_test_inner_lr(config, y, support, steps)
    curve = [adaptation_curve(config, y, support, steps, f * eta)[0][-1] for f in (0.9, 1.0, 1.1)]
    assert abs(curve[1] - error) <= 1e-14
    assert curve[0] > error and curve[2] > error, (eta, curve)


def test_student_equal_to_teacher_is_a_valid_few_shot_state():
    """Q = R = T = I makes Omega singular (lambda_k = nu_k): the Monte Carlo terms and the
    finite-support meta-test still evaluate (the field factor tolerates a singular Omega), and the
    exact one-step error equals its Monte Carlo estimate within 5 standard errors."""
    config = Config.from_dict({
        "teacher": {"task_std": 0.5},
        "training": {"algorithm": "anil", "support": 3},
        "metatest": {"support": 3, "inner_steps": 2},
        "student": {"Q0": np.eye(2).tolist(), "R0": np.eye(2).tolist(), "w0": [1.0, 1.0]},
    })
    system = build_system(config)
    y = system.initial_state()
    assert np.all(np.isfinite(system.rhs(0.0, y)))
    exact = system.observables(y)["error"]
    curve = metatest_curve(config, y)
    assert np.all(np.isfinite(curve))
    mean, stderr = adaptation_curve(config, y, 3, 1, config.training.inner_lr)
    assert abs(mean[1] - exact) <= 5 * stderr[1]


# --- the observables' loss ---------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_observed_loss_is_the_right_hand_sides_loss(steps: int) -> None:
    """``fewshot_loss`` (the observables' error) against the loss of ``fewshot_estimate`` at the
    same state and sets: one step, both exact (the quadratic in inner_lr of the meta-test step and
    the loss of ``one_step_terms``), equal to 1e-12; more steps, two control-variate estimates of
    the same mean on the same 512 sets (the loss controlled by its one-step value and the support
    moments, or by the whole one-step drift), within 3 of the loss's Monte Carlo standard error
    (the spread of the 8 streams' estimates / sqrt(8); the two estimates share their sets, so
    their difference is far smaller than either's error)."""
    Q, R, T, w, u0 = random_state(2, 2, 5)
    system = build_system(config_at(Q, R, T, w, u0, 3, inner_steps=steps, mc_tasks=512))
    system = system.with_budget(512)
    observed = fewshot_loss(system.flow, Q, R, w)
    estimate = fewshot_estimate(system.flow, Q, R, w, False)[0][0]
    if steps == 1:
        assert observed == pytest.approx(estimate, rel=1e-12)
        return
    streams = [fewshot_estimate(s.flow, Q, R, w, False)[0][0] for s in system.stream_systems()]
    error = np.std(streams, ddof=1) / np.sqrt(len(streams))
    assert abs(observed - estimate) <= 3.0 * error


@pytest.mark.parametrize("algorithm", ["anil", "maml"])
def test_no_inner_step_is_the_population_theory(algorithm: str) -> None:
    """inner_steps = 0 with P support examples: the support set is never used (w' = w), so the
    theory is the population one, right-hand side and observables equal bit for bit; the few-shot
    theory took one inner step here (its exact one-step terms) whatever inner_steps said."""
    Q, R, T, w, u0 = random_state(2, 2, 9)
    config = config_at(Q, R, T, w, u0, 3, inner_steps=0).replace("training.algorithm", algorithm)
    few = build_system(config)
    population = build_system(config.replace("training.support", "population"))
    y = population.initial_state()
    np.testing.assert_array_equal(few.rhs(0.0, y), population.rhs(0.0, y))
    assert few.observables(y) == population.observables(y)
