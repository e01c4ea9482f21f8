"""Generic functions that numba resolves at compile time from the class of an argument.

Activations (``theory.activations``) and compiled ODE systems (``theory.system``) are instances of
``typing.NamedTuple`` classes; compiled code calls generic functions on them, and each class's
module registers its implementation with ``numba.extending.overload``, which returns it when
``is_instance_of`` says the argument type is its own class (None otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import types


def generic_function(qualified_name: str, resolved_from: str) -> Callable[..., Any]:
    """A function for ``numba.extending.overload`` to implement; from Python it raises a TypeError
    that says it is resolved at compile time from ``resolved_from``."""
    name = qualified_name.rpartition(".")[2]

    def generic(*args: Any) -> Any:
        raise TypeError(f"{qualified_name} is resolved by numba at compile time from "
                        f"{resolved_from}; call it from compiled code")

    generic.__name__ = generic.__qualname__ = name
    return generic


def is_instance_of(numba_type: Any, cls: type) -> bool:
    """Whether ``numba_type`` (an argument type an overload sees) is that of an instance of the
    NamedTuple class ``cls``."""
    return isinstance(numba_type, types.BaseNamedTuple) and numba_type.instance_class is cls
