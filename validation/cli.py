"""The ``metaode`` command line (INTERFACE.md): solve, simulate and validate one experiment.

    metaode solve CONFIG --out DIR                       -> DIR/theory.csv
    metaode simulate CONFIG [--N N] [--seeds S] --out DIR -> DIR/simulation.csv
    metaode validate [CONFIG] [--N N] [--seeds S] --out DIR
        -> DIR/theory.csv, DIR/simulation.csv, DIR/validation.json, DIR/validation.png
    metaode validate [CONFIG] --convergence N1,N2,... [--seeds S] --out DIR
        -> DIR/convergence.json, DIR/convergence.png (deviation from the ODE against N)
    metaode validate CONFIG --maml-gap N1,N2,... [--seeds S] --out DIR
        -> DIR/maml_gap.json, DIR/maml_gap.png (maml against anil, inner_steps 1 and 2)
    metaode validate [CONFIG] --drift A1,A2,... [--N N] [--repeats R] --out DIR
        -> DIR/drift.json, DIR/drift.png (one-step increments against the ODE at alpha = A_i)

Meta-test curves (error after 0..S test adaptation steps at metatest.at) go to
DIR/metatest_theory.csv and DIR/metatest_simulation.csv. Every command that writes outputs also
writes DIR/run.json (``theory.trajectory.write_run_record``): the command line, the config, N and
the seeds, the status and message, the files written, package versions and the git revision.

Outputs are never overwritten silently: a DIR that holds results of metaode (RESULT_PATTERNS) is
refused unless --force (simulate, validate: or --resume; sweep: or its own journal, which it
resumes). Simulations checkpoint every simulation.checkpoint_every seconds into DIR/checkpoint
(``simulations.checkpoint``); ``--resume`` continues from there, bit for bit.

SIGINT (Ctrl-C) or SIGTERM: a running integration or simulation stops at its next chunk of steps,
writes the records so far (CSV, atomically) and a checkpoint, and the program exits with one line
and status 128 + the signal number (130 for SIGINT, 143 for SIGTERM); a second signal stops at once
(files are written atomically, so none is ever truncated). A sweep stops at once: its journal holds
every point that had finished, and the same command resumes it.

Exit status: 0 success; 2 a bad config or bad arguments (one line on stderr naming the key or the
argument); 1 a failure during the run, e.g. a divergence (what was computed is written, and the
message says at which alpha); 130 / 143 interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from numba.core.errors import NumbaWarning

from metaode.config import Config, ConfigError
from metaode.io import RUN_RECORD, write_csv, write_json, write_metatest_csv, write_run_record
from metaode.simulations.checkpoint import CheckpointError, Checkpoints, Interrupted, StopRequest
from metaode.simulations.run import simulate
from metaode.solvers.integrate import solve
from metaode.theory.state import column_names
from metaode.theory.system import build_system
from metaode.trajectory import DIVERGED, INTERRUPTED, SUCCESS, Trajectory, metatest_problem
from metaode.validation.compare import compare
from metaode.validation.plots import overlay_figure

PROG = "metaode"
JOURNAL = "sweep.journal.jsonl"  # solvers.sweep.JOURNAL (that module is imported only by sweep)
#: What metaode writes into an output folder (glob patterns relative to it): a folder holding any
#: of them holds results, which a command overwrites only with --force (or resumes).
RESULT_PATTERNS = ("theory.csv", "simulation.csv", "metatest_theory.csv",
                   "metatest_simulation.csv", "validation.json", "validation.png",
                   "convergence.json", "convergence.png", "maml_gap.json", "maml_gap.png",
                   "drift.json", "drift.png", "sweep.csv", JOURNAL, "phase*.png", RUN_RECORD,
                   "checkpoint/seed_*.npz")


class UsageError(Exception):
    """A bad command line (exit status 2); the message is one line naming the argument."""


class RunFailed(Exception):
    """The run failed (exit status 1); the message says where (e.g. at which alpha)."""


class Stopped(Exception):
    """The run stopped on SIGINT / SIGTERM after writing what it had (exit 128 + signum)."""

    def __init__(self, signum: int, message: str):
        self.signum = signum
        super().__init__(message)


class Session:
    """One command: its stop request (signals), the files it wrote and its run record.

    ``note`` is what an interruption message adds (e.g. where the sweep's journal is).
    """

    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args, self.argv = args, argv
        self.stop = StopRequest()
        self.record: dict[str, Any] = {}
        self.outputs: list[str] = []
        self.note = ""
        self.problems: list[str] = []
        self.started = time.time()

    def wrote(self, *paths: Path) -> None:
        self.outputs.extend(p.name for p in paths if p.name not in self.outputs)

    def finish(self, status: int, message: str) -> None:
        """Write DIR/run.json if the command wrote anything (its outcome included)."""
        if not self.outputs:
            return
        outcome = {0: "success", 1: "failed", 2: "refused"}.get(status, "interrupted")
        now = time.time()
        write_run_record(self.args.out, {
            "command": self.args.command, "argv": self.argv, "status": outcome,
            "exit_status": status, "message": message, **self.record,
            "outputs": self.outputs,
            "started": _utc(self.started), "finished": _utc(now),
            "wall_time_s": now - self.started})


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become one-line ``UsageError``s instead of usage text + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Closed ODEs for online (meta-)learning of two-layer erf networks in the "
        "teacher-student scenario, checked against simulations of large networks.",
        epilog="Exit status: 0 success, 1 the run failed (e.g. diverged), 2 bad config or "
        "arguments (or an output folder with results, without --force), 130 / 143 interrupted "
        "by SIGINT / SIGTERM (the records so far and a checkpoint are written; --resume "
        "continues). `metaode COMMAND --help` describes each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, resume: bool = False) -> None:
        p.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="output folder (created if missing)")
        p.add_argument("--quiet", action="store_true", help="hide the progress bars")
        what = p.add_mutually_exclusive_group()
        what.add_argument("--force", action="store_true",
                          help="write into DIR even if it holds results of an earlier run "
                          "(they are overwritten)")
        if resume:
            what.add_argument("--resume", action="store_true",
                              help="continue the simulation from the checkpoint in "
                              "DIR/checkpoint (bit for bit the uninterrupted result); without a "
                              "checkpoint and without results in DIR, start afresh")

    def width_and_seeds(p: argparse.ArgumentParser) -> None:
        p.add_argument("--N", type=int, metavar="N",
                       help="input dimension of the simulation (default: simulation.N)")
        p.add_argument("--seeds", type=int, metavar="S",
                       help="number of seeds (default: simulation.seeds)")
        p.add_argument("--workers", type=int, metavar="W",
                       help="processes for the seeds (default: one per seed, at most one per "
                       "CPU); the result does not depend on it")

    p = sub.add_parser("solve", help="integrate the ODEs: DIR/theory.csv",
                       description="Integrate the ODEs of CONFIG; writes DIR/theory.csv.")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    common(p)

    p = sub.add_parser("simulate", help="simulate networks of width N: DIR/simulation.csv",
                       description="Simulate CONFIG at width N over S seeds; writes "
                       "DIR/simulation.csv (a seed column, one block of rows per seed).")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    width_and_seeds(p)
    common(p, resume=True)

    p = sub.add_parser("validate", help="theory against simulation: figure and figures",
                       description="Solve and simulate CONFIG (default: the built-in experiment "
                       "validation/default.toml) and compare them; writes DIR/theory.csv, "
                       "DIR/simulation.csv, DIR/validation.json (agreement figures) and "
                       "DIR/validation.png (theory lines over simulation markers).")
    p.add_argument("config", type=Path, metavar="CONFIG", nargs="?",
                   help="experiment TOML file (default: the built-in experiment)")
    width_and_seeds(p)
    study = p.add_mutually_exclusive_group()
    study.add_argument("--convergence", type=_int_list, metavar="N1,N2,...",
                       help="deviation of the simulation from the theory against N, with the "
                       "fitted slope of log D against log N (expected -1/2)")
    study.add_argument("--maml-gap", type=_int_list, metavar="N1,N2,...",
                       help="maml against anil on paired streams at these N, for inner_steps "
                       "1 and 2 (CONFIG's support must be a number P)")
    study.add_argument("--drift", type=_float_list, metavar="A1,A2,...",
                       help="local drift check: mean one-step increments of a network against "
                       "the ODE's right-hand side at these meta-times")
    p.add_argument("--repeats", type=int, default=20000, metavar="R",
                   help="continuations per state of --drift (default 20000)")
    common(p, resume=True)

    p = sub.add_parser("sweep", help="parameter sweep: DIR/sweep.csv and phase diagrams",
                       description="Solve the ODEs of CONFIG at every point of a grid of config "
                       "values; writes DIR/sweep.csv (one row per grid point: the swept values, "
                       "final error, error before adaptation, plateau length, escape time, "
                       "specialisation, status, nfev, wall time), DIR/phase.png and, for two or "
                       "more swept keys, DIR/phase_COLUMN.png per main column. Finished points "
                       "are journalled in DIR/sweep.journal.jsonl as they finish; rerunning the "
                       "same command computes only the missing ones. A diverged point is a row "
                       "with status 'diverged' (exit 0); a point that raised is status 'failed' "
                       "(exit 1, retried by a rerun). SIGINT / SIGTERM stop it at once and "
                       "leave a valid journal; --force discards the journal and starts afresh.")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    p.add_argument("--param", action="append", required=True, metavar="KEY=START:STOP:NUM[:log]",
                   help="swept key (dotted path, e.g. training.inner_lr) with NUM points from "
                   "START to STOP inclusive, evenly spaced, or evenly in log with ':log'; "
                   "integer keys get rounded integer values; repeat for a Cartesian product")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=int, default=1, metavar="W",
                        help="local processes (default 1: in this process)")
    engine.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the points on the Dask distributed scheduler at ADDRESS "
                        "(e.g. tcp://host:8786)")
    p.add_argument("--contour", action="append", default=[], metavar="COLUMN=LEVEL",
                   help="contour level drawn on the heat map of COLUMN (default: its median)")
    common(p)
    return parser


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"expected widths N >= 2, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 0 or not all(map(math.isfinite, values)):
        raise argparse.ArgumentTypeError(f"expected meta-times alpha >= 0, got {text!r}")
    return values


def load_config(path: Path | None) -> Config:
    """The config at ``path``, or the built-in default experiment (validation/default.toml)."""
    if path is None:
        with resources.as_file(resources.files("metaode.validation") / "default.toml") as default:
            return Config.from_toml(default)
    return Config.from_toml(path)


def _override(config: Config, args: argparse.Namespace) -> Config:
    """--N and --seeds replace simulation.N and simulation.seeds (validated by the schema)."""
    for flag, key in (("N", "simulation.N"), ("seeds", "simulation.seeds")):
        value = getattr(args, flag, None)
        if value is not None:
            try:
                config = config.replace(key, value)
            except ConfigError as err:
                raise UsageError(f"{PROG} {args.command}: argument --{flag}: {err}") from None
    workers = getattr(args, "workers", None)
    if args.command != "sweep" and workers is not None and workers < 1:
        raise UsageError(f"{PROG} {args.command}: argument --workers: must be >= 1, got "
                         f"{workers}")
    return config


def existing_results(out: Path) -> list[str]:
    """The files in ``out`` that metaode writes (RESULT_PATTERNS), relative to it."""
    if not out.is_dir():
        return []
    return sorted(str(p.relative_to(out)) for pattern in RESULT_PATTERNS for p in out.glob(pattern))


def _check_out(args: argparse.Namespace, config: Config | None = None) -> Path:
    """The output folder, if it may be written: not a file, and without results of an earlier run
    unless --force, --resume (with a checkpoint to resume, if it holds results) or, for sweep, the
    sweep's own journal (which the sweep checks and resumes)."""
    out: Path = args.out
    where = f"{PROG} {args.command}: argument --out"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{where}: {out} is not a folder")
    found = existing_results(out)
    if not found or args.force:
        return out
    if args.command == "sweep" and (out / JOURNAL).exists():
        return out
    if getattr(args, "resume", False):
        if config is not None and Checkpoints(out, config, config.simulation.N).exists():
            return out  # run_* verify the checkpoints before they write anything
        raise UsageError(f"{PROG} {args.command}: argument --resume: {out} holds results "
                         f"({_listing(found)}) but no checkpoint to resume in "
                         f"{out / 'checkpoint'} (simulation.checkpoint_every = 0?); --force "
                         "recomputes them")
    hint = " or --resume to continue its simulation" if hasattr(args, "resume") else ""
    raise UsageError(f"{where}: {out} already holds results ({_listing(found)}); use --force to "
                     f"overwrite them{hint}")


def _verify_checkpoints(config: Config, args: argparse.Namespace, out: Path) -> None:
    """With --resume: read every seed's checkpoint before anything is written (CheckpointError
    if one cannot be resumed)."""
    if args.resume:
        sim = config.simulation
        checkpoints = Checkpoints(out, config, sim.N)
        for seed in range(sim.seed, sim.seed + sim.seeds):
            checkpoints.load(seed)


def _listing(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _failures(runs: list[Trajectory], what: str) -> list[str]:
    return [f"{what if r.seed is None else f'seed {r.seed}'}: {r.message}"
            for r in runs if r.status == DIVERGED]


def _stopped(session: Session, runs: list[Trajectory], what: str, written: str) -> None:
    """Raise Stopped if a run was interrupted (after its records were written to ``written``)."""
    stopped = [r for r in runs if r.status == INTERRUPTED]
    if not stopped:
        return
    name = signal.Signals(session.stop.signum or signal.SIGINT).name
    reached = ", ".join(f"{what if r.seed is None else f'seed {r.seed}'} at alpha = "
                        f"{r.alpha[-1] if len(r.alpha) else 0.0:.6g}" for r in stopped)
    raise Stopped(session.stop.signum or signal.SIGINT,
                  f"interrupted by {name} ({reached}): the records so far are in {written}"
                  f"{session.note}")


def _solve(config: Config, session: Session) -> tuple[Trajectory, float]:
    start = time.perf_counter()
    system = build_system(config)
    with session.stop.polling():
        theory = solve(system, stop=session.stop)
    if theory.monte_carlo:
        session.record["monte_carlo"] = theory.monte_carlo
        # a failed run says only why it failed (one line); its record keeps the warning
        if "warning" in theory.monte_carlo and theory.status == SUCCESS:
            print(f"metaode: warning: {theory.monte_carlo['warning']}", file=sys.stderr)
    return theory, time.perf_counter() - start


def _simulate(config: Config, args: argparse.Namespace, session: Session,
              out: Path) -> tuple[list[Trajectory], float]:
    """The seeds of ``config`` with checkpoints in out/checkpoint, resumed with --resume."""
    start = time.perf_counter()
    sim = config.simulation
    seeds = list(range(sim.seed, sim.seed + sim.seeds))
    checkpoints = Checkpoints(out, config, sim.N)
    if args.resume:
        session.record["resumed_seeds"] = [s for s in seeds if checkpoints.path(s).exists()]
    else:
        checkpoints.clear()
    session.note = (f"; checkpoint in {checkpoints.folder}, rerun with --resume to continue"
                    if checkpoints.enabled else
                    " (no checkpoint: simulation.checkpoint_every = 0)")
    try:
        with session.stop.polling():
            sims = simulate(config, sim.N, seeds, progress=not args.quiet, workers=args.workers,
                            checkpoints=checkpoints, resume=args.resume, stop=session.stop)
    except BrokenProcessPool as err:  # a worker was killed (e.g. out of memory)
        raise RunFailed(f"a worker process died ({err}){session.note}") from None
    return sims, time.perf_counter() - start


def _describe(session: Session, config: Config) -> None:
    """The config and the initial overlaps used, for the run record."""
    st = config.student
    session.record.update(config=config.raw, initial_overlaps={"Q0": st.Q0, "R0": st.R0,
                                                                "w0": st.w0})


def _simulation_facts(session: Session, config: Config, args: argparse.Namespace) -> None:
    sim = config.simulation
    session.record.update(N=sim.N, seeds=list(range(sim.seed, sim.seed + sim.seeds)),
                          workers=args.workers)


def run_solve(args: argparse.Namespace, session: Session) -> None:
    config = load_config(args.config)
    out = _check_out(args)
    _describe(session, config)
    theory, seconds = _solve(config, session)
    _write(session, out / "theory.csv", [theory])
    _write_metatest(session, out / "metatest_theory.csv", [theory])
    session.record["theory_nfev"] = theory.nfev
    _stopped(session, [theory], "theory", str(out / "theory.csv"))
    if theory.status == DIVERGED:
        raise RunFailed(f"theory: {theory.message} (records up to there in {out / 'theory.csv'})")
    _check_metatest(session)
    print(f"wrote {out / 'theory.csv'}: {len(theory.alpha)} records, {theory.nfev} right-hand "
          f"side evaluations, {seconds:.2f} s")


def run_simulate(args: argparse.Namespace, session: Session) -> None:
    config = _override(load_config(args.config), args)
    out = _check_out(args, config)
    _verify_checkpoints(config, args, out)
    _describe(session, config)
    _simulation_facts(session, config, args)
    sims, seconds = _simulate(config, args, session, out)
    _write(session, out / "simulation.csv", sims)
    _write_metatest(session, out / "metatest_simulation.csv", sims)
    _stopped(session, sims, "simulation", str(out / "simulation.csv"))
    failed = _failures(sims, "simulation")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records up to there in {out / 'simulation.csv'})")
    _check_metatest(session)
    print(f"wrote {out / 'simulation.csv'}: N = {config.simulation.N}, {len(sims)} seeds, "
          f"{seconds:.1f} s")


def _write(session: Session, path: Path, runs: list[Trajectory]) -> None:
    write_csv(path, runs)
    session.wrote(path)


def _write_metatest(session: Session, path: Path, runs: list[Trajectory]) -> None:
    """Write the meta-test curves; one that diverges is kept up to there and makes the command
    fail at its end (``_check_metatest``)."""
    if any(r.metatest for r in runs):
        write_metatest_csv(path, runs)
        session.wrote(path)
        problem = metatest_problem(runs)
        if problem:
            session.problems.append(f"{problem} (finite part in {path}; metatest.inner_lr too "
                                    "large for metatest.inner_steps?)")


def _check_metatest(session: Session) -> None:
    if session.problems:
        raise RunFailed("; ".join(session.problems))


def run_validate(args: argparse.Namespace, session: Session) -> None:
    config = _override(load_config(args.config), args)
    study = args.convergence or args.maml_gap or args.drift
    if study and args.resume:
        raise UsageError(f"{PROG} validate: argument --resume: only a plain validate resumes "
                         "(not --convergence, --maml-gap or --drift)")
    out = _check_out(args, config)
    _verify_checkpoints(config, args, out)
    _describe(session, config)
    _simulation_facts(session, config, args)
    if study:
        return _run_study(config, args, out, session)
    theory, t_theory = _solve(config, session)
    _write(session, out / "theory.csv", [theory])
    _write_metatest(session, out / "metatest_theory.csv", [theory])
    _stopped(session, [theory], "theory", str(out / "theory.csv"))
    sims, t_sim = _simulate(config, args, session, out)
    _write(session, out / "simulation.csv", sims)
    _write_metatest(session, out / "metatest_simulation.csv", sims)
    _stopped(session, sims, "simulation", f"{out}/theory.csv and simulation.csv")
    failed = _failures([theory], "theory") + _failures(sims, "simulation")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records up to there in {out}/theory.csv and "
                        "simulation.csv; no figure)")
    start = time.perf_counter()
    N, tr = config.simulation.N, config.training
    figures = compare(theory, sims, N=N)
    overlay_figure(theory, sims, out / "validation.png", N=N, algorithm=tr.algorithm)
    session.wrote(out / "validation.png")
    t_plot = time.perf_counter() - start
    st = config.student
    write_json(out / "validation.json", {
        **figures,
        "config": config.raw,
        "initial_overlaps": {"Q0": st.Q0, "R0": st.R0, "w0": st.w0},
        "theory_nfev": theory.nfev,
        "timings_s": {"theory": t_theory, "simulation": t_sim, "compare_and_plot": t_plot},
    })
    session.wrote(out / "validation.json")
    _summary(figures, column_names(config.K, config.M))
    _check_metatest(session)
    print(f"wrote {out}/theory.csv, simulation.csv, validation.json, validation.png "
          f"(theory {t_theory:.1f} s, simulation N = {N} x {len(sims)} seeds {t_sim:.1f} s)")


