"""An ODE system: what the solvers integrate and what the simulations are compared with.

``build_system(config)`` returns the system of the config's algorithm. Every system offers the
initial state y0 = pack(Q0, R0, w0), the right-hand side dy/dalpha, and ``observables(y)``: the
named scalars recorded along a trajectory (the same function serves the simulations, which
evaluate it on their networks' exact order parameters).

Validity of a state (theory after every accepted integrator step, simulation after every chunk of
steps): ``state_problem`` (non-finite, blow-up, lost covariance); at every record also ``runaway``
(a student unit longer than ``solver.max_norm`` allows). A run that fails either stops there,
keeping its records up to that point, with a message that says at which alpha and why.

Compiled form. A system whose equations are compiled carries its parameters as a *flow*: an
instance of a ``typing.NamedTuple`` class of its own (``ODESystem.flow``). Compiled code calls the
generic ``flow_rhs(flow, y)`` and ``flow_observables(flow, y)`` on it, and numba resolves them at
compile time from the flow's class (``numba.extending.overload``, as for the activations), so the
compiled integrator (``solvers.dop853``) runs any such system without returning to Python, and its
machine code is cached on disk per flow class. The Python methods ``rhs`` and ``observables`` call
the same compiled functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, typeof

from metaode.algorithms import algorithm
from metaode.config import PSD_TOLERANCE, Config, ConfigError
from metaode.theory.activations import activation
from metaode.theory.fields import cholesky_factor, field_covariance
from metaode.theory.generic import generic_function, is_instance_of
from metaode.theory.state import column_names, pack, unpack

#: |entries of y| beyond this mean the dynamics ran away (weights of norm ~1e4 sqrt(N)).
DIVERGENCE_BOUND = 1e8


#: dy/dalpha = flow_rhs(flow, y): implemented by each system's module for its flow class.
flow_rhs = generic_function("metaode.theory.system.flow_rhs", "the flow's class")
#: The observables at y, a float vector in the order of ``ODESystem.observable_names``.
flow_observables = generic_function("metaode.theory.system.flow_observables", "the flow's class")
#: Whether an overload's argument type is that of a flow class (``theory.generic``).
is_flow = is_instance_of


@njit(cache=True)
def evaluate(flow: Any, y: np.ndarray) -> np.ndarray:
    """dy/dalpha at y (``flow_rhs``), the entry point from Python."""
    return flow_rhs(flow, y)


@njit(cache=True)
def observe(flow: Any, states: np.ndarray) -> np.ndarray:
    """The observables (``flow_observables``) of each row of ``states``, one row each."""
    first = flow_observables(flow, states[0])
    out = np.empty((states.shape[0], first.shape[0]))
    out[0] = first
    for i in range(1, states.shape[0]):
        out[i] = flow_observables(flow, states[i])
    return out


class ODESystem:
    """dy/dalpha = f(y) for y = (Q, R, w) of one config (autonomous: f does not depend on alpha).

    ``monte_carlo``: whether f is a Monte Carlo estimate; such a system also offers
    ``stream_systems()`` (one system per independent stream of its sample), ``with_budget(n)`` and
    ``sample.size`` for the uncertainty control of ``solvers.integrate.solve``.

    ``flow``: the compiled form (module docstring), or None for a system computed in Python; with
    a flow, ``rhs`` and ``observables`` need not be overridden.
    """

    monte_carlo = False
    flow: Any = None

    def __init__(self, config: Config):
        self.config = config
        self.K, self.M = config.K, config.M
        self.T = np.ascontiguousarray(config.teacher.T, dtype=float)
        self.acts = config.activations

    def initial_state(self) -> np.ndarray:
        s = self.config.student
        return pack(np.asarray(s.Q0, float), np.asarray(s.R0, float), np.asarray(s.w0, float))

    def rhs(self, alpha: float, y: np.ndarray) -> np.ndarray:
        """dy/dalpha at state y (the flow's compiled right-hand side)."""
        return self._entry(evaluate)(self.flow, np.ascontiguousarray(y, dtype=float))

    def observables(self, y: np.ndarray) -> dict[str, float]:
        """error, error_before_adaptation and the system's other recorded scalars at y."""
        values = self.record_observables(np.asarray(y, dtype=float).reshape(1, -1))[0]
        return dict(zip(self.observable_names, values.tolist(), strict=True))

    def record_observables(self, states: np.ndarray) -> np.ndarray:
        """The observables of each row of ``states`` (columns: ``observable_names``)."""
        values = self._entry(observe)(self.flow, np.ascontiguousarray(states, dtype=float))
        return values[:, :len(self.observable_names)]

    @property
    def observable_names(self) -> list[str]:
        """The recorded scalars: the errors after and before adaptation, the representation
        error E_tau min_w eps(w; u_tau), and for a student with identifiable units (not the linear
        activation, ``Activation.identifiable``) the specialisation index and align_k (the teacher
        unit that student unit k aligns with), from ``theory.fields.common_observables``."""
        names = ["error", "error_before_adaptation", "representation_error"]
        if activation(self.config.student.activation).identifiable:
            names += ["specialisation", *(f"align_{k}" for k in range(self.K))]
        return names

    def _entry(self, kernel: Any) -> Callable[..., Any]:
        """``kernel``'s compiled entry point for this system's flow (``specialised``)."""
        if self.flow is None:
            raise NotImplementedError(f"{type(self).__name__} has no compiled flow")
        cache = self.__dict__.setdefault("_entries", {})  # scipy's solvers call rhs per step
        if kernel not in cache:
            example = self.initial_state()
            cache[kernel] = specialised(kernel, self.flow,
                                        example if kernel is evaluate else example[None, :])
        return cache[kernel]

    @property
    def psd_tolerance(self) -> float:
        """Relative tolerance of the covariance check of ``invalid``:
        min(1e-2, max(PSD_TOLERANCE, 10 (solver.rtol + solver.atol))).

        An integrated state carries errors of ~rtol |y| + atol per entry, so a covariance that is
        exactly singular (a student that has learnt a teacher unit: Omega -> singular as alpha ->
        infinity) is integrated into smallest eigenvalues of ~ -0.4 rtol (measured for sgd, rtol =
        1e-6 .. 1e-10, up to alpha = 1e6): rounding of a valid state, not a lost covariance. The
        factor 10 leaves a margin of 25 over that; the cap keeps a check for very loose tolerances.
        """
        sv = self.config.solver
        return min(1e-2, max(PSD_TOLERANCE, 10.0 * (sv.rtol + sv.atol)))

    def invalid(self, y: np.ndarray) -> str:
        """Why y is not a valid state ('' if it is): ``state_problem`` (non-finite, beyond
        DIVERGENCE_BOUND, or Omega no longer a covariance within ``psd_tolerance``)."""
        return state_problem(y, self.K, self.M, self.T, self.psd_tolerance)

    def runaway(self, y: np.ndarray) -> str:
        """Why the recorded state y is a runaway ('' if not): ``runaway(.., solver.max_norm)``."""
        return runaway(y, self.K, self.M, self.T, self.config.solver.max_norm)


def state_problem(y: np.ndarray, K: int, M: int, T: np.ndarray,
                  tolerance: float = PSD_TOLERANCE) -> str:
    """Why y = pack(Q, R, w) is not a valid state of the dynamics ('' if it is).

    Checked in this order: an entry that is not finite; an entry with |y_i| > DIVERGENCE_BOUND (a
    blow-up); Omega = [[Q, R], [R^T, T]] not positive semi-definite, i.e. its smallest eigenvalue
    below -tolerance max(1, max |Omega_ij|) (default: PSD_TOLERANCE, the config's check of Q0, R0):
    then (Q, R) are no overlaps of any vectors, and further on the Gaussian integrals break down
    (arcsin arguments reach +-1 when Omega + I is singular). The message names the entry or the
    eigenvalue.
    """
    y = np.ascontiguousarray(y, dtype=float)
    code, index, value = state_check(y, K, M, np.ascontiguousarray(T, dtype=float),
                                     DIVERGENCE_BOUND, tolerance)
    return state_message(code, index, value, K, M)


def state_message(code: int, index: int, value: float, K: int, M: int) -> str:
    """The message of ``state_check``'s result ('' for a valid state)."""
    if code == 0:
        return ""
    name = column_names(K, M)[index] if index >= 0 else ""
    if code == 1:
        return f"{name} is not finite ({value})"
    if code == 2:
        return f"|{name}| = {abs(value):.6g} exceeded {DIVERGENCE_BOUND:g}"
    return (f"[[Q, R], [R^T, T]] lost positive semi-definiteness (smallest eigenvalue "
            f"{value:.3g}; an overlap exceeds what the norms allow)")


def runaway(y: np.ndarray, K: int, M: int, T: np.ndarray, max_norm: float) -> str:
    """Why y is a runaway ('' if not): max_k Q_kk > max_norm max_m T_mm (``solver.max_norm``).

    Above the maximal learning rate the norms of the student units grow without bound, but for erf
    units (g' ~ Q_kk^-1/2 once saturated) often only like a power of alpha, never reaching
    DIVERGENCE_BOUND: this bound makes such a run stop. It is checked at the recorded meta-times
    (theory and simulation alike, so both stop at the same record).
    """
    y = np.ascontiguousarray(y, dtype=float)
    k = runaway_index(y, K, M, np.ascontiguousarray(T, dtype=float), max_norm)
    if k < 0:
        return ""
    Q, _, _ = unpack(y, K, M)
    scale = float(np.max(np.diag(T)))
    return (f"runaway: Q_{k}_{k} / max_m T_mm = {Q[k, k] / scale:.6g} exceeded "
            f"solver.max_norm = {max_norm:g}")


@njit(cache=True)
def runaway_index(y: np.ndarray, K: int, M: int, T: np.ndarray, max_norm: float) -> int:
    """The unit k of largest Q_kk if Q_kk > max_norm max_m T_mm (a runaway), else -1."""
    Q, _, _ = unpack(y, K, M)
    k = 0
    for j in range(1, K):
        if Q[j, j] > Q[k, k]:
            k = j
    scale = T[0, 0]
    for m in range(1, M):
        scale = max(scale, T[m, m])
    return k if Q[k, k] > max_norm * scale else -1


def non_finite(observables: dict[str, float]) -> str:
    """Why the observables of a record cannot be written ('' if they can): the first one that is
    not finite (a NaN or inf in an output is never silent: the run stops before that record)."""
    for name, value in observables.items():
        if not np.isfinite(value):
            return f"the observable {name} is not finite ({value})"
    return ""


@njit(cache=True)
def state_check(y, K, M, T, bound, tolerance):
    """(code, index, value): 0 valid; 1 y[index] non-finite; 2 |y[index]| > bound; 3 the smallest
    eigenvalue ``value`` of Omega is below -tolerance max(1, max |Omega|).

    The eigenvalue test runs on every accepted integrator step, so it is first made by a
    Cholesky factorisation of Omega + eps I, eps = tolerance max(1, max |Omega|), which succeeds
    exactly when the smallest eigenvalue of Omega exceeds -eps (written out: no LAPACK call);
    only a failed factorisation computes the eigenvalues, which decide."""
    for i in range(y.shape[0]):
        if not np.isfinite(y[i]):
            return 1, i, y[i]
        if abs(y[i]) > bound:
            return 2, i, y[i]
    Q, R, _ = unpack(y, K, M)
    omega = field_covariance(Q, R, T)
    eps = tolerance * max(1.0, np.abs(omega).max())
    if cholesky_factor(omega, eps, 0.0)[0]:
        return 0, -1, 0.0
    lowest = np.linalg.eigvalsh(omega)[0]
    if lowest < -eps:
        return 3, -1, lowest
    return 0, -1, 0.0


def specialised(kernel: Any, *example: Any) -> Callable[..., Any]:
    """The compiled entry point of the numba function ``kernel`` for the argument types of
    ``example``: calling it skips the dispatcher's type resolution, which for the activation
    markers (named tuples) costs ~4 us per call from Python, more than a small right-hand side.
    The caller passes arguments of exactly those types (y: a C-contiguous float64 vector).

    Entry points are kept per (kernel, ``type_key`` of the arguments): numba's ``typeof`` of a
    flow costs ~0.4 ms, as much as a whole small solve inside a sweep."""
    key = (kernel, type_key(example))
    entry = _ENTRIES.get(key)
    if entry is None:
        signature = tuple(typeof(a) for a in example)
        kernel.compile(signature)
        entry = _ENTRIES[key] = kernel.overloads[signature].entry_point
    return entry


_ENTRIES: dict[tuple[Any, Any], Callable[..., Any]] = {}


def type_key(value: Any) -> Any:
    """What numba's ``typeof`` of ``value`` depends on, for the values a flow holds: the class of
    a tuple (a flow, an activation marker) with the keys of its items, an array's dtype,
    dimensions and layout, and the class of a number."""
    if isinstance(value, tuple):
        return (type(value), tuple(type_key(v) for v in value))
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.ndim, value.flags.c_contiguous, value.flags.f_contiguous,
                value.flags.writeable)
    if isinstance(value, bool | int | float | np.generic):
        return type(value)
    raise TypeError(f"no type key for a {type(value).__name__} in a flow")


def build_system(config: Config) -> ODESystem:
    """The ODE system of ``config.training.algorithm`` (its entry in ``metaode.algorithms``)."""
    name = config.training.algorithm
    factory = algorithm(name).theory_factory()
    if factory is None:
        raise ConfigError("training.algorithm",
                          f"{name!r} has no ODE theory in this version (simulation only)")
    return factory(config)
