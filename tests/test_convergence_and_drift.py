"""Simulation against theory on the default experiment (validation/default.toml, ANIL K = M = 2):
the N^-1/2 convergence of the order parameters, and the local drift check at three states.

(a) ``validation.convergence.convergence_study`` up to alpha = 5 (instead of 80). The N^-1/2 law
is local in alpha: at any fixed alpha the fluctuation of (Q, R, w) is a sum of alpha N increments
of size O(1/N), so a short horizon tests the law as well as a long one, and the full horizon costs
minutes (alpha N outer steps of O(N) work, per N and seed). N = 125 .. 2000 rather than
250 .. 4000: the same span of log N at an eighth of the cost per seed, spent on seeds. The per-seed
deviations scatter with a coefficient of variation of 0.55, so the fitted slope is noisy. Its
spread with 32 seeds, measured on 5 disjoint sets of 32 seeds (0 .. 31, the test's, -0.583; and
200 .. 327: -0.538, -0.524, -0.477, -0.501) is 0.039 (0.037 and 0.048 extrapolated from sets of 16
and of 8 seeds), well below the 0.15 the test allows around -1/2 (8 seeds at N = 250 .. 4000 would
give ~0.1). The 160 seeds average -0.525; a random set of 32 seeds falls outside -0.5 +- 0.15 with
probability ~1e-3 (3.1 standard deviations on the steep side).

(b) ``validation.drift.local_drift_check`` at alpha = 2 (error 0.35, before the plateau), 25 (on
the plateau: error 0.075, units not specialised) and 60 (after: specialisation 0.76), one
simulated trajectory at N = 2000, 10^4 one-step continuations per state. Every entry of the total
increment, its drift part and its lr^2 part (9 + 9 + 3 entries, 63 in all) must satisfy
|z| <= 4, z = (mean - ODE) / standard error: with 10^4 continuations z is normal to good accuracy,
P(|z| > 4) = 6.3e-5 per entry, 0.4 % for all 63 (measured max |z| = 1.8).
Finite N: with a one-step window the fields of the fresh input are exactly Gaussian with the
network's exact overlaps, so the mean drift part equals the ODE's drift at that state for every N
(no bias). The lr^2 part contains |x|^2 / N = 1 + O(N^-1/2), correlated with the fields only
through the K + M = 4 directions they span: a relative bias of a few / N ~ 0.2 % at N = 2000,
against the Monte Carlo error of the lr^2 part, 2 - 3 % of its value with 10^4 continuations
(measured): the bias is a tenth of the error or less.
Power: the same increments tested against the ODE of a wrong config are rejected: lr 10 % too
large changes the lr^2 part by 21 % (measured |z| 9.1 .. 9.8 at the three states; asserted > 6 =
1.5 x the bound), first instead of second order changes the drift (measured |z| = 14 at alpha = 2;
asserted > 6).
"""

from __future__ import annotations

import numpy as np
import pytest

from metaode.config import load_config
from metaode.theory.system import build_system
from metaode.validation.convergence import convergence_study
from metaode.validation.drift import local_drift_check, rhs_parts

DEFAULT = load_config()

# --- (a) convergence ---------------------------------------------------------------------------

N_VALUES = (125, 250, 500, 1000, 2000)
SEEDS = range(32)


def test_deviation_from_the_ode_falls_like_inverse_sqrt_N() -> None:
    short = DEFAULT.replace("metatest.at", [0.0]).replace("training.alpha_max", 5.0)
    result = convergence_study(short, N_VALUES, SEEDS)
    D = np.asarray(result["deviation"])
    # 16 x N shrinks D by 4 (the RMS over 32 seeds scatters by ~10 %)
    assert D[-1] < 0.5 * D[0], D
    assert abs(result["slope"] + 0.5) <= 0.15, result["slope"]


# --- (b) local drift ---------------------------------------------------------------------------

N_DRIFT = 2000
REPEATS = 10**4
STATES = (2.0, 25.0, 60.0)
BOUND = 4.0
POWER = 1.5 * BOUND


@pytest.fixture(scope="module")
def drift_checks() -> dict[float, dict]:
    """One-step continuations from the states one simulated trajectory (seed 0) reaches."""
    return {a: local_drift_check(DEFAULT, N_DRIFT, a, REPEATS, progress=False) for a in STATES}


def test_states_are_before_on_and_after_the_plateau(drift_checks) -> None:
    system = build_system(DEFAULT)
    obs = {a: system.observables(drift_checks[a]["state"]) for a in STATES}
    assert obs[2.0]["error"] > 0.2
    assert 0.06 < obs[25.0]["error"] < 0.09 and obs[25.0]["specialisation"] < 0.2
    assert obs[60.0]["specialisation"] > 0.5


@pytest.mark.parametrize("alpha0", STATES)
def test_local_drift_matches_the_ode(drift_checks, alpha0: float) -> None:
    check = drift_checks[alpha0]
    n_q = DEFAULT.K * (DEFAULT.K + 1) // 2
    for part in ("", "drift_"):
        z = check[f"{part}z"]
        assert np.all(check[f"{part}stderr"] > 0.0)
        assert np.abs(z).max() <= BOUND, (part, z)
    z = check["diffusion_z"][:n_q]  # only Q has an lr^2 term
    assert np.all(check["diffusion_stderr"][:n_q] > 0.0)
    assert np.abs(z).max() <= BOUND, ("diffusion", z)


@pytest.mark.parametrize("alpha0", STATES)
def test_local_drift_rejects_a_wrong_learning_rate(drift_checks, alpha0: float) -> None:
    check = drift_checks[alpha0]
    n_q = DEFAULT.K * (DEFAULT.K + 1) // 2
    wrong = DEFAULT.replace("training.lr", 1.1 * DEFAULT.training.lr)
    _, diffusion = rhs_parts(wrong, check["state"])
    z = (check["diffusion_mean"][:n_q] - diffusion[:n_q]) / check["diffusion_stderr"][:n_q]
    assert np.abs(z).max() > POWER, z


def test_local_drift_rejects_first_order(drift_checks) -> None:
    check = drift_checks[2.0]
    drift, _ = rhs_parts(DEFAULT.replace("training.order", "first"), check["state"])
    z = (check["drift_mean"] - drift) / check["drift_stderr"]
    assert np.abs(z).max() > POWER, z
