"""Run the simulation of a config at finite N over several seeds into trajectories.

For each seed, networks are built whose overlaps equal the config's (Q0, R0, T) exactly
(``simulations.networks``), the algorithm's numba kernel advances them between the recorded
meta-times (alpha = steps / N, rounded to whole steps), and at each record the exact order
parameters Q = J J^T / N, R = J B^T / N, T = B B^T / N of the networks are taken and the observables
evaluated on them by the same functions as the theory's (the config's ODE system).

The steps between two records are taken in chunks of ``chunk_steps(config, N)`` outer steps, a
fixed function of the config and N (~25 ms of work each). Between two
chunks the run checks its state (``theory.system.state_problem``: a blow-up stops it at that chunk,
not only at the next record), polls ``stop`` (SIGINT / SIGTERM: it then stops, checkpoints and
returns its records with status INTERRUPTED) and writes a checkpoint when one is due
(``simulations.checkpoint``). A run carries nothing else from one chunk to the next (anil's
overlaps Q, R are recomputed from J at the start of every chunk), so a run resumed from a
checkpoint takes exactly the steps of an uninterrupted one: its trajectory is identical, bit for
bit. At every record the state must also pass ``runaway`` (solver.max_norm) and have finite
observables.
"""

from __future__ import annotations

import multiprocessing.queues
import multiprocessing.synchronize
import os
import signal
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from functools import partial
from queue import Empty
from typing import TYPE_CHECKING

import numpy as np

from metaode.algorithms import algorithm
from metaode.config import Config, ConfigError
from metaode.processes import worker_context
from metaode.simulations.anil import anil_population_steps
from metaode.simulations.checkpoint import Checkpoints, SeedState
from metaode.simulations.fewshot import fewshot_steps
from metaode.simulations.kernels import overlaps
from metaode.simulations.networks import networks_with_overlaps
from metaode.simulations.sgd import sgd_steps
from metaode.theory.metatest import metatest_curve
from metaode.theory.state import pack, state_size
from metaode.theory.system import build_system, non_finite, runaway, state_problem
from metaode.trajectory import DIVERGED, INTERRUPTED, SUCCESS, Trajectory, metatest_curves

#: Work per chunk of steps, counted as N (K + M) per example (the fields of one input): 2^25 takes
#: ~25 ms for sgd (K = M = 2), so a stop request is answered within ~0.1 s, while the ~70 us of
#: checks per chunk cost < 0.5% (measured at N = 1e4).
CHUNK_WORK = 2**25

if TYPE_CHECKING:
    from tqdm import tqdm


def record_steps(config: Config, N: int) -> np.ndarray:
    """The outer-step indices of the recorded times: round(alpha N), strictly increasing."""
    steps = np.rint(config.times() * N).astype(np.int64)
    return np.unique(steps)


