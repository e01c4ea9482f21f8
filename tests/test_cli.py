"""The ``metaode`` command line end to end, the agreement figures, exit statuses and messages.

The end-to-end runs use a tiny sgd experiment (N = 300, alpha_max = 2, 11 records, 2 seeds: 600
outer steps per seed), so they test the plumbing, not the physics (tests/test_sgd_* do that).
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from states import one_line

from metaode.cli import main
from metaode.io import read_csv
from metaode.theory.state import column_names
from metaode.trajectory import Trajectory
from metaode.validation.compare import compare

ROOT = Path(__file__).resolve().parents[1]
STATE = column_names(2, 2)  # Q_0_0, Q_0_1, Q_1_1, R_0_0, R_0_1, R_1_0, R_1_1, w_0, w_1

TINY = """
[teacher]
M = 2
u0 = [1.0, 1.0]

[student]
K = 2
Q0 = [[0.25, 0.0], [0.0, 0.25]]
R0 = [[0.1, 0.0], [0.0, 0.0]]
w0 = [0.1, 0.1]

[training]
algorithm = "sgd"
lr = 1.0
lr_head = 1.0
alpha_max = 2.0

[output]
points = 11

[simulation]
N = 300
seeds = 2
"""
GRID = np.linspace(0.0, 2.0, 11)


def header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def validated(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("validate")
    assert main(["validate", str(tiny), "--out", str(out), "--quiet"]) == 0
    return out


def check_header(cols: list[str]) -> None:
    """docs/model.md §16: alpha, error, error_before_adaptation, ..., Q_k_l (k <= l), R_k_m, w_k."""
    assert cols[:3] == ["alpha", "error", "error_before_adaptation"]
    assert cols[-len(STATE):] == STATE


def test_solve_writes_theory_csv(tiny, tmp_path, capsys):
    assert main(["solve", str(tiny), "--out", str(tmp_path / "out")]) == 0
    path = tmp_path / "out" / "theory.csv"
    check_header(header(path))
    (traj,) = read_csv(path, 2, 2)
    np.testing.assert_array_equal(traj.alpha, GRID)
    # the first record is the config's initial state, exactly
    np.testing.assert_array_equal(traj.states[0], [0.25, 0, 0.25, 0.1, 0, 0, 0, 0.1, 0.1])
    assert "theory.csv" in capsys.readouterr().out


def test_simulate_writes_one_block_per_seed(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", str(tiny), "--seeds", "3", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no progress bars
    cols = header(out / "simulation.csv")
    assert cols[0] == "seed"
    check_header(cols[1:])
    body = np.loadtxt(out / "simulation.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(body[:, 0], np.repeat([0, 1, 2], len(GRID)))
    # alpha = steps / N with 0.2 N = 60 whole steps: the grid up to the last bit of rounding
    np.testing.assert_allclose(body[:, 1], np.tile(GRID, 3), rtol=0, atol=1e-15)
    # every seed starts from the config's overlaps (built exactly, up to rounding ~1e-16)
    start = body[body[:, 1] == 0][:, -len(STATE):]
    np.testing.assert_allclose(start, [[0.25, 0, 0.25, 0.1, 0, 0, 0, 0.1, 0.1]] * 3, atol=1e-12)
    # ... and then the seeds differ (independent streams)
    assert not np.array_equal(body[len(GRID) - 1, 2:], body[2 * len(GRID) - 1, 2:])


def test_progress_bars_without_quiet(tiny, tmp_path, capsys):
    assert main(["simulate", str(tiny), "--seeds", "1", "--out", str(tmp_path)]) == 0
    assert "seed 0" in capsys.readouterr().err


def test_validate_writes_figure_and_figures(validated):
    for name in ("theory.csv", "simulation.csv", "validation.json", "validation.png"):
        assert (validated / name).is_file(), name
    assert (validated / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((validated / "validation.json").read_text())
    assert data["N"] == 300 and data["seeds"] == [0, 1] and data["n_seeds"] == 2
    assert data["config"]["training"]["lr"] == 1.0
    assert set(data["timings_s"]) == {"theory", "simulation", "compare_and_plot"}
    np.testing.assert_allclose(data["alpha"], GRID, rtol=0, atol=1e-15)  # steps / N
    cols = header(validated / "theory.csv")[1:]
    assert set(data["columns"]) == set(cols)
    for name in cols:
        figures = data["columns"][name]
        for key in ("max_abs_deviation", "rms_deviation", "max_abs_z", "mean", "stderr"):
            assert key in figures, (name, key)
    assert data["columns"]["error"]["max_rel_deviation"] is not None


def test_validation_figures_follow_from_the_csvs(validated):
    """max |mean - theory|, rms, max |z| recomputed from theory.csv and simulation.csv."""
    data = json.loads((validated / "validation.json").read_text())
    (theory,) = read_csv(validated / "theory.csv", 2, 2)
    sims = read_csv(validated / "simulation.csv", 2, 2)
    for name in ("error", "Q_0_0", "R_1_0", "w_1"):
        table = np.array([s.column(name) for s in sims])
        dev = table.mean(axis=0) - theory.column(name)
        stderr = table.std(axis=0, ddof=1) / math.sqrt(2)
        figures = data["columns"][name]
        # CSV and JSON both store repr(float): the recomputation is exact up to summation order
        assert figures["max_abs_deviation"] == pytest.approx(np.abs(dev).max(), rel=1e-12)
        assert figures["rms_deviation"] == pytest.approx(np.sqrt(np.mean(dev**2)), rel=1e-12)
        z = np.abs(dev[1:] / stderr[1:])  # alpha = 0: every seed starts at the theory's state
        assert figures["max_abs_z"] == pytest.approx(z.max(), rel=1e-9)


def synthetic(alpha: np.ndarray, values: np.ndarray, seed: int | None) -> Trajectory:
    states = np.column_stack([values] * len(STATE))
    return Trajectory(alpha=alpha, states=states, K=2, M=2, seed=seed,
                      observables={"error": values, "error_before_adaptation": values})


def test_compare_on_known_numbers():
    """Seeds theory + 0.1 and theory + 0.3: mean offset 0.2, std 0.1414, stderr 0.1, z = 2."""
    alpha = np.linspace(0.0, 2.0, 21)
    theory = synthetic(alpha, 1.0 + alpha, None)
    sims = [synthetic(alpha, 1.1 + alpha, 0), synthetic(alpha, 1.3 + alpha, 1)]
    figures = compare(theory, sims, N=1000)
    assert figures["N"] == 1000 and figures["seeds"] == [0, 1]
    assert not figures["theory_interpolated"]
    for name in ("error", "Q_0_1", "w_1"):
        col = figures["columns"][name]
        assert col["max_abs_deviation"] == pytest.approx(0.2)
        assert col["rms_deviation"] == pytest.approx(0.2)
        assert col["max_abs_z"] == pytest.approx(2.0)
        np.testing.assert_allclose(col["stderr"], 0.1)
    # relative deviation 0.2 / theory is largest where the theory is smallest (alpha = 0)
    assert figures["columns"]["error"]["max_rel_deviation"] == pytest.approx(0.2)


def test_compare_interpolates_a_coarser_theory():
    """A cubic through 5 theory records is reproduced exactly by the (not-a-knot) cubic spline."""
    fine, coarse = np.linspace(0.0, 2.0, 21), np.linspace(0.0, 2.0, 5)
    theory = synthetic(coarse, coarse**3 - coarse, None)
    sims = [synthetic(fine, fine**3 - fine + 0.01, 0)]
    figures = compare(theory, sims)
    assert figures["theory_interpolated"] and figures["points"] == 21
    col = figures["columns"]["R_0_0"]
    assert col["max_abs_deviation"] == pytest.approx(0.01, abs=1e-12)
    assert "max_abs_z" not in col and col["stderr"] is None  # one seed: no standard error


def test_validate_without_config_runs_the_default(tmp_path, capsys):
    """The built-in experiment (validation/default.toml), at small N: a plateau and its escape."""
    out = tmp_path / "default"
    assert main(["validate", "--N", "300", "--seeds", "2", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "validation.json").read_text())
    assert data["config"]["training"]["algorithm"] == "anil"
    assert data["N"] == 300 and data["n_seeds"] == 2
    (theory,) = read_csv(out / "theory.csv", 2, 2)
    err = dict(zip(theory.alpha, theory.error, strict=True))
    spec = dict(zip(theory.alpha, theory.column("specialisation"), strict=True))
    # the ODE (N -> infinity) of the default: plateau L_meta ~ 0.075 over alpha ~ 15 .. 35 with
    # unspecialised units, escape to ~0.03 at alpha_max = 80 with specialised units (bounds are
    # the purpose of the default, not fits)
    assert 0.07 < err[15.0] < 0.08 and 0.07 < err[30.0] < 0.08
    assert spec[15.0] < 0.1 and spec[80.0] > 0.8
    assert err[80.0] < 0.5 * err[30.0]
    assert "error: max |mean - theory|" in capsys.readouterr().out
    # meta-test curves at the config's metatest.at, for the theory and every seed
    metatest = np.loadtxt(out / "metatest_theory.csv", delimiter=",", skiprows=1, ndmin=2)
    assert sorted(set(metatest[:, 0])) == [0.0, 25.0, 80.0]
    assert (out / "metatest_simulation.csv").exists()


def test_diverging_run_exits_1_naming_alpha(tmp_path, capsys):
    """lr_head / N = 10 per example: the simulated head overshoots and runs away (the ODE not)."""
    path = tmp_path / "diverge.toml"
    path.write_text(TINY.replace("lr_head = 1.0", "lr_head = 100.0")
                    .replace("alpha_max = 2.0", "alpha_max = 5.0"))
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--N", "10", "--seeds", "1", "--out", str(out),
                 "--quiet"]) == 1
    line = one_line(capsys.readouterr().err)
    match = re.search(r"diverged at alpha = ([0-9.]+)", line)
    assert match and "seed 0" in line
    # what was computed is written: the records before the divergence
    body = np.loadtxt(out / "simulation.csv", delimiter=",", skiprows=1, ndmin=2)
    assert 1 <= len(body) and body[-1, 1] < float(match.group(1))


BAD_TOML = [
    ("[training]\nlr_typo = 1.0\n", "training.lr_typo"),
    ("[trainig]\nlr = 1.0\n", "trainig"),
    ('[training]\nlr = "fast"\n', "training.lr"),
    ("[training]\nlr = -1.0\n", "training.lr"),
    ("[student]\nQ0 = [[1.0, 0.0]]\n", "student.Q0"),
    ("[student]\nR0 = [[0.0, 0.0]]\n", "student.R0"),
    ("[student]\nw0 = [0.1, 0.1, 0.1]\n", "student.w0"),
    ("[teacher]\nu0 = [1.0]\n", "teacher.u0"),
    ("[teacher]\nT = [[1.0]]\n", "teacher.T"),
    ("[student]\nQ0 = [[0.3, 0.1], [0.0, 0.3]]\n", "student.Q0"),
    ("[student]\nQ0 = [[0.25, 0.0], [0.0, 0.25]]\nR0 = [[0.9, 0.0], [0.0, 0.0]]\n", "student.Q0"),
    ('[teacher]\ntask_std = 0.5\n[training]\nalgorithm = "sgd"\n', "teacher.task_std"),
    ("[training]\nlr = = 1.0\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "named"), BAD_TOML, ids=[n for _, n in BAD_TOML])
def test_bad_config_exits_2_with_one_line_naming_the_key(text, named, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["validate", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert named in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # nothing was run


@pytest.mark.parametrize(("argv", "named"), [
    (["solve", "{missing}", "--out", "{out}"], "no such file"),
    (["solve", "{tmp}", "--out", "{out}"], "cannot read"),  # a folder
    (["solve", "{binary}", "--out", "{out}"], "not valid TOML"),  # not UTF-8
    (["simulate", "{tiny}", "--N", "abc", "--out", "{out}"], "--N"),
    (["simulate", "{tiny}", "--N", "1", "--out", "{out}"], "--N: simulation.N"),
    (["simulate", "{tiny}", "--N", "3", "--out", "{out}"], "--N: simulation.N"),  # < K + M
    (["validate", "{tiny}", "--seeds", "0", "--out", "{out}"], "--seeds: simulation.seeds"),
    (["validate", "{tiny}"], "--out"),
    (["solve", "{tiny}", "--out", "{tiny}"], "--out"),  # a file, not a folder
    (["sweep", "{tiny}", "--out", "{out}"], "sweep"),
    ([], "COMMAND"),
])
def test_bad_arguments_exit_2_with_one_line(argv, named, tiny, tmp_path, capsys):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[training]\n")
    fill = {"missing": str(tmp_path / "missing.toml"), "out": str(tmp_path / "out"),
            "tmp": str(tmp_path), "tiny": str(tiny), "binary": str(binary)}
    assert main([a.format(**fill) for a in argv]) == 2
    assert named in one_line(capsys.readouterr().err)


def test_help(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "usage: metaode" in text and all(c in text for c in ("solve", "simulate", "validate"))
    for command in ("solve", "simulate", "validate"):
        assert main([command, "--help"]) == 0
        assert f"usage: metaode {command}" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "argv", "status", "named"), [
    ("[training]\nlr = [1.0]\n", ["solve"], 2, "training.lr"),
    (TINY.replace("lr_head = 1.0", "lr_head = 100.0").replace("alpha_max = 2.0", "alpha_max = 5.0"),
     ["simulate", "--N", "10", "--seeds", "1", "--quiet"], 1, "alpha = "),
], ids=["bad-config", "diverging"])
def test_module_entry_point_exit_status_and_stderr(text, argv, status, named, tmp_path):
    """A real process: exit status, one line on stderr, no traceback."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    run = subprocess.run([sys.executable, "-m", "metaode", argv[0], str(path),
                          *argv[1:], "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == status, run.stderr
    assert named in one_line(run.stderr)
