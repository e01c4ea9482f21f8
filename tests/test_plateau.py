"""Plateau measurements (``solvers.plateau``): the definitions on a learning curve with a known
plateau, and the built-in ANIL experiment (validation/default.toml), whose plateau is the
symmetric fixed point of the ANIL ODEs. The escape law against the unstable eigenvalue is tested
on the sgd plateau in tests/test_fixedpoints.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metaode.config import Config
from metaode.solvers.fixedpoints import find_fixed_point, stability, symmetric_plateau
from metaode.solvers.integrate import solve
from metaode.solvers.plateau import measure_plateau, plateau_saddle
from metaode.theory.state import state_size
from metaode.theory.system import build_system
from metaode.trajectory import SUCCESS, Trajectory

DEFAULT = Path(__file__).resolve().parents[1] / "validation" / "default.toml"


def log_error(alpha: np.ndarray) -> np.ndarray:
    """ln eps of a synthetic learning curve, -integral of the rate r(alpha) = |d ln eps / d alpha|:
    r = 1 (fall) up to 5, 0.001 + 1e-6 (alpha - 30)^2 (plateau, slowest at 30) up to 50,
    0.2 (escape) up to 80, then 0.001 (final convergence, 80 long: longer than the plateau)."""
    a = np.asarray(alpha, dtype=float)
    fall = np.minimum(a, 5.0)
    p = np.clip(a, 5.0, 50.0)
    plateau = 0.001 * (p - 5.0) + 1e-6 * ((p - 30.0) ** 3 + 25.0**3) / 3
    escape = 0.2 * (np.clip(a, 50.0, 80.0) - 50.0)
    final = 0.001 * (np.maximum(a, 80.0) - 80.0)
    return -(fall + plateau + escape + final)


def test_definitions_on_a_known_curve() -> None:
    """Records every 0.5 up to alpha = 160. The relative rate is below 0.02 (x its maximum, 1) on
    (5, 50) and (80, 160]; the first is the plateau (the trajectory leaves it), the longer second
    run is the final convergence. Centre: the slowest record, 30. Escapes: the specialisation
    index (alpha - 40) / 30 reaches 1/2 at 55; eps falls to half the height at
    50 + (ln 2 - (ln eps(30) - ln eps(50))) / 0.2, with ln eps linear there (both exact under the
    linear interpolation of the definition, up to rounding)."""
    alpha = np.linspace(0.0, 160.0, 321)
    error = np.exp(log_error(alpha))
    trajectory = Trajectory(
        alpha=alpha, states=np.zeros((alpha.size, state_size(1, 1))), K=1, M=1,
        observables={"error": error, "error_before_adaptation": error,
                     "specialisation": np.clip((alpha - 40.0) / 30.0, 0.0, 1.0)})
    plateau = measure_plateau(trajectory)
    # Records at the kinks 5 and 50 mix the neighbouring rates (central differences): not slow.
    assert (plateau.start, plateau.end, plateau.length) == (5.5, 49.5, 44.0)
    assert plateau.centre == 30.0 and plateau.height == pytest.approx(np.exp(log_error(30.0)))
    assert plateau.escape == pytest.approx(55.0, abs=1e-12)
    by_error = measure_plateau(trajectory, criterion="error", fraction=0.5)
    drop = log_error(30.0) - log_error(50.0)
    assert by_error.escape == pytest.approx(50.0 + (np.log(2.0) - drop) / 0.2, abs=1e-9)
    # No escape within the records: nan.
    assert np.isnan(measure_plateau(trajectory, level=2.0).escape)


@pytest.fixture(scope="module")
def default_anil():
    config = Config.from_toml(DEFAULT)
    system = build_system(config)
    trajectory = solve(system)
    assert trajectory.status == SUCCESS, trajectory.message
    return system, trajectory


def test_default_anil_plateau(default_anil) -> None:
    """The built-in experiment: a plateau at L_meta ~ 0.075 on alpha ~ 15 .. 35 (its config's
    description), escape (specialisation index 1/2) within 35 .. 55. Measured: plateau 14 .. 33,
    centre 22, height 0.07512, escape 47.2 (39.7 by the error falling to 0.9 of the height)."""
    _, trajectory = default_anil
    plateau = measure_plateau(trajectory)
    assert 10.0 <= plateau.start <= 20.0 and 28.0 <= plateau.end <= 40.0
    assert plateau.height == pytest.approx(0.075, abs=2e-3)
    assert 35.0 <= plateau.escape <= 55.0
    by_error = measure_plateau(trajectory, criterion="error", fraction=0.9)
    assert 35.0 <= by_error.escape <= plateau.escape


def test_default_anil_plateau_is_the_symmetric_fixed_point(default_anil) -> None:
    """Newton (central-difference Jacobian) from the plateau centre, in the symmetric subspace
    (Q_kk, Q_12, R_km, w_k equal) and in the full space, finds the same fixed point; its error is
    the plateau height within 1 % (measured 0.2 %: the trajectory's error is flat there while its
    state, 0.58 away, still approaches along the slow modes -0.012 and -0.014) and it has exactly
    one unstable eigenvalue (measured 0.0732), the escape direction."""
    system, trajectory = default_anil
    plateau = measure_plateau(trajectory)
    centre = trajectory.states[plateau.centre_index]
    restricted = symmetric_plateau(system, centre)
    full = find_fixed_point(system, centre)
    assert restricted.converged and full.converged, (restricted, full)
    # Both converge to rounding; they agree to the conditioning of the central-difference steps.
    assert np.abs(restricted.y - full.y).max() < 1e-10
    assert system.observables(full.y)["error"] == pytest.approx(plateau.height, rel=1e-2)
    eigen = stability(system, full.y)
    assert eigen.n_unstable == 1 and eigen.n_zero == 0
    assert eigen.unstable[0].real == pytest.approx(0.0732, rel=1e-2)


def test_plateau_saddle_bundles_the_three_steps(default_anil) -> None:
    """plateau_saddle = measure_plateau, symmetric_plateau from its centre, stability there."""
    system, trajectory = default_anil
    saddle = plateau_saddle(system, trajectory)
    plateau = measure_plateau(trajectory)
    assert saddle.plateau == plateau
    expected = symmetric_plateau(system, trajectory.states[plateau.centre_index])
    assert saddle.fixed_point.converged
    np.testing.assert_array_equal(saddle.fixed_point.y, expected.y)
    assert saddle.lambda_u == stability(system, expected.y).unstable.real.max()
