"""The best test step at a state (Q, R, w).

``optimal_test_inner_lr`` minimises the error after the test adaptation (``theory.metatest``) over
the test inner learning rate: in closed form for one step (the error is the quadratic L0 - eta b +
eta^2 a / 2 of ``theory.fewshot.one_step_test_quadratic``, so eta* = b / a), by a bounded scalar
minimisation of the adaptation curve otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from metaode.config import Config
from metaode.theory.activations import path_rule
from metaode.theory.fewshot import one_step_test_quadratic
from metaode.theory.fields import error_blocks
from metaode.theory.metatest import adaptation_curve, support_size
from metaode.theory.state import unpack


def optimal_test_inner_lr(config: Config, y: np.ndarray, support: int | str,
                          steps: int = 1) -> tuple[float, float]:
    """(eta*, error after ``steps`` test steps with eta*) for fresh tasks with ``support``."""
    K, M = config.K, config.M
    Q, R, w = unpack(np.asarray(y, float), K, M)
    te = config.teacher
    T, u0 = np.asarray(te.T, float), np.asarray(te.u0, float)
    P = support_size(support)
    if steps == 1:
        nodes, weights = path_rule(config.theory.quadrature_nodes)
        L0, b, a = one_step_test_quadratic(config.activations, Q, R, T, w, u0,
                                           float(te.task_std), float(te.noise), P, nodes, weights)
        eta = b / a
        return float(eta), float(L0 - 0.5 * b * b / a)
    C = error_blocks(config.activations, Q, R, T)[0]
    eta_max = 2.0 / np.linalg.eigvalsh(C).max()  # beyond it population gradient descent diverges
    res = minimize_scalar(lambda eta: adaptation_curve(config, y, support, steps, eta)[0][-1],
                          bounds=(0.0, eta_max), method="bounded", options={"xatol": 1e-6})
    return float(res.x), float(res.fun)
