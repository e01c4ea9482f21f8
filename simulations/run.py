"""Run the simulation of a config at finite N over several seeds into trajectories.

For each seed, networks are built whose overlaps equal the config's (Q0, R0, T) exactly
(``simulations.networks``), the algorithm's numba kernel advances them between the recorded
meta-times (alpha = steps / N, rounded to whole steps), and at each record the exact order
parameters Q = J J^T / N, R = J B^T / N, T = B B^T / N of the networks are taken and the observables
evaluated on them by the same functions as the theory's (maml, which has no theory: by Monte Carlo
over fresh tasks, ``FewShotRun.observables``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tqdm.auto import tqdm

from simulations.anil import anil_population_steps
from simulations.fewshot import adapted_error_mc, fewshot_steps
from simulations.kernels import overlaps
from simulations.networks import networks_with_overlaps
from simulations.sgd import sgd_steps
from theory.config import Config, ConfigError
from theory.fields import representation_error, specialisation
from theory.state import pack
from theory.system import build_system
from theory.trajectory import DIVERGED, Trajectory, metatest_curves


def record_steps(config: Config, N: int) -> np.ndarray:
    """The outer-step indices of the recorded times: round(alpha N), strictly increasing."""
    steps = np.rint(config.times() * N).astype(np.int64)
    return np.unique(steps)


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

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact order parameters (Q, R, w) of the networks now."""
        Q, R, _ = overlaps(self.J, self.B)
        return Q, R, self.w.copy()


class SGDRun(Run):
    """Online SGD on the fixed task u0 (simulations.sgd)."""

    def advance(self, n_steps: int) -> None:
        te, tr = self.config.teacher, self.config.training
        sgd_steps(self.J, self.B, self.w, np.asarray(te.u0, dtype=float), float(te.noise),
                  float(tr.lr), float(tr.lr_head), int(tr.query * tr.meta_batch), n_steps,
                  self.rng)


class ANILPopulationRun(Run):
    """ANIL with the population inner loop (simulations.anil); Q, R carried and refreshed."""

    def advance(self, n_steps: int) -> None:
        te, tr = self.config.teacher, self.config.training
        Q, R, T = overlaps(self.J, self.B)  # refresh the carried overlaps exactly
        anil_population_steps(
            self.J, self.B, self.w, Q, R, T, np.asarray(te.u0, dtype=float),
            float(te.task_std), float(te.noise), float(tr.inner_lr), int(tr.inner_steps),
            tr.order == "second", float(tr.lr), float(tr.lr_head), int(tr.query),
            int(tr.meta_batch), n_steps, self.rng)


class FewShotRun(Run):
    """anil with support = P, or maml (simulations.fewshot); observables by Monte Carlo over tasks.

    ``observables`` estimates the meta-generalisation error with ``simulation.eval_tasks`` fresh
    tasks and support sets drawn from ``eval_rng``, a child stream spawned from the run's seed
    sequence (``Generator.spawn``), so evaluating never advances the training stream; successive
    records use successive eval draws (independent estimates).
    """

    def __init__(self, config: Config, N: int, rng: np.random.Generator):
        super().__init__(config, N, rng)
        self.eval_rng = rng.spawn(1)[0]

    def advance(self, n_steps: int) -> None:
        te, tr = self.config.teacher, self.config.training
        fewshot_steps(
            self.J, self.B, self.w, np.asarray(te.u0, dtype=float), float(te.task_std),
            float(te.noise), float(tr.inner_lr), int(tr.inner_steps), int(tr.support),
            tr.algorithm == "maml", tr.order == "second", float(tr.lr), float(tr.lr_head),
            int(tr.query), int(tr.meta_batch), n_steps, self.rng)

    def observables(self) -> dict[str, float]:
        """error (after adaptation, MC mean) and error_mc_stderr, error_before_adaptation (exact
        average over tasks), representation_error, specialisation, align_k; no noise floor.
        """
        te, tr = self.config.teacher, self.config.training
        error, stderr, before = adapted_error_mc(
            self.J, self.B, self.w, np.asarray(te.u0, dtype=float), float(te.task_std),
            float(te.noise), float(tr.inner_lr), int(tr.inner_steps), int(tr.support),
            tr.algorithm == "maml", int(self.config.simulation.eval_tasks), self.eval_rng)
        Q, R, T = overlaps(self.J, self.B)
        spec, align = specialisation(Q, R, T)
        return {"error": float(error), "error_mc_stderr": float(stderr),
                "error_before_adaptation": float(before),
                "representation_error": representation_error(Q, R, T, te.u0, te.task_std),
                "specialisation": spec, **{f"align_{k}": float(a) for k, a in enumerate(align)}}


def make_run(config: Config, N: int, rng: np.random.Generator) -> Run:
    """The simulation of ``config.training.algorithm`` (and support)."""
    tr = config.training
    if tr.algorithm == "sgd":
        return SGDRun(config, N, rng)
    if tr.algorithm == "anil" and tr.support == "population":
        return ANILPopulationRun(config, N, rng)
    if tr.algorithm == "maml" and tr.support == "population":
        raise ConfigError("training.support", "maml needs a finite support set: an integer "
                          "number P of support examples, not 'population'")
    return FewShotRun(config, N, rng)  # anil with P support examples, or maml


def simulate_seed(config: Config, N: int, seed: int, progress: bool = True) -> Trajectory:
    """One simulated trajectory at width N with random stream ``seed``.

    Observables, the validity check and the meta-test curves come from the config's ODE system,
    evaluated on the networks' exact overlaps. maml has no ODE system: its states are only checked
    to be finite, its observables are the run's own Monte Carlo estimates
    (``FewShotRun.observables``) and it records no meta-test curves.
    """
    rng = np.random.default_rng(seed)
    run = make_run(config, N, rng)
    system = None if config.training.algorithm == "maml" else build_system(config)
    steps = record_steps(config, N)
    states, obs, status, message = [], [], 0, ""
    done = 0
    bar = tqdm(total=int(steps[-1]), desc=f"seed {seed}", unit="step", unit_scale=True,
               disable=not progress, leave=False)
    for target in steps:
        run.advance(int(target - done))
        bar.update(int(target - done))
        done = int(target)
        Q, R, w = run.state()
        y = pack(Q, R, w)
        if system is None:
            reason = "" if np.all(np.isfinite(y)) else "(Q, R, w) is not finite"
        else:
            reason = system.invalid(y)
        if reason:
            status, message = DIVERGED, f"diverged at alpha = {done / N:.6g}: {reason}"
            break
        states.append(y)
        obs.append(run.observables() if system is None else system.observables(y))
    bar.close()
    names = list(obs[0]) if obs else ["error", "error_before_adaptation"]
    return Trajectory(alpha=steps[: len(states)] / N, states=np.array(states).reshape(
        len(states), -1), K=config.K, M=config.M,
        observables={n: np.array([o[n] for o in obs]) for n in names},
        status=status, message=message, nfev=done, seed=seed,
        metatest={} if system is None else metatest_curves(
            steps[: len(states)] / N, states, np.rint(np.asarray(config.metatest.at) * N) / N,
            system.metatest))


def simulate(config: Config, N: int | None = None, seeds: Iterable[int] | None = None,
             progress: bool = True) -> list[Trajectory]:
    """Trajectories of ``seeds`` (default: config.simulation) at width N (default: config)."""
    N = config.simulation.N if N is None else N
    if seeds is None:
        first = config.simulation.seed
        seeds = range(first, first + config.simulation.seeds)
    return [simulate_seed(config, N, s, progress) for s in seeds]