def chunk_steps(config: Config, N: int) -> int:
    """Outer steps per chunk: CHUNK_WORK / (N (K + M) examples per step), at least 1; the examples
    of a step are query * meta_batch, plus the support sets (P per task) of a finite support."""
    tr = config.training
    per_task = tr.query + (0 if tr.support == "population" else tr.support)
    return max(1, CHUNK_WORK // (N * (config.K + config.M) * per_task * tr.meta_batch))


class Run:
    """One simulation: networks with the config's initial overlaps, head, random stream."""

    def __init__(self, config: Config, N: int, rng: np.random.Generator):
        st, te = config.student, config.teacher
        self.config = config
        self.J, self.B = networks_with_overlaps(np.asarray(st.Q0), np.asarray(st.R0),
                                                np.asarray(te.T), N, rng)
        self.w = np.array(st.w0, dtype=float)
        self.rng = rng

    def advance(self, n_steps: int) -> None:
        """Run ``n_steps`` outer steps of the algorithm."""
        raise NotImplementedError

    def observables(self) -> dict[str, float]:
        """The observables of the networks now: needed only by an algorithm registered without an
        ODE theory (every built-in one has a theory, whose observables are evaluated on the
        networks' exact overlaps instead)."""
        raise NotImplementedError(
            f"{self.config.training.algorithm!r} has no ODE theory: its run must define "
            f"observables()")

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact order parameters (Q, R, w) of the networks now."""
        Q, R, _ = overlaps(self.J, self.B)
        return Q, R, self.w.copy()

    def generators(self) -> list[np.random.Generator]:
        """The random streams the run draws from (restored by ``restore``)."""
        return [self.rng]

    def restore(self, saved: SeedState) -> None:
        """Networks and random streams of a checkpoint."""
        J, B, w = saved.networks
        self.J[:], self.B[:], self.w[:] = J, B, w
        states = [saved.rng_state, saved.eval_rng_state]
        for generator, state in zip(self.generators(), states, strict=False):
            generator.bit_generator.state = state


class SGDRun(Run):
    """Online SGD on the fixed task u0 (simulations.sgd)."""

    def advance(self, n_steps: int) -> None:
        te, tr = self.config.teacher, self.config.training
        sgd_steps(self.config.activations, self.J, self.B, self.w, np.asarray(te.u0, dtype=float),
                  float(te.noise), float(tr.lr), float(tr.lr_head), int(tr.query * tr.meta_batch),
                  n_steps, self.rng)


class ANILPopulationRun(Run):
    """ANIL with the population inner loop (simulations.anil); Q, R carried and refreshed."""

    def advance(self, n_steps: int) -> None:
        te, tr = self.config.teacher, self.config.training
        Q, R, T = overlaps(self.J, self.B)  # refresh the carried overlaps exactly
        anil_population_steps(
            self.config.activations, self.J, self.B, self.w, Q, R, T,
            np.asarray(te.u0, dtype=float), float(te.task_std), float(te.noise),
            float(tr.inner_lr), int(tr.inner_steps), tr.order == "second", float(tr.lr),
            float(tr.lr_head), int(tr.query), int(tr.meta_batch), n_steps, self.rng)


class FewShotRun(Run):
    """anil with support = P, or maml (simulations.fewshot)."""

    def advance(self, n_steps: int) -> None:
        te, tr = self.config.teacher, self.config.training
        fewshot_steps(
            self.config.activations, self.J, self.B, self.w, np.asarray(te.u0, dtype=float),
            float(te.task_std), float(te.noise), float(tr.inner_lr), int(tr.inner_steps),
            int(tr.support), tr.algorithm == "maml", tr.order == "second", float(tr.lr),
            float(tr.lr_head), int(tr.query), int(tr.meta_batch), n_steps, self.rng)


def anil_run(config: Config, N: int, rng: np.random.Generator) -> Run:
    """anil: the population inner loop, or P support examples (``FewShotRun``)."""
    if config.training.support == "population":
        return ANILPopulationRun(config, N, rng)
    return FewShotRun(config, N, rng)


def make_run(config: Config, N: int, rng: np.random.Generator) -> Run:
    """The simulation of ``config.training.algorithm`` (its entry in ``metaode.algorithms``)."""
    return algorithm(config.training.algorithm).simulation_factory()(config, N, rng)


def _trajectory(config: Config, N: int, seed: int,
                advanced: Callable[[int], object] | None = None,
                checkpoints: Checkpoints | None = None, resume: bool = False,
                stop: Callable[[], bool] | None = None) -> Trajectory:
    """The trajectory of ``simulate_seed``; ``advanced(n)`` is called after every n steps.

    With ``checkpoints``, the seed is checkpointed when one is due, when ``stop()`` turns True
    (then it returns its records so far, status INTERRUPTED) and when it ends; with ``resume`` it
    continues from its checkpoint, if there is one.
    """
    has_theory = algorithm(config.training.algorithm).theory is not None
    system = build_system(config) if has_theory else None
    T = np.asarray(config.teacher.T, dtype=float)
    size = state_size(config.K, config.M)
    steps = record_steps(config, N)
    chunk = chunk_steps(config, N)
    states: list[np.ndarray] = []
    obs: list[dict[str, float]] = []
    status, message, done = SUCCESS, "", 0
    saved = checkpoints.load(seed) if checkpoints is not None and resume else None
    # a finished seed is only read back: no networks are built
    run = None if saved is not None and saved.finished else make_run(
        config, N, np.random.default_rng(seed))
    if saved is not None:
        states = list(saved.states)
        obs = [{k: float(v[i]) for k, v in saved.observables.items()} for i in range(len(states))]
        done = saved.done
        if saved.finished:
            status, message = saved.status, saved.message
        else:
            run.restore(saved)
        if advanced is not None:
            advanced(done)

    def problem(y: np.ndarray) -> str:
        """Why the state y of the networks is invalid ('' if it is not)."""
        if system is None:
            return state_problem(y, config.K, config.M, T)
        return system.invalid(y)

    def snapshot(finished: bool) -> SeedState:
        return SeedState(
            seed=seed, done=done, states=np.array(states).reshape(len(states), size),
            observables={k: np.array([o[k] for o in obs]) for k in (obs[0] if obs else {})},
            status=status, message=message, finished=finished,
            networks=None if finished else (run.J, run.B, run.w),
            rng_state=run.rng.bit_generator.state,
            eval_rng_state=(run.generators()[1].bit_generator.state
                            if len(run.generators()) > 1 else None))

    def pause() -> bool:
        """Between two chunks: stop (and checkpoint) if asked to, else checkpoint if due."""
        nonlocal status, message
        if stop is not None and stop():
            status, message = INTERRUPTED, f"interrupted at alpha = {done / N:.6g}"
            if checkpoints is not None:
                checkpoints.save(snapshot(False))
            return True
        if checkpoints is not None and checkpoints.due():
            checkpoints.save(snapshot(False))
        return False

    if saved is None or not saved.finished:
        for target in steps[len(states):]:
            if states and pause():
                break
            reason = ""
            while done < target and not reason:
                n = int(min(chunk, target - done))
                run.advance(n)
                done += n
                if advanced is not None:
                    advanced(n)
                if done < target:
                    Q, R, w = run.state()
                    reason = problem(pack(Q, R, w))
                    if not reason and pause():
                        break
            if status == INTERRUPTED:
                break
            Q, R, w = run.state()
            y = pack(Q, R, w)
            reason = reason or problem(y) or runaway(y, config.K, config.M, T,
                                                     config.solver.max_norm)
            values = {}
            if not reason:
                values = run.observables() if system is None else system.observables(y)
                reason = non_finite(values)
            if reason:
                status, message = DIVERGED, f"diverged at alpha = {done / N:.6g}: {reason}"
                break
            states.append(y)
            obs.append(values)
        if checkpoints is not None and status != INTERRUPTED:
            checkpoints.save(snapshot(True))
    names = list(obs[0]) if obs else ["error", "error_before_adaptation"]
    recorded = np.array(states).reshape(len(states), size)
    return Trajectory(alpha=steps[: len(states)] / N, states=recorded, K=config.K, M=config.M,
                      observables={n: np.array([o[n] for o in obs]) for n in names},
                      status=status, message=message, nfev=done, seed=seed,
                      metatest={} if system is None else metatest_curves(
                          steps[: len(states)] / N, recorded,
                          np.rint(np.asarray(config.metatest.at) * N) / N,
                          partial(metatest_curve, config)))


def _progress_bar(total: int, desc: str, progress: bool) -> tqdm:
    """A tqdm bar (notebook or terminal); tqdm.auto is imported here, not with the module, because
    its import (with asyncio) costs ~70 ms of every start-up of the command line."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", unit_scale=True, disable=not progress,
                leave=False)


