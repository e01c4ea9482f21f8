"""Meta-test curves: the error on fresh tasks after r = 0..S test adaptation steps of the head.

A fresh task tau (teacher head u_tau = u0 + task_std xi) is adapted from the meta-learnt head w
with the test inner learning rate on its support loss; the curve is E_tau eps(w^(r); u_tau),
r = 0..S. With the population support it is exact (``theory.anil.metatest_errors``); with P
support examples it is a Monte Carlo average over about theory.mc_tasks support sets (exact in
the task, ``theory.support_mc.adaptation_errors``) drawn from theory.mc_seed + 1, with its standard
error from the spread of the theory.mc_streams streams.

``metatest_curve`` is the curve of the config's [metatest] section, recorded in trajectories at
metatest.at (by ``solvers.integrate`` for the theory and ``simulations.run`` for the networks'
overlaps); ``adaptation_curve`` takes the support, S and the inner learning rate as arguments
(``solvers.metatest`` optimises over the latter).
"""

from __future__ import annotations

import numpy as np

from metaode.config import Config, ConfigError
from metaode.theory.anil import metatest_errors
from metaode.theory.fields import error_blocks
from metaode.theory.state import unpack
from metaode.theory.support_mc import adaptation_errors, support_sample


def support_size(support: int | str) -> int:
    """P as an integer, 0 for the population support."""
    if support == "population":
        return 0
    if isinstance(support, bool) or not isinstance(support, int | np.integer) or support < 1:
        raise ConfigError("metatest.support", f'must be "population" or an integer >= 1, '
                                              f"got {support!r}")
    return int(support)


def adaptation_curve(config: Config, y: np.ndarray, support: int | str, steps: int,
                     inner_lr: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, stderr) of E_{tau,S} eps(w^(r); u_tau), r = 0..steps, at state y."""
    K, M = config.K, config.M
    Q, R, w = unpack(np.asarray(y, float), K, M)
    te, th = config.teacher, config.theory
    T, u0 = np.asarray(te.T, float), np.asarray(te.u0, float)
    P = support_size(support)
    if P == 0:
        mean = metatest_errors(config.activations, Q, R, T, w, u0, float(te.task_std),
                               float(inner_lr), int(steps))
        return mean, np.zeros_like(mean)
    sample = support_sample(K, M, P, u0, T, th.mc_tasks, th.mc_streams, th.mc_seed + 1)
    errors = adaptation_errors(config.activations, Q, R, T, w, u0, float(te.task_std),
                               float(te.noise), float(inner_lr), int(steps), sample.fields,
                               sample.task,
                               *error_blocks(config.activations, Q, R, T))
    streams = np.array([errors[sample.stream == b].mean(axis=0) for b in range(sample.streams)])
    return errors.mean(axis=0), streams.std(axis=0, ddof=1) / np.sqrt(sample.streams)


def metatest_curve(config: Config, y: np.ndarray) -> np.ndarray:
    """E_tau eps(w^(r); u_tau), r = 0..metatest.inner_steps, at state y, adapting with
    metatest.inner_lr on metatest.support (the mean of ``adaptation_curve``)."""
    mt = config.metatest
    return adaptation_curve(config, y, mt.support, int(mt.inner_steps), float(mt.inner_lr))[0]
