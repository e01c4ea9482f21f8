"""Checkpoints and interruptions: a resumed simulation is the uninterrupted one, bit for bit.

The runs are the built-in anil experiment (second order, population inner loop: the kernel that
carries Q, R between steps) and the other algorithms, at N = 2000 on short horizons. In-process
tests stop the run at a chosen poll of ``stop`` with chunks made small (CHUNK_WORK = 2^18: 32 steps
per chunk, ~12 chunks per record interval), so that checkpoints fall between records too; the
subprocess tests use the real chunks (~4,200 steps) and real signals: SIGKILL after a checkpoint
at a random step, SIGINT or SIGTERM at a random time, to the process or to its process group (as
Ctrl-C in a terminal does, reaching the worker processes too). Every comparison is exact
(np.array_equal, or the CSV files byte for byte): nothing in a resumed run may differ.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from states import SHORT_ANIL_TOML, one_line

import metaode.cli.session
import metaode.simulations.run
from metaode.cli import main
from metaode.config import Config
from metaode.simulations.checkpoint import CheckpointError, Checkpoints, SeedState, StopRequest
from metaode.simulations.run import simulate
from metaode.solvers.integrate import COMPILED, solve
from metaode.theory.system import build_system
from metaode.trajectory import INTERRUPTED, SUCCESS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "validation" / "default.toml"
N = 2000

CONFIGS = {
    "anil-population": {},
    "sgd": {"training.algorithm": "sgd", "teacher.task_std": 0.0},
    "anil-P": {"training.support": 3},
    "maml": {"training.algorithm": "maml", "training.support": 3},
}


def config_of(case: str, alpha_max: float) -> Config:
    base = Config.from_toml(DEFAULT).replace({
        "training.alpha_max": alpha_max, "output.points": 11, "metatest.at": [alpha_max]})
    return base.replace(CONFIGS[case])


def same(a, b) -> bool:
    """Two trajectories equal in every recorded number (and status, steps, meta-test curves)."""
    return (a.status == b.status and a.nfev == b.nfev and a.seed == b.seed
            and np.array_equal(a.alpha, b.alpha) and np.array_equal(a.states, b.states)
            and a.observables.keys() == b.observables.keys()
            and all(np.array_equal(a.observables[k], b.observables[k]) for k in a.observables)
            and a.metatest.keys() == b.metatest.keys()
            and all(np.array_equal(a.metatest[k], b.metatest[k]) for k in a.metatest))


class StopAfter:
    """A stop request that turns True at the n-th poll."""

    def __init__(self, n: int):
        self.n, self.polls = n, 0

    def __call__(self) -> bool:
        self.polls += 1
        return self.polls >= self.n


@pytest.mark.parametrize("case", CONFIGS)
def test_interrupted_and_resumed_is_identical(case, tmp_path, monkeypatch):
    """Stop at two random polls (between records or at them), checkpoint, resume: the
    trajectories equal the uninterrupted ones exactly, for every algorithm."""
    # 32 steps per chunk at N = 2000, K + M = 4 (8 with a support set of 3): ~12 chunks per
    # record interval
    monkeypatch.setattr(metaode.simulations.run, "CHUNK_WORK", 2**18)
    alpha_max = 0.5 if case in ("anil-P", "maml") else 2.0
    config = config_of(case, alpha_max)
    seeds = [3, 4]
    reference = simulate(config, N, seeds, progress=False, workers=1)
    assert all(r.status == SUCCESS for r in reference)
    rng = np.random.default_rng(0)
    chunks = int(alpha_max * N / 32)  # polls of one seed, about one per chunk
    for n in sorted(rng.integers(2, 2 * chunks, size=2)):
        folder = tmp_path / f"stop{n}"
        # periodic checkpoints every 0.05 s (a few per run) besides the one of the stop
        checkpoints = Checkpoints(folder, config, N, every=0.05)
        partial = simulate(config, N, seeds, progress=False, workers=1,
                           checkpoints=checkpoints, stop=StopAfter(n))
        assert INTERRUPTED in [p.status for p in partial]
        for p, r in zip(partial, reference, strict=True):  # the partial records are a prefix
            assert np.array_equal(p.states, r.states[: len(p.alpha)])
        resumed = simulate(config, N, seeds, progress=False, workers=1,
                           checkpoints=Checkpoints(folder, config, N, every=1e-9), resume=True)
        assert all(same(a, b) for a, b in zip(resumed, reference, strict=True)), n


def test_checkpoint_round_trip_and_refusals(tmp_path):
    """A checkpoint restores the networks and the generator's stream exactly; one of another
    config, another N, a corrupt or a truncated file is refused with a message."""
    config = config_of("anil-population", 2.0)
    rng = np.random.default_rng(11)
    rng.standard_normal(1001)  # a stream somewhere in the middle
    J, B, w = rng.standard_normal((2, N)), rng.standard_normal((2, N)), rng.standard_normal(2)
    state = SeedState(seed=5, done=1234, states=rng.standard_normal((3, 9)),
                      observables={"error": np.array([0.3, 0.2, 0.1])}, status=SUCCESS,
                      message="", finished=False, networks=(J, B, w),
                      rng_state=rng.bit_generator.state)
    checkpoints = Checkpoints(tmp_path, config, N, every=1.0)
    checkpoints.save(state)
    loaded = checkpoints.load(5)
    assert loaded.done == 1234 and loaded.status == SUCCESS and not loaded.finished
    for a, b in zip(loaded.networks, (J, B, w), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(loaded.states, state.states)
    assert np.array_equal(loaded.observables["error"], [0.3, 0.2, 0.1])
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded.rng_state
    assert np.array_equal(restored.standard_normal(1000), rng.standard_normal(1000))
    assert checkpoints.load(6) is None  # no checkpoint of that seed
    # more seeds or another interval: the same run; another lr or N: refused
    assert Checkpoints(tmp_path, config.replace({"simulation.seeds": 7,
                                                 "simulation.checkpoint_every": 5.0}),
                       N).load(5) is not None
    with pytest.raises(CheckpointError, match=r"another run \(config\.training\.lr differs\)"):
        Checkpoints(tmp_path, config.replace("training.lr", 0.9), N).load(5)
    with pytest.raises(CheckpointError, match=r"another run \(N differs\)"):
        Checkpoints(tmp_path, config, N + 1).load(5)
    path = checkpoints.path(5)
    path.write_bytes(path.read_bytes()[:-100])  # a truncated file (not written by metaode)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoints.load(5)


def tiny_toml(path: Path, alpha_max: float, seeds: int = 2, every: float = 1e-9) -> Path:
    """The built-in experiment at N = 2000 with the given horizon, seeds and checkpoint interval
    (1e-9 s: a checkpoint at every chunk)."""
    text = DEFAULT.read_text().replace("alpha_max = 80.0", f"alpha_max = {alpha_max}")
    text = text.replace("at = [0.0, 25.0, 80.0]", f"at = [0.0, {alpha_max}]")
    text = text.replace("points = 81", f"points = {int(alpha_max) + 1}")
    text = text.replace("N = 4000\nseeds = 3", f"N = {N}\nseeds = {seeds}\n"
                        f"checkpoint_every = {every}")
    path.write_text(text)
    return path


def start(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "metaode", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def steps_done(path: Path) -> int:
    """Outer steps in the checkpoint at ``path`` (0 if there is none yet)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(json.loads(str(data["meta"]))["done"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(config, folder) of an uninterrupted simulate: alpha_max = 30, two seeds, ~3 s."""
    tmp = tmp_path_factory.mktemp("reference")
    config = tiny_toml(tmp / "config.toml", 30.0)
    assert main(["simulate", str(config), "--out", str(tmp / "out"), "--quiet",
                 "--workers", "1"]) == 0
    return config, tmp / "out"


def interrupt_when(proc: subprocess.Popen, ready, signum: int, group: bool,
                   poll: float) -> str:
    """Wait (at most 120 s) until ``ready()``, send ``signum`` to the process (or its whole
    process group, as Ctrl-C does), and return its one-line stderr after checking the exit status
    128 + signum and that no traceback was printed."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            break
        time.sleep(poll)
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    return one_line(err)


def outputs_equal(a: Path, b: Path) -> None:
    for name in ("simulation.csv", "metatest_simulation.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sigkill_after_a_checkpoint_then_resume(reference, tmp_path, capsys):
    """SIGKILL once seed 0's checkpoint is past a random step: the checkpoint left is valid and
    --resume gives the uninterrupted outputs byte for byte."""
    config, ref = reference
    out = tmp_path / "out"
    threshold = int(np.random.default_rng(7).integers(4000, 40000))
    proc = start(["simulate", str(config), "--out", str(out), "--quiet", "--workers", "1"])
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if steps_done(out / "checkpoint" / "seed_0.npz") >= threshold:
            break
        time.sleep(0.002)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the simulation ended before it could be killed"
    done = steps_done(out / "checkpoint" / "seed_0.npz")
    assert threshold <= done < 30 * N
    assert not (out / "simulation.csv").exists()
    capsys.readouterr()
    assert main(["simulate", str(config), "--out", str(out), "--quiet", "--workers", "1",
                 "--resume"]) == 0
    outputs_equal(out, ref)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "success" and record["resumed_seeds"] == [0]


@pytest.mark.parametrize(("signum", "workers", "group"), [
    (signal.SIGINT, 1, False),  # kill -INT PID
    (signal.SIGTERM, 2, False),  # kill PID: the workers are told to stop by metaode
    (signal.SIGINT, 2, True),  # Ctrl-C: the whole process group gets SIGINT
], ids=["sigint", "sigterm-workers", "ctrl-c-workers"])
def test_signal_leaves_checkpoint_and_partial_outputs(reference, tmp_path, capsys, signum,
                                                      workers, group):
    """A signal at a random moment of the simulation (once seed 0 is past a random step):
    exit 128 + signum with one line, a valid simulation.csv holding a prefix of every seed's
    records, run.json "interrupted"; --resume then completes the uninterrupted outputs byte for
    byte."""
    config, ref = reference
    out = tmp_path / "out"
    threshold = int(np.random.default_rng(signum + workers).integers(1000, 36000))  # of 60000
    proc = start(["simulate", str(config), "--out", str(out), "--quiet", "--workers",
                  str(workers)], start_new_session=True)
    line = interrupt_when(
        proc, lambda: steps_done(out / "checkpoint" / "seed_0.npz") >= threshold, signum, group,
        poll=0.002)
    assert line.startswith(f"metaode simulate: interrupted by {signal.Signals(signum).name} (")
    assert "rerun with --resume to continue" in line
    body = np.loadtxt(out / "simulation.csv", delimiter=",", skiprows=1, ndmin=2)
    full = np.loadtxt(ref / "simulation.csv", delimiter=",", skiprows=1, ndmin=2)
    for seed in (0, 1):  # every seed's rows are the first rows of its uninterrupted run
        mine, theirs = body[body[:, 0] == seed], full[full[:, 0] == seed]
        assert np.array_equal(mine, theirs[: len(mine)])
    assert len(body) < len(full)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["exit_status"] == 128 + signum
    capsys.readouterr()
    assert main(["simulate", str(config), "--out", str(out), "--quiet", "--resume",
                 "--workers", "1"]) == 0
    outputs_equal(out, ref)


def test_finished_run_resumes_without_work_and_other_config_is_refused(reference, tmp_path,
                                                                        capsys, monkeypatch):
    """--resume of a finished run rewrites the same outputs from the (records-only) checkpoints,
    building no network and taking no step; --resume with another config exits 2 naming the key,
    writing nothing."""
    config, ref = reference
    out = tmp_path / "out"
    assert main(["simulate", str(config), "--out", str(out), "--quiet", "--workers", "1"]) == 0
    with np.load(out / "checkpoint" / "seed_0.npz") as data:
        assert "J" not in data.files  # a finished seed keeps its records only
    before = (out / "simulation.csv").stat().st_mtime_ns

    def no_work(*args, **kwargs):
        raise AssertionError("a finished run was simulated again")

    with monkeypatch.context() as patch:
        for name in ("networks_with_overlaps", "sgd_steps", "anil_population_steps",
                     "fewshot_steps"):
            patch.setattr(metaode.simulations.run, name, no_work)
        assert main(["simulate", str(config), "--out", str(out), "--quiet", "--resume",
                     "--workers", "1"]) == 0
    outputs_equal(out, ref)
    assert (out / "simulation.csv").stat().st_mtime_ns >= before
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("\nlr = 1.0", "\nlr = 0.9"))
    capsys.readouterr()
    assert main(["simulate", str(other), "--out", str(out), "--quiet", "--resume"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("metaode simulate: argument --resume:") and "training.lr" in line
    outputs_equal(out, ref)


#: 12 x 12 points: enough work that a signal sent once 3 are journalled arrives before the last
#: (a compiled point takes milliseconds; 6 x 6 points could all finish first).
SWEEP_PARAMS = ["--param", "training.inner_lr=0.25:2:12:log", "--param", "training.lr=0.5:2:12"]
SWEEP_POINTS = 144


#: Run by the test below: the import of ``metaode.cli.program`` says so on stdout, then takes 60 s
#: (a finder that sleeps), so a signal sent after that line always arrives inside the import.
SLOW_IMPORT = """
import sys, time
class SlowProgram:
    def find_spec(self, name, path=None, target=None):
        if name == "metaode.cli.program":
            print("importing", flush=True)
            time.sleep(60)
        return None
sys.meta_path.insert(0, SlowProgram())
from metaode.cli.entry import main
sys.exit(main())
"""


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    """SIGINT during the import of the command line by the console script
    (``metaode.cli.entry``): one line, status 130, nothing written. The import is held open by a
    sleeping finder, so the signal arrives inside it however fast the machine imports.

    The child starts with SIGINT at its default disposition, as from a terminal: pytest-xdist's
    workers ignore SIGINT, a child inherits that, and Python then installs no KeyboardInterrupt
    handler (a job started with SIGINT ignored keeps ignoring it, rightly). Without the reset the
    test passed or failed with the order of the files in its worker (the notebook tests, through
    jupyter_client, put the default handler back in theirs)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_IMPORT, "solve", "missing.toml", "--out",
                             str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline() == "importing\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert err == "metaode: interrupted by SIGINT while starting (nothing was written)\n"
    assert not out.exists()


@pytest.mark.parametrize(("signum", "workers", "group"), [
    (signal.SIGINT, 1, False), (signal.SIGTERM, 2, False), (signal.SIGINT, 2, True),
], ids=["sigint", "sigterm-workers", "ctrl-c-workers"])
def test_sweep_signal_leaves_a_valid_journal(tmp_path, capsys, signum, workers, group):
    """A sweep stopped by a signal once a few points are journalled: exit 128 + signum, one line
    naming the journal, every journal line a complete entry; the same command resumes it to the
    uninterrupted sweep.csv (wall times aside)."""
    config = tmp_path / "sweep.toml"
    config.write_text(SHORT_ANIL_TOML)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["sweep", str(config), *SWEEP_PARAMS, "--out", str(ref), "--quiet"]) == 0
    proc = start(["sweep", str(config), *SWEEP_PARAMS, "--out", str(out), "--quiet",
                  "--workers", str(workers)], start_new_session=True)
    journal = out / "sweep.journal.jsonl"
    line = interrupt_when(
        proc, lambda: journal.exists() and journal.read_bytes().count(b"\n") >= 1 + 3, signum,
        group, poll=0.005)
    assert line.startswith(f"metaode sweep: interrupted by {signal.Signals(signum).name}")
    assert "sweep.journal.jsonl (valid)" in line
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a complete line
    entries = [json.loads(x) for x in lines[1:-1]]
    assert 3 <= len(entries) < SWEEP_POINTS
    capsys.readouterr()
    assert main(["sweep", str(config), *SWEEP_PARAMS, "--out", str(out), "--quiet"]) == 0
    assert f"({SWEEP_POINTS - len(entries)} computed, {len(entries)} from the journal)" in (
        capsys.readouterr().out)
    assert cells(out / "sweep.csv") == cells(ref / "sweep.csv")


def cells(path: Path) -> list[list[str]]:
    """sweep.csv as text cells without the measured wall_time_s column."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    drop = rows[0].index("wall_time_s")
    return [[c for i, c in enumerate(r) if i != drop] for r in rows]


def test_interrupted_integration_keeps_its_records(tmp_path, capsys, monkeypatch):
    """solve polls ``stop`` between chunks of records (the compiled integrator: chunks that
    double while they take under 0.05 s) or after every accepted step (scipy's): it returns the
    records reached (exactly those of the full solution) with status INTERRUPTED; `metaode solve`
    writes them, says where it stopped and exits 130."""
    config = Config.from_toml(DEFAULT)
    system = build_system(config)
    full = solve(system)
    for method, polls in ((COMPILED, 2), ("DOP853", 10)):  # of 81 records, ~40 accepted steps
        part = solve(system, method=method, stop=StopAfter(polls))
        assert part.status == INTERRUPTED and part.message.startswith("interrupted at alpha = ")
        n = len(part.alpha)
        assert 0 < n < len(full.alpha)
        np.testing.assert_allclose(part.states, full.states[:n], rtol=0, atol=1e-12)
        assert part.alpha[-1] <= float(part.message.split("= ")[1])
    part = solve(system, stop=StopAfter(2))
    n = len(part.alpha)

    class Signalled(StopRequest):  # SIGINT arrives at the 2nd poll
        def __call__(self) -> bool:
            self.polls = getattr(self, "polls", 0) + 1
            if self.polls >= 2:
                self.request(signal.SIGINT)
            return super().__call__()

    monkeypatch.setattr(metaode.cli.session, "StopRequest", Signalled)
    out = tmp_path / "out"
    assert main(["solve", str(DEFAULT), "--out", str(out)]) == 130
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"metaode solve: interrupted by SIGINT (theory at alpha = "
                           f"{part.alpha[-1]:.6g}): the records so far are in {out}")
    assert (out / "theory.csv").read_text().count("\n") == 1 + n
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
