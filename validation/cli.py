"""The ``metaode`` command line (INTERFACE.md): solve, simulate and validate one experiment.

    metaode solve CONFIG --out DIR                       -> DIR/theory.csv
    metaode simulate CONFIG [--N N] [--seeds S] --out DIR -> DIR/simulation.csv
    metaode validate [CONFIG] [--N N] [--seeds S] --out DIR
        -> DIR/theory.csv, DIR/simulation.csv, DIR/validation.json, DIR/validation.png
    metaode validate [CONFIG] --convergence N1,N2,... [--seeds S] --out DIR
        -> DIR/convergence.json, DIR/convergence.png (deviation from the ODE against N)
    metaode validate CONFIG --maml-gap N1,N2,... [--seeds S] --out DIR
        -> DIR/maml_gap.json, DIR/maml_gap.png (maml against anil, inner_steps 1 and 2)
    metaode validate [CONFIG] --drift A1,A2,... [--N N] [--repeats R] --out DIR
        -> DIR/drift.json, DIR/drift.png (one-step increments against the ODE at alpha = A_i)

Meta-test curves (error after 0..S test adaptation steps at metatest.at) go to
DIR/metatest_theory.csv and DIR/metatest_simulation.csv.

Exit status: 0 success; 2 a bad config or bad arguments (one line on stderr naming the key or the
argument); 1 a failure during the run, e.g. a divergence (what was computed is written, and the
message says at which alpha).
"""

from __future__ import annotations

import argparse
import math
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
from theory.trajectory import DIVERGED, Trajectory, write_csv, write_metatest_csv
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
    study = p.add_mutually_exclusive_group()
    study.add_argument("--convergence", type=_int_list, metavar="N1,N2,...",
                       help="deviation of the simulation from the theory against N, with the "
                       "fitted slope of log D against log N (expected -1/2)")
    study.add_argument("--maml-gap", type=_int_list, metavar="N1,N2,...",
                       help="maml against anil on paired streams at these N, for inner_steps "
                       "1 and 2 (CONFIG's support must be a number P)")
    study.add_argument("--drift", type=_float_list, metavar="A1,A2,...",
                       help="local drift check: mean one-step increments of a network against "
                       "the ODE's right-hand side at these meta-times")
    p.add_argument("--repeats", type=int, default=20000, metavar="R",
                   help="continuations per state of --drift (default 20000)")
    common(p)

    p = sub.add_parser("sweep", help="parameter sweep: DIR/sweep.csv and phase diagrams",
                       description="Solve the ODEs of CONFIG at every point of a grid of config "
                       "values; writes DIR/sweep.csv (one row per grid point: the swept values, "
                       "final error, error before adaptation, plateau length, escape time, "
                       "specialisation, status, nfev, wall time), DIR/phase.png and, for two or "
                       "more swept keys, DIR/phase_COLUMN.png per main column. Finished points "
                       "are journalled in DIR/sweep.journal.jsonl as they finish; rerunning the "
                       "same command computes only the missing ones. A diverged point is a row "
                       "with status 'diverged' (exit 0); a point that raised is status 'failed' "
                       "(exit 1, retried by a rerun).")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    p.add_argument("--param", action="append", required=True, metavar="KEY=START:STOP:NUM[:log]",
                   help="swept key (dotted path, e.g. training.inner_lr) with NUM points from "
                   "START to STOP inclusive, evenly spaced, or evenly in log with ':log'; "
                   "integer keys get rounded integer values; repeat for a Cartesian product")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=int, default=1, metavar="W",
                        help="local processes (default 1: in this process)")
    engine.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the points on the Dask distributed scheduler at ADDRESS "
                        "(e.g. tcp://host:8786)")
    p.add_argument("--contour", action="append", default=[], metavar="COLUMN=LEVEL",
                   help="contour level drawn on the heat map of COLUMN (default: its median)")
    common(p)
    return parser


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"expected widths N >= 2, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 0 or not all(map(math.isfinite, values)):
        raise argparse.ArgumentTypeError(f"expected meta-times alpha >= 0, got {text!r}")
    return values


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
    _write_metatest(out / "metatest_theory.csv", [theory])
    if theory.status == DIVERGED:
        raise RunFailed(f"theory: {theory.message} (records up to there in {out / 'theory.csv'})")
    print(f"wrote {out / 'theory.csv'}: {len(theory.alpha)} records, {theory.nfev} right-hand "
          f"side evaluations, {seconds:.2f} s")


def run_simulate(args: argparse.Namespace) -> None:
    config = _override(load_config(args.config), args)
    out = _check_out(args)
    sims, seconds = _simulate(config, args.quiet)
    write_csv(out / "simulation.csv", sims)
    _write_metatest(out / "metatest_simulation.csv", sims)
    failed = _failures(sims, "simulation")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records up to there in {out / 'simulation.csv'})")
    print(f"wrote {out / 'simulation.csv'}: N = {config.simulation.N}, {len(sims)} seeds, "
          f"{seconds:.1f} s")


def _write_metatest(path: Path, runs: list[Trajectory]) -> None:
    if any(r.metatest for r in runs):
        write_metatest_csv(path, runs)


