"""Activations and their Gaussian integrals: the one place where g enters metaode.

``registry`` defines the generic functions (g, g', g'', I2, I3, I4, J2 and derivatives, the
slices I4_forms, the four-point moments F4) that compiled code calls on activation markers, and
the registry of activations by name; each activation lives in its own module, which implements
them for its marker and registers itself. Importing this package registers the built-in ones
(``erf``, ``linear``, ``relu``).
"""

from metaode.theory.activations import (
    erf,  # noqa: F401  (registers "erf")
    linear,  # noqa: F401  (registers "linear", paired with erf)
    relu,  # noqa: F401  (registers "relu", paired with erf and linear)
)
from metaode.theory.activations.quadrature import path_rule
from metaode.theory.activations.registry import (
    F4,
    I2,
    I3,
    I4,
    J2,
    Activation,
    Activations,
    F4_gradient,
    I3_gradient,
    I4_forms,
    I4_forms_from_I4,
    I4_gradient,
    J2_gradient,
    activation,
    activations,
    dI2_dc11,
    dI2_dc12,
    dI2_dc22,
    g,
    g_prime,
    g_second,
    has_pair,
    is_marker,
    names,
    own_I4_forms,
    quadratic_forms,
    register,
)

__all__ = ["F4", "F4_gradient", "I2", "I3", "I4", "J2", "Activation", "Activations",
           "I3_gradient", "I4_forms", "I4_forms_from_I4", "I4_gradient", "J2_gradient",
           "activation", "activations", "dI2_dc11", "dI2_dc12", "dI2_dc22", "g", "g_prime",
           "g_second", "has_pair", "is_marker", "names", "own_I4_forms", "path_rule",
           "quadratic_forms", "register"]
