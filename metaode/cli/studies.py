"""The studies of ``metaode validate``: --convergence, --maml-gap and --drift, their options and
their runs (each writes its JSON and its figure into DIR).

    metaode validate [CONFIG] --convergence N1,N2,... [--seeds S] --out DIR
        -> DIR/convergence.json, DIR/convergence.png (deviation from the ODE against N)
    metaode validate CONFIG --maml-gap N1,N2,... [--seeds S] --out DIR
        -> DIR/maml_gap.json, DIR/maml_gap.png (maml against anil, inner_steps 1 and 2)
    metaode validate [CONFIG] --drift A1,A2,... [--N N] [--repeats R] --out DIR
        -> DIR/drift.json, DIR/drift.png (one-step increments against the ODE at alpha = A_i)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from metaode.cli.session import PROG, Session, UsageError
from metaode.config import Config, ConfigError
from metaode.io import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mutually exclusive study options and --repeats (of --drift)."""
    study = parser.add_mutually_exclusive_group()
    study.add_argument("--convergence", type=_int_list, metavar="N1,N2,...",
                       help="deviation of the simulation from the theory against N, with the "
                       "fitted slope of log D against log N (expected -1/2)")
    study.add_argument("--maml-gap", type=_int_list, metavar="N1,N2,...",
                       help="maml against anil on paired streams at these N, for inner_steps "
                       "1 and 2 (CONFIG's support must be a number P)")
    study.add_argument("--drift", type=_float_list, metavar="A1,A2,...",
                       help="local drift check: mean one-step increments of a network against "
                       "the ODE's right-hand side at these meta-times")
    parser.add_argument("--repeats", type=int, default=20000, metavar="R",
                        help="continuations per state of --drift (default 20000)")


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


def requested(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a study."""
    return bool(args.convergence or args.maml_gap or args.drift)


def run_study(config: Config, args: argparse.Namespace, out: Path, session: Session) -> None:
    """--convergence, --maml-gap or --drift: one study, its JSON and its figure."""
    sim = config.simulation
    seeds = list(range(sim.seed, sim.seed + sim.seeds))
    progress = not args.quiet
    if args.convergence:
        _convergence(config, args.convergence, seeds, progress, out, session)
    elif args.maml_gap:
        _maml_gap(config, args.maml_gap, seeds, progress, out, session)
    else:
        _drift(config, args.drift, args.repeats, progress, out, session)


def _convergence(config: Config, widths: list[int], seeds: list[int], progress: bool, out: Path,
                 session: Session) -> None:
    from metaode.validation.convergence import convergence_figure, convergence_study

    result = convergence_study(config, widths, seeds, progress)
    convergence_figure(result, out / "convergence.png")
    write_json(out / "convergence.json", {**result, "config": config.raw})
    session.wrote(out / "convergence.png", out / "convergence.json")
    print(f"deviation from the ODE ~ N^{result['slope']:.3f} "
          f"(+- {result['slope_stderr']:.3f}); wrote {out}/convergence.json, .png")


def _maml_gap(config: Config, widths: list[int], seeds: list[int], progress: bool, out: Path,
              session: Session) -> None:
    from metaode.validation.maml_gap import (
        difference_agreement,
        gap_figure,
        maml_anil_gap,
        theory_gap,
    )

    if config.training.support == "population":
        raise ConfigError("training.support", "--maml-gap needs a finite support set P")
    results = {}
    for s in (1, 2):
        steps = config.replace("training.inner_steps", s)
        results[f"inner_steps = {s}"] = {**maml_anil_gap(steps, widths, seeds, progress),
                                         "theory": theory_gap(steps)}
    gap_figure(results, out / "maml_gap.png")
    write_json(out / "maml_gap.json", {"config": config.raw, **results})
    session.wrote(out / "maml_gap.png", out / "maml_gap.json")
    for label, res in results.items():
        print(f"{label}: gap ~ N^{res['slope']:.2f}, at N = {res['N'][-1]}: "
              f"{res['mean'][-1]:.3g}; theory (N -> infinity): {res['theory']['gap']:.3g} "
              f"+- {res['theory']['gap_err']:.2g}")
        agreement = difference_agreement(res, res["theory"])
        if agreement:
            name = max(agreement, key=lambda n: agreement[n]["z"])
            print(f"  signed difference maml - anil, simulated at N = {res['N'][-1]} against "
                  f"theory: largest |z| = {agreement[name]['z']:.2f} ({name})")


def _drift(config: Config, alphas: list[float], repeats: int, progress: bool, out: Path,
           session: Session) -> None:
    from metaode.validation.drift import drift_figure, local_drift_check

    if repeats < 2:
        raise UsageError(f"{PROG} validate: argument --repeats: must be >= 2")
    sim = config.simulation
    checks = [local_drift_check(config, sim.N, a, repeats, seed=sim.seed, progress=progress)
              for a in alphas]
    drift_figure(checks, out / "drift.png")
    write_json(out / "drift.json", {"config": config.raw, "checks": [
        {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in c.items()}
        for c in checks]})
    session.wrote(out / "drift.png", out / "drift.json")
    for c in checks:
        print(f"alpha = {c['alpha0']:g}: max |z| = {abs(c['z']).max():.2f} over "
              f"{len(c['z'])} entries ({c['repeats']} continuations, N = {c['N']})")
