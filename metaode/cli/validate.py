"""``metaode validate [CONFIG] [--N N] [--seeds S] --out DIR``: solve and simulate CONFIG (default:
the built-in experiment) and compare them: DIR/theory.csv, DIR/simulation.csv, DIR/validation.json
(agreement figures, and the reference check of a config with a [reference] table,
``metaode.validation.reference``) and DIR/validation.png (theory over simulation). With
--convergence, --maml-gap or --drift it runs that study instead (``metaode.cli.studies``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from metaode.cli import studies
from metaode.cli.common import (
    add_output_options,
    add_width_and_seeds,
    check_metatest,
    check_out,
    describe,
    failures,
    override,
    stopped,
    write,
    write_metatest,
)
from metaode.cli.session import PROG, RunFailed, Session, UsageError
from metaode.cli.simulate import simulate_seeds, simulation_facts, verify_checkpoints
from metaode.cli.solve import solve_theory
from metaode.config import load_config
from metaode.io import write_json
from metaode.theory.state import column_names
from metaode.validation.compare import compare
from metaode.validation.plots import overlay_figure
from metaode.validation.reference import reference_check, summary


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``validate`` command, its options and those of its studies."""
    p = commands.add_parser("validate", help="theory against simulation: figure and figures",
                            description="Solve and simulate CONFIG (default: the built-in "
                            "experiment validation/default.toml) and compare them; writes "
                            "DIR/theory.csv, DIR/simulation.csv, DIR/validation.json (agreement "
                            "figures, and the check of the stated number of a config with a "
                            "[reference] table, e.g. examples/*.toml) and DIR/validation.png "
                            "(theory lines over simulation markers).")
    p.add_argument("config", type=Path, metavar="CONFIG", nargs="?",
                   help="experiment TOML file (default: the built-in experiment)")
    add_width_and_seeds(p)
    studies.add_arguments(p)
    add_output_options(p, resume=True)


def run(args: argparse.Namespace, session: Session) -> None:
    """Theory and simulation, their records, the agreement figures and the overlay figure (or a
    study); fails if either diverged (then without a figure)."""
    config = override(load_config(args.config), args)
    study = studies.requested(args)
    if study and args.resume:
        raise UsageError(f"{PROG} validate: argument --resume: only a plain validate resumes "
                         "(not --convergence, --maml-gap or --drift)")
    out = check_out(args, config)
    verify_checkpoints(config, args, out)
    describe(session, config)
    simulation_facts(session, config, args)
    if study:
        return studies.run_study(config, args, out, session)
    theory, t_theory = solve_theory(config, session)
    write(session, out / "theory.csv", [theory])
    write_metatest(session, out / "metatest_theory.csv", [theory])
    stopped(session, [theory], "theory", str(out / "theory.csv"))
    sims, t_sim = simulate_seeds(config, args, session, out)
    write(session, out / "simulation.csv", sims)
    write_metatest(session, out / "metatest_simulation.csv", sims)
    stopped(session, sims, "simulation", f"{out}/theory.csv and simulation.csv")
    failed = failures([theory], "theory") + failures(sims, "simulation")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records up to there in {out}/theory.csv and "
                        "simulation.csv; no figure)")
    start = time.perf_counter()
    N, tr = config.simulation.N, config.training
    figures = compare(theory, sims, N=N)
    overlay_figure(theory, sims, out / "validation.png", N=N, algorithm=tr.algorithm,
                   activations=(config.student.activation, config.teacher.activation))
    session.wrote(out / "validation.png")
    t_plot = time.perf_counter() - start
    st = config.student
    reference = ({"reference": reference_check(config, theory, sims)}
                 if config.reference.quantity is not None else {})
    write_json(out / "validation.json", {
        **figures,
        **reference,
        "config": config.raw,
        "initial_overlaps": {"Q0": st.Q0, "R0": st.R0, "w0": st.w0},
        "theory_nfev": theory.nfev,
        "timings_s": {"theory": t_theory, "simulation": t_sim, "compare_and_plot": t_plot},
    })
    session.wrote(out / "validation.json")
    _summary(figures, column_names(config.K, config.M))
    if reference:
        print(summary(reference["reference"]))
    check_metatest(session)
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
