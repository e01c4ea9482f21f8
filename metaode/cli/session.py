"""One run of a command: its outcomes as exceptions and its ``Session``.

A command ends in success, or raises ``UsageError`` (exit status 2), ``RunFailed`` (1) or
``Stopped`` (128 + the signal number); ``metaode.cli.program`` turns that into one line on stderr
and the exit status. The ``Session`` carries the stop request that signals set, the files the
command wrote and the facts of its run record (DIR/run.json).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import Any

from metaode.io import write_run_record
from metaode.simulations.checkpoint import StopRequest

PROG = "metaode"


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
        """Note files written into the output folder (by name, once each) for the run record."""
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