def simulate_seed(config: Config, N: int, seed: int, progress: bool = True) -> Trajectory:
    """One simulated trajectory at width N with random stream ``seed``.

    Observables, the validity check and the meta-test curves come from the config's ODE system,
    evaluated on the networks' exact overlaps. An algorithm registered without an ODE theory has
    its states checked by ``state_problem`` and ``runaway`` directly, its observables from
    ``Run.observables`` and no meta-test curves.
    """
    total = int(record_steps(config, N)[-1])
    with _progress_bar(total, f"seed {seed}", progress) as bar:
        return _trajectory(config, N, seed, bar.update)


# -- several seeds in worker processes ---------------------------------------------------------
_progress_queue = None  # in a worker process: where its steps are reported (None: not reported)
_stop_event = None  # in a worker process: set by the parent to stop every seed
_signalled = False  # in a worker process: SIGINT or SIGTERM arrived


def _start_worker(queue: multiprocessing.queues.Queue | None,
                  event: multiprocessing.synchronize.Event) -> None:
    """Worker set-up: the progress queue and the stop event; SIGINT / SIGTERM (a Ctrl-C reaches
    the whole process group) only request the stop, which the seed polls between chunks; no
    floating-point warnings."""
    global _progress_queue, _stop_event
    _progress_queue, _stop_event = queue, event
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    # like the parent's command line (cli.program.quiet_numerics): a state or observable that
    # is not finite is reported with its alpha, not as a numpy warning on the shared stderr
    np.seterr(all="ignore")
    warnings.simplefilter("ignore", RuntimeWarning)


