"""The experiment config: one TOML file drives theory, simulation and validation.

The schema below is the single source of truth for every key, its type, its default, its allowed
range and its documentation (the README's table is generated from it by ``Config.describe``).
An unknown key, a wrong type, a value out of range or an inconsistent shape raises
``ConfigError`` whose message starts with the dotted key (``training.lr: ...``).
``load_config`` reads an experiment file, or the built-in experiment (validation/default.toml).

Notation is that of docs/model.md §1: teacher (B, u0) with M hidden units and T = B B^T / N,
student (J, w) with K hidden units, order parameters Q = J J^T / N, R = J B^T / N.
"""

from __future__ import annotations

import copy
import functools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from metaode import algorithms
from metaode.theory import activations as registered

ORDERS = ("first", "second")
SPACINGS = ("linear", "log")
METHODS = ("numba-DOP853", "DOP853", "RK45", "Radau", "BDF", "LSODA")
#: The quantities a [reference] table can state (defined and measured by
#: ``metaode.validation.reference``).
REFERENCE_QUANTITIES = ("error", "escape")
#: Relative tolerance of positive semi-definiteness: a symmetric matrix whose smallest eigenvalue
#: is >= -PSD_TOLERANCE max(1, max |entry|) counts as a covariance (rounding of overlaps that are
#: exactly singular, e.g. a student unit equal to a teacher unit). Used by the config and by the
#: state check of theory and simulation (``theory.system``).
PSD_TOLERANCE = 1e-10


class ConfigError(ValueError):
    """A bad config value; ``str(err)`` is one line that starts with the dotted key."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def __reduce__(self):
        """Pickled with both arguments (a worker process raises it to its parent)."""
        return type(self), (self.key, self.message)


class TheoryUnavailable(ConfigError):
    """A valid config whose theory is not implemented (e.g. the few-shot theory of an activation
    without four-point moments): the theory refuses it, and so does the simulation of an algorithm
    whose runs record the theory's observables of their overlaps."""


@dataclass(frozen=True)
class Key:
    """One config key: its kind, default and the check of its value."""

    # "int", "float", "str" (one of choices), "text" (free text), "vector", "matrix", "support",
    # "algorithm", "activation"
    kind: str
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None


