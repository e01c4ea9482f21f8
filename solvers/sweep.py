"""Parameter sweeps: the ODE solution at every point of a grid of config values, one row each.

Grid syntax (one ``--param`` per swept key; several give their Cartesian product, the first
parameter varying slowest):

    KEY=START:STOP:NUM        NUM points from START to STOP inclusive, evenly spaced
                              (also written KEY=START:STOP:NUM:linear)
    KEY=START:STOP:NUM:log    NUM points from START to STOP inclusive, evenly spaced in log
                              (START, STOP > 0): START (STOP / START)^(i / (NUM - 1))

KEY is any numeric config key by its dotted path (``training.inner_lr``, ``teacher.task_std``).
Integer keys (``training.inner_steps``, ``training.support``, ``output.points`` ...) get integer
values: each grid value rounded to the nearest integer (halves up); a grid whose rounded values
repeat is rejected. Every point's config, the base config with the swept keys set
(``point_config``, as ``Config.replace`` does), is validated before anything runs.

One point = one ``solve(build_system(config))``; its row holds the swept values and

    error, error_before_adaptation   at the last record (alpha_max unless diverged)
    plateau_length, plateau_height,  ``plateau_metrics``: ``solvers.plateau.measure_plateau``
    escape_time
    specialisation                   the 'specialisation' observable at the last record
    alpha_end                        the last recorded alpha
    status, message                  "success" | "diverged" (the solver's message) | "failed"
    nfev, wall_time_s                right-hand-side evaluations, seconds for this point

Execution: in this process (1 worker), in W local processes (this one and W - 1 workers forked by
``theory.processes.worker_context``, ``concurrent.futures``) or on a Dask cluster
(``distributed.Client``); each point is the same pure function of (config, point), so its row is
bit-identical whatever the engine or worker count (only ``wall_time_s`` is measured, not
computed). With one process a point of a large network may use numba's threads (the lr^2 term,
``theory.fields.diffusion``); with several, each computes its points on one thread
(``metaode.processes.ONE_THREAD``, ``one_numba_thread``), so the cores are not oversubscribed.

Persistence: ``DIR/sweep.journal.jsonl`` gets one line per finished point as it finishes,
written and flushed before the next (so a crash of the process loses none), and fsynced at most
once per SYNC_SECONDS and when the sweep ends (so a crash of the machine loses at most the last
second of points; an fsync per point cost ~5 ms, more than a point's ODE); its first line records
the base config and the swept keys. ``DIR/sweep.csv`` (one row per grid point, in grid order)
is written atomically at the end. Rerunning the same sweep into the same DIR reads the journal
and computes only the points missing from it (a truncated last line, left by a crash mid-write,
is dropped); a journal of a different base config or different swept keys is refused, never
silently reused or overwritten.
Points are matched by their parameter values, so a refined grid reuses the points it shares with
the old one. A point that raised (status "failed") is not journalled: a rerun retries it.
"""

from __future__ import annotations

import csv
import fcntl
import io
import itertools
import json
import math
import os
import signal
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import numpy as np
from tqdm import tqdm

from metaode.config import SCHEMA, Config, ConfigError, first_difference
from metaode.io import atomic_write_text, strict_json
from metaode.processes import one_numba_thread, worker_context
from metaode.solvers.integrate import solve
from metaode.solvers.plateau import measure_plateau
from metaode.theory.system import build_system
from metaode.trajectory import DIVERGED, Trajectory

JOURNAL = "sweep.journal.jsonl"
#: The journal is fsynced at most this often (seconds), and when the sweep ends.
SYNC_SECONDS = 1.0
CSV_NAME = "sweep.csv"
#: Results of a point, after its swept values (the CSV columns).
RESULT_COLUMNS = ("error", "error_before_adaptation", "plateau_length", "plateau_height",
                  "escape_time", "specialisation", "alpha_end", "status", "message", "nfev",
                  "wall_time_s")
