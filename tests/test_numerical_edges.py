"""Numerical edges: covariances at the edge of validity, learning rates beyond stability, huge
horizons. Theory and simulation either integrate them (finite, still a covariance) or stop with
status 1 and a message that says at which alpha and why, keeping the trajectory up to there.

What counts as what (theory.system): a state entry that is not finite or beyond 1e8, or
Omega = [[Q, R], [R^T, T]] whose smallest eigenvalue is below -tol max(1, max |Omega|)
(tol = 1e-10 for the config, min(1e-2, max(1e-10, 10 (rtol + atol))) along an integration) stops a
run at the step (theory) or chunk of steps (simulation) where it happens; a record with
max_k Q_kk > solver.max_norm max_m T_mm (a runaway: the slow growth of the norms above the maximal
learning rate) or with an observable that is not finite stops it at that record.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from metaode.cli import main
from metaode.config import PSD_TOLERANCE, Config, ConfigError
from metaode.io import read_csv
from metaode.simulations.run import simulate
from metaode.solvers.integrate import COMPILED, solve
from metaode.testing import DRIFT, FRAGILE, NAN_OBSERVABLE, NAN_RHS, BrokenSystem
from metaode.theory.state import unpack
from metaode.theory.system import build_system, state_problem
from metaode.trajectory import DIVERGED, SUCCESS

#: The compiled DOP853 (the default) and scipy's, which must report failures alike.
INTEGRATORS = [COMPILED, "DOP853"]

SGD = {
    "teacher": {"M": 2},
    "student": {"K": 2, "Q0": [[0.5, 0.1], [0.1, 0.4]], "R0": [[0.2, 0.0], [0.05, 0.1]],
                "w0": [0.3, 0.2]},
    "training": {"algorithm": "sgd", "lr": 0.5, "lr_head": 0.5, "alpha_max": 50.0},
    "output": {"points": 51},
}


def alpha_of(message: str) -> float:
    match = re.search(r"alpha = ([0-9.eE+-]+)", message)
    assert match, message
    return float(match.group(1))


def smallest_eigenvalue(states: np.ndarray, T: np.ndarray) -> float:
    """min over records of the smallest eigenvalue of Omega / max(1, max |Omega|)."""
    K, M = 2, T.shape[0]
    lowest = np.inf
    for y in states:
        Q, R, _ = unpack(y, K, M)
        omega = np.block([[Q, R], [R.T, T]])
        lowest = min(lowest, np.linalg.eigvalsh(omega)[0] / max(1.0, np.abs(omega).max()))
    return lowest


EDGES = {
    # two saturated student units (|J|^2 = 1e4 |B|^2), both copies of teacher unit 0: Omega is
    # singular and the arcsin arguments Q_01 / sqrt((1 + Q_00)(1 + Q_11)) = 1e4 / (1 + 1e4) and
    # R_k0 / sqrt((1 + Q_kk)(1 + T_00)) sit at 1 - 1e-4
    "saturated-aligned": {"student.Q0": [[1e4, 1e4], [1e4, 1e4]],
                          "student.R0": [[100.0, 0.0], [100.0, 0.0]], "student.w0": [0.5, 0.5]},
    # two unit-norm copies of teacher unit 0: Omega of rank 2 out of 4
    "singular": {"student.Q0": [[1.0, 1.0], [1.0, 1.0]],
                 "student.R0": [[1.0, 0.0], [1.0, 0.0]]},
    # Q nearly singular: det Q = 2e-12
    "nearly-singular-Q": {"student.Q0": [[1.0, 1 - 1e-12], [1 - 1e-12, 1.0]],
                          "student.R0": [[0.0, 0.0], [0.0, 0.0]]},
    # the same singular start for population anil and few-shot anil (P = 4, four-point moments
    # of a singular field covariance)
    "anil-singular": {"training.algorithm": "anil", "teacher.task_std": 0.5,
                      "student.Q0": [[1.0, 1.0], [1.0, 1.0]],
                      "student.R0": [[1.0, 0.0], [1.0, 0.0]]},
    "fewshot-singular": {"training.algorithm": "anil", "teacher.task_std": 0.5,
                         "training.support": 4, "student.Q0": [[1.0, 1.0], [1.0, 1.0]],
                         "student.R0": [[1.0, 0.0], [1.0, 0.0]], "training.alpha_max": 5.0,
                         "output.points": 6, "theory.mc_tasks": 200},
}


@pytest.mark.parametrize("case", EDGES)
def test_edge_covariances_integrate_and_stay_covariances(case):
    """Theory and simulation run through singular and saturated covariances: every record kept,
    finite, and Omega positive semi-definite within the check's tolerance (measured: smallest
    relative eigenvalue >= -7e-12 for the theory, the networks' overlaps are Gram matrices)."""
    config = Config.from_dict(SGD).replace(EDGES[case])
    system = build_system(config)
    theory = solve(system)
    assert theory.status == SUCCESS, theory.message
    assert len(theory.alpha) == len(config.times())
    assert np.all(np.isfinite(theory.states))
    assert all(np.all(np.isfinite(v)) for v in theory.observables.values())
    assert smallest_eigenvalue(theory.states, system.T) >= -system.psd_tolerance
    short = config.replace({"training.alpha_max": 1.0, "output.points": 5, "metatest.at": [1.0]})
    (sim,) = simulate(short, N=200, seeds=[0], progress=False, workers=1)
    assert sim.status == SUCCESS, sim.message
    assert np.all(np.isfinite(sim.states)) and len(sim.alpha) == 5
    assert smallest_eigenvalue(sim.states, system.T) >= -PSD_TOLERANCE
    # both start from the config's overlaps (the networks reproduce a singular Omega to rounding)
    np.testing.assert_allclose(sim.states[0], theory.states[0], rtol=0, atol=1e-9 * 1e4)


