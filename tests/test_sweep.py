"""``metaode sweep``: grids, engines (bit-identical rows), journal and resume, phase figures.

The sweeps run the ANIL ODE of the built-in experiment (K = M = 2, plateau then specialisation)
on a short horizon (alpha_max = 40, 41 records, ~20 ms a point) over a 4 x 4 grid of
training.inner_lr (log: 0.25 .. 2) x training.lr (linear: 0.5 .. 2). Rows are compared cell for
cell as text (the CSV writes floats by repr, which round-trips exactly); only wall_time_s, a
measured time, is left out of the comparison.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from states import SHORT_ANIL_TOML, one_line

import metaode.solvers.sweep
from metaode.cli import main
from metaode.config import Config, ConfigError
from metaode.solvers.integrate import solve
from metaode.solvers.plateau import measure_plateau
from metaode.solvers.sweep import (
    CSV_NAME,
    JOURNAL,
    Axis,
    Journal,
    JournalError,
    grid_points,
    parse_axis,
    plateau_metrics,
    point_config,
    sweep,
)
from metaode.testing import SQUARE, BrokenSystem
from metaode.theory.system import build_system
from metaode.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[1]

PARAMS = ["training.inner_lr=0.25:2:4:log", "training.lr=0.5:2:4"]
MAIN_FIGURES = ["phase.png", "phase_error.png", "phase_plateau_length.png",
                "phase_escape_time.png", "phase_specialisation.png"]
SUMMARY = re.compile(r"(\d+) points \((\d+) computed, (\d+) from the journal\)")


def cells(path: Path) -> list[list[str]]:
    """The CSV as text cells, without the measured wall_time_s column."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    drop = rows[0].index("wall_time_s")
    return [r[:drop] + r[drop + 1:] for r in rows]


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "anil.toml"
    path.write_text(SHORT_ANIL_TOML)
    return path


@pytest.fixture(scope="module")
def axes() -> list[Axis]:
    return [parse_axis(p) for p in PARAMS]


