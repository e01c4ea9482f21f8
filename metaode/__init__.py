"""metaode: closed ODEs for online (meta-)learning of two-layer networks in the teacher-student
setting, solved in the thermodynamic limit and checked against simulations of large networks.

The public API (docs/model.md gives the equations; README.md the configuration keys):

    config = metaode.load_config()            # the built-in ANIL experiment, or a TOML path
    theory = metaode.solve(config)            # Trajectory of the ODEs
    sims = metaode.simulate(config, N=2000, seeds=[0, 1, 2])
    figures = metaode.compare(theory, sims)   # agreement per column (z-scores, rms)
    theory.column("error"), theory.alpha, theory.to_pandas()

and the analysis functions listed in ``__all__`` (overlay figure, sweeps and phase diagrams,
fixed points and their stability, plateaus, meta-test curves; ``Explorer``, the live ipywidgets
explorer of notebooks/07_explorer.ipynb, which needs ipywidgets). Names are loaded on first use, so
``import metaode`` stays light (the console script's Ctrl-C guard runs before numpy and numba).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metaode.config import Config
    from metaode.theory.system import ODESystem
    from metaode.trajectory import Trajectory

#: Public names defined elsewhere: name -> the module that defines it.
_REEXPORTED = {
    "Config": "metaode.config", "ConfigError": "metaode.config", "load_config": "metaode.config",
    "Trajectory": "metaode.trajectory",
    "build_system": "metaode.theory.system",
    "overlay_figure": "metaode.validation.plots",
    "sweep": "metaode.solvers.sweep", "parse_axis": "metaode.solvers.sweep",
    "column_grid": "metaode.validation.phase", "phase_figure": "metaode.validation.phase",
    "find_fixed_point": "metaode.solvers.fixedpoints", "stability": "metaode.solvers.fixedpoints",
    "symmetric_plateau": "metaode.solvers.fixedpoints",
    "specialised_fixed_point": "metaode.solvers.fixedpoints",
    "measure_plateau": "metaode.solvers.plateau", "plateau_saddle": "metaode.solvers.plateau",
    "adaptation_curve": "metaode.theory.metatest", "metatest_curve": "metaode.theory.metatest",
    "optimal_test_inner_lr": "metaode.solvers.metatest",
    "Explorer": "metaode.validation.explorer",
}

__all__ = sorted([*_REEXPORTED, "compare", "simulate", "solve"])


def __getattr__(name: str) -> Any:
    if name in _REEXPORTED:
        import importlib

        return getattr(importlib.import_module(_REEXPORTED[name]), name)
    raise AttributeError(f"module 'metaode' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


def solve(model: Config | ODESystem, **options: Any) -> Trajectory:
    """The theory trajectory of a config (its ODE system, ``build_system``) or of an ODE system,
    integrated over the config's output grid; ``options`` (times, method, rtol, atol, y0, stop)
    as ``metaode.solvers.integrate.solve``. Few-shot systems carry their Monte Carlo uncertainty,
    controlled to theory.mc_rtol."""
    from metaode.config import Config
    from metaode.solvers.integrate import solve as integrate
    from metaode.theory.system import build_system

    system = build_system(model) if isinstance(model, Config) else model
    return integrate(system, **options)


def simulate(config: Config, N: int | None = None, seeds: Iterable[int] | None = None,
             **options: Any) -> list[Trajectory]:
    """Simulated trajectories of ``config`` at width N (default simulation.N), one per seed
    (default: simulation.seeds seeds from simulation.seed); ``options`` (progress, workers, ...)
    as ``metaode.simulations.run.simulate`` (progress bars off unless asked for)."""
    from metaode.simulations.run import simulate as run

    return run(config, N=N, seeds=seeds, **{"progress": False, **options})


def compare(theory: Trajectory, simulations: list[Trajectory], N: int | None = None) -> dict:
    """Theory against the simulations' seed mean, column by column
    (``metaode.validation.compare.compare``; N names the width in the figures)."""
    from metaode.validation.compare import compare as figures

    return figures(theory, simulations, N)
