"""metaode: closed ODEs for online (meta-)learning of two-layer networks in the teacher-student
setting, solved in the thermodynamic limit and checked against simulations of large networks.

The public API (docs/model.md gives the equations; README.md the configuration keys):

    config = metaode.load_config()            # the built-in ANIL experiment, or a TOML path
    theory = metaode.solve(config)            # Trajectory of the ODEs
    sims = metaode.simulate(config, N=2000, seeds=[0, 1, 2])
    figures = metaode.compare(theory, sims)   # agreement per column (z-scores, rms)
    theory.column("error"), theory.alpha, theory.to_pandas()
"""

from __future__ import annotations

from collections.abc import Iterable

from metaode.config import Config, ConfigError, load_config
from metaode.trajectory import Trajectory

__all__ = ["Config", "ConfigError", "Trajectory", "compare", "load_config", "simulate", "solve"]


def solve(config: Config) -> Trajectory:
    """The theory trajectory of ``config``: its ODE system integrated over the config's output
    grid (``metaode.solvers.integrate.solve``; few-shot systems with their Monte Carlo
    uncertainty controlled to theory.mc_rtol)."""
    from metaode.solvers.integrate import solve as integrate
    from metaode.theory.system import build_system

    return integrate(build_system(config))


def simulate(config: Config, N: int | None = None,
             seeds: Iterable[int] | None = None) -> list[Trajectory]:
    """Simulated trajectories of ``config`` at width N (default simulation.N), one per seed
    (default: simulation.seeds seeds from simulation.seed)."""
    from metaode.simulations.run import simulate as run

    return run(config, N=N, seeds=seeds, progress=False)


def compare(theory: Trajectory, simulations: list[Trajectory]) -> dict:
    """Theory against the simulations' seed mean, column by column
    (``metaode.validation.compare.compare``)."""
    from metaode.validation.compare import compare as figures

    return figures(theory, simulations)