SCHEMA: dict[str, dict[str, Key]] = {
    "teacher": {
        "M": Key("int", 2, "hidden units of the meta-teacher", 1, 64),
        "u0": Key("vector", None, "mean task head, length M (default: all ones)"),
        "task_std": Key("float", 0.0, "std of each task head around u0; 0 = a single task", 0, 100),
        "noise": Key("float", 0.0, "std of the label noise", 0, 100),
        "T": Key("matrix", None, "teacher overlaps B B^T / N, M x M (default: identity)"),
        "activation": Key("activation", "erf", "activation g of the teacher's hidden units "
                          "(a registered name: erf, linear or relu)"),
    },
    "student": {
        "K": Key("int", 2, "hidden units of the student", 1, 64),
        "Q0": Key("matrix", None, "initial Q, K x K (default: drawn, see init_*)"),
        "R0": Key("matrix", None, "initial R, K x M (default: drawn, see init_*)"),
        "w0": Key("vector", None, "initial head, length K (default: drawn, see init_*)"),
        "init_scale": Key("float", 0.5, "std of the entries of a drawn J", 0, 100, low_open=True),
        "init_head_scale": Key("float", 0.1, "std of the entries of a drawn w", 0, 100),
        "init_N": Key(
            "int", 10000, "width of the random network whose overlaps are drawn", 10, 1e7
        ),
        "init_seed": Key("int", 0, "seed of the drawn initial overlaps", 0, 2**63 - 1),
        "activation": Key("activation", "erf", "activation g of the student's hidden units "
                          "(a registered name: erf, linear or relu)"),
    },
    "training": {
        "algorithm": Key("algorithm", "sgd", "a registered algorithm: sgd | anil | maml"),
        "order": Key(
            "str", "second", "first | second (MAML order of the outer gradient)", choices=ORDERS
        ),
        "inner_lr": Key("float", 0.5, "inner-loop (adaptation) learning rate", 0, 100),
        "inner_steps": Key("int", 1, "inner-loop steps s", 0, 1000),
        "support": Key("support", "population", '"population" or a number P >= 1 of examples'),
        "lr": Key("float", 0.5, "first-layer learning rate", 0, 100),
        "lr_head": Key("float", 0.5, "head learning rate; 0 keeps the head fixed", 0, 100),
        "query": Key("int", 1, "query examples per task", 1, 100000),
        "meta_batch": Key("int", 1, "tasks per outer step", 1, 100000),
        "alpha_max": Key(
            "float", 100.0, "horizon in meta-time alpha = outer steps / N", 0, 1e9, low_open=True
        ),
    },
    "metatest": {
        "inner_steps": Key("int", 10, "adaptation steps S of the meta-test curve (0..S)", 0, 10000),
        "inner_lr": Key("float", None, "test inner learning rate (default: training.inner_lr)", 0,
                        100),
        "support": Key("support", "population", 'test support: "population" or P examples'),
        "at": Key("vector", None, "meta-times of the meta-test curves (default: [alpha_max])"),
    },
    "output": {
        "points": Key("int", 201, "number of recorded times, alpha = 0 included", 2, 1000000),
        "spacing": Key(
            "str", "linear", "linear | log (0, then log-spaced from log_start)", choices=SPACINGS
        ),
        "log_start": Key("float", 0.01, "first nonzero time of a log grid", 0, 1e9, low_open=True),
    },
    "solver": {
        "method": Key("str", "numba-DOP853", "integrator: numba-DOP853 (DOP853 compiled with the "
                      "right-hand side and the records) or a scipy.integrate.solve_ivp method",
                      choices=METHODS),
        "rtol": Key("float", 1e-8, "relative tolerance of the ODE integrator", 1e-14, 1e-1),
        "atol": Key("float", 1e-10, "absolute tolerance of the ODE integrator", 1e-16, 1e-1),
        "max_norm": Key("float", 1e5, "runaway bound: theory and simulation stop (diverged) "
                        "once a student unit's squared norm Q_kk exceeds max_norm max_m T_mm",
                        0, 1e8, low_open=True),
    },
    "theory": {
        "mc_tasks": Key("int", 2000, "starting budget: support sets per evaluation of the "
                        "few-shot terms without closed form (rounded up to streams x group x 2^m)",
                        10, 10**8),
        "mc_max_tasks": Key("int", 262144, "largest budget the mc_rtol control may reach", 10,
                            10**8),
        "mc_rtol": Key("float", 0.01, "trajectory tolerance: largest mc_err_<column> / the "
                       "column's largest |value| (0: keep mc_tasks)", 0, 1),
        "mc_streams": Key("int", 8, "independent Monte Carlo streams (their spread is the "
                          "trajectory's uncertainty)", 2, 1024),
        "mc_seed": Key("int", 0, "seed of the scrambled Sobol streams of that Monte Carlo", 0,
                       2**63 - 1),
        "quadrature_nodes": Key("int", 32, "Gauss-Legendre nodes of the four-point moments", 4,
                                1000),
    },
    "simulation": {
        "N": Key("int", 10000, "input dimension of the simulated networks", 2, 1e8),
        "seeds": Key("int", 3, "independent runs (seeds 0 .. seeds-1 offset by seed)", 1, 10000),
        "seed": Key("int", 0, "first seed", 0, 2**63 - 1),
        "checkpoint_every": Key("float", 60.0, "seconds between checkpoints of a simulation in "
                                "its output folder (for --resume); 0 = none", 0, 1e9),
    },
    # Optional: a config without [reference] has none; one that has it names every key but at
    # (``_check_reference``).
    "reference": {
        "quantity": Key("str", None, "optional [reference] table, checked by `metaode validate`: "
                        "the quantity, error (eps at reference.at) | escape (the first alpha "
                        "at which the specialisation index reaches 1/2); definitions in "
                        "metaode.validation.reference", choices=REFERENCE_QUANTITIES),
        "at": Key("float", None, "meta-time alpha of the quantity error, recorded as well "
                  "(default: alpha_max)", 0, 1e9),
        "value": Key("float", None, "the stated number: published, or measured by simulation at "
                     "a stated N and seeds (never by the theory under test)"),
        "tolerance": Key("float", None, "absolute tolerance of value (the simulation's standard "
                         "error plus its finite-N bias, or the precision of the published "
                         "number): the theory agrees if |theory - value| <= tolerance (+ 3 Monte "
                         "Carlo standard errors of a few-shot or maml theory)", 0, 1e9,
                         low_open=True),
        "source": Key("text", None, "free text: the citation (with figure or equation), or the "
                      "simulation (N, seeds, command) that measured value"),
    },
}