def _on_signal(signum: int, frame: object) -> None:
    global _signalled
    _signalled = True


def _stop_requested() -> bool:
    return _signalled or _stop_event.is_set()


def _report(n_steps: int) -> None:
    _progress_queue.put(n_steps)


def _seed_in_worker(raw: dict, N: int, seed: int, checkpoints: Checkpoints | None,
                    resume: bool) -> Trajectory:
    """``simulate_seed`` in a worker process; the config travels as its plain ``raw`` form, from
    which ``Config.from_dict`` rebuilds it exactly (drawn initial overlaps come from init_seed)."""
    config = Config.from_dict(raw)
    return _trajectory(config, N, seed, None if _progress_queue is None else _report,
                       checkpoints, resume, _stop_requested)


def _drain(queue: multiprocessing.queues.Queue | None, bar: tqdm) -> None:
    """Move the steps the workers have reported so far onto the bar."""
    if queue is None:
        return
    while True:
        try:
            bar.update(queue.get_nowait())
        except Empty:
            return


def simulate(config: Config, N: int | None = None, seeds: Iterable[int] | None = None,
             progress: bool = True, workers: int | None = None, *,
             checkpoints: Checkpoints | None = None, resume: bool = False,
             stop: Callable[[], bool] | None = None) -> list[Trajectory]:
    """Trajectories of ``seeds`` (default: config.simulation) at width N (default: config).

    The seeds run in ``workers`` processes (default: one per seed up to ``os.cpu_count()``): a
    ``concurrent.futures.ProcessPoolExecutor`` on ``theory.processes.worker_context``; ``workers=1``
    runs them one after the other in this process. Each seed has its own random stream
    (``np.random.default_rng(seed)``) and every process runs the same compiled kernels, so the
    result is the same, bit for bit, whatever ``workers`` is. Progress is one bar over seeds x
    steps, drawn by this process only (workers report their steps through a queue). Starting the
    pool costs about half a second (the first pool of a process also waits for the fork server's
    imports; each worker loads the compiled kernels from numba's cache), so ``workers=1`` is faster
    for runs of a second or two. A script that calls this with workers>1 must guard its top level
    with ``if __name__ == "__main__":``.

    ``checkpoints`` (``simulations.checkpoint.Checkpoints``) checkpoints every seed, ``resume``
    continues each from its checkpoint. ``stop`` is polled between chunks of steps; once it returns
    True every seed (in this process, or in the workers, which also stop on their own SIGINT /
    SIGTERM) stops, checkpoints and returns its records with status INTERRUPTED.
    """
    violation = algorithm(config.training.algorithm).simulation_check(config.raw)
    if violation is not None:
        raise ConfigError(*violation)
    if algorithm(config.training.algorithm).theory is not None:
        build_system(config)  # the runs record the theory's observables of their overlaps:
        # a config whose theory is not implemented (TheoryUnavailable) is refused here
    N = config.simulation.N if N is None else N
    if seeds is None:
        first = config.simulation.seed
        seeds = range(first, first + config.simulation.seeds)
    seeds = [int(s) for s in seeds]
    if not seeds:
        return []
    workers = min(len(seeds), os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers = {workers} must be at least 1")
    workers = min(workers, len(seeds))
    desc = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    total = len(seeds) * int(record_steps(config, N)[-1])
    with _progress_bar(total, desc, progress) as bar:
        if workers <= 1:
            return [_trajectory(config, N, s, bar.update, checkpoints, resume, stop)
                    for s in seeds]
        context = worker_context()
        queue = context.Queue() if progress else None
        event = context.Event()
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                 initargs=(queue, event)) as pool:
            futures = [pool.submit(_seed_in_worker, config.raw, N, s, checkpoints, resume)
                       for s in seeds]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
                _drain(queue, bar)
                if stop is not None and stop():
                    event.set()
                failed = [f.exception() for f in done if f.exception() is not None]
                if failed:  # the other seeds stop at their next chunk (a process still
                    event.set()  # starting needs the event and the queue, so wait for them)
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise failed[0]
            bar.update(total - bar.n)  # steps whose reports were still in the queue's pipe
            return [f.result() for f in futures]