def _run_study(config: Config, args: argparse.Namespace, out: Path, session: Session) -> None:
    """--convergence, --maml-gap or --drift: one study, its JSON and its figure."""
    sim = config.simulation
    seeds = list(range(sim.seed, sim.seed + sim.seeds))
    progress = not args.quiet
    if args.convergence:
        from metaode.validation.convergence import convergence_figure, convergence_study

        result = convergence_study(config, args.convergence, seeds, progress)
        convergence_figure(result, out / "convergence.png")
        write_json(out / "convergence.json", {**result, "config": config.raw})
        session.wrote(out / "convergence.png", out / "convergence.json")
        print(f"deviation from the ODE ~ N^{result['slope']:.3f} "
              f"(+- {result['slope_stderr']:.3f}); wrote {out}/convergence.json, .png")
    elif args.maml_gap:
        from metaode.validation.maml_gap import gap_figure, maml_anil_gap

        if config.training.support == "population":
            raise ConfigError("training.support", "--maml-gap needs a finite support set P")
        results = {f"inner_steps = {s}": maml_anil_gap(config.replace("training.inner_steps", s),
                                                       args.maml_gap, seeds, progress)
                   for s in (1, 2)}
        gap_figure(results, out / "maml_gap.png")
        write_json(out / "maml_gap.json", {"config": config.raw, **{
            k: {**v, "gap": v["gap"].tolist(), "mean": v["mean"].tolist(),
                "stderr": v["stderr"].tolist()} for k, v in results.items()}})
        session.wrote(out / "maml_gap.png", out / "maml_gap.json")
        for label, res in results.items():
            print(f"{label}: gap ~ N^{res['slope']:.2f}, at N = {res['N'][-1]}: "
                  f"{res['mean'][-1]:.3g}")
    else:
        from metaode.validation.drift import drift_figure, local_drift_check

        if args.repeats < 2:
            raise UsageError(f"{PROG} validate: argument --repeats: must be >= 2")
        checks = [local_drift_check(config, sim.N, a, args.repeats, seed=sim.seed,
                                    progress=progress) for a in args.drift]
        drift_figure(checks, out / "drift.png")
        write_json(out / "drift.json", {"config": config.raw, "checks": [
            {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in c.items()}
            for c in checks]})
        session.wrote(out / "drift.png", out / "drift.json")
        for c in checks:
            print(f"alpha = {c['alpha0']:g}: max |z| = {abs(c['z']).max():.2f} over "
                  f"{len(c['z'])} entries ({c['repeats']} continuations, N = {c['N']})")