@pytest.fixture(scope="module")
def reference(config_path, tmp_path_factory) -> Path:
    """The 4 x 4 sweep through the command line, in this process (--workers 1)."""
    out = tmp_path_factory.mktemp("sweep1")
    argv = ["sweep", str(config_path), *(a for p in PARAMS for a in ("--param", p)),
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out


# -- grids -----------------------------------------------------------------------------------------

def test_linear_log_and_integer_grids():
    a = parse_axis("training.inner_lr=0.5:2:4")
    assert a.values == (0.5, 1.0, 1.5, 2.0) and not a.log and not a.integer
    log = parse_axis("training.lr=0.01:1:5:log")
    assert log.log and log.values[0] == 0.01 and log.values[-1] == 1.0  # exact endpoints
    # evenly spaced in log: ratios all 10^(1/2) (to a few ulp: geomspace rounds once per value)
    np.testing.assert_allclose(np.diff(np.log10(log.values)), 0.5, rtol=1e-12)
    steps = parse_axis("training.inner_steps=1:4:4")
    assert steps.values == (1, 2, 3, 4) and all(type(v) is int for v in steps.values)
    assert parse_axis("output.points=11:101:3:log").values == (11, 33, 101)  # 33.3 rounds to 33
    assert parse_axis("training.support=10:40:4").values == (10, 20, 30, 40)
    assert parse_axis("teacher.task_std=0.5:0.5:1").values == (0.5,)
    # an integer key gets an int in its config
    cfg = point_config(Config.default(), {"training.inner_steps": 3, "training.lr": 0.25})
    assert cfg.training.inner_steps == 3 and cfg.training.lr == 0.25
    # Cartesian product, first axis slowest
    pts = grid_points([parse_axis("training.lr=1:2:2"), parse_axis("training.inner_steps=1:3:3")])
    assert [(p["training.lr"], p["training.inner_steps"]) for p in pts] == [
        (1.0, 1), (1.0, 2), (1.0, 3), (2.0, 1), (2.0, 2), (2.0, 3)]


@pytest.mark.parametrize("text", [
    "training.lr", "training.lr=1:2", "=1:2:3", "training.lr=a:2:3", "training.lr=1:2:2.5",
    "training.lr=1:2:0", "training.lr=1:2:1", "training.lr=1:2:3:cubic", "training.lr=0:1:3:log",
    "training.lr=1:nan:3",
])
def test_bad_syntax_exits_2_naming_the_argument(text, config_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(config_path), "--param", text, "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("metaode sweep: argument --param:"), line
    assert not out.exists()  # nothing ran


@pytest.mark.parametrize("text, key", [
    ("training.algorithm=1:2:3", "training.algorithm"),  # a string key
    ("student.Q0=1:2:3", "student.Q0"),  # a matrix
    ("training.foo=1:2:3", "training.foo"),  # unknown
    ("training.inner_steps=1:2:3", "training.inner_steps"),  # rounds to 1, 2, 2
])
def test_bad_keys_name_the_key(text, key, config_path, tmp_path, capsys):
    with pytest.raises(ConfigError) as err:
        parse_axis(text)
    assert err.value.key == key
    assert main(["sweep", str(config_path), "--param", text, "--out", str(tmp_path)]) == 2
    assert f"argument --param: {key}: " in one_line(capsys.readouterr().err)


def test_bad_point_is_rejected_before_anything_runs(config_path, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", str(config_path), "--param", "training.inner_lr=0.5:1:2", "--param",
            "training.lr=-1:1:3", "--out", str(out)]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("metaode sweep: training.lr: must be >= 0"), line
    assert "training.lr = -1.0" in line  # the grid point
    assert not out.exists()
    argv = ["sweep", str(config_path), "--param", "training.lr=1:2:2", "--param",
            "training.lr=1:2:3", "--out", str(out)]
    assert main(argv) == 2
    assert one_line(capsys.readouterr().err) == "metaode sweep: training.lr: swept twice"


# -- plateau ---------------------------------------------------------------------------------------

def test_plateau_metrics_are_the_shared_measurement():
    """The sweep's plateau columns are solvers.plateau's; a curve without one gives 0 / NaN."""
    config = Config.from_toml(Path(__file__).parents[1] / "validation" / "default.toml")
    theory = solve(build_system(config))
    plateau = measure_plateau(theory)
    assert plateau_metrics(theory) == {"plateau_length": plateau.length,
                                       "plateau_height": plateau.height,
                                       "escape_time": plateau.escape}
    alpha = np.arange(10.0)
    steep = Trajectory(alpha=alpha, states=np.zeros((10, 9)), K=2, M=2,
                       observables={"error": np.exp(-3.0 * alpha)})
    none = plateau_metrics(steep)
    assert none["plateau_length"] == 0.0 and math.isnan(none["escape_time"])


# -- engines and results ---------------------------------------------------------------------------

def test_cli_writes_csv_and_phase_figures(reference, axes):
    header = cells(reference / CSV_NAME)[0]
    assert header[:3] == ["index", "training.inner_lr", "training.lr"]
    with open(reference / CSV_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == list(range(16))
    assert [(float(r["training.inner_lr"]), float(r["training.lr"])) for r in rows] == [
        (p["training.inner_lr"], p["training.lr"]) for p in grid_points(axes)]
    assert {r["status"] for r in rows} == {"success"}
    for name in MAIN_FIGURES:
        assert (reference / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # at inner_lr = 1, the plateau is left earlier the larger the outer learning rate
    escape = [float(r["escape_time"]) for r in rows if float(r["training.inner_lr"]) == 1.0]
    finite = [e for e in escape if math.isfinite(e)]
    assert len(finite) >= 2 and finite == sorted(finite, reverse=True), escape


def test_rows_are_the_solution_of_each_point(reference, config_path, axes):
    """A row's numbers are exactly those of solving its config directly."""
    config = Config.from_toml(config_path)
    with open(reference / CSV_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for index in (0, 9, 15):
        params = grid_points(axes)[index]
        theory = solve(build_system(point_config(config, params)))
        row = rows[index]
        assert float(row["error"]) == theory.error[-1]
        assert float(row["error_before_adaptation"]) == theory.column(
            "error_before_adaptation")[-1]
        assert float(row["specialisation"]) == theory.column("specialisation")[-1]
        assert int(row["nfev"]) == theory.nfev
        metrics = plateau_metrics(theory)
        assert float(row["plateau_length"]) == metrics["plateau_length"]


def test_two_workers_and_dask_give_identical_rows(reference, config_path, axes, tmp_path):
    from distributed import LocalCluster

    config = Config.from_toml(config_path)
    expected = cells(reference / CSV_NAME)
    start = time.perf_counter()
    pool = sweep(config, axes, tmp_path / "pool", workers=2)
    t_pool = time.perf_counter() - start
    assert pool.computed == 16 and pool.reused == 0
    assert cells(tmp_path / "pool" / CSV_NAME) == expected
    # the worker takes points from the front of the grid, this process from the back from the
    # first instant: its first point (~25 ms) is journalled before the worker, which first loads
    # numba's cache (~0.3 s), finishes one; the two meet at some k (the worker had 0 and 1 queued
    # at once, so k >= 2)
    lines = (tmp_path / "pool" / JOURNAL).read_text().splitlines()[1:]
    indices = [json.loads(line)["index"] for line in lines]
    assert indices[0] == 15
    assert any([i for i in indices if i < k] == list(range(k))
               and [i for i in indices if i >= k] == list(range(15, k - 1, -1))
               for k in range(2, 16))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        start = time.perf_counter()
        dask = sweep(config, axes, tmp_path / "dask", scheduler=cluster.scheduler_address)
        t_dask = time.perf_counter() - start
    assert dask.computed == 16
    assert cells(tmp_path / "dask" / CSV_NAME) == expected
    print(f"16 points: 2 processes {t_pool:.1f} s, Dask {t_dask:.1f} s (startup included)")


# -- journal and resume ----------------------------------------------------------------------------

def test_resume_after_a_truncated_journal_line(reference, config_path, axes, tmp_path):
    """Header + 5 entries + half of the 6th (a crash mid-write): the rerun drops the half line,
    reuses 5 points, computes 11, and the journal ends with every point exactly once."""
    lines = (reference / JOURNAL).read_bytes().split(b"\n")
    assert len(lines) == 1 + 16 + 1 and lines[-1] == b""  # header, 16 entries, final newline
    out = tmp_path / "resume"
    out.mkdir()
    (out / JOURNAL).write_bytes(b"\n".join(lines[:6]) + b"\n" + lines[6][: len(lines[6]) // 2])
    result = sweep(Config.from_toml(config_path), axes, out)
    assert (result.reused, result.computed) == (5, 11)
    entries = [json.loads(line) for line in (out / JOURNAL).read_bytes().split(b"\n")[1:-1]]
    assert sorted(e["index"] for e in entries) == list(range(16))
    assert cells(out / CSV_NAME) == cells(reference / CSV_NAME)
    # rerunning a finished sweep computes nothing
    again = sweep(Config.from_toml(config_path), axes, out)
    assert (again.reused, again.computed) == (16, 0)


def test_resume_after_sigkill(config_path, tmp_path, capsys):
    """A real crash: SIGKILL a `metaode sweep` subprocess once >= 5 points are journalled, rerun
    the same command: it computes exactly the points missing from the journal, and the result
    equals an uninterrupted sweep's. 8 x 8 points (~1.5 s of work) leave time to kill it."""
    params = ["--param", "training.inner_lr=0.25:2:8:log", "--param", "training.lr=0.5:2:8"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert main(["sweep", str(config_path), *params, "--out", str(ref), "--quiet"]) == 0
    argv = [sys.executable, "-m", "metaode", "sweep", str(config_path), *params,
            "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 1 + 5:
            break
        time.sleep(0.005)
    proc.kill()
    assert proc.wait() == -9, "the sweep finished before it could be killed"
    done = journal.read_bytes().count(b"\n") - 1  # complete entries after the header
    assert 5 <= done < 64
    assert not (out / CSV_NAME).exists()
    capsys.readouterr()
    assert main(["sweep", str(config_path), *params, "--out", str(out), "--quiet"]) == 0
    total, computed, reused = map(int, SUMMARY.search(capsys.readouterr().out).groups())
    assert (total, computed, reused) == (64, 64 - done, done)
    assert cells(out / CSV_NAME) == cells(ref / CSV_NAME)


def test_journal_is_flushed_per_point_and_fsynced_at_most_once_a_second(tmp_path, monkeypatch):
    """Every appended point is in the file at once (flushed: a crash of the process loses none);
    fsync runs for the header, then at most once per SYNC_SECONDS, and at close (50 points
    appended within a second: 2 or 3 fsyncs, not 51)."""
    synced = []
    monkeypatch.setattr(metaode.solvers.sweep.os, "fsync", lambda fd: synced.append(fd))
    journal = Journal(tmp_path / JOURNAL, {"training": {"lr": 0.5}}, ["training.lr"])
    assert len(synced) == 1  # the header
    for i in range(50):
        journal.append({"index": i, "training.lr": 0.01 * i, "status": "success"},
                       ["training.lr"])
        assert (tmp_path / JOURNAL).read_bytes().count(b"\n") == 2 + i
    assert len(synced) <= 2
    journal.close()
    assert 2 <= len(synced) <= 3
    reread = Journal(tmp_path / JOURNAL, {"training": {"lr": 0.5}}, ["training.lr"])
    assert len(reread.entries) == 50
    reread.close()


def test_journal_of_another_config_is_refused(reference, config_path, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(SHORT_ANIL_TOML.replace("lr_head = 1.0", "lr_head = 0.5"))
    argv = ["sweep", str(other), *(a for p in PARAMS for a in ("--param", p)),
            "--out", str(reference), "--quiet"]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("metaode sweep: argument --out:") and "training.lr_head" in line


def test_one_parameter_gives_a_line_plot(config_path, tmp_path, capsys):
    out = tmp_path / "line"
    argv = ["sweep", str(config_path), "--param", "training.inner_steps=1:3:3", "--out",
            str(out), "--quiet", "--contour", "error=0.05"]
    assert main(argv) == 0
    assert "3 points (3 computed, 0 from the journal)" in capsys.readouterr().out
    assert (out / "phase.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "phase_error.png").exists()
    with open(out / CSV_NAME, newline="") as fh:
        assert [r["training.inner_steps"] for r in csv.DictReader(fh)] == ["1", "2", "3"]


def test_a_folder_in_use_is_refused(reference, config_path, axes):
    config = Config.from_toml(config_path)
    held = Journal(reference / JOURNAL, json.loads(json.dumps(config.raw)),
                   [a.key for a in axes])
    try:
        with pytest.raises(JournalError, match="in use by another metaode sweep"):
            sweep(config, axes, reference)
    finally:
        held.close()


def Runaway(config: Config) -> BrokenSystem:  # noqa: N802  (stands in for a system class)
    """dy/dalpha = lr y^2 entrywise (``flows.SQUARE``): y = y0 / (1 - lr y0 alpha) blows up at
    alpha = 1 / (lr max y0) = 2 / lr here (max y0 = Q0_00 = 0.5)."""
    return BrokenSystem(config, SQUARE, config.training.lr)


SGD = """
[student]
Q0 = [[0.5, 0.0], [0.0, 0.4]]
R0 = [[0.2, 0.0], [0.05, 0.1]]
w0 = [0.3, 0.2]

[training]
alpha_max = 5.0

[output]
points = 11
"""


def test_diverged_point_is_a_row_and_failed_point_exits_1(tmp_path, capsys, monkeypatch):
    """lr = 0: nothing moves (success); lr = 0.5: the point raises (failed); lr = 1: blows up at
    alpha = 2 (diverged). The sweep goes on, exits 1 for the failed point only, journals the
    other two; a rerun computes only the failed one."""
    config = tmp_path / "sgd.toml"
    config.write_text(SGD)

    def build(cfg: Config) -> BrokenSystem:
        if cfg.training.lr == 0.5:
            raise FloatingPointError("boom")
        return Runaway(cfg)

    monkeypatch.setattr(metaode.solvers.sweep, "build_system", build)
    out = tmp_path / "out"
    argv = ["sweep", str(config), "--param", "training.lr=0:1:3", "--out", str(out), "--quiet"]
    assert main(argv) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("metaode sweep: run failed: 1 of 3 points failed (first: point 1: "
                           "FloatingPointError: boom)"), line
    with open(out / CSV_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["success", "failed", "diverged"]
    assert "diverged at alpha" in rows[2]["message"]
    assert float(rows[2]["alpha_end"]) < 2.0  # records stop before the blow-up
    assert float(rows[0]["alpha_end"]) == 5.0
    assert (out / "phase.png").exists()
    journal = (out / JOURNAL).read_bytes().split(b"\n")[1:-1]
    assert sorted(json.loads(e)["index"] for e in journal) == [0, 2]
    monkeypatch.setattr(metaode.solvers.sweep, "build_system", Runaway)
    assert main(argv) == 0  # a diverged point is data, not a failure
    # the retried lr = 0.5 blows up at alpha = 4 < alpha_max = 5
    assert "3 points (1 computed, 2 from the journal), 2 diverged" in capsys.readouterr().out
