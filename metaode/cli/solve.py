"""``metaode solve CONFIG --out DIR``: integrate the ODEs of CONFIG into DIR/theory.csv (and the
meta-test curves into DIR/metatest_theory.csv); ``solve_theory`` is the integration that validate
shares."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from metaode.cli.common import (
    add_output_options,
    check_metatest,
    check_out,
    describe,
    stopped,
    write,
    write_metatest,
)
from metaode.cli.session import RunFailed, Session
from metaode.config import Config, load_config
from metaode.solvers.integrate import solve
from metaode.theory.system import build_system
from metaode.trajectory import DIVERGED, SUCCESS, Trajectory


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``solve`` command and its options."""
    p = commands.add_parser("solve", help="integrate the ODEs: DIR/theory.csv",
                            description="Integrate the ODEs of CONFIG; writes DIR/theory.csv.")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    add_output_options(p)


def run(args: argparse.Namespace, session: Session) -> None:
    """Solve, write the records, and fail if the theory diverged."""
    config = load_config(args.config)
    out = check_out(args)
    describe(session, config)
    theory, seconds = solve_theory(config, session)
    write(session, out / "theory.csv", [theory])
    write_metatest(session, out / "metatest_theory.csv", [theory])
    session.record["theory_nfev"] = theory.nfev
    stopped(session, [theory], "theory", str(out / "theory.csv"))
    if theory.status == DIVERGED:
        raise RunFailed(f"theory: {theory.message} (records up to there in {out / 'theory.csv'})")
    check_metatest(session)
    print(f"wrote {out / 'theory.csv'}: {len(theory.alpha)} records, {theory.nfev} right-hand "
          f"side evaluations, {seconds:.2f} s")


def solve_theory(config: Config, session: Session) -> tuple[Trajectory, float]:
    """The theory's trajectory (stopped by the session's signals) and its wall time in seconds;
    a Monte Carlo uncertainty goes into the run record, its warning to stderr."""
    start = time.perf_counter()
    system = build_system(config)
    with session.stop.polling():
        theory = solve(system, stop=session.stop)
    if theory.monte_carlo:
        session.record["monte_carlo"] = theory.monte_carlo
        # a failed run says only why it failed (one line); its record keeps the warning
        if "warning" in theory.monte_carlo and theory.status == SUCCESS:
            print(f"metaode: warning: {theory.monte_carlo['warning']}", file=sys.stderr)
    return theory, time.perf_counter() - start