def _summary(figures: dict, state_columns: list[str]) -> None:
    """Two lines on stdout: the agreement of the error and of the worst order parameter."""
    columns = figures["columns"]
    err = columns["error"]
    line = (f"error: max |mean - theory| = {err['max_abs_deviation']:.3g} at alpha = "
            f"{err['alpha_of_max_abs_deviation']:.4g}")
    if err.get("max_rel_deviation") is not None:
        line += f" (relative {err['max_rel_deviation']:.2%})"
    if err.get("max_abs_z") is not None:
        line += f", max |z| = {err['max_abs_z']:.2g}"
    print(line)
    worst = max(state_columns, key=lambda c: columns[c]["max_abs_deviation"])
    print(f"order parameters: largest max |mean - theory| = "
          f"{columns[worst]['max_abs_deviation']:.3g} ({worst})")


def run_sweep(args: argparse.Namespace, session: Session) -> None:
    from metaode.solvers.sweep import JournalError, SchedulerError, parse_axis, sweep
    from metaode.validation.phase import MAIN_COLUMNS, phase_figures

    axes = []
    for text in args.param:
        try:
            axes.append(parse_axis(text))
        except ValueError as err:  # ConfigError included: the message starts with the key
            raise UsageError(f"{PROG} sweep: argument --param: {err}") from None
    levels = {}
    for text in args.contour:
        column, _, level = text.partition("=")
        try:
            levels[column] = float(level)
        except ValueError:
            levels[column] = math.nan
        if column not in MAIN_COLUMNS or not math.isfinite(levels[column]):
            raise UsageError(f"{PROG} sweep: argument --contour: expected COLUMN=LEVEL with "
                             f"COLUMN one of {', '.join(MAIN_COLUMNS)}, got {text!r}")
    if args.workers < 1:
        raise UsageError(f"{PROG} sweep: argument --workers: must be >= 1, got {args.workers}")
    config = load_config(args.config)
    out = _check_out(args)
    journal = out / JOURNAL
    if args.force and journal.exists():
        journal.unlink()  # --force: start afresh
    _describe(session, config)
    session.record.update(params=args.param, workers=args.workers, scheduler=args.scheduler)
    session.note = (f"; every finished point is in the journal {journal} (valid), rerun the "
                    "same command to resume")
    try:
        result = sweep(config, axes, out, workers=args.workers, scheduler=args.scheduler,
                       progress=not args.quiet)
    except JournalError as err:
        raise UsageError(f"{PROG} sweep: argument --out: {err}") from None
    except SchedulerError as err:
        raise UsageError(f"{PROG} sweep: argument --scheduler: {err}") from None
    except ConfigError:
        raise
    except Exception as err:  # a worker or the cluster failed: what finished is journalled
        session.wrote(journal)
        raise RunFailed(f"{type(err).__name__}: {err} (finished points are in "
                        f"{journal}; rerun the same command to resume)") from None
    session.wrote(journal, out / "sweep.csv")
    paths = phase_figures(result.rows, axes, out, levels)
    session.wrote(*paths)
    session.record.update(points=len(result.rows), computed=result.computed,
                          reused=result.reused)
    failed = [r for r in result.rows if r["status"] == "failed"]
    if failed:
        raise RunFailed(f"{len(failed)} of {len(result.rows)} points failed (first: point "
                        f"{failed[0]['index']}: {failed[0]['message']}); their rows in "
                        f"{out / 'sweep.csv'} say so, a rerun retries them")
    print(f"wrote {out / 'sweep.csv'}: {result.summary()}; figures "
          f"{', '.join(p.name for p in paths)}")