def test_config_tolerance_of_a_singular_covariance():
    """The config accepts a covariance that is singular up to rounding (smallest eigenvalue
    -5e-11 relative, inside PSD_TOLERANCE = 1e-10), and the theory starts from it; 1e-9 is
    refused naming student.Q0."""
    eps = 1e-10  # Q_01 = 1 + eps: eigenvalues 2 + eps and -eps (relative to max |Omega| ~ 1)
    near = Config.from_dict(SGD).replace({"student.Q0": [[1.0, 1.0 + eps / 2], [1.0 + eps / 2,
                                                                                 1.0]],
                                          "student.R0": [[0.0, 0.0], [0.0, 0.0]],
                                          "training.alpha_max": 1.0, "output.points": 3})
    theory = solve(build_system(near))
    assert theory.status == SUCCESS, theory.message
    with pytest.raises(ConfigError) as err:
        near.replace("student.Q0", [[1.0, 1.0 + 20 * eps], [1.0 + 20 * eps, 1.0]])
    assert err.value.key == "student.Q0"


def test_loss_of_positive_definiteness_beyond_pairwise_checks():
    """Q_01 = -0.5 with R_00 = R_10 = 0.9: every 2 x 2 minor of Omega is valid, the 3 x 3 one is
    not (det < 0); the state check finds it and names the smallest eigenvalue."""
    y = np.array([1.0, -0.5, 1.0, 0.9, 0.0, 0.9, 0.0, 0.1, 0.1])  # Q_00 Q_01 Q_11 R.. w..
    message = state_problem(y, 2, 2, np.eye(2))
    Q, R, _ = unpack(y, 2, 2)
    lowest = np.linalg.eigvalsh(np.block([[Q, R], [R.T, np.eye(2)]]))[0]
    assert lowest < -0.1
    assert message.startswith("[[Q, R], [R^T, T]] lost positive semi-definiteness")
    assert f"{lowest:.3g}" in message


def test_state_check_agrees_with_the_eigenvalues_near_the_boundary():
    """The covariance check's shifted Cholesky test (``state_check``) gives the verdict of the
    smallest eigenvalue against -tolerance max(1, max |Omega|) for Gram matrices moved across that
    threshold: smallest eigenvalues from -10 to +10 tolerances, K = 1..4, M = 1..3 (a state within
    1e-3 tolerance of the threshold is skipped: there rounding may decide either way)."""
    rng = np.random.default_rng(7)
    tolerance, checked = 1e-6, 0
    for _ in range(400):
        K, M = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        n = K + M
        V = rng.standard_normal((n, n - 1))  # a singular Gram matrix, then shifted
        omega = V @ V.T
        scale = max(1.0, np.abs(omega).max())
        omega -= rng.uniform(-10, 10) * tolerance * scale * np.eye(n)
        lowest = np.linalg.eigvalsh(omega)[0]
        threshold = -tolerance * max(1.0, np.abs(omega).max())
        if abs(lowest - threshold) < 1e-3 * tolerance * scale:
            continue
        T = omega[K:, K:]
        iu = np.triu_indices(K)
        y = np.concatenate([omega[:K, :K][iu], omega[:K, K:].ravel(), np.zeros(K)])
        message = state_problem(y, K, M, T, tolerance)
        assert bool(message) == (lowest < threshold), (K, M, lowest, threshold, message)
        checked += 1
    assert checked > 350


