"""The sgd ODEs against simulations of wide networks (docs/model.md §7, thermodynamic limit).

For a config with explicit (Q0, R0, w0) the simulation starts exactly at the ODE's initial state.
At width N each simulated quantity (every entry of Q, R, w, and the error computed from them) is
y_N(alpha) = y(alpha) + N^-1/2 xi(alpha) + O(1/N), with xi a Gaussian fluctuation of O(1) variance
sigma^2(alpha) and the O(1/N) term a systematic bias. Over S independent seeds the mean deviation
d = mean_s y_N - y is Gaussian with mean O(1/N) and std sigma / sqrt(N S), so t = d / (s / sqrt(S)),
s the std over seeds, is Student-t distributed with S - 1 degrees of freedom. Every recorded point
(alpha > 0) of every column is checked:

    |d| <= t_crit * s / sqrt(S) + BIAS / N,

t_crit the two-sided Student-t quantile at false-alarm probability FALSE_ALARM / n_points
(Bonferroni over the n_points checked: a correct theory fails the whole test with probability at
most FALSE_ALARM, whatever the correlations between the points). A separate test checks the
premise: the spread over seeds scales like N^-1/2.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from metaode.config import Config
from metaode.simulations.run import simulate
from metaode.solvers.integrate import solve
from metaode.theory.state import column_names
from metaode.theory.system import build_system
from metaode.trajectory import SUCCESS, Trajectory

# Probability that a correct theory fails one comparison (all points together, Bonferroni).
FALSE_ALARM = 1e-3
# Allowance for the O(1/N) bias of the simulated mean: the drift of <y> differs from f(<y>) by
# 1/2 f''(y) : Cov(y) = O(sigma^2 / N); with sigma^2 = N s^2 ~ 0.1 (measured below: s <~ 5e-3 at
# N = 5000) and alpha <= 20 the accumulated bias is ~ alpha sigma^2 / (2N) ~ 1/N. BIAS / N = 2e-4 at
# N = 5000, a tenth of the statistical term, so the test's sensitivity is set by the fluctuations.
BIAS = 1.0

N = 5000

CONFIGS = {
    # (a) K = M = 2, both layers trained, no noise: from an unspecialised start through the
    # specialisation (the error falls from 0.32 to 0.015 by alpha = 20).
    "K2M2": {
        "teacher": {"M": 2, "u0": [1.0, 1.0]},
        "student": {"K": 2, "Q0": [[0.5, 0.1], [0.1, 0.4]], "R0": [[0.2, 0.0], [0.05, 0.1]],
                    "w0": [0.3, 0.2]},
        "training": {"algorithm": "sgd", "lr": 0.5, "lr_head": 0.5, "alpha_max": 20.0},
        "output": {"points": 21},
    },
    # (b) K = 4 > M = 2 (over-parameterised), label noise 0.3, unequal teacher head.
    "K4M2_noise": {
        "teacher": {"M": 2, "u0": [1.0, 0.8], "noise": 0.3},
        "student": {"K": 4,
                    "Q0": (0.3 * np.eye(4) + 0.05).tolist(),
                    "R0": [[0.05, 0.07], [0.09, 0.01], [0.03, 0.06], [0.08, 0.02]],
                    "w0": [0.4, 0.3, 0.2, 0.1]},
        "training": {"algorithm": "sgd", "lr": 0.5, "lr_head": 0.5, "alpha_max": 12.0},
        "output": {"points": 13},
    },
}
SEEDS = {"K2M2": 10, "K4M2_noise": 8}


def _table(run: Trajectory) -> np.ndarray:
    """error and every state entry, shape (columns, records)."""
    names = ["error", *column_names(run.K, run.M)]
    return np.array([run.column(name) for name in names])


@pytest.fixture(scope="module", params=list(CONFIGS))
def theory_and_simulation(request):
    config = Config.from_dict(CONFIGS[request.param])
    theory = solve(build_system(config))
    runs = simulate(config, N, range(SEEDS[request.param]), progress=False)
    return config, theory, runs


def test_simulation_starts_at_the_theory_initial_state(theory_and_simulation):
    config, theory, runs = theory_and_simulation
    for run in runs:
        assert run.status == SUCCESS, run.message
        # networks_with_overlaps builds J, B with exact overlaps up to rounding (~1e-15 relative).
        np.testing.assert_allclose(run.states[0], theory.states[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(run.alpha, theory.alpha, rtol=0, atol=1e-12)


def test_seed_mean_agrees_with_theory_within_fluctuations(theory_and_simulation):
    config, theory, runs = theory_and_simulation
    assert theory.status == SUCCESS, theory.message
    S = len(runs)
    sims = np.array([_table(run) for run in runs])[:, :, 1:]  # alpha = 0 is exact, not random
    th = _table(theory)[:, 1:]
    mean, spread = sims.mean(axis=0), sims.std(axis=0, ddof=1)
    t_crit = stats.t.isf(FALSE_ALARM / (2 * th.size), S - 1)
    tolerance = t_crit * spread / np.sqrt(S) + BIAS / N
    deviation = np.abs(mean - th)
    names = ["error", *column_names(config.K, config.M)]
    worst = np.unravel_index(np.argmax(deviation / tolerance), deviation.shape)
    assert np.all(deviation <= tolerance), (
        f"{names[worst[0]]} at alpha = {theory.alpha[1 + worst[1]]:g}: |mean - theory| = "
        f"{deviation[worst]:.3g} > {tolerance[worst]:.3g} (t_crit = {t_crit:.3g}, S = {S})")
    # The fluctuations themselves are O(N^-1/2) with an O(1) prefactor: sqrt(N) s stays O(1)
    # (measured <= 0.4); a theory off by O(1) would not be caught if the seeds scattered by O(1).
    assert np.sqrt(N) * spread.max() < 1.0


def test_fluctuations_scale_like_inverse_sqrt_N():
    """Var over seeds at N and 4N (same alpha, same config) has ratio 4.

    V(N) = sum over columns and records of the sample variance over S seeds. Each term is
    sigma^2 / N chi^2_{S-1} / (S-1); the sum of correlated terms is at most as dispersed (relative
    std) as one of them, so V(N) / V(4N) / 4 lies within the F(S-1, S-1) quantiles at probability
    FALSE_ALARM (conservative). Small N keeps this cheap: the N^-1/2 law holds for N >> K + M.
    """
    config = Config.from_dict(CONFIGS["K2M2"]).replace("training.alpha_max", 4.0)
    config = config.replace("output.points", 5)
    S, n_small = 48, 500
    variance = []
    for width in (n_small, 4 * n_small):
        runs = simulate(config, width, range(S), progress=False)
        sims = np.array([_table(run) for run in runs])[:, :, 1:]
        variance.append(sims.var(axis=0, ddof=1).sum())
    ratio = variance[0] / variance[1] / 4.0
    f_hi = stats.f.isf(FALSE_ALARM / 2, S - 1, S - 1)
    assert 1.0 / f_hi <= ratio <= f_hi, (
        f"Var(N) / Var(4N) = {4 * ratio:.3g}, expected 4 within a factor {f_hi:.3g}")
