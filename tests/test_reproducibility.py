"""Reproducibility and the records of a run: the same config and seeds give the same files, byte
for byte, run after run and for any number of worker processes; every output folder says what
made it (DIR/run.json); and an output folder with results is never overwritten silently.

The runs are the built-in anil experiment at N = 500, alpha_max = 5 (2,500 outer steps a seed,
~50 ms) with three seeds: their cost is the process pools of --workers 2 and 3 (~1 s each).
"""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from metaode.cli import main
from metaode.cli.common import RESULT_PATTERNS
from metaode.config import Config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "validation" / "default.toml"
OUTPUTS = ("theory.csv", "simulation.csv", "metatest_theory.csv", "metatest_simulation.csv")


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    text = DEFAULT.read_text()
    for old, new in (("alpha_max = 80.0", "alpha_max = 5.0"), ("points = 81", "points = 11"),
                     ("at = [0.0, 25.0, 80.0]", "at = [0.0, 5.0]"),
                     ("N = 4000", "N = 500")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text(text)
    return path


def run(*argv: str) -> None:
    assert main([*argv, "--quiet"]) == 0


def test_same_files_run_after_run_and_for_any_number_of_workers(config_path, tmp_path):
    """validate twice with one worker, then with 2 and 3 worker processes: theory.csv,
    simulation.csv and the meta-test CSVs are identical files (no tolerance: the same numbers to
    the last bit, written by repr)."""
    folders = []
    for name, workers in (("first", "1"), ("again", "1"), ("two", "2"), ("three", "3")):
        out = tmp_path / name
        run("validate", str(config_path), "--out", str(out), "--workers", workers)
        folders.append(out)
    reference = {name: (folders[0] / name).read_bytes() for name in OUTPUTS}
    assert reference["simulation.csv"].count(b"\n") == 1 + 3 * 11  # header, 3 seeds x 11 records
    for out in folders[1:]:
        for name in OUTPUTS:
            assert (out / name).read_bytes() == reference[name], (out.name, name)
    # the validation figures follow from the CSVs, so they agree too (timings aside)
    figures = [json.loads((out / "validation.json").read_text()) for out in folders]
    for data in figures[1:]:
        assert {k: v for k, v in data.items() if k != "timings_s"} == {
            k: v for k, v in figures[0].items() if k != "timings_s"}


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def test_run_record(config_path, tmp_path):
    """run.json: the command line, config (as validated, defaults applied), the initial overlaps,
    N, seeds and workers, the files written, the package versions and the git revision."""
    out = tmp_path / "out"
    argv = ["simulate", str(config_path), "--out", str(out), "--seeds", "2", "--workers", "1",
            "--quiet"]
    assert main(argv) == 0
    record = json.loads((out / "run.json").read_text())
    config = Config.from_toml(config_path).replace("simulation.seeds", 2)
    assert record["command"] == "simulate" and record["argv"] == argv
    assert record["status"] == "success" and record["exit_status"] == 0
    assert record["config"] == json.loads(json.dumps(config.raw))
    assert record["initial_overlaps"]["Q0"] == [[0.2, 0.0], [0.0, 0.2]]
    assert (record["N"], record["seeds"], record["workers"]) == (500, [0, 1], 1)
    assert "resumed_seeds" not in record  # a fresh run (with --resume: the seeds continued)
    assert sorted(record["outputs"]) == ["metatest_simulation.csv", "simulation.csv"]
    for package in ("numpy", "scipy", "numba", "sympy", "metaode"):
        assert record["versions"][package] == metadata.version(package)
    assert record["versions"]["python"].count(".") == 2
    assert record["git"]["revision"] == git_head()
    assert record["git"]["dirty"] in (True, False, None)
    assert record["wall_time_s"] > 0 and record["started"] <= record["finished"]


def test_results_are_never_overwritten_silently(config_path, tmp_path, capsys):
    """A second run into a folder with results exits 2 with one line and leaves the files as they
    were; --force overwrites; a folder with only other files (the config itself) is fine."""
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "config.toml").write_text(config_path.read_text())  # not a result: allowed
    run("solve", str(out / "config.toml"), "--out", str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for command in (["solve"], ["simulate", "--workers", "1"], ["validate", "--workers", "1"],
                    ["sweep", "--param", "training.lr=0.5:1:2"]):
        capsys.readouterr()
        argv = [command[0], str(config_path), *command[1:], "--out", str(out), "--quiet"]
        assert main(argv) == 2, command
        line = capsys.readouterr().err.strip()
        assert "\n" not in line
        assert line.startswith(f"metaode {command[0]}: argument --out: {out} already holds "
                               "results (metatest_theory.csv, run.json, theory.csv)")
        assert "use --force to overwrite them" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    capsys.readouterr()
    assert main(["simulate", str(config_path), "--out", str(out), "--resume", "--quiet"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    run("solve", str(config_path), "--out", str(out), "--force")
    assert (out / "theory.csv").read_bytes() == before["theory.csv"]  # recomputed, identical
    assert json.loads((out / "run.json").read_text())["argv"][-2:] == ["--force", "--quiet"]
    # every file a command writes is a result that protects its folder
    assert {"theory.csv", "run.json", "sweep.journal.jsonl"} <= set(RESULT_PATTERNS)


def test_sweep_resumes_its_journal_and_force_starts_afresh(config_path, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", str(config_path), "--param", "training.lr=0.5:1:2", "--out", str(out),
            "--quiet"]
    run(*argv[:-1])
    capsys.readouterr()
    run(*argv[:-1])  # the same sweep: resumed from its journal, nothing computed
    assert "2 points (0 computed, 2 from the journal)" in capsys.readouterr().out
    run(*argv[:-1], "--force")  # the journal discarded: everything computed again
    assert "2 points (2 computed, 0 from the journal)" in capsys.readouterr().out