@pytest.mark.parametrize("method", INTEGRATORS)
def test_integration_that_leaves_the_covariances_stops_there(method):
    """A straight line in state space (``flows.DRIFT``), y(alpha) = y0 + alpha d, from a valid
    Omega (R = 0) to the invalid one above at alpha = 1 (R_00 = R_10 = 0.9 alpha)."""
    config = Config.from_dict(SGD).replace({"student.Q0": [[1.0, -0.5], [-0.5, 1.0]],
                                            "student.R0": [[0.0, 0.0], [0.0, 0.0]],
                                            "training.alpha_max": 2.0, "output.points": 41})
    traj = solve(BrokenSystem(config, DRIFT), method=method)
    # Omega(alpha) is singular where 2 (0.9 alpha)^2 = 1 - 0.5 (the Schur complement of T):
    # alpha* = sqrt(0.25) / 0.9 = 0.5556
    onset = np.sqrt(0.25) / 0.9
    assert traj.status == DIVERGED and "positive semi-definiteness" in traj.message
    # reported at the first accepted step past the onset (steps of a linear flow are long, but
    # never beyond alpha_max); every record before the onset is kept and exact
    assert onset < alpha_of(traj.message) <= 2.0
    assert traj.alpha[-1] < alpha_of(traj.message)
    np.testing.assert_allclose(traj.states[:, 3], 0.9 * traj.alpha, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", INTEGRATORS)
def test_failing_right_hand_side_and_observable_are_divergences(method):
    """``flows.FRAGILE``: the sgd flow whose compiled right-hand side raises ZeroDivisionError
    where Q_00 > 0.52; ``flows.NAN_RHS``: its right-hand side is NaN there (a failure like the
    exception, not a step size shrunk to NaN or to nothing);
    ``flows.NAN_OBSERVABLE``: its error is NaN there (first reached at the record alpha = 1.7)."""
    config = Config.from_dict(SGD).replace({"training.alpha_max": 3.0, "output.points": 31})
    plain = solve(build_system(config), method=method)
    crossing = int(np.argmax(plain.states[:, 0] > 0.52))  # the first record with Q_00 > 0.52
    assert plain.alpha[crossing] == pytest.approx(1.7)
    fragile = solve(BrokenSystem(config, FRAGILE, 0.52), method=method)
    assert fragile.status == DIVERGED
    assert "right-hand side failed at alpha" in fragile.message
    assert "ZeroDivisionError: division by zero" in fragile.message
    # the records up to the last accepted step are kept, identical to the plain run's (the
    # failing step, an 8th-order step of length ~1, evaluated a stage past the crossing)
    assert 2 <= len(fragile.alpha) <= crossing
    assert alpha_of(fragile.message) > fragile.alpha[-1]
    np.testing.assert_array_equal(fragile.states, plain.states[: len(fragile.alpha)])
    not_finite = solve(BrokenSystem(config, NAN_RHS, 0.52), method=method)
    assert not_finite.status == DIVERGED
    assert not_finite.message == fragile.message.replace(
        "ZeroDivisionError: division by zero",
        "FloatingPointError: component 0 of the right-hand side is not finite (nan)")
    np.testing.assert_array_equal(not_finite.states, fragile.states)

    nan = solve(BrokenSystem(config, NAN_OBSERVABLE, 0.52), method=method)
    first = crossing
    assert first > 0
    assert nan.status == DIVERGED
    assert nan.message == (f"diverged at alpha = {plain.alpha[first]:.6g}: the observable "
                           "error is not finite (nan)")
    np.testing.assert_array_equal(nan.states, plain.states[:first])
    assert np.all(np.isfinite(nan.error))


def test_runaway_at_huge_alpha_max(tmp_path, capsys):
    """lr = 100 (above the maximal learning rate): Q_00 grows like alpha^0.6 without blowing up;
    with alpha_max = 1e9 it passes the default solver.max_norm = 1e5 near alpha = 6.6e6, where
    the run stops (measured: 23,753 right-hand side evaluations, ~1 s)."""
    raw = {**SGD, "training": {**SGD["training"], "lr": 100.0, "lr_head": 0.0,
                               "alpha_max": 1e9},
           "output": {"points": 101, "spacing": "log", "log_start": 1.0}}
    path = tmp_path / "runaway.toml"
    path.write_text(TOML_TEMPLATE.format(**{"lr": 100.0, "lr_head": 0.0, "alpha_max": 1e9}))
    config = Config.from_dict(raw)
    times = config.times()
    assert main(["solve", str(path), "--out", str(tmp_path / "out")]) == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith("metaode solve: run failed: theory: diverged at")
    assert "runaway: Q_0_0 / max_m T_mm = " in line
    assert "exceeded solver.max_norm = 100000" in line
    (kept,) = read_csv(tmp_path / "out" / "theory.csv", 2, 2)
    n = len(kept.alpha)
    # the stop is the first record past the bound, the records before it are kept and below it
    assert alpha_of(line) == pytest.approx(times[n], rel=1e-6)
    assert 1e6 < alpha_of(line) < 1e7
    assert np.all(kept.states[:, 0] <= 1e5) and kept.states[-1, 0] > 5e4
    np.testing.assert_array_equal(kept.alpha, times[:n])
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["status"] == "failed" and record["exit_status"] == 1


TOML_TEMPLATE = """
[teacher]
M = 2
[student]
K = 2
Q0 = [[0.5, 0.1], [0.1, 0.4]]
R0 = [[0.2, 0.0], [0.05, 0.1]]
w0 = [0.3, 0.2]
[training]
algorithm = "sgd"
lr = {lr}
lr_head = {lr_head}
alpha_max = {alpha_max}
[output]
points = 101
spacing = "log"
log_start = 1.0
"""


def test_simulation_runaway_and_blow_up_keep_their_records():
    """The simulation applies the same checks: lr = 100 passes solver.max_norm = 20 (at a record,
    like the theory); lr_head = 100 at N = 10 overflows (a non-finite state or one beyond 1e8,
    found at the chunk of steps where it happens)."""
    runaway = Config.from_dict(SGD).replace({"training.lr": 100.0, "training.lr_head": 0.0,
                                             "training.alpha_max": 5.0, "solver.max_norm": 20.0})
    theory = solve(build_system(runaway))
    (sim,) = simulate(runaway, N=100, seeds=[0], progress=False, workers=1)
    times = np.rint(runaway.times() * 100) / 100
    for traj, grid in ((theory, runaway.times()), (sim, times)):
        assert traj.status == DIVERGED
        assert "runaway: Q_" in traj.message and "exceeded solver.max_norm = 20" in traj.message
        n = len(traj.alpha)
        assert n >= 1 and alpha_of(traj.message) == pytest.approx(grid[n], rel=1e-5)
        Q = np.array([np.diag(unpack(y, 2, 2)[0]) for y in traj.states])
        assert Q.max() <= 20.0
    blow = Config.from_dict(SGD).replace({"training.lr_head": 100.0, "training.alpha_max": 5.0})
    (sim,) = simulate(blow, N=10, seeds=[0], progress=False, workers=1)
    assert sim.status == DIVERGED
    assert re.search(r"(is not finite|exceeded 1e\+08)", sim.message), sim.message
    assert 0 < len(sim.alpha) and sim.alpha[-1] < alpha_of(sim.message)
    assert np.all(np.isfinite(sim.states))


def test_diverging_test_adaptation_is_reported(tmp_path, capsys):
    """metatest.inner_lr = 100 makes the test adaptation diverge (|1 - 100 C| > 1): the meta-test
    curve is written up to its last finite step, and the command exits 1 saying so."""
    path = tmp_path / "metatest.toml"
    path.write_text(TOML_TEMPLATE.format(lr=0.5, lr_head=0.5, alpha_max=2.0)
                    + "[metatest]\ninner_lr = 100.0\ninner_steps = 400\n")
    out = tmp_path / "out"
    assert main(["solve", str(path), "--out", str(out)]) == 1
    line = capsys.readouterr().err.strip()
    match = re.search(r"meta-test curve at alpha = 2 is not finite from (\d+) test adaptation "
                      r"steps on", line)
    assert match and "\n" not in line, line
    curve = np.loadtxt(out / "metatest_theory.csv", delimiter=",", skiprows=1, ndmin=2)
    assert len(curve) == int(match.group(1)) and np.all(np.isfinite(curve))
    assert curve[-1, 2] > 1e100  # the error grows geometrically up to the overflow


def test_huge_alpha_max_of_a_stiff_flow_with_radau():
    """At a stable learning rate the flow converges to the teacher and becomes stiff: the explicit
    DOP853 then needs ~alpha_max steps (over 3 minutes for alpha_max = 1e9), the implicit Radau
    reaches alpha_max = 1e9 in ~3,400 evaluations, at the teacher (error 0 to rounding)."""
    config = Config.from_dict(SGD).replace({"training.alpha_max": 1e9, "output.points": 101,
                                            "output.spacing": "log", "output.log_start": 1.0,
                                            "solver.method": "Radau"})
    traj = solve(build_system(config))
    assert traj.status == SUCCESS, traj.message
    assert traj.nfev < 20000
    Q, R, w = traj.order_parameters(-1)
    # the student copies the teacher (Q = R = T = I, w = u0 = 1) to the integrator's tolerance
    np.testing.assert_allclose(Q, np.eye(2), atol=1e-6)
    np.testing.assert_allclose(np.abs(R), np.eye(2), atol=1e-6)
    assert traj.error[-1] < 1e-10
