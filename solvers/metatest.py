"""Meta-test analysis at a state (Q, R, w): few-shot adaptation curves and the best test step.

``adaptation_curve`` is the error on fresh tasks after r = 0..steps test adaptation steps on P_test
support examples (exact for the population support, Monte Carlo with common random numbers
otherwise, with its standard error). ``optimal_test_inner_lr`` minimises the error after the test
adaptation over the test inner learning rate: in closed form for one step (the error is the
quadratic L0 - eta b + eta^2 a / 2 of ``theory.fewshot.one_step_test_quadratic``, so
eta* = b / a), by a bounded scalar minimisation of the adaptation curve otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from theory.anil import metatest_errors
from theory.config import Config, ConfigError
from theory.fewshot import (
    common_random_numbers,
    monte_carlo_adaptation_curve,
    one_step_test_quadratic,
)
from theory.fields import error_blocks
from theory.fourpoint import path_rule
from theory.state import unpack


def _support_size(support: int | str) -> int:
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
    P = _support_size(support)
    if P == 0:
        mean = metatest_errors(Q, R, T, w, u0, float(te.task_std), float(inner_lr), int(steps))
        return mean, np.zeros_like(mean)
    crn = common_random_numbers(th.mc_tasks, P, K, M, th.mc_seed + 1)
    return monte_carlo_adaptation_curve(Q, R, T, w, u0, float(te.task_std), float(te.noise),
                                        float(inner_lr), int(steps), P, *crn)


def optimal_test_inner_lr(config: Config, y: np.ndarray, support: int | str,
                          steps: int = 1) -> tuple[float, float]:
    """(eta*, error after ``steps`` test steps with eta*) for fresh tasks with ``support``."""
    K, M = config.K, config.M
    Q, R, w = unpack(np.asarray(y, float), K, M)
    te = config.teacher
    T, u0 = np.asarray(te.T, float), np.asarray(te.u0, float)
    P = _support_size(support)
    if steps == 1:
        nodes, weights = path_rule(config.theory.quadrature_nodes)
        L0, b, a = one_step_test_quadratic(Q, R, T, w, u0, float(te.task_std), float(te.noise),
                                           P, nodes, weights)
        eta = b / a
        return float(eta), float(L0 - 0.5 * b * b / a)
    C = error_blocks(Q, R, T)[0]
    eta_max = 2.0 / np.linalg.eigvalsh(C).max()  # beyond it population gradient descent diverges
    res = minimize_scalar(lambda eta: adaptation_curve(config, y, support, steps, eta)[0][-1],
                          bounds=(0.0, eta_max), method="bounded", options={"xatol": 1e-6})
    return float(res.x), float(res.fun)