def _fail(key: str, message: str) -> None:
    raise ConfigError(key, message)


def _show(value: Any) -> str:
    """``repr(value)`` on one line, at most 60 characters (for error messages)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else f"{text[:57]}..."


def _check_number(key: str, spec: Key, value: Any) -> float | int:
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            else:
                _fail(key, f"expected an integer, got {_show(value)}")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            _fail(key, f"expected a number, got {_show(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the range of a float
            _fail(key, f"expected a finite number, got {_show(value)}")
        if not math.isfinite(value):
            _fail(key, f"expected a finite number, got {_show(value)}")
    lo, hi = spec.low, spec.high
    if lo is not None and (value < lo or (spec.low_open and value == lo)):
        _fail(
            key,
            f"must be {'>' if spec.low_open else '>='} {lo:g} (allowed range "
            f"{'(' if spec.low_open else '['}{lo:g}, {hi:g}]), got {_show(value)}",
        )
    if hi is not None and value > hi:
        _fail(key, f"must be <= {hi:g} (allowed range [{lo:g}, {hi:g}]), got {_show(value)}")
    return value


def _check_array(key: str, value: Any, ndim: int) -> np.ndarray:
    if _has_non_number(value):
        _fail(key, f"expected a {'list' if ndim == 1 else 'list of lists'} of numbers")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        _fail(key, f"expected a {'list' if ndim == 1 else 'list of lists'} of numbers")
    if arr.ndim != ndim:
        _fail(
            key,
            f"expected a {'list' if ndim == 1 else 'list of lists'} of numbers, "
            f"got an array of shape {arr.shape}",
        )
    if not np.all(np.isfinite(arr)):
        _fail(key, "entries must be finite numbers")
    return arr


def _has_non_number(value: Any) -> bool:
    """Whether a (nested) list holds a bool or a string, which numpy would silently convert."""
    if isinstance(value, list | tuple):
        return any(_has_non_number(v) for v in value)
    return isinstance(value, bool | np.bool_ | str | bytes)


def _check_value(key: str, spec: Key, value: Any) -> Any:
    if spec.kind in ("int", "float"):
        return _check_number(key, spec, value)
    if spec.kind == "str":
        if not isinstance(value, str) or value not in spec.choices:
            _fail(key, f"must be one of {', '.join(map(repr, spec.choices))}, got {_show(value)}")
        return value
    if spec.kind == "text":
        if not isinstance(value, str) or not value.strip():
            _fail(key, f"expected a non-empty string, got {_show(value)}")
        return value
    if spec.kind == "algorithm":
        if not isinstance(value, str) or value not in algorithms.names():
            _fail(key, f"must be one of {', '.join(map(repr, algorithms.names()))}, "
                       f"got {_show(value)}")
        return value
    if spec.kind == "activation":
        if not isinstance(value, str) or value not in registered.names():
            _fail(key, f"must be a registered activation "
                       f"({', '.join(map(repr, registered.names()))}), got {_show(value)}")
        return value
    if spec.kind == "support":
        if isinstance(value, str) and value == "population":
            return value
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            _fail(key, f'must be "population" or an integer >= 1, got {_show(value)}')
        if not 1 <= value <= 10**6:
            _fail(key, f"must be in [1, 1000000] support examples, got {_show(value)}")
        return int(value)
    if spec.kind == "vector":
        return _check_array(key, value, 1)
    if spec.kind == "matrix":
        return _check_array(key, value, 2)
    raise AssertionError(spec.kind)


@dataclass(frozen=True, eq=False)
class Section:
    """Values of one TOML table, as attributes."""

    _values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # e.g. while unpickling, before _values exists
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True, eq=False)
class Config:
    """A validated experiment. Sections are attribute bags: ``config.training.lr``.

    ``Q0, R0, w0`` are always filled (explicit or drawn), ``T`` and ``u0`` always filled.
    ``raw`` is the user's input with defaults applied, as plain Python (for records and sweeps);
    the optional ``reference`` table is in it only if given (its keys are None otherwise).
    """

    teacher: Section
    student: Section
    training: Section
    metatest: Section
    output: Section
    solver: Section
    theory: Section
    simulation: Section
    reference: Section
    raw: Mapping[str, Mapping[str, Any]]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Validate a nested mapping (as read from TOML) and fill defaults."""
        if not isinstance(data, Mapping):
            _fail("config", "expected a table of tables")
        for section in data:
            if section not in SCHEMA:
                _fail(section, f"unknown section (allowed: {', '.join(SCHEMA)})")
            if not isinstance(data[section], Mapping):
                _fail(section, "expected a table")
        values: dict[str, dict[str, Any]] = {}
        for section, keys in SCHEMA.items():
            given = data.get(section, {})
            for key in given:
                if key not in keys:
                    _fail(f"{section}.{key}", f"unknown key (allowed: {', '.join(keys)})")
            values[section] = {
                key: (
                    _check_value(f"{section}.{key}", spec, given[key])
                    if key in given
                    else copy.deepcopy(spec.default)
                )
                for key, spec in keys.items()
            }
        # raw keeps derived defaults (None) unresolved, so that replace() derives them anew; an
        # optional table that is not given ([reference]) is not in it
        raw = {
            s: {k: _plain(v) for k, v in vals.items() if v is not None}
            for s, vals in values.items()
        }
        if not raw["reference"]:
            del raw["reference"]
        _check_consistency(values)
        _fill_initial_conditions(values)
        return cls(**{s: Section(v) for s, v in values.items()}, raw=raw)

    @classmethod
    def from_toml(cls, path: str | Path) -> Config:
        """Read and validate a TOML file."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            _fail("config", f"no such file: {path}")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            _fail("config", f"{path} is not valid TOML ({err})")
        except OSError as err:
            _fail("config", f"cannot read {path} ({err.strerror or err})")
        return cls.from_dict(data)

    @classmethod
    def default(cls) -> Config:
        """All defaults."""
        return cls.from_dict({})

    def replace(self, key: str | Mapping[str, Any], value: Any = None) -> Config:
        """A new config with the dotted ``key`` (e.g. ``"training.inner_lr"``) set to ``value``,
        or with every ``{key: value}`` of a mapping set at once (validated together, so that
        coupled keys such as training.alpha_max and metatest.at can change in one step)."""
        updates = dict(key) if isinstance(key, Mapping) else {key: value}
        data = copy.deepcopy({s: dict(v) for s, v in self.raw.items()})
        for dotted, new in updates.items():
            section, _, name = dotted.partition(".")
            if section not in SCHEMA or name not in SCHEMA[section]:
                _fail(dotted, "unknown key (use a dotted path such as training.lr)")
            data[section][name] = new
        return Config.from_dict(data)

    # -- derived quantities ----------------------------------------------------------------------
    @property
    def K(self) -> int:
        return self.student.K

    @property
    def M(self) -> int:
        return self.teacher.M

    @property
    def activations(self) -> registered.Activations:
        """The (student, teacher) activation markers that compiled kernels receive."""
        return registered.activations(self.student.activation, self.teacher.activation)

    def times(self) -> np.ndarray:
        """The recorded meta-times: the output grid (0 and alpha_max included), metatest.at and
        reference.at."""
        a_max, n = self.training.alpha_max, self.output.points
        if self.output.spacing == "linear":
            grid = np.linspace(0.0, a_max, n)
        else:
            start = min(self.output.log_start, a_max)
            grid = np.concatenate([[0.0], np.geomspace(start, a_max, n - 1)])
        extra = [*np.asarray(self.metatest.at, dtype=float)]
        if self.reference.at is not None:
            extra.append(self.reference.at)
        return np.union1d(grid, extra)

    @staticmethod
    def describe() -> str:
        """A Markdown table of every key, its default and meaning (used by the README)."""
        rows = ["| key | default | meaning |", "| --- | --- | --- |"]
        for section, keys in SCHEMA.items():
            for key, spec in keys.items():
                default = "(see meaning)" if spec.default is None else repr(spec.default)
                doc = spec.doc.replace("|", "\\|")  # a literal | inside a Markdown table cell
                rows.append(f"| `{section}.{key}` | `{default}` | {doc} |")
        return "\n".join(rows)


def load_config(path: str | Path | None = None) -> Config:
    """The config at ``path``, or (None) the built-in experiment, validation/default.toml of the
    package ``metaode.validation``."""
    if path is None:
        with resources.as_file(resources.files("metaode.validation") / "default.toml") as default:
            return Config.from_toml(default)
    return Config.from_toml(path)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _check_consistency(v: dict[str, dict[str, Any]]) -> None:
    """Cross-key checks: shapes, symmetry, positive semi-definiteness, algorithm constraints."""
    t, s, tr = v["teacher"], v["student"], v["training"]
    M, K = t["M"], s["K"]
    if t["u0"] is None:
        t["u0"] = np.ones(M)
    elif t["u0"].shape != (M,):
        _fail("teacher.u0", f"must have length M = {M}, got {t['u0'].shape[0]}")
    if t["T"] is None:
        t["T"] = np.eye(M)
    else:
        _check_symmetric("teacher.T", t["T"], (M, M))
        if np.linalg.eigvalsh(t["T"]).min() <= 0:
            _fail("teacher.T", "must be positive definite")
    if s["Q0"] is not None:
        _check_symmetric("student.Q0", s["Q0"], (K, K))
    if s["R0"] is not None and s["R0"].shape != (K, M):
        _fail("student.R0", f"must be K x M = {K} x {M}, got {s['R0'].shape}")
    if s["w0"] is not None and s["w0"].shape != (K,):
        _fail("student.w0", f"must have length K = {K}, got {s['w0'].shape[0]}")
    mt = v["metatest"]
    if mt["inner_lr"] is None:
        mt["inner_lr"] = tr["inner_lr"]
    if mt["at"] is None:
        mt["at"] = np.array([tr["alpha_max"]])
    elif mt["at"].size == 0:
        _fail("metatest.at", "must name at least one meta-time (default: [alpha_max])")
    elif mt["at"].min() < 0 or mt["at"].max() > tr["alpha_max"]:
        _fail("metatest.at", f"meta-times must lie in [0, alpha_max = {tr['alpha_max']:g}]")
    if not registered.has_pair(s["activation"], t["activation"]):
        _fail("student.activation", f"no Gaussian integrals are registered for a "
                                    f"{s['activation']!r} student of a {t['activation']!r} teacher")
    violation = algorithms.algorithm(tr["algorithm"]).check(v)
    if violation is not None:
        _fail(*violation)
    th = v["theory"]
    if th["mc_max_tasks"] < th["mc_tasks"]:
        _fail("theory.mc_max_tasks", f"must be >= theory.mc_tasks = {th['mc_tasks']}, "
                                     f"got {th['mc_max_tasks']}")
    _check_reference(v)
    if v["simulation"]["N"] < K + M:
        # the K + M rows of J and B must be independent vectors of R^N
        _fail("simulation.N", f"must be at least K + M = {K + M}, got {v['simulation']['N']}")


def _check_reference(v: dict[str, dict[str, Any]]) -> None:
    """A [reference] table names quantity, value, tolerance and source (or is not given), at only
    for the quantity error and within the horizon (default: alpha_max), and a quantity the
    student has (a linear student has no specialisation index, hence no escape)."""
    ref, horizon = v["reference"], v["training"]["alpha_max"]
    given = [key for key, value in ref.items() if value is not None]
    if not given:
        return
    needed = [key for key in SCHEMA["reference"] if key != "at"]
    for key in needed:
        if ref[key] is None:
            _fail(f"reference.{key}", f"required in a [reference] table (which needs "
                                      f"{', '.join(needed)}; given: {', '.join(given)})")
    student = v["student"]["activation"]
    if ref["quantity"] == "escape":
        if ref["at"] is not None:
            _fail("reference.at", "only the quantity error is measured at a given alpha")
        if not registered.activation(student).identifiable:
            _fail("reference.quantity", f"'escape' needs the specialisation index, which a "
                                        f"{student!r} student does not have (its units are not "
                                        "identifiable); use error")
    elif ref["at"] is None:
        ref["at"] = horizon
    elif ref["at"] > horizon:
        _fail("reference.at", f"must lie in [0, alpha_max = {horizon:g}], got {ref['at']:g}")


def _check_symmetric(key: str, arr: np.ndarray, shape: tuple[int, int]) -> None:
    if arr.shape != shape:
        _fail(key, f"must be {shape[0]} x {shape[1]}, got {arr.shape}")
    if not np.allclose(arr, arr.T, rtol=0, atol=1e-12 * max(1.0, np.abs(arr).max())):
        _fail(key, "must be symmetric")


def draw_initial_overlaps(
    K: int, M: int, T: np.ndarray, scale: float, head_scale: float, N: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlaps (Q0, R0, w0) of one random student of width N against a teacher with B B^T/N = T.

    J_ki ~ N(0, scale^2), w_k ~ N(0, head_scale^2); B is a random M x N matrix whose overlap is
    exactly T. Hence Q0 = scale^2 I + O(N^-1/2) and R0 = O(scale N^-1/2): the small asymmetry
    from which a student escapes the symmetric plateau.

    A pure function of its arguments, remembered for the last DRAWS_KEPT of them (copies are
    returned): the points of a sweep, which share them, draw once (a draw at the default
    init_N = 10^4 costs ~2 ms, more than a small ODE solve).
    """
    T = np.ascontiguousarray(T, dtype=float)
    drawn = _draw(K, M, T.shape, T.tobytes(), float(scale), float(head_scale), N, seed)
    return tuple(a.copy() for a in drawn)


