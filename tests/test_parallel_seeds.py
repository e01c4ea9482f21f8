"""Seeds run in worker processes give the sequential trajectories bit for bit.

``simulate(..., workers=2)`` starts a process pool (``theory.processes``); every seed owns its
generator ``default_rng(seed)`` and every process runs the same compiled kernels, so each trajectory
must be identical (exact equality, no tolerance) to ``simulate_seed`` run in this process, in the
order of the seeds given. The cases cover the three kinds of run (sgd with label noise and drawn
initial overlaps; anil with the population inner loop; anil with P support examples, whose
evaluation stream is spawned from the seed). Sizes are tiny (N = 60..100, <= 100 steps per seed):
the cost is the pool start-up, about 0.5 s per case.
"""

from __future__ import annotations

import numpy as np
import pytest

from metaode.config import Config
from metaode.simulations.run import simulate, simulate_seed

CASES = {
    "sgd": ({"teacher": {"M": 2, "noise": 0.3}, "student": {"K": 2},
             "training": {"algorithm": "sgd", "lr": 0.8, "lr_head": 0.5, "alpha_max": 1.0},
             "output": {"points": 4}}, 100),
    "anil population": ({"teacher": {"M": 2, "task_std": 0.5, "noise": 0.1},
                         "student": {"K": 2},
                         "training": {"algorithm": "anil", "inner_steps": 2, "lr": 0.5,
                                      "lr_head": 0.5, "alpha_max": 1.0, "meta_batch": 2},
                         "metatest": {"at": [0.5]}, "output": {"points": 3}}, 80),
    "anil P = 3": ({"teacher": {"task_std": 0.5, "noise": 0.1},
                    "training": {"algorithm": "anil", "support": 3, "inner_steps": 2,
                                 "alpha_max": 0.5, "query": 2},
                    "output": {"points": 3}}, 60),
}
SEEDS = [5, 2, 9]  # not sorted: the results must come back in the order asked for


def assert_identical(a, b):
    assert (a.seed, a.status, a.message, a.nfev, a.K, a.M) == (b.seed, b.status, b.message,
                                                               b.nfev, b.K, b.M)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    np.testing.assert_array_equal(a.states, b.states)
    assert list(a.observables) == list(b.observables)
    for name in a.observables:
        np.testing.assert_array_equal(a.observables[name], b.observables[name], err_msg=name)
    assert list(a.metatest) == list(b.metatest)
    for at in a.metatest:
        np.testing.assert_array_equal(a.metatest[at], b.metatest[at])


@pytest.mark.parametrize("case", list(CASES))
def test_parallel_seeds_equal_sequential_bit_for_bit(case, capfd):
    data, N = CASES[case]
    config = Config.from_dict(data)
    sequential = [simulate_seed(config, N, s, progress=False) for s in SEEDS]
    parallel = simulate(config, N, SEEDS, progress=True, workers=2)
    in_process = simulate(config, N, SEEDS, progress=False, workers=1)
    assert [r.seed for r in parallel] == SEEDS
    for seq, par, one in zip(sequential, parallel, in_process, strict=True):
        assert seq.status == 0, seq.message
        assert_identical(par, seq)
        assert_identical(one, seq)
    # the seeds differ (independent streams), so the equality above is not trivial
    assert not np.array_equal(parallel[0].states[-1], parallel[1].states[-1])
    # one bar over seeds x steps, drawn by this process; no per-seed bars from the workers
    err = capfd.readouterr().err
    assert f"{len(SEEDS)} seeds" in err
    assert "seed 5" not in err


def test_error_in_a_worker_is_raised_here():
    config = Config.from_dict(CASES["sgd"][0])
    with pytest.raises(ValueError, match="must be at least K \\+ M"):
        simulate(config, 3, [0, 1], progress=False, workers=2)  # N = 3 < K + M = 4


def test_workers_must_be_positive():
    config = Config.from_dict(CASES["sgd"][0])
    with pytest.raises(ValueError, match="workers = 0"):
        simulate(config, 100, [0, 1], progress=False, workers=0)
    assert simulate(config, 100, [], progress=False) == []
