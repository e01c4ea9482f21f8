"""The ReLU theory where it is hardest: the long approach to the teacher (fields becoming
collinear, where the closed forms meet their 0 / 0 and the right-hand side its kink) and the
fixed-point tools at and away from that kink.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from metaode.config import Config, ConfigError, TheoryUnavailable
from metaode.solvers import fixedpoints
from metaode.solvers.integrate import solve
from metaode.theory.state import unpack
from metaode.theory.system import build_system
from metaode.trajectory import SUCCESS


def teacher_learning(alpha_max: float = 300.0, noise: float = 0.0) -> Config:
    """sgd of a ReLU student of K = M = 2 learning a ReLU teacher with a fixed head."""
    return Config.from_dict({
        "teacher": {"M": 2, "activation": "relu", "u0": [1.0, 1.0], "noise": noise},
        "student": {"K": 2, "activation": "relu", "Q0": [[0.2, 0.1], [0.1, 0.2]],
                    "R0": [[0.01, 0.012], [0.011, 0.01]], "w0": [1.0, 1.0]},
        "training": {"algorithm": "sgd", "lr": 0.5, "lr_head": 0.0, "alpha_max": alpha_max},
        "output": {"points": 61},
    })


@pytest.fixture(scope="module")
def long_run():
    config = teacher_learning()
    system = build_system(config)
    return system, solve(system)


def test_the_student_reaches_the_teacher(long_run):
    """Through the plateau to perfect specialisation: every student unit ends collinear with a
    teacher unit (1 - r^2 < 1e-9), where the generic I4 is 0 / 0 and the collinear fields are
    merged; the run stays valid and the error falls from 0.52 to the rounding floor of the
    arc-cosine kernel near collinearity (sqrt of a determinant known to 1e-16: ~1e-8)."""
    system, trajectory = long_run
    assert trajectory.status == SUCCESS, trajectory.message
    assert trajectory.error[0] > 0.5
    assert abs(trajectory.error[-1]) < 1e-8
    Q, R, _ = unpack(trajectory.states[-1], 2, 2)
    r = np.abs(R) / np.sqrt(np.outer(np.diag(Q), np.diag(system.T)))
    assert np.all(1 - r.max(axis=1) ** 2 < 1e-9)


def test_the_specialised_state_is_refused_by_the_stability_tools(long_run):
    system, trajectory = long_run
    with pytest.raises(ValueError, match="not differentiable where two fields are collinear"):
        fixedpoints.stability(system, trajectory.states[-1])


def test_the_symmetric_plateau_is_a_saddle(long_run):
    """Away from collinearity the Jacobian is by central differences: Newton finds the symmetric
    fixed point from the plateau of the run, and it has an unstable direction (the escape)."""
    system, trajectory = long_run
    on_plateau = trajectory.states[int(np.argmin(np.abs(trajectory.alpha - 20.0)))]
    point = fixedpoints.symmetric_plateau(system, on_plateau)
    assert point.converged, point.message
    assert np.max(np.abs(system.rhs(0.0, point.y))) < 1e-12
    stability = fixedpoints.stability(system, point.y)
    assert stability.n_unstable >= 1
    assert stability.eigenvalues[-1].real < 0


def test_config_errors_survive_a_process_boundary():
    err = pickle.loads(pickle.dumps(TheoryUnavailable("student.activation", "why")))
    assert isinstance(err, ConfigError) and str(err) == "student.activation: why"
