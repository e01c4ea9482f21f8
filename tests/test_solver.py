"""``solvers.integrate.solve``: convergence in the tolerance, agreement of methods, divergence.

The reference curve is the sgd ODE of a K = M = 2 student trained on both layers (lr = 0.5) from an
unspecialised start to alpha = 50: the error falls from 0.32 through the specialisation to ~0.01,
so the flow has both fast and slow phases.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from metaode.config import Config
from metaode.solvers.integrate import COMPILED, solve
from metaode.testing import COLLAPSE, SQUARE, BrokenSystem
from metaode.theory.state import unpack
from metaode.theory.system import DIVERGENCE_BOUND, build_system
from metaode.trajectory import DIVERGED, SUCCESS

#: The compiled DOP853 (the default) and scipy's, which must report failures alike.
INTEGRATORS = [COMPILED, "DOP853"]

BASE = {
    "teacher": {"M": 2},
    "student": {"K": 2, "Q0": [[0.5, 0.1], [0.1, 0.4]], "R0": [[0.2, 0.0], [0.05, 0.1]],
                "w0": [0.3, 0.2]},
    "training": {"algorithm": "sgd", "lr": 0.5, "lr_head": 0.5, "alpha_max": 50.0},
    "output": {"points": 101},
}


def curve(system, method: str, rtol: float) -> np.ndarray:
    """error and state at the records, shape (records, 1 + state size)."""
    traj = solve(system, method=method, rtol=rtol, atol=rtol * 1e-2)
    assert traj.status == SUCCESS, traj.message
    return np.column_stack([traj.error, traj.states])


@pytest.fixture(scope="module")
def system():
    return build_system(Config.from_dict(BASE))


@pytest.fixture(scope="module")
def reference(system):
    return curve(system, "DOP853", 1e-11)


def test_tolerance_convergence(system, reference):
    """Tightening rtol changes the curve by no more than ~rtol.

    The entries are O(1) and the flow is contracting (a learning curve), so the global error of an
    adaptive integrator stays within a small multiple of its per-step tolerance; we allow 10 rtol
    (measured: 1.8 rtol at rtol = 1e-6, 1.1 rtol at 1e-8).
    """
    for method in INTEGRATORS:
        for rtol in (1e-6, 1e-8):
            diff = np.abs(curve(system, method, rtol) - reference).max()
            assert diff < 10 * rtol, (method, rtol, diff)
        # Halving the tolerance: the curves at rtol and rtol / 2 agree to 10 rtol as well.
        diff = np.abs(curve(system, method, 1e-8) - curve(system, method, 5e-9)).max()
        assert diff < 1e-7, method


@pytest.mark.parametrize("method", [COMPILED, "RK45", "LSODA", "Radau"])
def test_methods_agree(system, reference, method):
    """Compiled DOP853, explicit (RK45), switching (LSODA) and implicit (Radau) integrators give
    the same curve as scipy's DOP853.

    At rtol = 1e-9 each is within 10 rtol of the DOP853 reference (measured <= 0.6 rtol).
    """
    rtol = 1e-9
    diff = np.abs(curve(system, method, rtol) - reference).max()
    assert diff < 10 * rtol, (method, diff)


def _diverged_at(message: str) -> float:
    match = re.search(r"alpha = ([0-9.eE+-]+)", message)
    assert match, message
    return float(match.group(1))


@pytest.mark.parametrize("method", INTEGRATORS)
def test_runaway_is_reported_with_its_alpha_and_records_kept(method):
    """dy/dalpha = y^2 entrywise (``flows.SQUARE``): y = y0 / (1 - y0 alpha)."""
    config = Config.from_dict(BASE).replace("training.alpha_max", 5.0)
    system = BrokenSystem(config, SQUARE)
    traj = solve(system, method=method)
    times = config.times()
    y0 = system.initial_state()
    blow_up = 1.0 / y0.max()  # Q_00 = 0.5: alpha = 2
    assert traj.status == DIVERGED
    assert f"exceeded {DIVERGENCE_BOUND:g}" in traj.message and "Q_0_0" in traj.message
    # |Q_00| passes the bound at alpha = blow_up - 1 / DIVERGENCE_BOUND, within one (tiny, near a
    # pole) step: the reported alpha is blow_up to ~1e-6.
    assert _diverged_at(traj.message) == pytest.approx(blow_up, abs=1e-5)
    # Every record before the divergence is kept (the steps near the pole are short, so the last
    # good step lies beyond the last record before blow_up) and is the exact solution to ~rtol.
    n = int(np.sum(times < blow_up))
    assert len(traj.alpha) == n and np.array_equal(traj.alpha, times[:n])
    exact = y0 / (1 - np.outer(traj.alpha, y0))
    np.testing.assert_allclose(traj.states, exact, rtol=1e-5)
    assert len(traj.error) == n and np.all(np.isfinite(traj.error))


@pytest.mark.parametrize("method", INTEGRATORS)
def test_lost_covariance_is_reported(method):
    """Only Q_01 moves, dQ_01/dalpha = Q_01 (``flows.COLLAPSE``): Q_01 = 0.1 e^alpha overtakes
    sqrt(Q_00 Q_11)."""
    config = Config.from_dict(BASE).replace("training.alpha_max", 5.0)
    traj = solve(BrokenSystem(config, COLLAPSE), method=method)
    onset = np.log(np.sqrt(0.5 * 0.4) / 0.1)  # Q_01^2 = Q_00 Q_11 at alpha = 1.498
    assert traj.status == DIVERGED
    assert "positive semi-definite" in traj.message
    # Reported at the first accepted step past the onset: steps of this smooth flow are < 1
    # (measured: reported at alpha = 2.19, the last record kept is 1.45).
    assert onset <= _diverged_at(traj.message) < onset + 1.0
    assert len(traj.alpha) > 0 and traj.alpha[-1] < onset
    np.testing.assert_allclose(traj.states[:, 1], 0.1 * np.exp(traj.alpha), rtol=1e-6)


def test_huge_learning_rate_grows_norms_without_blow_up():
    """lr = 100 (the schema's maximum): the erf units saturate and Q_kk grows ~linearly in alpha.

    This is the classical unbounded-norm regime above the maximal learning rate (Saad & Solla), but
    g'(lambda) ~ Q^-1/2 makes it a slow growth, not a finite-time blow-up: the ODE stays
    integrable and must be reported as SUCCESS with every record.
    """
    config = Config.from_dict(BASE).replace("training.lr", 100.0)
    config = config.replace("training.lr_head", 0.0).replace("training.alpha_max", 100.0)
    traj = solve(build_system(config))
    assert traj.status == SUCCESS, traj.message
    assert len(traj.alpha) == len(config.times())
    q00 = np.array([unpack(y, 2, 2)[0][0, 0] for y in traj.states])
    assert np.all(np.diff(q00) > 0) and q00[-1] > 100 * q00[0]


def test_a_student_unit_of_zero_norm_starts_unaligned():
    """Q0 with Q_00 = 0 (unit 0 starts at J_0 = 0, R_0m = 0) is a valid start: the unit grows away
    from zero (g'(0) != 0), and its normalised overlaps r_0m = R_0m / sqrt(Q_00 T_mm) count as 0
    at alpha = 0 instead of 0/0, so the specialisation index is that of unit 1 alone, halved."""
    config = Config.from_dict({**BASE, "student": {**BASE["student"], "Q0": [[0.0, 0.0],
                                                                             [0.0, 0.4]],
                                                   "R0": [[0.0, 0.0], [0.05, 0.1]]}})
    traj = solve(build_system(config))
    assert traj.status == SUCCESS, traj.message
    r1 = np.array([0.05, 0.1]) / np.sqrt(0.4)  # T = I
    assert traj.column("specialisation")[0] == pytest.approx((r1.max() - r1.min()) / 2)
    Q, _, _ = unpack(traj.states[-1], 2, 2)
    assert Q[0, 0] > 0.1
