"""The benchmark's interface to nn2pp (benchmarks/nn2pp.py) without its binary: the options a
config maps to, the initial-condition files, and the parser of its output format (a fixture
written by hand after the format of its scmpp_ode.cpp: ``#`` comment lines, then ``t, eg, et,
eg_frac, et_frac, diff, Q_kl (k <= l), R_km, A_m, v_k`` with 6 significant digits)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import nn2pp
from metaode.config import Config

# K = 2, M = 1: 6 + 3 + 2 + 1 + 2 = 14 columns; times as nn2pp prints them (6 digits).
OUTPUT = """\
# This is scm++ ODE integrator for two-layer NN
# g1=g2=erf, M=1, K=2, steps/N=1000, seed=0
# steps / N, eg, et, diff
0, 0.666667, nan, nan, nan, nan, 1, -6.80603e-10, 1, 0.01, 0.02, 1, 0.1, 0.2
0.01, 0.662659, nan, nan, nan, nan, 0.999229, -0.00230826, 0.999229, 0.011, 0.021, 1, 0.1, 0.2
971.09, 5.40376e-07, nan, nan, nan, nan, 0.99, -0.0019, 0.99, 0.9, 0.1, 1, 1.003, 0.001
1001.43, 3.04401e-07, nan, nan, nan, nan, 0.99, -0.0024, 0.99, 0.9, 0.1, 1, 1.003, 0.001
"""


def config(**training: object) -> Config:
    return Config.from_dict({"teacher": {"M": 1, "noise": 0.1}, "student": {"K": 2},
                             "training": {"lr": 0.7, "lr_head": 0.3, "alpha_max": 1000.0,
                                          **training}})


def test_parse_reads_times_as_multiples_of_dt_and_the_error() -> None:
    alpha, eg = nn2pp.parse(OUTPUT, K=2, M=1)
    np.testing.assert_array_equal(np.rint(alpha / nn2pp.DT), [0, 1, 97109, 100143])
    np.testing.assert_allclose(alpha, [0.0, 0.01, 971.09, 1001.43], rtol=1e-15)
    np.testing.assert_array_equal(eg, [0.666667, 0.662659, 5.40376e-07, 3.04401e-07])


def test_parse_refuses_other_shapes_and_times_off_the_grid() -> None:
    with pytest.raises(ValueError, match="14 columns, expected 17"):
        nn2pp.parse(OUTPUT, K=2, M=2)
    with pytest.raises(ValueError, match="not a multiple of dt"):
        nn2pp.parse(OUTPUT.replace("\n0.01,", "\n0.015,"), K=2, M=1)
    with pytest.raises(ValueError, match="no records"):
        nn2pp.parse("# only comments\n", K=2, M=1)


def test_options_map_the_config() -> None:
    opts = nn2pp.options(config())
    pairs = dict(zip(opts[:-3], opts[1:-2], strict=True))
    assert {k: pairs[k] for k in ("--g", "-K", "-M", "--lr", "--sigma", "--steps", "--dt")} == {
        "--g": "1", "-K": "2", "-M": "1", "--lr": "0.7", "--sigma": "0.1", "--steps": "1000.0",
        "--dt": "0.01"}
    assert opts[-3:] == ["--both", "--lr2", "0.3"]
    assert "--both" not in nn2pp.options(config(lr_head=0.0))  # nn2pp keeps v fixed


@pytest.mark.parametrize(("training", "field"), [
    ({"algorithm": "anil"}, "training.algorithm"),
    ({"query": 2}, "training.query"),
    ({"meta_batch": 3}, "training.meta_batch"),
    ({"alpha_max": 2e4}, "training.alpha_max"),
])
def test_options_refuse_what_nn2pp_cannot_run(training: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        nn2pp.options(config(**training))


def test_initial_files_hold_the_config_overlaps(tmp_path) -> None:
    c = config()
    nn2pp.write_initial(c, tmp_path / "case")
    for name, value in (("Q0", c.student.Q0), ("R0", c.student.R0), ("T0", c.teacher.T),
                        ("A0", c.teacher.u0), ("v0", c.student.w0)):
        written = np.loadtxt(tmp_path / f"case_{name}.dat", ndmin=2)
        shape = np.shape(value) if np.ndim(value) == 2 else (len(value), 1)
        np.testing.assert_array_equal(written, np.reshape(value, shape))
