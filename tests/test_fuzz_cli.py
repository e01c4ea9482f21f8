"""Bad input, property-based (hypothesis): generated configs and command lines never end in a
traceback.

Generated: valid configs (small and cheap: K, M <= 3, N <= 40, alpha_max <= 1, a few records, with
extreme valid values mixed in: learning rates up to the schema's maximum 100, singular overlaps with
arcsin arguments at +-1, horizons of 1e-6, test adaptations that diverge), invalid configs (one key
of a valid config replaced by a wrong type, a value out of range, a wrong shape, a non-symmetric or
non-positive-semi-definite matrix, an unknown key or section, a section that is not a table, or a
cross-key conflict, each with the key an error must name), Python values that TOML cannot hold
(for ``Config.from_dict``), and command lines of every subcommand with valid and invalid values.

The contract (``check_outcome``): exit status 0, 1 or 2; on 2 exactly one line on stderr naming the
offending key or argument, and nothing written; on 1 one line saying at which alpha the run failed
(a divergence, a runaway, a diverging meta-test curve); on 0 every number of every CSV written is
finite; never a traceback, an "internal error" or a numba error.

Cases per run (hypothesis, derandomized, so CI sees the same ones every time):
test_config_dicts 700, test_python_values 300, test_config_files 500, test_command_lines 400,
test_valid_runs 250: 2,150 in all. tests/fuzz_slow.py runs the same properties with many more
(its result: tests/FUZZ_RESULTS.md).
"""

from __future__ import annotations

import csv
import json
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from states import one_line

from metaode.cli import main
from metaode.config import SCHEMA, Config, ConfigError