COMMANDS = {"solve": run_solve, "simulate": run_simulate, "validate": run_validate,
            "sweep": run_sweep}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``metaode`` with ``argv`` (default: sys.argv[1:]); returns the exit status.

    Every failure ends in one line on stderr and its exit status (module docstring); an error
    that is none of the expected ones is reported as an internal error (status 1) in one line too,
    or with its traceback if the environment variable METAODE_TRACEBACK is set.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except UsageError as err:
        return _fail(str(err), 2)
    except KeyboardInterrupt:
        return _fail(f"{PROG}: interrupted by SIGINT", 128 + signal.SIGINT)
    session = Session(args, argv)
    status, message = _run(session)
    try:
        session.finish(status, message)
    except OSError as err:
        status, message = 1, f"{PROG} {args.command}: run failed: cannot write the run record " \
            f"({err})"
    except (Interrupted, KeyboardInterrupt):
        pass  # the outputs themselves are written; the exit status reports the interruption
    return _fail(message, status) if status else 0


def _run(session: Session) -> tuple[int, str]:
    """(exit status, one-line message) of the session's command."""
    command = session.args.command
    where = f"{PROG} {command}"
    try:
        with session.stop.handle_signals(), quiet_numerics():
            COMMANDS[command](session.args, session)
    except UsageError as err:
        return 2, str(err)
    except ConfigError as err:
        return 2, f"{where}: {err}"
    except CheckpointError as err:
        return 2, f"{where}: argument --resume: {err}; --force recomputes"
    except RunFailed as err:
        return 1, f"{where}: run failed: {err}"
    except Stopped as err:
        return 128 + err.signum, f"{where}: {err}"
    except Interrupted as err:
        return 128 + err.signum, f"{where}: interrupted by {err}{session.note}"
    except KeyboardInterrupt:
        return 128 + signal.SIGINT, f"{where}: interrupted by SIGINT{session.note}"
    except OSError as err:
        return 1, f"{where}: run failed: {err}"
    except MemoryError:
        return 1, f"{where}: run failed: out of memory (smaller simulation.N or output.points?)"
    except Exception as err:
        if os.environ.get("METAODE_TRACEBACK"):
            raise
        return 1, (f"{where}: internal error: {type(err).__name__}: {err} (please report it; "
                   "METAODE_TRACEBACK=1 shows the traceback)")
    return 0, ""


@contextmanager
def quiet_numerics() -> Iterator[None]:
    """No numpy floating-point warnings (overflow, invalid value: a state or observable that is
    not finite is detected and reported with its alpha) and no numba performance warnings (of a
    first compilation) on stderr, which carries one line per failure."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", NumbaWarning)
        yield


def _fail(message: str, status: int) -> int:
    print(" ".join(message.split()), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
