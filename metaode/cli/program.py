"""The ``metaode`` program: the parser (each command adds its own), the dispatch to the command's
``run`` and the translation of its outcome into one line on stderr and the exit status (the exit
statuses are listed in ``metaode.cli``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import numpy as np
from numba.core.errors import NumbaWarning

from metaode.cli import simulate, solve, sweep, validate
from metaode.cli.session import PROG, RunFailed, Session, Stopped, UsageError
from metaode.config import ConfigError
from metaode.simulations.checkpoint import CheckpointError, Interrupted

#: The commands in the order of ``metaode --help``: each module adds its parser and runs it.
COMMANDS = {"solve": solve, "simulate": simulate, "validate": validate, "sweep": sweep}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become one-line ``UsageError``s instead of usage text + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def parser() -> argparse.ArgumentParser:
    """The `metaode` parser: every command of ``COMMANDS`` with its options (also rendered as the
    command-line page of the documentation site)."""
    program = _Parser(
        prog=PROG,
        description="Closed ODEs for online (meta-)learning of two-layer networks (erf, ReLU or "
        "linear activations) in the teacher-student scenario, checked against simulations of "
        "large networks.",
        epilog="Exit status: 0 success, 1 the run failed (e.g. diverged), 2 bad config or "
        "arguments (or an output folder with results, without --force), 130 / 143 interrupted "
        "by SIGINT / SIGTERM (the records so far and a checkpoint are written; --resume "
        "continues). `metaode COMMAND --help` describes each command.",
    )
    commands = program.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_parser(commands)
    return program


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``metaode`` with ``argv`` (default: sys.argv[1:]); returns the exit status.

    Every failure ends in one line on stderr and its exit status (``metaode.cli``); an error that
    is none of the expected ones is reported as an internal error (status 1) in one line too, or
    with its traceback if the environment variable METAODE_TRACEBACK is set.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
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
            COMMANDS[command].run(session.args, session)
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
