"""An ODE system: what the solvers integrate and what the simulations are compared with.

``build_system(config)`` returns the system of the config's algorithm. Every system offers the
initial state y0 = pack(Q0, R0, w0), the right-hand side dy/dalpha, and ``observables(y)``: the
named scalars recorded along a trajectory (the same function serves the simulations, which
evaluate it on their networks' exact order parameters).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from numba import njit

from theory.config import Config, ConfigError
from theory.fields import representation_error, specialisation
from theory.state import column_names, pack, unpack

#: |entries of y| beyond this mean the dynamics ran away (weights of norm ~1e4 sqrt(N)).
DIVERGENCE_BOUND = 1e8


class ODESystem(ABC):
    """dy/dalpha = f(y) for y = (Q, R, w) of one config (autonomous: f does not depend on alpha)."""

    def __init__(self, config: Config):
        self.config = config
        self.K, self.M = config.K, config.M
        self.T = np.ascontiguousarray(config.teacher.T, dtype=float)

    def initial_state(self) -> np.ndarray:
        s = self.config.student
        return pack(np.asarray(s.Q0, float), np.asarray(s.R0, float), np.asarray(s.w0, float))

    @abstractmethod
    def rhs(self, alpha: float, y: np.ndarray) -> np.ndarray:
        """dy/dalpha at state y."""

    @abstractmethod
    def observables(self, y: np.ndarray) -> dict[str, float]:
        """error, error_before_adaptation and the system's other recorded scalars at y."""

    def common_observables(self, Q: np.ndarray, R: np.ndarray, w: np.ndarray) -> dict[str, float]:
        """Observables of every algorithm: representation quality and specialisation of R.

        ``representation_error`` = E_tau min_w eps(w; u_tau); ``specialisation`` and ``align_k``
        (the teacher unit student unit k aligns with) from ``theory.fields.specialisation``.
        """
        te = self.config.teacher
        spec, align = specialisation(Q, R, self.T)
        return {"representation_error": representation_error(Q, R, self.T, te.u0, te.task_std),
                "specialisation": spec, **{f"align_{k}": float(a) for k, a in enumerate(align)}}

    def metatest(self, y: np.ndarray) -> np.ndarray:
        """Meta-test curve at state y: E_tau eps(w^(r); u_tau) for r = 0..S test adaptation steps.

        A fresh task is adapted from the head w with metatest.inner_lr on the population support
        loss (``theory.anil.metatest_errors``, exact) or on metatest.support examples (Monte Carlo
        over theory.mc_tasks support sets, ``theory.fewshot``); S = metatest.inner_steps.
        """
        from theory.anil import metatest_errors
        from theory.fewshot import common_random_numbers, monte_carlo_adaptation_curve

        mt, te, th = self.config.metatest, self.config.teacher, self.config.theory
        Q, R, w = unpack(y, self.K, self.M)
        u0, task_std = np.asarray(te.u0, float), float(te.task_std)
        if mt.support == "population":
            return metatest_errors(Q, R, self.T, w, u0, task_std, float(mt.inner_lr),
                                   int(mt.inner_steps))
        crn = common_random_numbers(th.mc_tasks, mt.support, self.K, self.M, th.mc_seed + 1)
        return monte_carlo_adaptation_curve(Q, R, self.T, w, u0, task_std, float(te.noise),
                                            float(mt.inner_lr), int(mt.inner_steps),
                                            mt.support, *crn)[0]

    def invalid(self, y: np.ndarray) -> str:
        """Why y is not a valid state ('' if it is): non-finite, runaway, or not a covariance."""
        code, index = _state_check(y, self.K, self.M, self.T, DIVERGENCE_BOUND)
        if code == 0:
            return ""
        name = column_names(self.K, self.M)[index] if index >= 0 else "Q"
        return {
            1: f"{name} is not finite",
            2: f"|{name}| exceeded {DIVERGENCE_BOUND:g}",
            3: "[[Q, R], [R^T, T]] lost positive semi-definiteness "
               "(an overlap exceeds the product of the norms)",
        }[code]


@njit(cache=True)
def _state_check(y, K, M, T, bound):
    """(code, index): 0 valid, 1 non-finite, 2 beyond bound, 3 Cauchy-Schwarz of Omega violated."""
    for i in range(y.shape[0]):
        if not np.isfinite(y[i]):
            return 1, i
        if abs(y[i]) > bound:
            return 2, i
    Q, R, _ = unpack(y, K, M)
    for k in range(K):
        if Q[k, k] < 0:
            return 3, -1
        for l in range(K):
            if Q[k, l] * Q[k, l] > Q[k, k] * Q[l, l] * (1 + 1e-12):
                return 3, -1
        for m in range(M):
            if R[k, m] * R[k, m] > Q[k, k] * T[m, m] * (1 + 1e-12):
                return 3, -1
    return 0, -1


def build_system(config: Config) -> ODESystem:
    """The ODE system of ``config.training.algorithm``."""
    algorithm = config.training.algorithm
    if algorithm == "sgd":
        from theory.sgd import SGDSystem

        return SGDSystem(config)
    if algorithm == "anil" and config.training.support == "population":
        from theory.anil import ANILSystem

        return ANILSystem(config)
    if algorithm == "anil":
        from theory.fewshot import FewShotANILSystem

        return FewShotANILSystem(config)
    raise ConfigError("training.algorithm",
                      f"{algorithm!r} has no ODE theory in this version (simulation only)")
