"""Run the simulation of a config at finite N over several seeds into trajectories.

For each seed, networks are built whose overlaps equal the config's (Q0, R0, T) exactly
(``simulations.networks``), the algorithm's numba kernel advances them between the recorded
meta-times (alpha = steps / N, rounded to whole steps), and at each record the exact order
parameters Q = J J^T / N, R = J B^T / N, T = B B^T / N of the networks are taken and the observables
evaluated on them by the same functions as the theory's.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tqdm.auto import tqdm

from simulations.kernels import overlaps
from simulations.networks import networks_with_overlaps
from simulations.sgd import sgd_steps
from theory.config import Config, ConfigError
from theory.state import pack
from theory.system import build_system
from theory.trajectory import DIVERGED, Trajectory


def record_steps(config: Config, N: int) -> np.ndarray:
    """The outer-step indices of the recorded times: round(alpha N), strictly increasing."""
    steps = np.rint(config.times() * N).astype(np.int64)
    return np.unique(steps)


class SGDRun:
    """State of one sgd simulation: networks, head, random stream."""

    def __init__(self, config: Config, N: int, rng: np.random.Generator):
        st, te, tr = config.student, config.teacher, config.training
        self.J, self.B = networks_with_overlaps(np.asarray(st.Q0), np.asarray(st.R0),
                                                np.asarray(te.T), N, rng)
        self.w = np.array(st.w0, dtype=float)
        self.u = np.array(te.u0, dtype=float)
        self.rng = rng
        self.args = (float(te.noise), float(tr.lr), float(tr.lr_head),
                     int(tr.query * tr.meta_batch))

    def advance(self, n_steps: int) -> None:
        sgd_steps(self.J, self.B, self.w, self.u, *self.args, n_steps, self.rng)

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        Q, R, T = overlaps(self.J, self.B)
        return Q, R, self.w.copy(), T


def simulate_seed(config: Config, N: int, seed: int, progress: bool = True) -> Trajectory:
    """One simulated trajectory at width N with random stream ``seed``."""
    if config.training.algorithm != "sgd":
        raise ConfigError("training.algorithm",
                          f"{config.training.algorithm!r} is not simulated in this version")
    system = build_system(config)
    rng = np.random.default_rng(seed)
    run = SGDRun(config, N, rng)
    steps = record_steps(config, N)
    states, obs, status, message = [], [], 0, ""
    done = 0
    bar = tqdm(total=int(steps[-1]), desc=f"seed {seed}", unit="step", unit_scale=True,
               disable=not progress, leave=False)
    for target in steps:
        run.advance(int(target - done))
        bar.update(int(target - done))
        done = int(target)
        Q, R, w, T = run.state()
        y = pack(Q, R, w)
        reason = system.invalid(y)
        if reason:
            status, message = DIVERGED, f"diverged at alpha = {done / N:.6g}: {reason}"
            break
        states.append(y)
        o = system.observables(y)
        obs.append(o)
    bar.close()
    names = list(obs[0]) if obs else ["error", "error_before_adaptation"]
    return Trajectory(alpha=steps[: len(states)] / N, states=np.array(states).reshape(
        len(states), -1), K=config.K, M=config.M,
        observables={n: np.array([o[n] for o in obs]) for n in names},
        status=status, message=message, nfev=done, seed=seed)


def simulate(config: Config, N: int | None = None, seeds: Iterable[int] | None = None,
             progress: bool = True) -> list[Trajectory]:
    """Trajectories of ``seeds`` (default: config.simulation) at width N (default: config)."""
    N = config.simulation.N if N is None else N
    if seeds is None:
        first = config.simulation.seed
        seeds = range(first, first + config.simulation.seeds)
    return [simulate_seed(config, N, s, progress) for s in seeds]
