"""``metaode sweep CONFIG --param KEY=START:STOP:NUM[:log] ... --out DIR``: solve the ODEs at every
point of a grid of config values, in local processes or on a Dask cluster: DIR/sweep.csv, the
journal DIR/sweep.journal.jsonl (a rerun resumes it) and the phase diagrams DIR/phase*.png.

``solvers.sweep`` and ``validation.phase`` are imported when a sweep runs, so that the other
commands do not load them."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from metaode.cli.common import JOURNAL, add_output_options, check_out, describe
from metaode.cli.session import PROG, RunFailed, Session, UsageError
from metaode.config import ConfigError, load_config


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``sweep`` command and its options."""
    p = commands.add_parser(
        "sweep", help="parameter sweep: DIR/sweep.csv and phase diagrams",
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
    add_output_options(p)


def run(args: argparse.Namespace, session: Session) -> None:
    """The sweep, resumed from its journal, its table and its phase diagrams; fails if a point
    failed (a diverged point is a row, not a failure)."""
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
    out = check_out(args)
    journal = out / JOURNAL
    if args.force and journal.exists():
        journal.unlink()  # --force: start afresh
    describe(session, config)
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