#: How many argument sets ``draw_initial_overlaps`` remembers.
DRAWS_KEPT = 16


@functools.lru_cache(maxsize=DRAWS_KEPT)
def _draw(K: int, M: int, shape: tuple[int, ...], T_bytes: bytes, scale: float,
          head_scale: float, N: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T = np.frombuffer(T_bytes, dtype=float).reshape(shape)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, M))
    Qx, _ = np.linalg.qr(X)  # orthonormal columns
    B = np.linalg.cholesky(T) @ Qx.T * math.sqrt(N)
    J = scale * rng.standard_normal((K, N))
    w = head_scale * rng.standard_normal(K)
    return J @ J.T / N, J @ B.T / N, w


def _fill_initial_conditions(v: dict[str, dict[str, Any]]) -> None:
    t, s = v["teacher"], v["student"]
    if s["Q0"] is None or s["R0"] is None or s["w0"] is None:
        Q0, R0, w0 = draw_initial_overlaps(
            s["K"],
            t["M"],
            t["T"],
            s["init_scale"],
            s["init_head_scale"],
            s["init_N"],
            s["init_seed"],
        )
        for name, drawn in (("Q0", Q0), ("R0", R0), ("w0", w0)):
            if s[name] is None:
                s[name] = drawn
    omega = np.block([[s["Q0"], s["R0"]], [s["R0"].T, t["T"]]])
    lowest = np.linalg.eigvalsh(omega).min()
    if lowest < -PSD_TOLERANCE * max(1.0, np.abs(omega).max()):
        _fail(
            "student.Q0",
            f"[[Q0, R0], [R0^T, T]] must be positive semi-definite "
            f"(smallest eigenvalue {lowest:.3g})",
        )
    norm = float(np.max(np.diag(s["Q0"]))) / float(np.max(np.diag(t["T"])))
    if norm > v["solver"]["max_norm"]:
        _fail(
            "solver.max_norm",
            f"the initial state is already a runaway: max_k Q0_kk / max_m T_mm = {norm:.6g} > "
            f"max_norm = {v['solver']['max_norm']:g}",
        )


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The dotted path of the first difference between two nested JSON values (None if equal)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b)):
            where = f"{path}.{k}" if path else k
            if k not in a or k not in b:
                return where
            diff = first_difference(a[k], b[k], where)
            if diff is not None:
                return diff
        return None
    return None if a == b else (path or "value")
