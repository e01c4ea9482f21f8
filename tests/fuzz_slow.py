"""The slow fuzz run: the properties of tests/test_fuzz_cli.py with many more generated cases.

    python tests/fuzz_slow.py [--scale S] [--seed SEED] [--out tests/FUZZ_RESULTS.md]

runs every property with S times the suite's number of examples (default S = 20: ~43,000 cases),
drawn at random from SEED (default: a fixed one, so a run can be repeated), counts the exit
statuses of the command lines run, and writes the counts, the outcome (any falsifying example,
shrunk by hypothesis) and the run's versions to the Markdown file. Not collected by pytest (the
name does not start with test_); its recorded result is tests/FUZZ_RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import io
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import hypothesis  # noqa: E402
import test_fuzz_cli as fuzz  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from metaode.cli import main  # noqa: E402
from metaode.io import git_revision, package_versions  # noqa: E402


class CountingRunner:
    """``main(argv)`` with stdout and stderr captured; tallies the exit statuses."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()

    def __call__(self, argv: list[str]) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
        self.statuses[status] += 1
        return status, err.getvalue()


def properties(runner: CountingRunner) -> dict[str, tuple]:
    """name -> (strategies, property) as in tests/test_fuzz_cli.py."""
    return {
        "config_dicts": ((fuzz.invalid_configs(),), fuzz.prop_config_dicts),
        "python_values": ((fuzz.valid_configs(), st.sampled_from(fuzz._keys()),
                           fuzz.python_only), fuzz.prop_python_values),
        "config_files": ((fuzz.invalid_configs(), fuzz.CONFIG_COMMANDS),
                         lambda d, c: fuzz.prop_config_files(d, c, runner)),
        "command_lines": ((fuzz.command_lines(),),
                          lambda line: fuzz.prop_command_lines(line, runner)),
        "valid_runs": ((fuzz.valid_configs(), fuzz.RUN_COMMANDS),
                       lambda c, cmd: fuzz.prop_valid_runs(c, cmd, runner)),
    }


def _counted(prop, calls: collections.Counter[str]):
    """``prop`` called with a generated tuple of arguments, counting the calls."""

    def test(args: tuple) -> None:
        calls["cases"] += 1
        prop(*args)

    return test


def run(scale: int, seed: int) -> list[dict]:
    rows = []
    for name, n in fuzz.EXAMPLES.items():
        runner = CountingRunner()
        strategies, prop = properties(runner)[name]
        calls: collections.Counter[str] = collections.Counter()
        test = hypothesis.seed(seed)(settings(
            max_examples=n * scale, deadline=None, database=None,
            suppress_health_check=list(HealthCheck))(given(st.tuples(*strategies))(
                _counted(prop, calls))))
        start = time.perf_counter()
        try:
            test()
            outcome = "passed"
        except Exception as err:  # a falsifying example: recorded, the other properties go on
            outcome = f"FAILED: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        rows.append({"property": name, "cases": calls["cases"], "statuses": dict(runner.statuses),
                     "outcome": outcome, "seconds": time.perf_counter() - start})
        print(f"{name}: {rows[-1]['cases']} cases, exit statuses {dict(runner.statuses)}, "
              f"{outcome}, {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def report(rows: list[dict], scale: int, seed: int) -> str:
    total = sum(r["cases"] for r in rows)
    git = git_revision()
    lines = [
        "# Slow fuzz run (tests/fuzz_slow.py)",
        "",
        "The properties of `tests/test_fuzz_cli.py` (generated configs and command lines; the "
        "contract: exit 0, 1 saying at which alpha, or 2 with one line naming the key or "
        "argument; never a traceback, an internal error or a NaN in an output) with "
        f"{scale} times the suite's examples, random seed {seed}.",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- git revision: {git['revision']}{' (with uncommitted changes)' if git['dirty'] else ''}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in package_versions().items())}, "
        f"hypothesis {hypothesis.__version__}",
        f"- command: `python tests/fuzz_slow.py --scale {scale} --seed {seed}`",
        "",
        "| property | cases | exit statuses (status: count) | outcome | seconds |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    for r in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())) or "-"
        lines.append(f"| {r['property']} | {r['cases']} | {statuses} | {r['outcome']} | "
                     f"{r['seconds']:.0f} |")
    failed = [r for r in rows if r["outcome"] != "passed"]
    lines += ["", f"**{total} generated cases, "
              + (f"{len(failed)} properties FAILED.**" if failed else "no failure.**"), "",
              "config_dicts and python_values call `Config.from_dict` (no exit status). Exit 1 "
              "among valid_runs is a run that stopped at an alpha it names (divergence, runaway, "
              "a non-finite observable, a diverging meta-test curve).", ""]
    return "\n".join(lines)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", type=Path, default=HERE / "FUZZ_RESULTS.md")
    args = parser.parse_args()
    rows = run(args.scale, args.seed)
    args.out.write_text(report(rows, args.scale, args.seed))
    print(f"wrote {args.out}")
    return 0 if all(r["outcome"] == "passed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli())