#: runs ``metaode`` in-process: argv -> (exit status, what it wrote on stderr)
Runner = Callable[[list[str]], tuple[int, str]]
# -- TOML ------------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` in TOML syntax (bool, int, float incl. nan / inf, str, list, inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (JSON escapes are valid TOML escapes)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def to_toml(data: dict[str, Any]) -> str:
    """A config dict as a TOML document (top-level non-table values first, then the tables)."""
    lines = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{_toml_key(section)}]")
            lines.extend(f"{_toml_key(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# -- valid configs ---------------------------------------------------------------------------------

small = st.floats(-1.0, 1.0, allow_nan=False).map(lambda v: round(v, 6))


@st.composite
def overlaps(draw: st.DrawFn, K: int, M: int, T: np.ndarray) -> tuple[list, list, list]:
    """(Q0, R0, w0) with [[Q0, R0], [R0^T, T]] positive semi-definite: Q0 = R0 T^-1 R0^T + A A^T
    (the Schur complement A A^T >= 0); A = 0 gives a singular covariance (rows of R0 at the
    Cauchy-Schwarz bound, arcsin arguments at +-1), a zero row of R0 then a unit of norm 0."""
    R0 = np.array([[draw(small) for _ in range(M)] for _ in range(K)])
    if draw(st.booleans()):
        A = np.zeros((K, K))
    else:
        A = np.array([[draw(small) for _ in range(K)] for _ in range(K)])
    Q0 = R0 @ np.linalg.solve(T, R0.T) + A @ A.T
    Q0 = 0.5 * (Q0 + Q0.T)
    dead = not np.all(np.diag(Q0) > 1e-6)  # a student unit of norm 0 (J_k = 0), kept 1 in 5
    if (dead and draw(st.integers(0, 4)) > 0) or (not dead and draw(st.booleans())):
        Q0 += np.eye(K) * draw(st.sampled_from([1e-3, 0.1, 0.5]))
    w0 = [draw(small) for _ in range(K)]
    return Q0.tolist(), R0.tolist(), w0


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A small valid config of sgd, population anil, few-shot anil or maml."""
    kind = draw(st.sampled_from(["sgd", "anil", "anil-P", "maml"]))
    K, M = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    T = np.diag([draw(st.sampled_from([0.5, 1.0, 2.0])) for _ in range(M)])
    teacher: dict[str, Any] = {"M": M, "u0": [draw(small) for _ in range(M)],
                               "noise": draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))}
    if draw(st.booleans()):
        teacher["T"] = T.tolist()
    else:
        T = np.eye(M)
    if kind != "sgd":
        teacher["task_std"] = draw(st.sampled_from([0.0, 0.3, 1.0]))
    student: dict[str, Any] = {"K": K}
    if draw(st.booleans()):
        student["Q0"], student["R0"], student["w0"] = draw(overlaps(K, M, T))
    else:
        student.update(init_N=draw(st.integers(10, 300)),
                       init_scale=draw(st.sampled_from([0.01, 0.5, 2.0])),
                       init_seed=draw(st.integers(0, 2**63 - 1)))
    # few-shot theory (anil with support P) at lr_head = 100 and lr >= 3 can be stiff enough that
    # DOP853 creeps without diverging (a step-count guard is open work); its configs stay below
    few_shot = kind == "anil-P"
    lr = draw(st.sampled_from([0.1, 0.5, 1.0] if few_shot else [0.1, 0.5, 1.0, 3.0, 100.0]))
    training: dict[str, Any] = {
        "algorithm": "sgd" if kind == "sgd" else "maml" if kind == "maml" else "anil",
        "lr": lr, "lr_head": draw(st.sampled_from([0.0, 0.5, 1.0] if few_shot else
                                                  [0.0, 0.5, 1.0, 100.0])),
        "alpha_max": draw(st.sampled_from([1e-6, 0.05, 0.3, 1.0])),
        "query": draw(st.integers(1, 3)), "meta_batch": draw(st.integers(1, 2))}
    if kind != "sgd":
        training.update(order=draw(st.sampled_from(["first", "second"])),
                        inner_lr=draw(st.sampled_from([0.0, 0.5, 1.0])),
                        inner_steps=draw(st.integers(0, 2)))
    if kind in ("anil-P", "maml"):
        training["support"] = draw(st.integers(1, 6))
    metatest = {"inner_steps": draw(st.integers(0, 3))}
    if draw(st.booleans()):
        metatest["at"] = sorted({0.0, training["alpha_max"]})
    if draw(st.integers(0, 9)) == 0:  # a test adaptation that diverges
        metatest.update(inner_lr=100.0, inner_steps=200)
    output = {"points": draw(st.integers(2, 5)),
              "spacing": draw(st.sampled_from(["linear", "log"]))}
    simulation = {"N": draw(st.integers(K + M, 40)), "seeds": draw(st.integers(1, 2)),
                  "seed": draw(st.integers(0, 2**63 - 10)),
                  "checkpoint_every": draw(st.sampled_from([0.0, 60.0, 1e-9]))}
    # a tolerance that a small budget meets or misses (both paths), never a long budget search;
    # two streams (the fewest): a few-shot solve integrates 1 + mc_streams times
    theory = {"mc_tasks": draw(st.integers(10, 40)), "mc_max_tasks": 64, "mc_streams": 2,
              "mc_rtol": draw(st.sampled_from([0.0, 0.3])),
              "quadrature_nodes": draw(st.integers(4, 12))}
    config = {"teacher": teacher, "student": student, "training": training,
              "metatest": metatest, "output": output, "simulation": simulation, "theory": theory}
    if draw(st.booleans()):  # above every initial Q0_kk / max T_mm drawn here (< 20)
        config["solver"] = {"max_norm": draw(st.sampled_from([50.0, 1e5]))}
    return config


# -- invalid configs -------------------------------------------------------------------------------

WRONG_TYPES = {
    "int": ["three", 1.5, True, [1], {"a": 1}],
    "float": ["fast", True, [1.0], {"a": 1.0}, float("nan"), float("inf"), -float("inf"),
              10**400],
    "str": [1, 1.0, True, "bogus", ["sgd"]],
    "text": [1, 1.0, True, "", "   ", ["a"], {"a": 1}],
    "support": [0, -1, 1.5, "pop", True, 10**7, [1]],
    "vector": ["a", [["1"]], [True, 1.0], [float("nan")], 5, [[1.0]], {"a": 1}, [10**400]],
    "matrix": ["a", [1.0, 2.0], [[float("inf")]], [[1.0, 2.0], [3.0]], [[True]], 7],
    "activation": [1, True, "tanh", "ERF", ["erf"]],
    "algorithm": [1, True, "bogus", "SGD", ["sgd"]],
}


def _keys() -> list[tuple[str, str]]:
    return [(section, key) for section, keys in SCHEMA.items() for key in keys]


@st.composite
def invalid_configs(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A valid config with one fault, and the keys (or sections) an error may name for it."""
    config = draw(valid_configs())
    fault = draw(st.sampled_from(["type", "range", "unknown key", "unknown section",
                                  "not a table", "cross"]))
    if fault == "unknown key":
        section = draw(st.sampled_from(list(SCHEMA)))
        name = draw(st.sampled_from(["lr_typo", "Q", "alpha", "nn", "seeds_"]))
        config.setdefault(section, {})[name] = 1.0
        return config, {f"{section}.{name}"}
    if fault == "unknown section":
        name = draw(st.sampled_from(["trainig", "solvers", "sim", "Teacher"]))
        config[name] = {"lr": 1.0}
        return config, {name}
    if fault == "not a table":
        section = draw(st.sampled_from(list(SCHEMA)))
        config[section] = draw(st.sampled_from([1, "x", [1.0]]))
        return config, {section}
    if fault == "cross":
        return draw(_cross_fault(config))
    section, key = draw(st.sampled_from(_keys()))
    spec = SCHEMA[section][key]
    dotted = f"{section}.{key}"
    if fault == "range" and spec.kind in ("int", "float") and spec.low is not None:
        low, high = spec.low, spec.high
        if spec.kind == "int":
            value = draw(st.sampled_from([int(low) - 1, int(high) + 1, -(2**70), 2**70]))
        else:
            value = draw(st.sampled_from([low - 1, -1e300, high * 2 + 1, 1e300]
                                         + ([low] if spec.low_open else [])))
        config.setdefault(section, {})[key] = value
        return config, {dotted}
    config.setdefault(section, {})[key] = draw(st.sampled_from(WRONG_TYPES[spec.kind]))
    if spec.kind == "str" and config[section][key] in (spec.choices or ()):
        config[section][key] = "bogus"
    return config, {dotted}


@st.composite
def _cross_fault(draw: st.DrawFn, config: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Values valid one by one, inconsistent together."""
    K, M = config["student"]["K"], config["teacher"]["M"]
    case = draw(st.sampled_from(["u0 length", "Q0 shape", "R0 shape", "w0 length", "T shape",
                                 "asymmetric Q0", "not psd", "T not pd", "sgd task_std",
                                 "metatest.at", "N", "max_norm"]))
    st_, te, tr = config["student"], config["teacher"], config["training"]
    if case == "u0 length":
        te["u0"] = [1.0] * (M + 1)
        return config, {"teacher.u0"}
    if case == "T shape":
        te["T"] = np.eye(M + 1).tolist()
        return config, {"teacher.T"}
    if case == "T not pd":
        te["T"] = (np.eye(M) - 2.0 * np.ones((M, M))).tolist() if M > 1 else [[0.0]]
        return config, {"teacher.T"}
    if case == "sgd task_std":
        tr["algorithm"] = "sgd"
        for key in ("order", "inner_lr", "inner_steps", "support"):
            tr.pop(key, None)
        te["task_std"] = 0.5
        return config, {"teacher.task_std"}
    if case == "metatest.at":
        config["metatest"]["at"] = [0.0, tr["alpha_max"] * 2 + 1.0]
        return config, {"metatest.at"}
    if case == "N":
        config["simulation"]["N"] = K + M - 1  # (1 is also below the range, >= 2)
        return config, {"simulation.N"}
    # the student's explicit overlaps
    Q0, R0, w0 = np.eye(K) * 0.5, np.zeros((K, M)), [0.1] * K
    names = {"student.Q0"}
    if case == "Q0 shape":
        Q0 = np.eye(K + 1)
    elif case == "R0 shape":
        R0, names = np.zeros((K, M + 1)), {"student.R0"}
    elif case == "w0 length":
        w0, names = [0.1] * (K + 1), {"student.w0"}
    elif case == "asymmetric Q0":
        Q0 = np.eye(K) + np.triu(np.ones((K, K)), 1) * 0.3 if K > 1 else np.eye(1) * -1.0
    elif case == "not psd":
        R0 = np.full((K, M), 2.0)  # |R_km| > sqrt(Q_kk T_mm)
    else:  # max_norm below the initial norms
        Q0 = np.eye(K) * 50.0
        config["solver"] = {"max_norm": 10.0}
        names = {"solver.max_norm"}
    st_.update(Q0=Q0.tolist(), R0=R0.tolist(), w0=list(w0))
    for key in ("init_N", "init_scale", "init_seed"):
        st_.pop(key, None)
    return config, names


#: Python values that no TOML file holds, for ``Config.from_dict`` only.
python_only = st.sampled_from([None, (1.0, 2.0), 1j, object(), b"bytes", np.float64("nan"),
                               np.array([[1.0, 0.0], [0.0, 1.0]]), np.int64(3), range(3),
                               {"nested": {"deep": 1}}, [[None]], -0.0])


# -- command lines ---------------------------------------------------------------------------------

INT_VALUES = ["1", "2", "3", "0", "-1", "abc", "", "2.5", "1e3", "99999999999999999999"]
#: refused by --convergence, --maml-gap and --drift alike (a valid study is not a tiny run)
LIST_VALUES = ["", ",", "a,b", "-1", "-1,2", "-1.5", "nan", "inf", "0,1,x"]
PARAM_VALUES = ["training.lr=0.1:0.2:2", "training.lr", "training.lr=a:b:c", "bogus.key=1:2:2",
                "training.lr=0:1:3:log", "training.inner_steps=1:2:3", "student.Q0=1:2:2",
                "training.lr=-1:1:2", "=1:2:2", "training.lr=1:1:1"]
CONTOUR_VALUES = ["error=0.1", "error", "bogus=1", "error=x", "plateau_length=nan"]


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[list[str], str]:
    """(argv with placeholders {config}, {out}, {missing}, {bad}; which config file {config} is).

    Studies (--convergence, --maml-gap, --drift) get only values that are refused before any
    work, and --workers only 1 or refused values, so that every valid line is a tiny run.
    """
    command = draw(st.sampled_from(["solve", "simulate", "validate", "sweep"] * 3
                                   + ["bogus", "", "--help", "-h"]))
    argv = [command] if command else []
    which = draw(st.sampled_from(["tiny", "tiny", "bad", "missing", "none"]))
    if which != "none":
        argv.append({"tiny": "{config}", "bad": "{bad}", "missing": "{missing}"}[which])
    options = draw(st.lists(st.sampled_from([
        "--out", "--N", "--seeds", "--workers", "--quiet", "--force", "--resume", "--convergence",
        "--maml-gap", "--drift", "--repeats", "--param", "--contour", "--bogus",
        "stray"]), max_size=5))
    if draw(st.integers(0, 3)) > 0:
        options.insert(0, "--out")
    for option in options:
        argv.append(option)
        if option == "--out":
            argv.append(draw(st.sampled_from(["{out}", "{out}", "{config}"])))
        elif option in ("--N", "--seeds"):
            argv.append(draw(st.sampled_from(INT_VALUES + ["30", "7"])))
        elif option in ("--workers", "--repeats"):
            argv.append(draw(st.sampled_from(["1", "0", "-2", "x", ""])))
        elif option in ("--convergence", "--maml-gap", "--drift"):
            argv.append(draw(st.sampled_from(LIST_VALUES)))
        elif option == "--param":
            argv.append(draw(st.sampled_from(PARAM_VALUES)))
        elif option == "--contour":
            argv.append(draw(st.sampled_from(CONTOUR_VALUES)))
    return argv, which


# -- the contract ----------------------------------------------------------------------------------

KEY = re.compile(r"\b([a-z_]+)\.([A-Za-z0-9_]+):")
#: a run that failed at alpha (not a meta-test curve that diverged: its run went on)
FAILED_AT = re.compile(r"(theory|seed (\d+)): (?!the meta-test)[a-z -]*at alpha = ([0-9.eE+-]+)")


#: Documented values that contain one of assert_clean's words: the solver method of that name,
#: which a message listing the allowed methods names (not a leak from numba's internals).
DOCUMENTED_NAMES = ("numba-DOP853",)


def assert_clean(line: str) -> None:
    text = line
    for name in DOCUMENTED_NAMES:
        text = text.replace(name, "")
    for bad in ("Traceback", "internal error", "numba", "Numba", "NRT_"):
        assert bad not in text, line


#: Columns whose NaN is a documented value, not a failure: sweep.csv's plateau height and escape
#: time of a curve without a plateau (solvers.sweep, greyed out in the phase diagrams).
UNDEFINED_ALLOWED = {"sweep.csv": ("plateau_height", "escape_time")}


def finite_csvs(out: Path) -> None:
    """Every number in every CSV in ``out`` is finite (the seed column included)."""
    for path in out.glob("*.csv"):
        with open(path, newline="") as fh:
            header, *rows = list(csv.reader(fh))
        allowed = UNDEFINED_ALLOWED.get(path.name, ())
        for row in rows:
            for name, cell in zip(header, row, strict=True):
                try:
                    value = float(cell)
                except ValueError:
                    continue  # a sweep's status / message text
                assert math.isfinite(value) or (name in allowed and math.isnan(value)), (
                    f"{path.name}: {name} in {row}")


def check_outcome(status: int, err: str, out: Path, names: set[str] | None = None) -> str:
    """The contract of the module docstring; ``names``: keys of which the line must name one."""
    assert status in (0, 1, 2), (status, err)
    if status == 0:
        finite_csvs(out) if out.is_dir() else None
        return ""
    line = one_line(err)
    assert_clean(line)
    assert line.startswith("metaode"), line
    if status == 2:
        if names is not None:
            assert any(f"{n}:" in line for n in names), (names, line)
        else:
            assert ("argument" in line or "COMMAND" in line or KEY.search(line)
                    or "config:" in line), line
    else:
        assert "alpha = " in line, line
        if out.is_dir():
            finite_csvs(out)
    return line


# -- the properties --------------------------------------------------------------------------------

def fuzz_settings(n: int) -> settings:
    """n examples, no deadline (a first call may compile numba kernels), derandomized."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


#: the command of a valid config: validate (a figure, ~0.5 s) 1 time in 40
RUN_COMMANDS = st.sampled_from(["solve"] * 20 + ["simulate"] * 19 + ["validate"])
#: the command of an invalid config (refused before anything runs)
CONFIG_COMMANDS = st.sampled_from(["solve", "simulate", "validate", "sweep"])
#: examples per property in the suite (tests/fuzz_slow.py multiplies them)
EXAMPLES = {"config_dicts": 700, "python_values": 300, "config_files": 500, "command_lines": 400,
            "valid_runs": 250}


def prop_config_dicts(data: tuple[dict[str, Any], set[str]]) -> None:
    """An invalid config dict raises ConfigError naming one of the expected keys, nothing else."""
    config, names = data
    with pytest.raises(ConfigError) as err:
        Config.from_dict(config)
    assert err.value.key in names, (err.value, names)
    assert str(err.value).startswith(f"{err.value.key}: ") and "\n" not in str(err.value)


def prop_python_values(config: dict[str, Any], where: tuple[str, str], value: Any) -> None:
    """Any Python value at any key: a valid config or a ConfigError naming that key."""
    section, key = where
    config.setdefault(section, {})[key] = value
    try:
        Config.from_dict(config)
    except ConfigError as err:
        assert err.key in (f"{section}.{key}", "student.Q0", "teacher.u0", "teacher.T",
                           "student.R0", "student.w0", "metatest.at", "simulation.N",
                           "solver.max_norm", "teacher.task_std"), err
        assert "\n" not in str(err)


def pytest_runner(capsys: pytest.CaptureFixture) -> Runner:
    """``main(argv)`` -> (exit status, stderr), captured by pytest's capsys."""

    def run(argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        status = main(argv)
        return status, capsys.readouterr().err

    return run


def prop_config_files(data: tuple[dict[str, Any], set[str]], command: str, run: Runner) -> None:
    """An invalid config file: exit 2, one line naming the key, nothing written."""
    config, names = data
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "config.toml", Path(tmp) / "out"
        path.write_text(to_toml(config))
        argv = [command, str(path), "--out", str(out), "--quiet"]
        if command == "sweep":
            argv += ["--param", "training.lr=0.1:0.2:2"]
        status, err = run(argv)
        assert status == 2, (status, err)
        check_outcome(status, err, out, names)
        assert not out.exists()


TINY = {"teacher": {"M": 2}, "student": {"K": 2, "Q0": [[0.3, 0.0], [0.0, 0.3]],
                                          "R0": [[0.1, 0.0], [0.0, 0.1]], "w0": [0.1, 0.1]},
        "training": {"algorithm": "sgd", "alpha_max": 0.5, "lr": 1.0},
        "output": {"points": 3}, "simulation": {"N": 20, "seeds": 2},
        "metatest": {"inner_steps": 2}}


def prop_command_lines(line: tuple[list[str], str], run: Runner) -> None:
    """A generated command line: the contract, and exit 2 names an argument or a key."""
    argv, which = line
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tiny.toml").write_text(to_toml(TINY))
        (tmp / "bad.toml").write_text("[training]\nlr = [1.0\n")
        fill = {"config": str(tmp / "tiny.toml"), "bad": str(tmp / "bad.toml"),
                "missing": str(tmp / "missing.toml"), "out": str(tmp / "out")}
        argv = [a.format(**fill) for a in argv]
        if "--workers" not in argv and argv[:1] != ["sweep"]:
            argv += ["--workers", "1"]  # no process pool per example (its start costs ~1 s)
        if argv[:1] == ["validate"]:  # the built-in experiment (no CONFIG) at a small N
            argv[1:1] = ["--N", "30"]  # (a later --N in the line wins)
        status, err = run(argv)
        if status == 0 and any(a in ("--help", "-h") for a in argv):
            return
        check_outcome(status, err, tmp / "out")


def prop_valid_runs(config: dict[str, Any], command: str, run: Runner) -> None:
    """A valid config runs: exit 0 with finite CSVs and a run record, or exit 1 saying at which
    alpha it diverged (records before that alpha kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "config.toml", Path(tmp) / "out"
        path.write_text(to_toml(config))
        argv = [command, str(path), "--out", str(out), "--quiet"]
        if command != "solve":
            argv += ["--workers", "1"]
        status, err = run(argv)
        assert status in (0, 1), err  # a valid config is never refused
        check_outcome(status, err, out)
        record = json.loads((out / "run.json").read_text())
        assert record["status"] == ("success" if status == 0 else "failed")
        given = json.loads(json.dumps(config["training"]))
        assert {k: record["config"]["training"][k] for k in given} == given
        assert {"numpy", "scipy", "numba", "sympy", "python", "metaode"} <= set(record["versions"])
        # each run that failed ("theory: ... alpha = A", "seed S: ... alpha = A") kept only the
        # records before A
        for who, seed, stop in FAILED_AT.findall(err):
            name = "theory.csv" if who == "theory" else "simulation.csv"
            rows = (out / name).read_text().strip().split("\n")[1:]
            if not rows:  # it failed at its first record
                continue
            body = np.array([[float(c) for c in row.split(",")] for row in rows])
            if who != "theory":
                body = body[body[:, 0] == int(seed)][:, 1:]
            assert np.all(body[:, :1] <= float(stop) * (1 + 1e-6)), (who, stop)


@fuzz_settings(EXAMPLES["config_dicts"])
@given(invalid_configs())
def test_config_dicts(data):
    prop_config_dicts(data)


@fuzz_settings(EXAMPLES["python_values"])
@given(valid_configs(), st.sampled_from(_keys()), python_only)
def test_python_values(config, where, value):
    prop_python_values(config, where, value)


@fuzz_settings(EXAMPLES["config_files"])
@given(invalid_configs(), CONFIG_COMMANDS)
def test_config_files(capsys, data, command):
    prop_config_files(data, command, pytest_runner(capsys))


@fuzz_settings(EXAMPLES["command_lines"])
@given(command_lines())
def test_command_lines(capsys, line):
    prop_command_lines(line, pytest_runner(capsys))


@fuzz_settings(EXAMPLES["valid_runs"])
@given(valid_configs(), RUN_COMMANDS)
def test_valid_runs(capsys, config, command):
    prop_valid_runs(config, command, pytest_runner(capsys))
