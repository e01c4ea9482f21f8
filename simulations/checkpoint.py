"""Checkpoints of simulations, to resume them bit for bit, and stopping on SIGINT / SIGTERM.

A simulation advances its networks in chunks of outer steps (``simulations.run``); between two
chunks it may write a checkpoint of each seed to ``DIR/checkpoint/seed_<seed>.npz``:

    J, B, w          the networks (absent once the seed has finished)
    states, values   the records so far: the states y = pack(Q, R, w) and the observables
    meta (JSON)      format, N, the config (``fingerprint``), the seed, the outer steps done, the
                     status and message, whether the seed has finished, and the state of the
                     numpy Generator (``bit_generator.state``) and of its evaluation child stream

A checkpoint is written at the first chunk boundary after ``simulation.checkpoint_every`` seconds
since the last one (0: never), when the run is asked to stop (``StopRequest``) and when a seed
finishes; each file is written atomically (a temporary file, flushed and fsynced, renamed over the
old one), so a crash or SIGKILL at any moment leaves the previous checkpoint or the new one, never
a mixture. The numba kernels draw from the Generator passed to them, so restoring its
``bit_generator.state`` together with (J, B, w) restores the random stream exactly; everything else
a run carries between chunks (the overlaps Q, R of anil) is recomputed from J at the start of every
chunk. Hence a run resumed from a checkpoint takes the same steps with the same numbers as one that
was never interrupted: the result is bit for bit identical. A checkpoint of another config or
another N is refused (``CheckpointError``), never silently reused.

``StopRequest`` turns SIGINT and SIGTERM into a request that the simulation (and ``solve``) polls
between chunks (steps): it stops there, checkpoints, and returns what it has recorded so far.
"""

from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaode.config import Config, first_difference
from metaode.io import atomic_write

FORMAT = 1
FOLDER = "checkpoint"
#: Keys that do not change the trajectory of a seed: a checkpoint made with other values of them
#: can be resumed (e.g. with more seeds, or another checkpoint interval, or another stated
#: reference number; reference.at is not neutral: it is a recorded time).
NEUTRAL_KEYS = ("simulation.checkpoint_every", "simulation.seeds", "simulation.seed",
                "reference.quantity", "reference.value", "reference.tolerance",
                "reference.source")


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed: corrupt, of another run, or of another format."""


class Interrupted(BaseException):  # noqa: N818  (a request, like KeyboardInterrupt)
    """Raised by a second SIGINT / SIGTERM, or by the first where nothing polls (``StopRequest``).

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@dataclass
class SeedState:
    """What a checkpoint holds for one seed (see the module docstring)."""

    seed: int
    done: int
    states: np.ndarray
    observables: dict[str, np.ndarray]
    status: int
    message: str
    finished: bool
    networks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    rng_state: dict[str, Any] | None = None
    eval_rng_state: dict[str, Any] | None = None


def fingerprint(config: Config, N: int) -> dict[str, Any]:
    """What must agree for a checkpoint to be resumed: the format, N and the config's raw form
    without NEUTRAL_KEYS (as JSON)."""
    raw = json.loads(json.dumps(config.raw))
    for key in NEUTRAL_KEYS:
        section, _, name = key.partition(".")
        raw.get(section, {}).pop(name, None)
    return {"format": FORMAT, "N": int(N), "config": raw}