_INTEGER_KINDS = ("int", "support")
_FLOAT_KINDS = ("float",)


class JournalError(Exception):
    """The journal in the output folder cannot be used (another sweep's, corrupt, or locked)."""


class SchedulerError(Exception):
    """The Dask scheduler cannot be reached (or Dask is not installed)."""


@dataclass(frozen=True)
class Axis:
    """One swept config key and its grid values (ints for integer keys)."""

    key: str
    values: tuple[float, ...] | tuple[int, ...]
    log: bool

    @property
    def integer(self) -> bool:
        return _kind(self.key) in _INTEGER_KINDS


def _kind(key: str) -> str:
    section, _, name = key.partition(".")
    if section not in SCHEMA or name not in SCHEMA[section]:
        raise ConfigError(key, "unknown key (use a dotted path such as training.lr)")
    return SCHEMA[section][name].kind


def parse_axis(text: str) -> Axis:
    """``KEY=START:STOP:NUM[:linear|:log]`` -> Axis (module docstring).

    A malformed argument raises ValueError whose message quotes it; an unknown or non-numeric key
    raises ConfigError naming the key. Ranges are checked later, per point, by the config schema.
    """
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"expected KEY=START:STOP:NUM[:log], got {text!r}")
    kind = _kind(key)
    if kind not in _INTEGER_KINDS + _FLOAT_KINDS:
        raise ConfigError(key, f"cannot be swept: not a number (a {kind} key)")
    fields = spec.split(":")
    if len(fields) not in (3, 4) or (len(fields) == 4 and fields[3] not in ("log", "linear")):
        raise ValueError(f"expected {key}=START:STOP:NUM or {key}=START:STOP:NUM:log, "
                         f"got {text!r}")
    try:
        start, stop = float(fields[0]), float(fields[1])
        num = int(fields[2])
    except ValueError:
        raise ValueError(f"expected numbers START:STOP and an integer NUM in {text!r}") from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"START and STOP must be finite in {text!r}")
    if num < 1 or (num == 1 and start != stop):
        raise ValueError(f"NUM must be >= 2 (or 1 with START = STOP) in {text!r}")
    log = len(fields) == 4 and fields[3] == "log"
    if log:
        if start <= 0 or stop <= 0:
            raise ValueError(f"a log grid needs START, STOP > 0 in {text!r}")
        values = np.geomspace(start, stop, num)
    else:
        values = np.linspace(start, stop, num)
    values[0], values[-1] = start, stop  # exact endpoints
    if kind in _INTEGER_KINDS:
        ints = tuple(math.floor(v + 0.5) for v in values)
        if len(set(ints)) != len(ints):
            raise ConfigError(key, f"integer key: the grid {text!r} rounds to repeated values "
                              f"{list(ints)}")
        return Axis(key, ints, log)
    return Axis(key, tuple(float(v) for v in values), log)


def grid_points(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """The Cartesian product of the axes, first axis slowest: [{key: value, ...}, ...]."""
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ConfigError(dup, "swept twice")
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(a.values for a in axes))]


def point_config(config: Config, params: dict[str, Any]) -> Config:
    """``config`` with the swept keys replaced (validated together by the schema; ConfigError
    names the key and the grid point)."""
    return _point_config(config.raw, params)


def _point_config(raw: Mapping[str, Mapping[str, Any]], params: dict[str, Any]) -> Config:
    """The config of the raw base config (``Config.raw``) at the grid point ``params``: one
    validation (``Config.replace`` of a built base config would validate twice)."""
    data = {section: dict(values) for section, values in raw.items()}  # from_dict copies values
    for key, value in params.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        detail = str(err).removeprefix(f"{err.key}: ")
        where = ", ".join(f"{k} = {v!r}" for k, v in params.items())
        raise ConfigError(err.key, f"{detail} (at the grid point {where})") from None


