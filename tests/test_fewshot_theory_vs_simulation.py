"""The few-shot ANIL theory (support = P) against the finite-support simulation at N = 4000.

Cases (K = M = 2, task_std = 0.5, label noise 0.5, lr = lr_head = 0.5, horizon alpha = 5, the
error falls from ~0.40 to 0.20 .. 0.26): P = 2, 5, 20, each with second and first order, inner_lr
= 1, inner_steps = 1 (exact loss and drift, Monte Carlo lr^2 term); and P = 5, second order,
inner_steps = 2, inner_lr = 0.7 (loss, drift and lr^2 term all by Monte Carlo).

Criterion, as in tests/test_anil_theory_vs_simulation.py, extended by the theory's own Monte Carlo
error. For every recorded column c (error, error_before_adaptation, Q, R, w), with S = 4 seeds,

    |mean_s c_s(alpha) - mean_t c_t(alpha)| <= Z sqrt(sigma_c^2 / S + tau_c^2 / S_t + e_c^2) + BIAS

at every alpha, Z = 5, BIAS = 3 / N. sigma_c = max_alpha std_s c_s(alpha) pools the seed-to-seed
spread along the run (see that test for why the maximum over records is needed with 4 seeds).
The theory uses common random numbers with theory.mc_tasks = 2000 tasks: a Monte Carlo error that
does not average out along the trajectory. A single solve is off by up to ~2.8 sigma_c / sqrt(S)
(P = 2, error column; up to 2 in the other columns), far from negligible, and making it negligible
would need ~10^5 tasks (a minute per solve with the second-order terms). So the theory is solved
with S_t = 4 independent Monte Carlo seeds: mean_t is their mean and tau_c = max_alpha std_t
c_t(alpha) their spread, pooled like sigma_c. e_c is the Monte Carlo error of the simulation's
own error column: the simulation evaluates its observables with the theory's estimator at its
exact overlaps (``simulations.run``), with the config's Monte Carlo seed, an offset common to all
seeds (e_c = max over records of the reported error_mc_stderr for the error column with
inner_steps = 2; zero for every other column and for inner_steps = 1, where the loss is exact).

Measured (12 simulation seeds and 12 theory seeds per case, 3000 random 4 + 4 subsets, without
the e_c term): the fraction of subsets with a deviation above the tolerance somewhere was 0.4 % and
0 % (P = 2, second and first order), 1.0 % and 1.0 % (P = 5), 0.8 % and 0.4 % (P = 20), 1.5 %
(inner_steps = 2); upper estimates, since the 12-seed references fluctuate themselves. The fixed
seeds of this test give worst ratios 0.41, 0.46, 0.20, 0.17, 0.63, 0.54, 0.28 (case order below),
with tolerances 6e-3 .. 4e-2.

BIAS = 3 / N: at N = 500, 100 seeds of every case gave seed-mean deviations from the 12-seed theory
mean <= 3.0 / N in every column and record, each within 2 standard errors of zero (no bias
resolved), except the error column with inner_steps = 2 (4.3 standard errors), which is the common
offset e_c of the simulation's estimator described above, not a bias of the dynamics.

Power: for P = 2 the same criterion (with the few-shot theory's tau_c) rejects the population
theory (support = "population", exact), by 5.2 (second order) and 4.4 (first order) tolerances in
the error after adaptation, whose finite-P part inner_lr^2 Xi / (2P) the population theory lacks.

Integration: RK45 with rtol 1e-6 (measured difference from DOP853 at rtol 1e-8: < 1e-7), far below
the tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulations.run import simulate
from solvers.integrate import solve
from theory.config import Config
from theory.state import column_names
from theory.system import build_system
from theory.trajectory import SUCCESS, Trajectory

N = 4000
SEEDS = range(4)
MC_SEEDS = range(4)
Z = 5.0
BIAS = 3.0 / N


def fewshot_case(P: int, order: str, inner_steps: int = 1, inner_lr: float = 1.0) -> Config:
    """Few-shot ANIL from explicit initial overlaps, recorded at alpha = 0, 1, .., 5."""
    return Config.from_dict({
        "teacher": {"M": 2, "u0": [1.0, 1.0], "task_std": 0.5, "noise": 0.5},
        "student": {"K": 2, "Q0": [[0.5, 0.1], [0.1, 0.4]], "R0": [[0.2, 0.05], [0.0, 0.15]],
                    "w0": [0.3, 0.2]},
        "training": {"algorithm": "anil", "support": P, "order": order,
                     "inner_steps": inner_steps, "inner_lr": inner_lr, "lr": 0.5, "lr_head": 0.5,
                     "alpha_max": 5.0},
        "output": {"points": 6},
        "theory": {"mc_tasks": 2000},
        "solver": {"method": "RK45", "rtol": 1e-6, "atol": 1e-8},
    })


CASES = {
    "P2_second": fewshot_case(2, "second"),
    "P2_first": fewshot_case(2, "first"),
    "P5_second": fewshot_case(5, "second"),
    "P5_first": fewshot_case(5, "first"),
    "P20_second": fewshot_case(20, "second"),
    "P20_first": fewshot_case(20, "first"),
    "P5_second_two_steps": fewshot_case(5, "second", inner_steps=2, inner_lr=0.7),
}


def columns(config: Config) -> list[str]:
    return ["error", "error_before_adaptation", *column_names(config.K, config.M)]


def worst_ratio(theories: list[Trajectory], sims: list[Trajectory], names: list[str],
                reference: Trajectory | None = None) -> tuple[float, str]:
    """max over columns and records of |seed mean - theory| / tolerance (module docstring); the
    theory is the mean of ``theories`` unless a ``reference`` trajectory is given (power check)."""
    worst, where = 0.0, ""
    for name in names:
        values = np.array([s.column(name) for s in sims])
        theory = np.array([t.column(name) for t in theories])
        sigma = values.std(axis=0, ddof=1).max()
        tau = theory.std(axis=0, ddof=1).max()
        e = max(s.column("error_mc_stderr").max() for s in sims) if name == "error" else 0.0
        tol = Z * np.sqrt(sigma**2 / len(sims) + tau**2 / len(theories) + e**2) + BIAS
        center = theory.mean(axis=0) if reference is None else reference.column(name)
        ratio = np.abs(values.mean(axis=0) - center) / tol
        i = int(np.argmax(ratio))
        if ratio[i] > worst:
            worst, where = float(ratio[i]), f"{name} at alpha = {sims[0].alpha[i]:g}"
    return worst, where


@pytest.mark.parametrize("case", list(CASES))
def test_fewshot_theory_follows_simulation(case: str) -> None:
    config = CASES[case]
    theories = [solve(build_system(config.replace("theory.mc_seed", s))) for s in MC_SEEDS]
    sims = simulate(config, N, SEEDS, progress=False)
    assert all(t.status == SUCCESS for t in theories) and all(s.status == SUCCESS for s in sims)
    for s in sims:
        np.testing.assert_allclose(s.alpha, theories[0].alpha, rtol=0, atol=1e-12)
    # the run goes somewhere: the error drops by far more than the tolerances (<= 0.03)
    assert theories[0].error[-1] < theories[0].error[0] - 0.1
    names = columns(config)
    ratio, where = worst_ratio(theories, sims, names)
    assert ratio <= 1.0, f"theory off by {ratio:.2f} tolerances ({where})"
    if config.training.support == 2:
        population = solve(build_system(config.replace("training.support", "population")))
        ratio, where = worst_ratio(theories, sims, names, reference=population)
        assert ratio > 2.0, f"the criterion cannot tell P = 2 from the population ({where})"
