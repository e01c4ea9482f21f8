"""The algorithm registry: a name -> its ODE theory, its simulation and its config checks.

Configs name an algorithm (``training.algorithm``); ``metaode.theory.system.build_system`` and
``metaode.simulations.run.make_run`` look it up here instead of branching on the name. The theory
and simulation are given as ``"module:attribute"`` paths, imported on first use, so that this
module (which the config imports to validate names) imports nothing above it.

Adding an algorithm: its ODE system (a ``metaode.theory.system.ODESystem``) and its simulation
(a ``metaode.simulations.run.Run``), each a callable of the config (and, for the simulation, N
and the random generator), then one ``register(Algorithm(...))``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: A config check: the validated sections -> None, or (dotted key, message) for a violation.
Check = Callable[[Mapping[str, Mapping[str, Any]]], tuple[str, str] | None]


def _no_check(values: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    return None


@dataclass(frozen=True)
class Algorithm:
    """One registered algorithm.

    ``theory``: "module:callable" building the ODE system from a config, None when the algorithm
    has no theory (simulation only); ``simulation``: "module:callable" building a simulation run
    from (config, N, rng); ``check``: the config constraints this algorithm adds;
    ``simulation_check``: those that only its simulation needs (checked by ``simulate``).
    """

    name: str
    doc: str
    theory: str | None
    simulation: str
    check: Check = _no_check
    simulation_check: Check = _no_check

    def theory_factory(self) -> Callable[..., Any] | None:
        return None if self.theory is None else _resolve(self.theory)

    def simulation_factory(self) -> Callable[..., Any]:
        return _resolve(self.simulation)


def _resolve(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> None:
    """Make ``algorithm`` available to configs by its name."""
    if algorithm.name in _REGISTRY:
        raise ValueError(f"an algorithm named {algorithm.name!r} is already registered")
    _REGISTRY[algorithm.name] = algorithm


def names() -> tuple[str, ...]:
    """The registered algorithm names."""
    return tuple(_REGISTRY)


def algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no algorithm {name!r}; registered: {', '.join(_REGISTRY)}") from None


def _one_task(values: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    if values["teacher"]["task_std"] != 0:
        return "teacher.task_std", "must be 0 for training.algorithm = 'sgd' (one fixed task)"
    return None


def _finite_support(values: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    if values["training"]["support"] == "population":
        return ("training.support", "the maml simulation needs a finite support set: an integer "
                                    "number P of support examples, not 'population' (its theory "
                                    "with the population support is anil's)")
    return None


register(Algorithm("sgd", "online SGD on one fixed task", "metaode.theory.sgd:SGDSystem",
                   "metaode.simulations.run:SGDRun", _one_task))
register(Algorithm("anil", "ANIL: the inner loop adapts the head (population or P examples)",
                   "metaode.theory.fewshot:anil_system", "metaode.simulations.run:anil_run"))
register(Algorithm("maml", "MAML: the inner loop adapts both layers (population or P examples)",
                   "metaode.theory.maml:maml_system", "metaode.simulations.run:FewShotRun",
                   simulation_check=_finite_support))
