"""The reference check of an example: a config's stated number against the theory and the
simulation (the optional ``[reference]`` table, ``metaode.config``; examples/README.md).

The quantities, measured on one trajectory (the theory, or one simulated seed), in the notation
of docs/model.md (eps = the ``error`` observable of §13: eps_g for sgd, the meta-generalisation
error L after adaptation for anil and maml, always without the noise floor sigma^2 / 2):

* ``error``: eps(alpha_r) at the meta-time alpha_r = ``reference.at`` (default alpha_max),
  which the config records (``Config.times``); a simulation records alpha = round(alpha N) / N,
  so its record nearest to alpha_r is taken.
* ``escape``: the first alpha at which the specialisation index (§13: the mean over student units
  k of the largest |R_km| / sqrt(Q_kk T_mm) minus the mean of the others; 0 on the symmetric
  plateau, 1 when every student unit has found its own teacher unit) reaches 1/2, linearly
  interpolated between records; it needs an unspecialised start (index < 1/2 at alpha = 0) and
  does not exist otherwise or if the index stays below 1/2. Unlike the centre of a plateau
  (``solvers.plateau.measure_plateau``, from the relative rate |d ln eps / d alpha|, which the
  O(N^-1/2) fluctuations of a single simulated seed swamp on a plateau), this crossing is as well
  defined on one seed as on the theory.

A simulation is measured seed by seed; its value is the mean over the seeds x_s of the quantity
and its standard error std_s(x_s) / sqrt(S) (ddof = 1; none for one seed). A seed on which the
quantity does not exist is reported as null and left out of the mean. The theory agrees with the
stated value v if |theory - v| <= tolerance + THEORY_Z u, where u is the theory's own Monte Carlo
standard error (few-shot anil and maml, docs/model.md §10; u = 0 for an exact theory): the stated
tolerance belongs to the number, u to the theory's finite budget.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from metaode.config import Config
from metaode.trajectory import Trajectory

#: The specialisation index that marks the escape: halfway between the symmetric plateau (0) and
#: one teacher unit per student unit (1), as ``solvers.plateau.measure_plateau``'s default level.
ESCAPE_LEVEL = 0.5


#: Standard errors of a Monte Carlo theory's own uncertainty allowed beyond the stated tolerance.
THEORY_Z = 3.0


def error_at(trajectory: Trajectory, alpha: float) -> float:
    """eps at the record nearest to ``alpha``."""
    return float(trajectory.error[np.argmin(np.abs(trajectory.alpha - alpha))])


def escape(trajectory: Trajectory) -> float:
    """The first alpha where the specialisation index reaches 1/2 (linear interpolation between
    records); nan if it starts at or above 1/2 or never reaches it."""
    index = trajectory.column("specialisation")
    above = np.flatnonzero(index >= ESCAPE_LEVEL)
    if above.size == 0 or above[0] == 0:
        return math.nan
    i = int(above[0])
    a, b = trajectory.alpha[i - 1 : i + 1]
    return float(a + (ESCAPE_LEVEL - index[i - 1]) * (b - a) / (index[i] - index[i - 1]))


def measure(trajectory: Trajectory, config: Config) -> float | None:
    """The quantity of ``config.reference`` on ``trajectory`` (module docstring), or None where it
    does not exist or is not finite."""
    ref = config.reference
    value = error_at(trajectory, ref.at) if ref.quantity == "error" else escape(trajectory)
    return value if math.isfinite(value) else None


def theory_uncertainty(trajectory: Trajectory, config: Config) -> float | None:
    """The Monte Carlo standard error of a few-shot or maml theory's error at reference.at
    (``mc_err_error`` there, docs/model.md §10); None for an exact theory or for the escape."""
    ref = config.reference
    if ref.quantity != "error" or "error" not in trajectory.uncertainty:
        return None
    at = np.argmin(np.abs(trajectory.alpha - ref.at))
    return float(trajectory.uncertainty["error"][at])


def reference_check(config: Config, theory: Trajectory,
                    sims: list[Trajectory]) -> dict[str, Any]:
    """The reference check of ``config`` (which has a [reference] table): the stated value, its
    tolerance and source, the theory's value and whether it agrees, and the simulation's value per
    seed, its mean and standard error over the seeds (module docstring)."""
    ref = config.reference
    theory_value = measure(theory, config)
    uncertainty = theory_uncertainty(theory, config)
    allowed = ref.tolerance + THEORY_Z * (uncertainty or 0.0)
    per_seed = [measure(run, config) for run in sims]
    found = np.array([v for v in per_seed if v is not None])
    mean = float(found.mean()) if found.size else None
    stderr = float(found.std(ddof=1) / math.sqrt(found.size)) if found.size >= 2 else None
    return {
        "quantity": ref.quantity,
        "at": ref.at,
        "value": ref.value,
        "tolerance": ref.tolerance,
        "source": ref.source,
        "theory": theory_value,
        "theory_uncertainty": uncertainty,
        "theory_deviation": None if theory_value is None else theory_value - ref.value,
        "allowed_deviation": allowed,
        "theory_agrees": theory_value is not None and abs(theory_value - ref.value) <= allowed,
        "simulation": {"N": config.simulation.N, "seeds": [run.seed for run in sims],
                       "per_seed": per_seed, "mean": mean, "stderr": stderr},
    }


def summary(check: dict[str, Any]) -> str:
    """One line for the console: stated value +- tolerance, theory (+- its Monte Carlo standard
    error), whether it agrees, and the simulation's mean +- standard error."""
    theory = "none" if check["theory"] is None else f"{check['theory']:.6g}"
    if check["theory_uncertainty"] is not None:
        theory += f" +- {check['theory_uncertainty']:.2g}"
    sim = check["simulation"]
    simulated = "none" if sim["mean"] is None else f"{sim['mean']:.6g}"
    if sim["stderr"] is not None:
        simulated += f" +- {sim['stderr']:.2g}"
    verdict = "agrees" if check["theory_agrees"] else "DISAGREES"
    what = check["quantity"] + ("" if check["at"] is None else f" at alpha = {check['at']:g}")
    return (f"reference {what}: stated {check['value']:.6g} +- "
            f"{check['tolerance']:.2g}; theory {theory} ({verdict}); simulation (N = {sim['N']}, "
            f"{len(sim['seeds'])} seeds) {simulated}")