def plateau_metrics(trajectory: Trajectory) -> dict[str, float]:
    """Plateau length, height and escape time of a trajectory, by ``solvers.plateau``'s
    definitions (``measure_plateau``: escape where the specialisation index reaches 1/2, or,
    for a student without a specialisation index (linear), where the error falls to half the
    plateau height); a curve without a plateau gives length 0 and NaN height and escape time."""
    criterion = "specialisation" if "specialisation" in trajectory.observables else "error"
    try:
        plateau = measure_plateau(trajectory, criterion=criterion)
    except ValueError:  # fewer than three resolved records, or nothing slow
        return {"plateau_length": 0.0, "plateau_height": math.nan, "escape_time": math.nan}
    return {"plateau_length": plateau.length, "plateau_height": plateau.height,
            "escape_time": plateau.escape}


def evaluate_point(raw: dict[str, Any], index: int, params: dict[str, Any]) -> dict[str, Any]:
    """Solve the point ``params`` of the base config ``raw`` (``Config.raw``) and return its row.

    Module-level and free of shared state, so that it runs unchanged in this process, in a worker
    process or on a Dask worker. An exception becomes status "failed" with its last line.
    """
    start = time.perf_counter()
    row: dict[str, Any] = {"index": index, **params}
    try:
        config = _point_config(raw, params)
        theory = solve(build_system(config))
        last = {name: (float(values[-1]) if len(values) else math.nan)
                for name, values in theory.observables.items()}
        row.update({
            "error": last["error"],
            "error_before_adaptation": last["error_before_adaptation"],
            **plateau_metrics(theory),
            "specialisation": last.get("specialisation", math.nan),
            "alpha_end": float(theory.alpha[-1]) if len(theory.alpha) else math.nan,
            "status": "diverged" if theory.status == DIVERGED else "success",
            # a Monte Carlo theory that missed theory.mc_rtol says so here (never silently)
            "message": theory.message or theory.monte_carlo.get("warning", ""),
            "nfev": int(theory.nfev),
        })
    except Exception as err:  # reported in the row; the sweep goes on
        last_line = traceback.format_exception_only(err)[-1].strip()
        row.update({c: math.nan for c in RESULT_COLUMNS}, status="failed", message=last_line,
                   nfev=0)
    row["wall_time_s"] = time.perf_counter() - start
    return row


def evaluate_point_one_thread(raw: dict[str, Any], index: int,
                              params: dict[str, Any]) -> dict[str, Any]:
    """``evaluate_point`` with numba's parallel loops on one thread (``one_numba_thread``): the
    task of a Dask worker, whose processes already share the cores."""
    with one_numba_thread():
        return evaluate_point(raw, index, params)


@dataclass
class SweepResult:
    """Rows in grid order; how many points were computed now and how many came from the journal."""

    rows: list[dict[str, Any]]
    computed: int
    reused: int
    seconds: float

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    def summary(self) -> str:
        """One line: points computed and reused, divergences, failures, throughput."""
        parts = [f"{len(self.rows)} points ({self.computed} computed, {self.reused} from the "
                 "journal)"]
        for status in ("diverged", "failed"):
            if self.count(status):
                parts.append(f"{self.count(status)} {status}")
        if self.computed:
            parts.append(f"{self.seconds:.1f} s, {self.computed / self.seconds:.2f} points/s")
        return ", ".join(parts)


