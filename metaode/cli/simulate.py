"""``metaode simulate CONFIG [--N N] [--seeds S] --out DIR``: simulate networks of width N into
DIR/simulation.csv (and DIR/metatest_simulation.csv), checkpointed in DIR/checkpoint; the steps
that validate shares: the seeds' simulation, --resume's check of the checkpoints, the facts of the
run record."""

from __future__ import annotations

import argparse
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

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
from metaode.cli.session import RunFailed, Session
from metaode.config import Config, load_config
from metaode.simulations.checkpoint import Checkpoints
from metaode.simulations.run import simulate
from metaode.trajectory import Trajectory


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``simulate`` command and its options."""
    p = commands.add_parser("simulate", help="simulate networks of width N: DIR/simulation.csv",
                            description="Simulate CONFIG at width N over S seeds; writes "
                            "DIR/simulation.csv (a seed column, one block of rows per seed).")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment TOML file")
    add_width_and_seeds(p)
    add_output_options(p, resume=True)


def run(args: argparse.Namespace, session: Session) -> None:
    """Simulate the seeds, write their records, and fail if one diverged."""
    config = override(load_config(args.config), args)
    out = check_out(args, config)
    verify_checkpoints(config, args, out)
    describe(session, config)
    simulation_facts(session, config, args)
    sims, seconds = simulate_seeds(config, args, session, out)
    write(session, out / "simulation.csv", sims)
    write_metatest(session, out / "metatest_simulation.csv", sims)
    stopped(session, sims, "simulation", str(out / "simulation.csv"))
    failed = failures(sims, "simulation")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records up to there in {out / 'simulation.csv'})")
    check_metatest(session)
    print(f"wrote {out / 'simulation.csv'}: N = {config.simulation.N}, {len(sims)} seeds, "
          f"{seconds:.1f} s")


def verify_checkpoints(config: Config, args: argparse.Namespace, out: Path) -> None:
    """With --resume: read every seed's checkpoint before anything is written (CheckpointError
    if one cannot be resumed)."""
    if args.resume:
        sim = config.simulation
        checkpoints = Checkpoints(out, config, sim.N)
        for seed in range(sim.seed, sim.seed + sim.seeds):
            checkpoints.load(seed)


def simulation_facts(session: Session, config: Config, args: argparse.Namespace) -> None:
    """N, the seeds and --workers, for the run record."""
    sim = config.simulation
    session.record.update(N=sim.N, seeds=list(range(sim.seed, sim.seed + sim.seeds)),
                          workers=args.workers)


def simulate_seeds(config: Config, args: argparse.Namespace, session: Session,
                   out: Path) -> tuple[list[Trajectory], float]:
    """The seeds of ``config`` with checkpoints in out/checkpoint, resumed with --resume; their
    trajectories and the wall time in seconds."""
    start = time.perf_counter()
    sim = config.simulation
    seeds = list(range(sim.seed, sim.seed + sim.seeds))
    checkpoints = Checkpoints(out, config, sim.N)
    if args.resume:
        session.record["resumed_seeds"] = [s for s in seeds if checkpoints.path(s).exists()]
    else:
        checkpoints.clear()
    session.note = (f"; checkpoint in {checkpoints.folder}, rerun with --resume to continue"
                    if checkpoints.enabled else
                    " (no checkpoint: simulation.checkpoint_every = 0)")
    try:
        with session.stop.polling():
            sims = simulate(config, sim.N, seeds, progress=not args.quiet, workers=args.workers,
                            checkpoints=checkpoints, resume=args.resume, stop=session.stop)
    except BrokenProcessPool as err:  # a worker was killed (e.g. out of memory)
        raise RunFailed(f"a worker process died ({err}){session.note}") from None
    return sims, time.perf_counter() - start
