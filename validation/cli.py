"""The ``metaode`` command line (INTERFACE.md): solve, simulate and validate one experiment.

    metaode solve CONFIG --out DIR                       -> DIR/theory.csv
    metaode simulate CONFIG [--N N] [--seeds S] --out DIR -> DIR/simulation.csv
    metaode validate [CONFIG] [--N N] [--seeds S] --out DIR
        -> DIR/theory.csv, DIR/simulation.csv, DIR/validation.json, DIR/validation.png

Exit status: 0 success; 2 a bad config or bad arguments (one line on stderr naming the key or the
argument); 1 a failure during the run, e.g. a divergence (what was computed is written, and the
message says at which alpha).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import NoReturn

from simulations.run import simulate
from solvers.integrate import solve
from theory.config import Config, ConfigError
from theory.state import column_names
from theory.system import build_system
from theory.trajectory import DIVERGED, Trajectory, write_csv
from validation.compare import compare, write_json
from validation.plots import overlay_figure

PROG = "metaode"


class UsageError(Exception):
    """A bad command line (exit status 2); the message is one line naming the argument."""


class RunFailed(Exception):
    """The run failed (exit status 1); the message says where (e.g. at which alpha)."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become one-line ``UsageError``s instead of usage text + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Closed ODEs for online (meta-)learning of two-layer erf networks in the "
        "teacher-student scenario, checked against simulations of large networks.",
        epilog="Exit status: 0 success, 1 the run failed (e.g. diverged), 2 bad config or "
        "arguments. `metaode COMMAND --help` describes each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="output folder (created if missing)")
        p.add_argument("--quiet", action="store_true", help="hide the progress bars")

    def width_and_seeds(p: argparse.ArgumentParser) -> None:
        p.add_argument("--N", type=int, metavar="N",
                       help="input dimension of the simulation (default: simulation.N)")
        p.add_argument("--seeds", type=int, metavar="S",
                       help="number of seeds (default: simulation.seeds)")

    p = sub.add_parser("solve", help="integrate the ODEs: DIR/theory.csv",
                       description="Integrate the ODEs of CONFIG; writes DIR/theory.csv.")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    common(p)

    p = sub.add_parser("simulate", help="simulate networks of width N: DIR/simulation.csv",
                       description="Simulate CONFIG at width N over S seeds; writes "
                       "DIR/simulation.csv (a seed column, one block of rows per seed).")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    width_and_seeds(p)
    common(p)

    p = sub.add_parser("validate", help="theory against simulation: figure and figures",
                       description="Solve and simulate CONFIG (default: the built-in experiment "
                       "validation/default.toml) and compare them; writes DIR/theory.csv, "
                       "DIR/simulation.csv, DIR/validation.json (agreement figures) and "
                       "DIR/validation.png (theory lines over simulation markers).")
    p.add_argument("config", type=Path, metavar="CONFIG", nargs="?",
                   help="experiment TOML file (default: the built-in experiment)")
    width_and_seeds(p)
    common(p)
    return parser


def load_config(path: Path | None) -> Config:
    """The config at ``path``, or the built-in default experiment (validation/default.toml)."""
    if path is None:
        with resources.as_file(resources.files("validation") / "default.toml") as default:
            return Config.from_toml(default)
    return Config.from_toml(path)


def _override(config: Config, args: argparse.Namespace) -> Config:
    """--N and --seeds replace simulation.N and simulation.seeds (validated by the schema)."""
    for flag, key in (("N", "simulation.N"), ("seeds", "simulation.seeds")):
        value = getattr(args, flag, None)
        if value is not None:
            try:
                config = config.replace(key, value)
            except ConfigError as err:
                raise UsageError(f"{PROG} {args.command}: argument --{flag}: {err}") from None
    return config


def _check_out(args: argparse.Namespace) -> Path:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{PROG} {args.command}: argument --out: {out} is not a folder")
    return out


def _failures(runs: list[Trajectory], what: str) -> list[str]:
    return [f"{what if r.seed is None else f'seed {r.seed}'}: {r.message}"
            for r in runs if r.status == DIVERGED]


def _solve(config: Config) -> tuple[Trajectory, float]:
    start = time.perf_counter()
    system = build_system(config)
    return solve(system), time.perf_counter() - start


