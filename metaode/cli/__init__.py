"""The ``metaode`` command line (README.md): solve, simulate and validate one experiment.

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
    metaode sweep CONFIG --param KEY=START:STOP:NUM[:log] ... --out DIR
        -> DIR/sweep.csv, DIR/sweep.journal.jsonl, DIR/phase*.png

Meta-test curves (error after 0..S test adaptation steps at metatest.at) go to
DIR/metatest_theory.csv and DIR/metatest_simulation.csv. Every command that writes outputs also
writes DIR/run.json (``metaode.io.write_run_record``): the command line, the config, N and
the seeds, the status and message, the files written, package versions and the git revision.

Outputs are never overwritten silently: a DIR that holds results of metaode
(``common.RESULT_PATTERNS``) is refused unless --force (simulate, validate: or --resume; sweep: or
its own journal, which it resumes). Simulations checkpoint every simulation.checkpoint_every
seconds into DIR/checkpoint (``simulations.checkpoint``); ``--resume`` continues from there, bit
for bit.

SIGINT (Ctrl-C) or SIGTERM: a running integration or simulation stops at its next chunk of steps,
writes the records so far (CSV, atomically) and a checkpoint, and the program exits with one line
and status 128 + the signal number (130 for SIGINT, 143 for SIGTERM); a second signal stops at once
(files are written atomically, so none is ever truncated). A sweep stops at once: its journal holds
every point that had finished, and the same command resumes it.

Exit status: 0 success; 2 a bad config or bad arguments (one line on stderr naming the key or the
argument); 1 a failure during the run, e.g. a divergence (what was computed is written, and the
message says at which alpha); 130 / 143 interrupted by SIGINT / SIGTERM.

The modules: ``program`` (the parser, the dispatch and the exit statuses), ``session`` (a run's
outcomes and its run record), ``common`` (what the commands share: output folder, options, writing
and failing), one per command (``solve``, ``simulate``, ``validate`` with its ``studies``,
``sweep``), ``entry`` (the console script; ``python -m metaode`` runs it too). Importing this
package loads none of them: ``main`` imports the program when it is called, so that ``entry`` can
turn a Ctrl-C during those imports into one line.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``metaode`` with ``argv`` (default: sys.argv[1:]); returns the exit status
    (``metaode.cli.program.main``)."""
    from metaode.cli.program import main as run

    return run(argv)