class Checkpoints:
    """The checkpoints of one simulation (config, N) in ``out/checkpoint``.

    ``every`` seconds between periodic checkpoints (``simulation.checkpoint_every``); 0 disables
    every checkpoint. Plain attributes only, so it travels to worker processes.
    """

    def __init__(self, out: str | Path, config: Config, N: int, every: float | None = None):
        self.folder = Path(out) / FOLDER
        self.every = float(config.simulation.checkpoint_every if every is None else every)
        self.fingerprint = fingerprint(config, N)
        self.last = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the last checkpoint (or the start)."""
        return self.enabled and time.monotonic() - self.last >= self.every

    def path(self, seed: int) -> Path:
        return self.folder / f"seed_{seed}.npz"

    def save(self, state: SeedState) -> None:
        """Write the checkpoint of ``state.seed`` atomically (if enabled)."""
        if not self.enabled:
            return
        names = list(state.observables)
        n = len(state.states)
        meta = {**self.fingerprint, "seed": state.seed, "done": state.done,
                "status": state.status, "message": state.message, "finished": state.finished,
                "observables": names, "rng": state.rng_state, "eval_rng": state.eval_rng_state}
        arrays = {"meta": np.array(json.dumps(meta)),
                  "states": np.asarray(state.states, dtype=float),
                  "values": np.array([state.observables[k] for k in names], dtype=float
                                     ).reshape(len(names), n)}
        if state.networks is not None:
            arrays.update(zip(("J", "B", "w"), state.networks, strict=True))

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())

        atomic_write(self.path(state.seed), write)
        self.last = time.monotonic()

    def load(self, seed: int) -> SeedState | None:
        """The checkpoint of ``seed`` (None if there is none); CheckpointError if it cannot be
        resumed (unreadable, or made by another config, N or format)."""
        path = self.path(seed)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in data.files if k != "meta"}
            names = meta["observables"]
            ours = self.fingerprint
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} has format {meta.get('format')}, not {FORMAT}")
            if meta.get("seed") != seed:
                raise CheckpointError(f"{path} holds seed {meta.get('seed')}, not {seed}")
            diff = first_difference({k: meta.get(k) for k in ours}, ours)
            if diff is not None:
                raise CheckpointError(f"{path} belongs to another run ({diff} differs)")
            networks = None
            if not meta["finished"]:
                networks = tuple(np.ascontiguousarray(arrays[k], dtype=float)
                                 for k in ("J", "B", "w"))
            return SeedState(
                seed=seed, done=int(meta["done"]), states=arrays["states"],
                observables={k: arrays["values"][i] for i, k in enumerate(names)},
                status=int(meta["status"]), message=str(meta["message"]),
                finished=bool(meta["finished"]), networks=networks, rng_state=meta["rng"],
                eval_rng_state=meta["eval_rng"])
        except CheckpointError:
            raise
        except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError,
                zipfile.BadZipFile) as err:
            raise CheckpointError(f"{path} is not a readable checkpoint "
                                  f"({type(err).__name__}: {err})") from None

    def exists(self) -> bool:
        """Whether the folder holds any checkpoint."""
        return self.folder.is_dir() and any(self.folder.glob("seed_*.npz"))

    def clear(self) -> None:
        """Delete every checkpoint (a fresh run must not leave old ones to a later --resume)."""
        if self.folder.is_dir():
            for path in self.folder.glob("seed_*.npz"):
                path.unlink()


class StopRequest:
    """A request to stop, set by SIGINT / SIGTERM while ``handle_signals`` is active (or directly
    by ``request``); calling it tells whether the request is made.

    While ``polled`` is True the first signal only sets the request and the running simulation or
    integration (which polls it between chunks) stops at its next chunk; otherwise, or at a second
    signal, the handler raises ``Interrupted`` at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.polled = False

    def __call__(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGINT) -> None:
        self.signum = signum

    def _handler(self, signum: int, frame: object) -> None:
        first = self.signum is None
        self.signum = signum
        if not (first and self.polled):
            raise Interrupted(signum)

    @contextmanager
    def polling(self) -> Iterator[None]:
        """Within the block, the first signal is polled, not raised."""
        self.polled = True
        try:
            yield
        finally:
            self.polled = False

    @contextmanager
    def handle_signals(self) -> Iterator[StopRequest]:
        """Install the handlers of SIGINT and SIGTERM for the block (then restore the old ones).
        Outside the main thread (where Python cannot install handlers) this does nothing."""
        signals = (signal.SIGINT, signal.SIGTERM)
        try:
            saved = {s: signal.signal(s, self._handler) for s in signals}
        except ValueError:  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)
