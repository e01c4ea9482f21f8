"""What the commands share: the output options and the output folder's check (results of an
earlier run are overwritten only with --force), --N / --seeds / --workers, the config facts of the
run record, writing trajectories and the failure or interruption of runs."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from metaode.cli.session import PROG, RunFailed, Session, Stopped, UsageError
from metaode.config import Config, ConfigError
from metaode.io import RUN_RECORD, write_csv, write_metatest_csv
from metaode.simulations.checkpoint import Checkpoints
from metaode.trajectory import DIVERGED, INTERRUPTED, Trajectory, metatest_problem

JOURNAL = "sweep.journal.jsonl"  # solvers.sweep.JOURNAL (that module is imported only by sweep)
#: What metaode writes into an output folder (glob patterns relative to it): a folder holding any
#: of them holds results, which a command overwrites only with --force (or resumes).
RESULT_PATTERNS = ("theory.csv", "simulation.csv", "metatest_theory.csv",
                   "metatest_simulation.csv", "validation.json", "validation.png",
                   "convergence.json", "convergence.png", "maml_gap.json", "maml_gap.png",
                   "drift.json", "drift.png", "sweep.csv", JOURNAL, "phase*.png", RUN_RECORD,
                   "checkpoint/seed_*.npz")


def add_output_options(parser: argparse.ArgumentParser, resume: bool = False) -> None:
    """--out DIR, --quiet and --force (or, with ``resume``, --resume instead)."""
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder (created if missing)")
    parser.add_argument("--quiet", action="store_true", help="hide the progress bars")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--force", action="store_true",
                      help="write into DIR even if it holds results of an earlier run "
                      "(they are overwritten)")
    if resume:
        what.add_argument("--resume", action="store_true",
                          help="continue the simulation from the checkpoint in "
                          "DIR/checkpoint (bit for bit the uninterrupted result); without a "
                          "checkpoint and without results in DIR, start afresh")


def add_width_and_seeds(parser: argparse.ArgumentParser) -> None:
    """--N, --seeds and --workers of the commands that simulate."""
    parser.add_argument("--N", type=int, metavar="N",
                        help="input dimension of the simulation (default: simulation.N)")
    parser.add_argument("--seeds", type=int, metavar="S",
                        help="number of seeds (default: simulation.seeds)")
    parser.add_argument("--workers", type=int, metavar="W",
                        help="processes for the seeds (default: one per seed, at most one per "
                        "CPU); the result does not depend on it")


def override(config: Config, args: argparse.Namespace) -> Config:
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


def check_out(args: argparse.Namespace, config: Config | None = None) -> Path:
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
            return out  # the commands verify the checkpoints before they write anything
        raise UsageError(f"{PROG} {args.command}: argument --resume: {out} holds results "
                         f"({_listing(found)}) but no checkpoint to resume in "
                         f"{out / 'checkpoint'} (simulation.checkpoint_every = 0?); --force "
                         "recomputes them")
    hint = " or --resume to continue its simulation" if hasattr(args, "resume") else ""
    raise UsageError(f"{where}: {out} already holds results ({_listing(found)}); use --force to "
                     f"overwrite them{hint}")


def _listing(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def describe(session: Session, config: Config) -> None:
    """The config and the initial overlaps used, for the run record."""
    st = config.student
    session.record.update(config=config.raw, initial_overlaps={"Q0": st.Q0, "R0": st.R0,
                                                                "w0": st.w0})


def write(session: Session, path: Path, runs: list[Trajectory]) -> None:
    """Write the records of ``runs`` as CSV to ``path``."""
    write_csv(path, runs)
    session.wrote(path)


def write_metatest(session: Session, path: Path, runs: list[Trajectory]) -> None:
    """Write the meta-test curves; one that diverges is kept up to there and makes the command
    fail at its end (``check_metatest``)."""
    if any(r.metatest for r in runs):
        write_metatest_csv(path, runs)
        session.wrote(path)
        problem = metatest_problem(runs)
        if problem:
            session.problems.append(f"{problem} (finite part in {path}; metatest.inner_lr too "
                                    "large for metatest.inner_steps?)")


def check_metatest(session: Session) -> None:
    """RunFailed if a meta-test curve diverged (``write_metatest``)."""
    if session.problems:
        raise RunFailed("; ".join(session.problems))


def failures(runs: list[Trajectory], what: str) -> list[str]:
    """One message per diverged run, naming it (``what`` or its seed)."""
    return [f"{what if r.seed is None else f'seed {r.seed}'}: {r.message}"
            for r in runs if r.status == DIVERGED]


def stopped(session: Session, runs: list[Trajectory], what: str, written: str) -> None:
    """Raise Stopped if a run was interrupted (after its records were written to ``written``)."""
    interrupted = [r for r in runs if r.status == INTERRUPTED]
    if not interrupted:
        return
    name = signal.Signals(session.stop.signum or signal.SIGINT).name
    reached = ", ".join(f"{what if r.seed is None else f'seed {r.seed}'} at alpha = "
                        f"{r.alpha[-1] if len(r.alpha) else 0.0:.6g}" for r in interrupted)
    raise Stopped(session.stop.signum or signal.SIGINT,
                  f"interrupted by {name} ({reached}): the records so far are in {written}"
                  f"{session.note}")