def _simulate(config: Config, quiet: bool) -> tuple[list[Trajectory], float]:
    start = time.perf_counter()
    sim = config.simulation
    sims = simulate(config, sim.N, range(sim.seed, sim.seed + sim.seeds), progress=not quiet)
    return sims, time.perf_counter() - start


def run_solve(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    out = _check_out(args)
    theory, seconds = _solve(config)
    write_csv(out / "theory.csv", [theory])
    if theory.status == DIVERGED:
        raise RunFailed(f"theory: {theory.message} (records up to there in {out / 'theory.csv'})")
    print(f"wrote {out / 'theory.csv'}: {len(theory.alpha)} records, {theory.nfev} right-hand "
          f"side evaluations, {seconds:.2f} s")


def run_simulate(args: argparse.Namespace) -> None:
    config = _override(load_config(args.config), args)
    out = _check_out(args)
    sims, seconds = _simulate(config, args.quiet)
    write_csv(out / "simulation.csv", sims)
    failed = _failures(sims, "simulation")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records up to there in {out / 'simulation.csv'})")
    print(f"wrote {out / 'simulation.csv'}: N = {config.simulation.N}, {len(sims)} seeds, "
          f"{seconds:.1f} s")


def run_validate(args: argparse.Namespace) -> None:
    config = _override(load_config(args.config), args)
    out = _check_out(args)
    theory, t_theory = _solve(config)
    sims, t_sim = _simulate(config, args.quiet)
    write_csv(out / "theory.csv", [theory])
    write_csv(out / "simulation.csv", sims)
    failed = _failures([theory], "theory") + _failures(sims, "simulation")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records up to there in {out}/theory.csv and "
                        "simulation.csv; no figure)")
    start = time.perf_counter()
    N, tr = config.simulation.N, config.training
    figures = compare(theory, sims, N=N)
    overlay_figure(theory, sims, out / "validation.png", N=N, algorithm=tr.algorithm)
    t_plot = time.perf_counter() - start
    st = config.student
    write_json(out / "validation.json", {
        **figures,
        "config": config.raw,
        "initial_overlaps": {"Q0": st.Q0, "R0": st.R0, "w0": st.w0},
        "theory_nfev": theory.nfev,
        "timings_s": {"theory": t_theory, "simulation": t_sim, "compare_and_plot": t_plot},
    })
    _summary(figures, column_names(config.K, config.M))
    print(f"wrote {out}/theory.csv, simulation.csv, validation.json, validation.png "
          f"(theory {t_theory:.1f} s, simulation N = {N} x {len(sims)} seeds {t_sim:.1f} s)")


def _summary(figures: dict, state_columns: list[str]) -> None:
    """Two lines on stdout: the agreement of the error and of the worst order parameter."""
    columns = figures["columns"]
    err = columns["error"]
    line = (f"error: max |mean - theory| = {err['max_abs_deviation']:.3g} at alpha = "
            f"{err['alpha_of_max_abs_deviation']:.4g}")
    if err.get("max_rel_deviation") is not None:
        line += f" (relative {err['max_rel_deviation']:.2%})"
    if err.get("max_abs_z") is not None:
        line += f", max |z| = {err['max_abs_z']:.2g}"
    print(line)
    worst = max(state_columns, key=lambda c: columns[c]["max_abs_deviation"])
    print(f"order parameters: largest max |mean - theory| = "
          f"{columns[worst]['max_abs_deviation']:.3g} ({worst})")


COMMANDS = {"solve": run_solve, "simulate": run_simulate, "validate": run_validate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``metaode`` with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except UsageError as err:
        return _fail(str(err), 2)
    try:
        COMMANDS[args.command](args)
    except UsageError as err:
        return _fail(str(err), 2)
    except ConfigError as err:
        return _fail(f"{PROG} {args.command}: {err}", 2)
    except RunFailed as err:
        return _fail(f"{PROG} {args.command}: run failed: {err}", 1)
    except OSError as err:
        return _fail(f"{PROG} {args.command}: run failed: {err}", 1)
    return 0


def _fail(message: str, status: int) -> int:
    print(" ".join(message.split()), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
