"""The ANIL ODEs (population inner loop) against the simulation of networks of width N.

Criterion (``metaode.validation.criterion.worst_ratio``, the theory's own uncertainty t_c = 0). A
simulation of width N starts exactly on the ODE's initial overlaps; its order parameters then
deviate from the ODE solution by random fluctuations of size O(N^-1/2) plus a systematic O(1/N)
bias. For every recorded column c (error, error_before_adaptation and every entry of Q, R, w), with
S seeds,

    |mean_s c_s(alpha) - c_theory(alpha)| <= Z sigma_c / sqrt(S) + BIAS    at every alpha,

where sigma_c = max_alpha std_s c_s(alpha) is the largest seed-to-seed standard deviation along
the run. The fluctuations start at zero and grow with alpha, so sigma_c is their size near the end
of the run, used at every time (conservative early on). Taking the maximum over the records pools
them: the std of S = 4 seeds at one alpha has only 3 degrees of freedom and is often several times
too small. Measured on 20 further seeds (100..119) of each case at N = 4000, over 2000 random
4-seed subsets: with the pointwise std, 72 - 76 % of the subsets had a deviation above 5 standard
errors somewhere although theory and simulation agree (92 % with 3 seeds in case (i)); with
sigma_c, <= 0.9 % failed (upper estimates: the 20-seed reference carries its own fluctuation).

BIAS = 3 / N. At N = 500, 100 seeds of each case gave seed-mean deviations <= 2.5 / N in every
column and record, each within 3 standard errors of zero (no bias resolved), so an O(1/N) bias
is below ~3 / N; at N = 4000 the allowance is 7.5e-4, against tolerances 4e-3 to 3e-2 from the
fluctuations.

Power. Every case also asserts that the same criterion rejects the theory with the case's
distinctive term changed: first instead of second order (i), no label-noise diffusion (ii), the
lr^2 diffusion of one example per step instead of query * meta_batch = 4 (iii). Those theories
differ from the right one by 0.035, 0.06 and 0.016 in some column; in the 2000 subsets above each
was rejected every time, by at least 1.46, 1.73 and 1.14 times the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from metaode.config import Config
from metaode.simulations.run import simulate
from metaode.solvers.integrate import solve
from metaode.theory.system import build_system
from metaode.trajectory import SUCCESS
from metaode.validation.criterion import compared_columns, worst_ratio

N = 4000
SEEDS = range(4)


def anil_case(K: int, M: int, Q0, R0, w0, teacher: dict, training: dict) -> Config:
    """An ANIL experiment with explicit initial overlaps, recorded at 21 times up to alpha = 10."""
    return Config.from_dict({
        "teacher": {"M": M, "u0": [1.0] * M, "task_std": 0.5, **teacher},
        "student": {"K": K, "Q0": Q0, "R0": R0, "w0": w0},
        "training": {"algorithm": "anil", "inner_lr": 0.5, "lr": 0.5, "lr_head": 0.5,
                     "alpha_max": 10.0, **training},
        "output": {"points": 21},
    })


Q0_2 = [[0.5, 0.1], [0.1, 0.4]]
R0_2 = [[0.2, 0.05], [0.0, 0.15]]
W0_2 = [0.3, 0.2]

CASES = {
    # (i) second order, one inner step; alternative: first order
    "second_order_one_step": (
        anil_case(2, 2, Q0_2, R0_2, W0_2, {}, {"order": "second", "inner_steps": 1}),
        ("training.order", "first")),
    # (ii) first order, three inner steps, label noise; alternative: no label-noise diffusion
    "first_order_three_steps_noise": (
        anil_case(2, 2, Q0_2, R0_2, W0_2, {"noise": 0.5},
                  {"order": "first", "inner_steps": 3, "inner_lr": 0.3}),
        ("teacher.noise", 0.0)),
    # (iii) K = 3 > M = 2, query = meta_batch = 2; alternative: the diffusion of one example
    "overparameterised_meta_batch": (
        anil_case(3, 2, [[0.5, 0.1, 0.0], [0.1, 0.4, 0.05], [0.0, 0.05, 0.3]],
                  [[0.2, 0.05], [0.0, 0.15], [0.1, 0.1]], [0.3, 0.2, 0.1], {},
                  {"order": "second", "inner_steps": 2, "query": 2, "meta_batch": 2}),
        ("training.query", 1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_theory_follows_simulation(case: str) -> None:
    config, (key, alternative) = CASES[case]
    theory = solve(build_system(config))
    sims = simulate(config, N, SEEDS, progress=False)
    assert theory.status == SUCCESS and all(s.status == SUCCESS for s in sims)
    for s in sims:
        np.testing.assert_allclose(s.alpha, theory.alpha, rtol=0, atol=1e-12)
    names = compared_columns(config.K, config.M)
    # the run goes somewhere: the error drops by far more than the tolerances
    assert theory.error[-1] < 0.5 * theory.error[0]
    ratio, where = worst_ratio(theory, sims, names, N)
    assert ratio <= 1.0, f"theory off by {ratio:.2f} tolerances ({where})"
    wrong = solve(build_system(config.replace(key, alternative)))
    ratio, where = worst_ratio(wrong, sims, names, N)
    assert ratio > 1.0, f"the criterion cannot tell {key} = {alternative!r} apart ({where})"


@pytest.mark.parametrize("s", [1, 3])
def test_simulation_perfect_representation_meta_error(s: int) -> None:
    """Networks with J = B (Q0 = R0 = T = I) and w0 = u0: the recorded error at alpha = 0 is
    1/2 task_std^2 tr(P^s E P^s), P = I - inner_lr E, E = I2(T) = (2 / pi) arcsin(1/2) I.

    At alpha = 0 the observables are evaluated on the constructed networks' exact overlaps, equal
    to (Q0, R0, T) up to rounding (~1e-15 relative), so the identity holds to rounding: 1e-10.
    """
    sigma, eta, u0 = 0.6, 0.7, [1.0, -0.5]
    eye = np.eye(2).tolist()
    config = Config.from_dict({
        "teacher": {"M": 2, "u0": u0, "task_std": sigma},
        "student": {"K": 2, "Q0": eye, "R0": eye, "w0": u0},
        "training": {"algorithm": "anil", "inner_steps": s, "inner_lr": eta,
                     "alpha_max": 0.01},
        "output": {"points": 2},
    })
    E = 2.0 / np.pi * np.arcsin(0.5) * np.eye(2)
    Ps = np.linalg.matrix_power(np.eye(2) - eta * E, s)
    expected = 0.5 * sigma**2 * np.trace(Ps @ E @ Ps)
    before = 0.5 * sigma**2 * np.trace(E)
    for run in simulate(config, N, range(2), progress=False):
        assert run.alpha[0] == 0.0
        assert abs(run.error[0] - expected) <= 1e-10 * expected
        assert abs(run.column("error_before_adaptation")[0] - before) <= 1e-10 * before