class Journal:
    """``DIR/sweep.journal.jsonl``: a header line {"sweep": {"config", "keys"}}, then one line
    {"index", "params", "row"} per finished point, appended and flushed; fsynced with the header,
    then at most once per SYNC_SECONDS, and on ``close``.

    Held under an exclusive ``flock`` while open, so two sweeps cannot write one folder.
    """

    def __init__(self, path: Path, raw: dict[str, Any], keys: list[str]):
        self.path = path
        self.header = {"sweep": {"config": strict_json(raw), "keys": keys}}
        self._synced = -math.inf
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a+b")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise JournalError(f"{path} is in use by another metaode sweep") from None
        try:
            self.entries = self._load()
        except BaseException:
            self._fh.close()
            raise

    def _load(self) -> dict[tuple, dict[str, Any]]:
        """The journalled rows by parameter values. Bytes after the last newline are a line cut
        short by a crash: they are dropped (truncated away before anything is appended)."""
        self._fh.seek(0)
        data = self._fh.read()
        complete = data.split(b"\n")[:-1]
        entries: dict[tuple, dict[str, Any]] = {}
        for number, line in enumerate(complete, start=1):
            try:
                record = json.loads(line)
                if number > 1:
                    keys = self.header["sweep"]["keys"]
                    entries[_params_key(keys, record["params"])] = record["row"]
            except (ValueError, KeyError, TypeError):
                raise JournalError(f"{self.path}, line {number}: not a journal entry") from None
            if number == 1:
                self._check_header(record)
        good = sum(len(line) + 1 for line in complete)
        if good != len(data):
            self._fh.truncate(good)
        if good == 0:
            self._write(self.header, sync=True)
        return entries

    def _check_header(self, record: dict[str, Any]) -> None:
        theirs = record.get("sweep") if isinstance(record, dict) else None
        if not isinstance(theirs, dict):
            raise JournalError(f"{self.path}: not a metaode sweep journal")
        ours = self.header["sweep"]
        if theirs.get("keys") != ours["keys"]:
            raise JournalError(f"{self.path} belongs to a sweep over {theirs.get('keys')}, not "
                               f"{ours['keys']}; choose another --out or delete the journal")
        diff = first_difference(theirs.get("config"), ours["config"])
        if diff is not None:
            raise JournalError(f"{self.path} belongs to a sweep of another config ({diff} "
                               "differs); choose another --out or delete the journal")

    def _write(self, record: dict[str, Any], sync: bool = False) -> None:
        self._fh.write(json.dumps(record).encode() + b"\n")
        self._fh.flush()
        if sync or time.monotonic() - self._synced >= SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def append(self, row: dict[str, Any], keys: list[str]) -> None:
        """Journal one finished point (one line, in the file before returning; on disk within
        SYNC_SECONDS)."""
        self._write({"index": row["index"], "params": {k: row[k] for k in keys}, "row": row})

    def close(self) -> None:
        try:
            self._sync()
        finally:
            self._fh.close()


def _params_key(keys: list[str], params: dict[str, Any]) -> tuple:
    return tuple(params[k] for k in keys)


def sweep(config: Config, axes: Sequence[Axis], out: str | Path, *, workers: int = 1,
          scheduler: str | None = None, progress: bool = False) -> SweepResult:
    """Run (or resume) the sweep of ``config`` over ``axes`` into the folder ``out``.

    Every point is validated first (ConfigError names the key and the point); then the points
    missing from the journal run in this process (``workers = 1``), in ``workers`` processes
    (this one and ``workers - 1`` started ones), or on the Dask scheduler at ``scheduler``; rows
    are journalled as they finish and ``out/sweep.csv`` is written at the end.
    """
    axes = list(axes)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    points = grid_points(axes)
    for params in points:
        point_config(config, params)
    keys = [a.key for a in axes]
    raw = strict_json(config.raw)
    start = time.perf_counter()
    journal = Journal(Path(out) / JOURNAL, raw, keys)
    try:
        rows: list[dict[str, Any] | None] = [None] * len(points)
        todo = []
        for index, params in enumerate(points):
            done = journal.entries.get(_params_key(keys, params))
            if done is None:
                todo.append((index, params))
            else:
                rows[index] = {**done, "index": index, **params}
        reused = len(points) - len(todo)
        bar = tqdm(total=len(points), initial=reused, unit="point", disable=not progress,
                   desc="sweep")
        with bar:
            for row in _execute(raw, todo, workers, scheduler):
                rows[row["index"]] = row
                if row["status"] != "failed":
                    journal.append(row, keys)
                bar.update()
    finally:
        journal.close()
    result = SweepResult(rows, len(todo), reused, time.perf_counter() - start)
    write_sweep_csv(Path(out) / CSV_NAME, keys, result.rows)
    return result