def run_validate(args: argparse.Namespace) -> None:
    config = _override(load_config(args.config), args)
    out = _check_out(args)
    if args.convergence or args.maml_gap or args.drift:
        return _run_study(config, args, out)
    theory, t_theory = _solve(config)
    sims, t_sim = _simulate(config, args.quiet)
    write_csv(out / "theory.csv", [theory])
    write_csv(out / "simulation.csv", sims)
    _write_metatest(out / "metatest_theory.csv", [theory])
    _write_metatest(out / "metatest_simulation.csv", sims)
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


def _run_study(config: Config, args: argparse.Namespace, out: Path) -> None:
    """--convergence, --maml-gap or --drift: one study, its JSON and its figure."""
    sim = config.simulation
    seeds = list(range(sim.seed, sim.seed + sim.seeds))
    progress = not args.quiet
    if args.convergence:
        from validation.convergence import convergence_figure, convergence_study

        result = convergence_study(config, args.convergence, seeds, progress)
        convergence_figure(result, out / "convergence.png")
        write_json(out / "convergence.json", {**result, "config": config.raw})
        print(f"deviation from the ODE ~ N^{result['slope']:.3f} "
              f"(+- {result['slope_stderr']:.3f}); wrote {out}/convergence.json, .png")
    elif args.maml_gap:
        from validation.maml_gap import gap_figure, maml_anil_gap

        if config.training.support == "population":
            raise ConfigError("training.support", "--maml-gap needs a finite support set P")
        results = {f"inner_steps = {s}": maml_anil_gap(config.replace("training.inner_steps", s),
                                                       args.maml_gap, seeds, progress)
                   for s in (1, 2)}
        gap_figure(results, out / "maml_gap.png")
        write_json(out / "maml_gap.json", {"config": config.raw, **{
            k: {**v, "gap": v["gap"].tolist(), "mean": v["mean"].tolist(),
                "stderr": v["stderr"].tolist()} for k, v in results.items()}})
        for label, res in results.items():
            print(f"{label}: gap ~ N^{res['slope']:.2f}, at N = {res['N'][-1]}: "
                  f"{res['mean'][-1]:.3g}")
    else:
        from validation.drift import drift_figure, local_drift_check

        if args.repeats < 2:
            raise UsageError(f"{PROG} validate: argument --repeats: must be >= 2")
        checks = [local_drift_check(config, sim.N, a, args.repeats, seed=sim.seed,
                                    progress=progress) for a in args.drift]
        drift_figure(checks, out / "drift.png")
        write_json(out / "drift.json", {"config": config.raw, "checks": [
            {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in c.items()}
            for c in checks]})
        for c in checks:
            print(f"alpha = {c['alpha0']:g}: max |z| = {abs(c['z']).max():.2f} over "
                  f"{len(c['z'])} entries ({c['repeats']} continuations, N = {c['N']})")


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


def run_sweep(args: argparse.Namespace) -> None:
    from solvers.sweep import JOURNAL, JournalError, SchedulerError, parse_axis, sweep
    from validation.phase import MAIN_COLUMNS, phase_figures

    axes = []
    for text in args.param:
        try:
            axes.append(parse_axis(text))
        except ValueError as err:  # ConfigError included: the message starts with the key
            raise UsageError(f"{PROG} sweep: argument --param: {err}") from None
    levels = {}
    for text in args.contour:
        column, _, level = text.partition("=")
        try:
            levels[column] = float(level)
        except ValueError:
            levels[column] = math.nan
        if column not in MAIN_COLUMNS or not math.isfinite(levels[column]):
            raise UsageError(f"{PROG} sweep: argument --contour: expected COLUMN=LEVEL with "
                             f"COLUMN one of {', '.join(MAIN_COLUMNS)}, got {text!r}")
    if args.workers < 1:
        raise UsageError(f"{PROG} sweep: argument --workers: must be >= 1, got {args.workers}")
    config = load_config(args.config)
    out = _check_out(args)
    try:
        result = sweep(config, axes, out, workers=args.workers, scheduler=args.scheduler,
                       progress=not args.quiet)
    except JournalError as err:
        raise UsageError(f"{PROG} sweep: argument --out: {err}") from None
    except SchedulerError as err:
        raise UsageError(f"{PROG} sweep: argument --scheduler: {err}") from None
    except ConfigError:
        raise
    except Exception as err:  # a worker or the cluster failed: what finished is journalled
        raise RunFailed(f"{type(err).__name__}: {err} (finished points are in "
                        f"{out / JOURNAL}; rerun the same command to resume)") from None
    paths = phase_figures(result.rows, axes, out, levels)
    failed = [r for r in result.rows if r["status"] == "failed"]
    if failed:
        raise RunFailed(f"{len(failed)} of {len(result.rows)} points failed (first: point "
                        f"{failed[0]['index']}: {failed[0]['message']}); their rows in "
                        f"{out / 'sweep.csv'} say so, a rerun retries them")
    print(f"wrote {out / 'sweep.csv'}: {result.summary()}; figures "
          f"{', '.join(p.name for p in paths)}")


COMMANDS = {"solve": run_solve, "simulate": run_simulate, "validate": run_validate,
            "sweep": run_sweep}


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
