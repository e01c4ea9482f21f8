"""The maml theory (``theory.maml``, docs/model.md §11).

- Reductions, exact: with one inner step maml's right-hand side and observables are few-shot
  anil's, bit for bit (the support fields' shift only acts from the second step on); with the
  population support maml's theory is population anil's; towards it, the maml - anil difference
  of the right-hand side (two inner steps, both on the same support sets) vanishes as 1/P: P
  times it agrees at P = 20 and 80 within 10 % in every component (measured <= 3 %; at P = 5 the
  1/P^2 part still moves it by up to 25 %, so ~6 % at P = 20; the Monte Carlo error of the
  difference is ~1 %).
- The maml code path with the support fields' shift switched off is few-shot anil's: per support
  set and task, its field-space inner loop (``maml_head_terms``, ``maml_support_diffusion``, the
  code whose difference the maml theory adds) gives anil's terms (``gradient_terms`` on that one
  task, ``support_diffusion``) to 1e-12 (measured <= 4e-16 of the largest term), for 2 and 3
  inner steps in both orders; with the shift on they differ (by 31 % and 56 % of it).
- The per-set terms: the head cotangent wbar of the maml - anil difference (the mean responses
  of ``support_statistics`` with and without ``maml``) is the gradient in w of the difference
  loss on the same points, second order (central differences; the pathwise terms S_Q, S_R use
  the simulation's reverse pass, checked against finite differences in
  tests/test_fewshot_simulation.py).
- The thermodynamic limit of the inner loop, independently of the theory's code: at a fixed state,
  the maml - anil difference of the query loss measured on explicit networks of width N = 2000
  (the simulation's task draw, Gram matrix and inner loop in weight-space fields, paired tasks)
  equals the theory's within its statistical error, and is many standard errors from zero.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from metaode.config import Config
from metaode.simulations.fewshot import draw_task, gram, inner_loop_fields, task_gradients
from metaode.simulations.networks import networks_with_overlaps
from metaode.theory.anil import ANILSystem
from metaode.theory.fewshot import FewShotANILSystem, fewshot_estimate, four_point_tensor
from metaode.theory.fields import error_blocks, field_covariance, small_product
from metaode.theory.maml import MAMLSystem
from metaode.theory.state import unpack
from metaode.theory.support_mc import (
    drift_map,
    gradient_terms,
    inner_forward,
    maml_head_terms,
    maml_support_diffusion,
    support_diffusion,
    support_features,
    support_statistics,
    symmetric_root,
    task_basis_maps,
    task_vector,
    terms_size,
)
from metaode.theory.system import build_system

STRONG = {
    "teacher": {"M": 2, "u0": [1.0, 0.6], "task_std": 0.7, "noise": 0.2},
    "student": {"K": 2, "Q0": [[0.3, 0.02], [0.02, 0.25]], "R0": [[0.03, -0.01], [0.0, 0.04]],
                "w0": [0.3, 0.2]},
    "training": {"algorithm": "maml", "support": 2, "order": "second", "inner_steps": 3,
                 "inner_lr": 1.0, "lr": 0.5, "lr_head": 0.5, "alpha_max": 8.0},
    "theory": {"mc_rtol": 0.0, "mc_tasks": 512},
}


def random_states(system, n: int, seed: int) -> list[np.ndarray]:
    """States near the initial one (valid covariances), with a head of order one."""
    rng = np.random.default_rng(seed)
    y0 = system.initial_state()
    return [y0 + 0.05 * rng.standard_normal(y0.size) for _ in range(n)]


@pytest.mark.parametrize("order", ["first", "second"])
def test_one_inner_step_is_fewshot_anil(order: str) -> None:
    config = Config.from_dict(STRONG).replace({"training.inner_steps": 1, "training.order": order})
    maml, anil = build_system(config), FewShotANILSystem(config.replace("training.algorithm",
                                                                        "anil"))
    assert isinstance(maml, MAMLSystem)
    for y in random_states(maml, 3, 0):
        np.testing.assert_array_equal(maml.rhs(0.0, y), anil.rhs(0.0, y))
        assert maml.observables(y) == anil.observables(y)


def test_population_support_is_population_anil() -> None:
    config = Config.from_dict(STRONG).replace({"training.support": "population"})
    maml = build_system(config)
    anil = build_system(config.replace("training.algorithm", "anil"))
    assert type(maml) is ANILSystem
    for y in random_states(maml, 3, 1):
        np.testing.assert_array_equal(maml.rhs(0.0, y), anil.rhs(0.0, y))


@njit
def per_task_terms(acts, Q, R, T, w, u0, task_std, noise, inner_lr, steps, second_order, query,
                   fields, task, F, adapt_J):
    """Per support set i at its sampled task e (``task_vector``): the terms (loss without the head
    term, Cbar, Dbar, SQ, SR, wbar) and the support part of Phi, (a) by few-shot anil's code
    (``inner_forward`` and ``gradient_terms`` on the one-task basis U = u, S = 1, Y = y;
    ``support_diffusion`` at e) and (b) by the maml code path (``inner_loop_fields`` with the
    support inputs' Gram matrix I, ``maml_head_terms``, ``maml_support_diffusion``), its shift on
    or off (``adapt_J``). Returns (a, b), one row per set."""
    K, M = R.shape
    n_pts, P, n = fields.shape
    C, D, _ = error_blocks(acts, Q, R, T)
    U, _, d = task_basis_maps(u0, task_std, noise, P)
    root = symmetric_root(field_covariance(Q, R, T))
    size = terms_size(K, M)
    npair = K * (K + 1) // 2
    a, b = np.zeros((n_pts, size + npair)), np.zeros((n_pts, size + npair))
    z, phi, gp, Y = np.empty((P, n)), np.empty((P, K)), np.empty((P, K)), np.empty((P, d))
    Zs, Zs1 = np.empty((steps + 1, K, d)), np.empty((steps + 1, K, 1))
    Zbar, phibar, proj = np.empty((K, 1)), np.empty((P, K)), np.empty((P, 1))
    e, y, u, U1, S1 = np.empty(d), np.empty(P), np.empty(M), np.empty((M, 1)), np.ones(1)
    Zs_e, Y_e, c, gbar = np.empty((steps + 1, K, 1)), np.empty((P, 1)), np.empty(n), np.empty(K)
    Gamma, cot, proj_e, jac = np.empty((K, K)), np.empty((K, 1)), np.empty((P, 1)), np.empty(
        (P, K, K))
    eye, lb, gq, unit = np.eye(P), np.empty((P, K)), np.empty(K), np.empty(K)
    for i in range(n_pts):
        support_features(acts, fields, i, task, root, K, u0, noise, z, phi, gp, Y)
        task_vector(task, i, M, task_std, 1.0, e)
        y[:] = Y @ e
        u[:] = U @ e
        U1[:, 0] = u
        Y1 = y.reshape(P, 1)  # the labels on the one-task basis
        inner_forward(phi, Y1, w, inner_lr, Zs1)
        gradient_terms(Zs1, steps, C, D, small_product(D, U1), 0.0, U1, S1, phi, gp, Y1, z,
                       inner_lr, second_order, a[i], Zbar, phibar, proj)
        inner_forward(phi, Y, w, inner_lr, Zs)
        support_diffusion(Zs, steps, U, e, phi, gp, Y, C, D, F, noise, inner_lr, query, 1.0, a[i],
                          size, Zs_e, Y_e, c, gbar, Gamma, cot, phibar, proj_e, jac)
        lams, ws, _ = inner_loop_fields(acts, np.ascontiguousarray(z[:, :K]), y, eye, w, inner_lr,
                                        steps, P, adapt_J)
        maml_head_terms(acts, lams, ws, y, eye, u, C, D, inner_lr, steps, adapt_J, second_order,
                        z, b[i], lb, gq)
        maml_support_diffusion(acts, lams, ws, y, eye, inner_lr, adapt_J, u, C, D, F, noise,
                               query, 1.0, b[i], size, lb, jac, c, gbar, Gamma, unit)
    return a, b


@pytest.mark.parametrize("steps", [2, 3])
@pytest.mark.parametrize("order", ["first", "second"])
def test_maml_path_without_the_shift_is_fewshot_anil(order: str, steps: int) -> None:
    config = Config.from_dict(STRONG).replace({"training.inner_steps": steps,
                                               "training.order": order})
    system = build_system(config)
    f = system.flow
    fields, task = f.fields[:64], f.task[:64]
    for y in random_states(system, 2, 2):
        Q, R, w = unpack(y, f.K, f.M)
        F = four_point_tensor(f.acts, field_covariance(Q, R, f.T), f.K, f.nodes, f.weights)
        args = (f.acts, Q, R, f.T, w, f.u0, f.task_std, f.noise, f.inner_lr, steps,
                order == "second", f.query, fields, task, F)
        anil, off = per_task_terms(*args, False)
        scale = np.abs(anil).max(axis=0)
        np.testing.assert_allclose(off, anil, rtol=0, atol=1e-12 * scale.max())
        _, on = per_task_terms(*args, True)
        assert np.abs(on - anil).max() > 1e-3 * scale.max()  # the shift moves the terms


def test_difference_to_anil_vanishes_as_one_over_P() -> None:
    scaled = []
    for P in (20, 80):
        config = Config.from_dict(STRONG).replace({"training.support": P,
                                                   "training.inner_steps": 2,
                                                   "theory.mc_tasks": 2048})
        maml = MAMLSystem(config)
        anil = FewShotANILSystem(config.replace("training.algorithm", "anil"), maml.sample)
        y = maml.initial_state()
        scaled.append(P * (maml.rhs(0.0, y) - anil.rhs(0.0, y)))
    at20, at80 = scaled
    assert np.abs(at20).min() > 1e-3  # every component moves by O(1/P)
    np.testing.assert_allclose(at80, at20, rtol=0.1)


def difference_terms(system: MAMLSystem, Q, R, w):
    """The mean per-set maml - anil terms (loss, Cbar, Dbar, S_Q, S_R, wbar) at (Q, R, w): the
    uncontrolled mean responses of ``support_statistics`` with ``maml`` minus those without."""
    f = system.flow
    C, D, E = error_blocks(f.acts, Q, R, f.T)
    F = four_point_tensor(f.acts, field_covariance(Q, R, f.T), f.K, f.nodes, f.weights)
    L = drift_map(f.acts, Q, R, f.T, f.K, f.M)
    means = [support_statistics(f.acts.student, f.acts.teacher, Q, R, f.T, w, f.u0, f.task_std,
                                f.noise, f.inner_lr, f.steps, f.second_order, f.query, f.fields,
                                f.task, C, D, E, F, L, np.zeros(len(L)), True, False, maml,
                                False)[1]
             for maml in (True, False)]
    return means[0] - means[1]


def test_head_cotangent_is_the_gradient_of_the_difference_loss() -> None:
    """Second order: wbar is the exact gradient in w through the inner loop, fields fixed."""
    system = build_system(Config.from_dict(STRONG))
    Q, R, w = unpack(system.initial_state(), 2, 2)
    wbar = difference_terms(system, Q, R, w)[-2:]
    h = 1e-6
    for k in range(2):
        e = np.zeros(2)
        e[k] = h
        fd = (difference_terms(system, Q, R, w + e)[0]
              - difference_terms(system, Q, R, w - e)[0]) / (2 * h)
        # central differences of an O(1) smooth function at h = 1e-6: error ~1e-10
        assert wbar[k] == pytest.approx(fd, abs=1e-8)
    assert np.abs(wbar).max() > 1e-3  # the difference is not trivially zero


def finite_N_loss_difference(config: Config, y: np.ndarray, N: int, tasks: int,
                             seed: int) -> tuple[float, float]:
    """(mean, standard error) over ``tasks`` paired tasks of L_q(maml) - L_q(anil) on networks of
    width N with the overlaps of y: the simulation's task draw, Gram matrix of the real inputs and
    inner loop (``simulations.fewshot.task_gradients``), 8 query inputs per task (the same for
    both algorithms, so that most of the query noise cancels in the difference)."""
    K, M = config.K, config.M
    Q, R, w = unpack(y, K, M)
    te, tr = config.teacher, config.training
    rng = np.random.default_rng(seed)
    J, B = networks_with_overlaps(Q, R, np.asarray(te.T, float), N, rng)
    P, query = int(tr.support), 8
    n = P + query
    xs, lam, nu = np.empty((n, N)), np.empty((n, K)), np.empty((n, M))
    labels, u, G = np.empty(n), np.empty(M), np.empty((P, n))
    acts, u0 = config.activations, np.asarray(te.u0, float)
    diffs = np.empty(tasks)
    for t in range(tasks):
        draw_task(acts, J, B, u0, float(te.task_std), float(te.noise), xs, lam, nu, labels, u, rng)
        gram(xs, P, G)
        args = (acts, lam, labels, G, w, float(tr.inner_lr), int(tr.inner_steps), P)
        diffs[t] = task_gradients(*args, True, False)[0] - task_gradients(*args, False, False)[0]
    return float(diffs.mean()), float(diffs.std(ddof=1) / np.sqrt(tasks))


def test_loss_difference_matches_networks_of_finite_width() -> None:
    """At the initial state of the strong case: theory (budget 2^14, its own spread over streams)
    against 20000 paired tasks at N = 2000. The neglected terms are O(N^-1/2) per task in the
    fields but enter the mean loss at O(1/N) (odd terms average out): ~5e-4 of the loss, below the
    combined standard error here; the difference itself is ~10 standard errors from zero."""
    config = Config.from_dict(STRONG).replace({"theory.mc_tasks": 16384})
    system = build_system(config)
    y = system.initial_state()
    Q, R, w = unpack(y, 2, 2)
    theory = (fewshot_estimate(system.flow, Q, R, w, False)[0][0]
              - fewshot_estimate(system.flow._replace(maml=False), Q, R, w, False)[0][0])
    streams = [fewshot_estimate(s.flow, Q, R, w, False)[0][0]
               - fewshot_estimate(s.flow._replace(maml=False), Q, R, w, False)[0][0]
               for s in system.stream_systems()]
    theory_err = np.std(streams, ddof=1) / np.sqrt(len(streams))
    mean, stderr = finite_N_loss_difference(config, y, 2000, 20000, 5)
    combined = np.hypot(stderr, theory_err)
    print(f"loss difference: theory {theory:.5f} +- {theory_err:.5f}, "
          f"N = 2000 {mean:.5f} +- {stderr:.5f}")
    assert abs(mean - theory) <= 4.0 * combined
    assert abs(theory) >= 8.0 * combined  # the test would see a missing shift