def _execute(raw: dict[str, Any], todo: list[tuple[int, dict[str, Any]]], workers: int,
             scheduler: str | None) -> Iterator[dict[str, Any]]:
    """Rows of the points ``todo`` as they finish (any order)."""
    if not todo:
        return
    if scheduler is not None:
        yield from _on_dask(raw, todo, scheduler)
    elif workers == 1 or len(todo) == 1:
        for index, params in todo:
            yield evaluate_point(raw, index, params)
    else:
        yield from _on_local_pool(raw, todo, min(workers, len(todo)))


def _on_local_pool(raw: dict[str, Any], todo: list[tuple[int, dict[str, Any]]],
                   workers: int) -> Iterator[dict[str, Any]]:
    """The points on ``workers`` processes: this one and ``workers - 1`` forked by
    ``theory.processes.worker_context``.

    Every point is submitted to the pool, whose workers take them from the front of its queue;
    this process takes them from the back (a point the pool has not started is cancelled there and
    computed here) until the two meet. So this process computes from the first instant, while the
    workers start (the server's imports, numba's cache), the pool's queue never runs dry, and all
    processes finish within one point of each other.

    The workers ignore SIGINT: a Ctrl-C, which reaches the whole process group, is handled here
    alone, as SIGTERM is (the points not started are cancelled, those running finish, and every
    finished point is journalled), instead of interrupting a worker anywhere, e.g. in numba's
    compiler callbacks, which can only print that they ignored it.
    """
    pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=worker_context(),
                               initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
    finished: SimpleQueue[Future] = SimpleQueue()
    try:
        stack: list[tuple[Future, int, dict[str, Any]]] = []
        for index, params in todo:
            future = pool.submit(evaluate_point, raw, index, params)
            future.add_done_callback(finished.put)  # also called when cancelled
            stack.append((future, index, params))
        unresolved = len(stack)
        while unresolved:
            computed_here = bool(stack) and stack[-1][0].cancel()
            if computed_here:  # a point the pool had not started
                _, index, params = stack.pop()
                with one_numba_thread():  # as the workers (``ONE_THREAD``)
                    row = evaluate_point(raw, index, params)
                yield row
            else:  # the pool has started every point left
                stack.clear()
            block = not computed_here  # then wait for the pool's next point
            while unresolved and (block or not finished.empty()):
                future = finished.get()
                block = False
                unresolved -= 1
                if not future.cancelled():
                    yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _on_dask(raw: dict[str, Any], todo: list[tuple[int, dict[str, Any]]],
             scheduler: str) -> Iterator[dict[str, Any]]:
    """The same ``evaluate_point`` calls submitted to a Dask distributed scheduler."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise SchedulerError("a Dask cluster needs dask[distributed] (pip install "
                             "'metaode[dask]')") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as err:
        raise SchedulerError(f"cannot connect to the Dask scheduler at {scheduler!r} "
                             f"({err})") from None
    with client:
        futures = [client.submit(evaluate_point_one_thread, raw, i, p, pure=False)
                   for i, p in todo]
        try:
            for future in dask_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)


def write_sweep_csv(path: str | Path, keys: list[str], rows: list[dict[str, Any]]) -> None:
    """``sweep.csv``: index, the swept keys, then RESULT_COLUMNS; one row per grid point.

    Floats are written by repr (they read back bit for bit), integers as integers.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["index", *keys, *RESULT_COLUMNS]
    writer.writerow(header)
    for row in rows:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in (row[c] for c in header)])
    atomic_write_text(path, buf.getvalue())


def read_sweep_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``sweep.csv``: numbers as float (int for index and nfev), text as str."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return [{k: _cell(k, v) for k, v in row.items()} for row in reader]


def _cell(column: str, text: str) -> Any:
    if column in ("status", "message"):
        return text
    if column in ("index", "nfev"):
        return int(text)
    return float(text)
