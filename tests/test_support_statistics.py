"""The one-pass Monte Carlo statistics of the few-shot theory (``theory.support_mc``).

* ``support_statistics`` sums its chunks in a fixed order: its result does not depend on the
  number of threads (1 against 2, equal to 1e-14 relative; measured: bit for bit).
* Its centred cross-products and ``controlled_mean`` are the least-squares control-variate
  estimate computed here in numpy from the sets one by one (``np.linalg.lstsq``).
* The loss-only pass (the observables' error) has the loss and its controls of the full pass:
  the loss after one step minus its known mean, then the support moments, to 1e-14.
* The support part of Phi (second order) uses the mean query gradient gbar = C w' - D u: with
  query examples q, Phi(2) - Phi(1) / 2 = 1/2 sum_p lambdabar_p lambdabar_p^T with lambdabar_p the
  support-field cotangent of the query loss, averaged over the set's sampled task and its mirror
  image, computed here by finite differences of a numpy inner loop.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy.special import erf
from states import ERF, random_state

from metaode.theory.activations import path_rule
from metaode.theory.fewshot import four_point_tensor, one_step_terms
from metaode.theory.fields import error_blocks, field_covariance
from metaode.theory.support_mc import (
    SETS_PER_CONTROL,
    controlled_mean,
    drift_map,
    drift_vector,
    support_sample,
    support_statistics,
    symmetric_root,
    terms_size,
)

RULE = path_rule()
TASK_STD, NOISE, INNER_LR = 0.6, 0.3, 0.8


def setup(P: int, seed: int, second_order: bool = True):
    """A random state (K = M = 2), its error blocks, F, drift map, exact one-step drift (as in
    ``fewshot_estimate``) and a sample of 512 sets of P examples."""
    K, M = 2, 2
    Q, R, T, w, u0 = random_state(K, M, seed)
    C, D, E = error_blocks(ERF, Q, R, T)
    F = four_point_tensor(ERF, field_covariance(Q, R, T), K, *RULE)
    L = drift_map(ERF, Q, R, T, K, M)
    loss, G, H, wbar = one_step_terms(ERF, Q, R, T, w, u0, TASK_STD, NOISE, INNER_LR, P,
                                      second_order, F, *RULE)
    known1 = drift_vector(loss, G, H, np.zeros((K, K)), np.zeros((K, M)), wbar, Q, R, T)
    sample = support_sample(K, M, P, u0, T, 512, 2, seed)
    return Q, R, T, w, u0, C, D, E, F, L, known1, sample


def statistics(state, fields, task, steps=2, query=1, second_order=True, gradients=True,
               lr2=True, maml=False, loss_only=False):
    """``support_statistics`` of ``state`` (``setup``) on the given sets."""
    Q, R, T, w, u0, C, D, E, F, L, known1, _ = state
    return support_statistics(ERF.student, ERF.teacher, Q, R, T, w, u0, TASK_STD, NOISE,
                              INNER_LR, steps, second_order, query, fields, task, C, D, E, F, L,
                              known1, gradients, lr2, maml, loss_only)


def test_statistics_do_not_depend_on_the_thread_count() -> None:
    state = setup(4, 3)
    sample = state[-1]
    numba.get_num_threads()
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = statistics(state, sample.fields, sample.task)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = statistics(state, sample.fields, sample.task)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-14, atol=1e-14 * np.abs(a).max())


@pytest.mark.parametrize("second_order", [True, False])
def test_controlled_mean_is_the_least_squares_estimate(second_order: bool) -> None:
    """hbar, rbar, S_hh, S_hr against numpy from the sets' own (h, r) (one-set calls give a set's h
    and r as the means), to 1e-12 of their scale; the controlled means of the drift terms (all
    controls) and of Phi (the support moments) against ``np.linalg.lstsq`` of the centred r on
    the centred h, to 1e-6 of their standard error (spread / sqrt(n)), and with fewer than
    SETS_PER_CONTROL sets per control the plain mean rbar; the normal equations lose
    the square of the controls' condition number to rounding where lstsq loses it once (second
    order: correlation matrix condition 1.6e4, difference 2e-8 standard errors measured; first
    order: the one-step wbar is linear in the support moments, an exactly singular direction
    that both drop)."""
    state = setup(3, 7, second_order)
    sample = state[-1]
    fields, task = sample.fields[:200], sample.task[:200]
    hbar, rbar, S_hh, S_hr = statistics(state, fields, task, second_order=second_order)
    rows = [statistics(state, fields[i:i + 1], task[i:i + 1], second_order=second_order)
            for i in range(len(fields))]
    h = np.array([row[0] for row in rows])
    r = np.array([row[1] for row in rows])
    hc, rc = h - h.mean(axis=0), r - r.mean(axis=0)
    np.testing.assert_allclose(hbar, h.mean(axis=0), rtol=0, atol=1e-12 * np.abs(h).max())
    np.testing.assert_allclose(rbar, r.mean(axis=0), rtol=0, atol=1e-12 * np.abs(r).max())
    np.testing.assert_allclose(S_hh, hc.T @ hc, rtol=0, atol=1e-12 * np.abs(hc.T @ hc).max())
    np.testing.assert_allclose(S_hr, hc.T @ rc, rtol=0, atol=1e-12 * np.abs(hc.T @ rc).max())
    nx, size = len(state[9]), terms_size(2, 2)
    for (h0, r0, r1) in ((0, 0, size), (nx, size, r.shape[1])):
        beta = np.linalg.lstsq(hc[:, h0:], rc[:, r0:r1], rcond=1e-10)[0]
        expected = r[:, r0:r1].mean(axis=0) - h[:, h0:].mean(axis=0) @ beta
        p = h.shape[1] - h0
        assert len(r) >= SETS_PER_CONTROL * p
        got = controlled_mean(hbar, rbar, S_hh, S_hr, h0, h.shape[1], r0, r1, len(r))
        se = r[:, r0:r1].std(axis=0) / np.sqrt(len(r))
        np.testing.assert_array_less(np.abs(got - expected), 1e-6 * se + 1e-15)
        # too few sets per control: the plain mean
        few = controlled_mean(hbar, rbar, S_hh, S_hr, h0, h.shape[1], r0, r1,
                              SETS_PER_CONTROL * p - 1)
        np.testing.assert_array_equal(few, rbar[r0:r1])


@pytest.mark.parametrize("steps", [2, 3])
def test_loss_only_pass_has_the_loss_and_controls_of_the_full_pass(steps: int) -> None:
    """``loss_only``: r = (the loss after all steps), h = (the loss after one step minus the
    exact one-step loss, the support moments): the same numbers as the full pass's loss response,
    its control on the loss (the drift map's first row picks the loss) and its support moments, on
    the same sets (sums of the same products, to 1e-14 of their scale)."""
    state = setup(5, 11)
    sample = state[-1]
    full = statistics(state, sample.fields, sample.task, steps=steps)
    alone = statistics(state, sample.fields, sample.task, steps=steps, gradients=False,
                       lr2=False, loss_only=True)
    nx = len(state[9])
    keep = np.r_[0, nx:len(full[0])]  # the loss's control, then the support moments
    np.testing.assert_allclose(alone[0], full[0][keep], rtol=0, atol=1e-14)
    np.testing.assert_allclose(alone[1], full[1][:1], rtol=1e-14)
    scale = np.abs(full[2]).max()
    np.testing.assert_allclose(alone[2], full[2][np.ix_(keep, keep)], rtol=0, atol=1e-14 * scale)
    np.testing.assert_allclose(alone[3], full[3][keep, :1], rtol=0,
                               atol=1e-14 * np.abs(full[3]).max())


def query_loss_cotangent(z, w, u, zeta, C, D, steps):
    """lambdabar_p = g'(lambda_p) (.) d eps(w'; u) / d phi_p for one support set (fields z, P x 4)
    and one task (u, zeta), eps = 1/2 w' C w' - w' D u + const, by central differences of a numpy
    inner loop in the features phi_p (step 1e-6: error ~1e-10)."""
    K = len(w)
    phi = erf(z[:, :K] / np.sqrt(2))
    psi = erf(z[:, K:] / np.sqrt(2))
    gprime = np.sqrt(2 / np.pi) * np.exp(-0.5 * z[:, :K] ** 2)
    y = psi @ u + NOISE * zeta
    P = len(y)

    def loss(features):
        wp = w.copy()
        for _ in range(steps):
            wp = wp - INNER_LR / P * features.T @ (features @ wp - y)
        return 0.5 * wp @ C @ wp - wp @ D @ u

    h = 1e-6
    cot = np.empty((P, K))
    for p in range(P):
        for k in range(K):
            step = np.zeros((P, K))
            step[p, k] = h
            cot[p, k] = (loss(phi + step) - loss(phi - step)) / (2 * h)
    return gprime * cot


def test_support_part_of_phi_uses_the_mean_query_gradient() -> None:
    """Phi(query = 2) - Phi(query = 1) / 2 = 1/2 sum_p lambdabar_p lambdabar_p^T per support set,
    averaged over its task (u, zeta) and the mirror image (u0 - (u - u0), -zeta) (docs/model.md
    §9.4: the query part scales as 1 / query, the support part's Gamma as gbar gbar^T
    (1 - 1 / query) + (...) / query), against ``query_loss_cotangent`` to 1e-8 of its scale
    (finite differences ~1e-10); with gbar = C w' + D u instead (the sign error this test was
    written for) the difference is O(1)."""
    state = setup(3, 11)
    Q, R, T, w, u0, C, D, E, F, L, _, sample = state
    root = symmetric_root(field_covariance(Q, R, T))
    steps, nK = 2, 3
    for i in range(3):
        one_set = (sample.fields[i:i + 1], sample.task[i:i + 1])
        phi1 = statistics(state, *one_set, steps=steps, query=1, gradients=False)[1][-nK:]
        phi2 = statistics(state, *one_set, steps=steps, query=2, gradients=False)[1][-nK:]
        expected = 0.0
        for sign in (1.0, -1.0):
            u = u0 + sign * TASK_STD * sample.task[i, :2]
            zeta = sign * sample.task[i, 2:]
            cot = query_loss_cotangent(sample.fields[i] @ root, w, u, zeta, C, D, steps)
            expected = expected + 0.25 * (cot.T @ cot)[np.triu_indices(2)]
        got = phi2 - 0.5 * phi1
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8 * np.abs(expected).max())
