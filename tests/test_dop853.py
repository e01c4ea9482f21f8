"""The compiled DOP853 (``solvers.dop853``, ``solver.method = "numba-DOP853"``, the default)
against scipy's DOP853, the reference.

* Trajectories: on sgd (a plateau and its escape to alpha = 300; K = 3, M = 2 with label noise
  and both layers trained) and population anil (second order with 3 inner steps; first order
  with query and meta_batch), the compiled method at the default tolerances (rtol 1e-8,
  atol 1e-10) against scipy's at rtol 1e-10, atol 1e-12 (the reference): its largest deviation
  is that of scipy's DOP853 at the default tolerances (to 10 %, plus 10 atol): the same accuracy.
  That global error is ~0.5 rtol for sgd but ~27 rtol for the anil cases, where the escape from
  the plateau amplifies the local errors (measured; the reference's own is 100x smaller).
* The same method: at equal tolerances both take the same steps (scipy's step-size control,
  error norm and first step), so the right-hand side evaluation counts agree to a few percent
  (rounding can flip one accept / reject decision on a long run) and the records agree within
  the tolerance.
* Few-shot anil (a compiled flow that carries its support sets): the same steps, records and
  stream uncertainties as scipy's DOP853 on the same right-hand side.
* Divergence and runaway stop at the same record with the same kind of message as scipy's
  (tests/test_solver.py and tests/test_numerical_edges.py run every failure kind under both).
* numba's disk cache works across processes for the compiled integrator: checked in
  tests/test_activation_registry.py, whose child processes have a cache directory of their own.
"""

from __future__ import annotations

import numpy as np
import pytest

from metaode.config import Config
from metaode.solvers.integrate import COMPILED, solve
from metaode.theory.system import build_system
from metaode.trajectory import DIVERGED, SUCCESS

CASES = {
    "sgd_plateau": {
        "teacher": {"M": 2},
        "student": {"K": 2, "Q0": [[0.2, 0.0], [0.0, 0.2]], "R0": [[1e-3, 0.0], [0.0, 5e-4]],
                    "w0": [0.1, 0.1]},
        "training": {"algorithm": "sgd", "lr": 0.5, "lr_head": 0.0, "alpha_max": 300.0},
        "output": {"points": 151},
    },
    "sgd_noise_3x2": {
        "teacher": {"M": 2, "noise": 0.3},
        "student": {"K": 3},
        "training": {"algorithm": "sgd", "lr": 0.8, "lr_head": 0.4, "alpha_max": 100.0},
        "output": {"points": 101},
    },
    "anil_second_3steps": {
        "teacher": {"M": 2, "task_std": 0.5},
        "student": {"K": 2},
        "training": {"algorithm": "anil", "order": "second", "inner_steps": 3, "inner_lr": 0.8,
                     "lr": 0.5, "lr_head": 0.5, "alpha_max": 100.0},
        "output": {"points": 101},
    },
    "anil_first_batched": {
        "teacher": {"M": 2, "task_std": 0.7, "noise": 0.1},
        "student": {"K": 2},
        "training": {"algorithm": "anil", "order": "first", "inner_steps": 2, "inner_lr": 0.5,
                     "lr": 1.0, "lr_head": 0.3, "query": 4, "meta_batch": 2,
                     "alpha_max": 100.0},
        "output": {"points": 101},
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_trajectory_matches_a_tight_scipy_reference(name: str) -> None:
    config = Config.from_dict(CASES[name])
    system = build_system(config)
    ours = solve(system)
    assert config.solver.method == COMPILED
    theirs = solve(system, method="DOP853")
    reference = solve(system, method="DOP853", rtol=1e-10, atol=1e-12)
    for traj in (ours, theirs, reference):
        assert traj.status == SUCCESS, traj.message
    atol = config.solver.atol
    for column in reference.columns()[1:]:
        if column.startswith("align_"):
            assert np.array_equal(ours.column(column), reference.column(column)), column
            continue
        ref = reference.column(column)
        deviation = np.abs(ours.column(column) - ref).max()
        assert deviation <= 1.1 * np.abs(theirs.column(column) - ref).max() + 10 * atol, column


@pytest.mark.parametrize("name", ["sgd_plateau", "anil_second_3steps"])
def test_same_steps_as_scipy_at_equal_tolerances(name: str) -> None:
    system = build_system(Config.from_dict(CASES[name]))
    for rtol in (1e-6, 1e-8):
        ours = solve(system, rtol=rtol, atol=rtol * 1e-2)
        theirs = solve(system, method="DOP853", rtol=rtol, atol=rtol * 1e-2)
        assert abs(ours.nfev - theirs.nfev) <= 0.03 * theirs.nfev, (rtol, ours.nfev, theirs.nfev)
        assert np.abs(ours.states - theirs.states).max() <= 10.0 * rtol


def test_fewshot_flow_takes_scipys_steps() -> None:
    """Few-shot anil (P = 4, 2 inner steps, second order, 64 support sets in 8 streams): the
    compiled flow under numba-DOP853 and the same right-hand side under scipy's DOP853 at equal
    tolerances take the same number of steps and give the same trajectory and observables to
    1e-10 (measured: 1.6e-12) and the same stream uncertainty to 1e-9 (measured: 1.7e-10; each
    stream integrates the rougher right-hand side of its 8 support sets)."""
    raw = {**CASES["anil_second_3steps"], "output": {"points": 21}}
    raw["training"] = {**raw["training"], "inner_steps": 2, "support": 4, "alpha_max": 20.0}
    raw["theory"] = {"mc_tasks": 64, "mc_rtol": 0.0}
    system = build_system(Config.from_dict(raw))
    assert system.flow is not None
    ours, theirs = solve(system), solve(system, method="DOP853")
    assert ours.status == theirs.status == SUCCESS, (ours.message, theirs.message)
    assert abs(ours.nfev - theirs.nfev) <= 0.03 * theirs.nfev, (ours.nfev, theirs.nfev)
    worst = "max_relative_error"
    assert ours.monte_carlo[worst] == pytest.approx(theirs.monte_carlo[worst], rel=1e-8)
    assert {**ours.monte_carlo, worst: 0} == {**theirs.monte_carlo, worst: 0}
    for column in theirs.columns()[1:]:
        if not column.startswith("mc_err_"):
            assert np.abs(ours.column(column) - theirs.column(column)).max() <= 1e-10, column
    for column, err in theirs.uncertainty.items():
        assert np.abs(ours.uncertainty[column] - err).max() <= 1e-9, column


def test_runaway_stops_at_the_same_record() -> None:
    """lr = 100 above the maximal learning rate: Q_00 passes solver.max_norm near alpha = 6.6e6
    (tests/test_numerical_edges.py); both integrators keep the same records and name the same
    record in the message."""
    raw = {**CASES["sgd_noise_3x2"],
           "training": {"algorithm": "sgd", "lr": 100.0, "lr_head": 0.0, "alpha_max": 1e9},
           "output": {"points": 101, "spacing": "log", "log_start": 1.0}}
    system = build_system(Config.from_dict(raw))
    ours, theirs = solve(system), solve(system, method="DOP853")
    assert ours.status == theirs.status == DIVERGED
    assert "runaway" in ours.message and ours.message == theirs.message
    assert len(ours.alpha) == len(theirs.alpha)
