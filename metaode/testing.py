"""Flows for testing: sgd systems whose compiled right-hand side or observables misbehave.

They are registered the way a new system registers its flow (``numba.extending.overload`` of
``theory.system.flow_rhs`` and ``flow_observables`` for its own ``NamedTuple`` class), so the same
broken system runs under the compiled integrator and, through the compiled entry points of
``ODESystem.rhs``, under scipy's: the tests check both on one definition.

They live in the package, not in tests/, because numba's disk cache records every type a cached
function was compiled for in an index that each later process unpickles: a flow class that
another process cannot import (a test module, a script's ``__main__``) would make that index
unreadable there. A flow or an activation of your own belongs in an importable module for the
same reason.

kinds (``Broken.kind``), with ``scale`` their parameter:

- SQUARE: dy/dalpha = scale y^2 entrywise, y = y0 / (1 - scale y0 alpha): a blow-up at
  alpha = 1 / (scale max y0);
- COLLAPSE: only Q_01 moves, dQ_01/dalpha = Q_01: it overtakes sqrt(Q_00 Q_11) (lost covariance);
- DRIFT: a straight line, dR_00/dalpha = dR_10/dalpha = 0.9 (K = M = 2), into an invalid Omega;
- FRAGILE: the sgd flow, but the right-hand side raises ZeroDivisionError where Q_00 > scale;
- NAN_OBSERVABLE: the sgd flow, its error NaN where Q_00 > scale;
- NAN_RHS: the sgd flow, dQ_00/dalpha NaN where Q_00 > scale.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba.extending import overload

from metaode.config import Config
from metaode.theory.anil import ANILFlow
from metaode.theory.sgd import SGDSystem
from metaode.theory.system import flow_observables, flow_rhs, is_flow

SQUARE, COLLAPSE, DRIFT, FRAGILE, NAN_OBSERVABLE, NAN_RHS = range(6)


class Broken(NamedTuple):
    """A test flow: ``base`` (the sgd flow) altered as ``kind`` says (module docstring)."""

    base: ANILFlow
    kind: int
    scale: float


@overload(flow_rhs)
def _broken_rhs(flow, y):
    if is_flow(flow, Broken):
        def rhs(flow, y):
            if flow.kind == SQUARE:
                return flow.scale * y * y
            if flow.kind == COLLAPSE:
                dy = np.zeros_like(y)
                dy[1] = y[1]  # y = (Q_00, Q_01, Q_11, R..., w...)
                return dy
            if flow.kind == DRIFT:
                dy = np.zeros_like(y)
                dy[3] = dy[5] = 0.9  # R_00, R_10
                return dy
            if flow.kind == FRAGILE and y[0] > flow.scale:
                raise ZeroDivisionError("division by zero")
            out = flow_rhs(flow.base, y)
            if flow.kind == NAN_RHS and y[0] > flow.scale:
                out[0] = np.nan
            return out
        return rhs


@overload(flow_observables)
def _broken_observables(flow, y):
    if is_flow(flow, Broken):
        def observables(flow, y):
            out = flow_observables(flow.base, y)
            if flow.kind == NAN_OBSERVABLE and y[0] > flow.scale:
                out[0] = np.nan
            return out
        return observables


class BrokenSystem(SGDSystem):
    """The sgd system of ``config`` with the ``Broken`` flow of ``kind`` and ``scale``."""

    def __init__(self, config: Config, kind: int, scale: float = 1.0):
        super().__init__(config)
        self.flow = Broken(self.flow, int(kind), float(scale))
