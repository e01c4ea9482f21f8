"""An activation registered from this file alone: the identity g(z) = z (a linear network),
whose Gaussian integrals are moments, runs sgd and population anil in the theory and sgd in the
simulation, with no edit outside this file.

For g(z) = z: I2 = c12, I3 = E[z2 z3] = c23, I4 = E[z3 z4] = c34, J2 = 1, g' = 1, g'' = 0.
The sgd theory of a linear student of a linear teacher is then checked against a simulation at
N = 2000 (3 seeds), and the population anil theory against its closed form at alpha = 0: the
meta-loss 1/2 tr(S Z^T C Z) - tr(S Z^T D U) + 1/2 tr(S U^T E U) with C = Q, D = R, E = T.

The checks run in a child process (``python tests/test_activation_registry.py CHECK``) with its own
numba cache folder: numba's on-disk index of a kernel lists every type it was compiled for, and a
marker class that only this file defines must not enter the index that other processes load
(they could not unpickle it). An activation meant for use belongs in an importable module.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba.extending import overload

from metaode.config import Config, TheoryUnavailable
from metaode.simulations.run import simulate
from metaode.solvers.integrate import solve
from metaode.theory import activations as act
from metaode.theory.system import build_system


class LinearForTests(NamedTuple):
    """The marker of g(z) = z, known only to this test."""


def _mine(*types_) -> bool:
    return all(act.is_marker(t, LinearForTests) for t in types_)


@overload(act.g)
def _g(a, z):
    if _mine(a):
        return lambda a, z: z


@overload(act.g_prime)
def _g_prime(a, z):
    if _mine(a):
        return lambda a, z: 1.0


@overload(act.g_second)
def _g_second(a, z):
    if _mine(a):
        return lambda a, z: 0.0


@overload(act.I2)
def _I2(f, h, c11, c22, c12):
    if _mine(f, h):
        return lambda f, h, c11, c22, c12: c12


@overload(act.dI2_dc11)
def _dI2_dc11(f, h, c11, c22, c12):
    if _mine(f, h):
        return lambda f, h, c11, c22, c12: 0.0


@overload(act.dI2_dc22)
def _dI2_dc22(f, h, c11, c22, c12):
    if _mine(f, h):
        return lambda f, h, c11, c22, c12: 0.0


@overload(act.dI2_dc12)
def _dI2_dc12(f, h, c11, c22, c12):
    if _mine(f, h):
        return lambda f, h, c11, c22, c12: 1.0


@overload(act.J2)
def _J2(s, c11, c22, c12):
    if _mine(s):
        return lambda s, c11, c22, c12: 1.0


@overload(act.I4)
def _I4(s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34):
    if _mine(s, f, h):
        return lambda s, f, h, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34: c34


act.register(act.Activation("test_linear", LinearForTests(), "g(z) = z (test only)",
                           four_point=False))

LINEAR = {"teacher": {"M": 2, "activation": "test_linear"},
          "student": {"K": 2, "activation": "test_linear", "Q0": [[0.3, 0.05], [0.05, 0.2]],
                      "R0": [[0.1, 0.0], [0.0, 0.05]], "w0": [0.2, 0.1]},
          "training": {"algorithm": "sgd", "lr": 0.3, "lr_head": 0.3, "alpha_max": 3.0},
          "output": {"points": 7}, "simulation": {"N": 2000, "seeds": 3}}


def check_config_choice() -> None:
    config = Config.from_dict(LINEAR)
    assert config.activations == act.Activations(LinearForTests(), LinearForTests())
    assert "test_linear" in act.names()


def check_sgd_against_simulation() -> None:
    """Linear sgd: theory (ODE) vs simulation at N = 2000; the error's seed mean within 4
    standard errors plus the O(1/N) finite-size bias (a few 1e-4 here) of the theory."""
    config = Config.from_dict(LINEAR)
    theory = solve(build_system(config))
    sims = simulate(config, progress=False, workers=1)  # in this process: it knows the activation
    errors = np.array([s.column("error") for s in sims])
    mean, se = errors.mean(axis=0), errors.std(axis=0, ddof=1) / np.sqrt(len(sims))
    assert np.all(np.abs(mean - theory.column("error")) <= 4 * se + 2e-3), (mean, theory.column(
        "error"), se)
    assert theory.column("error")[-1] < 0.9 * theory.column("error")[0]  # it learns


def check_anil_closed_form() -> None:
    """anil, 2 inner steps: the theory's error at alpha = 0 is the linear meta-loss computed
    here with numpy (C = Q, D = R, E = T), and the theory integrates without trouble."""
    raw = {**LINEAR, "teacher": {**LINEAR["teacher"], "task_std": 0.5},
           "training": {"algorithm": "anil", "inner_steps": 2, "inner_lr": 0.4, "lr": 0.3,
                        "lr_head": 0.3, "alpha_max": 3.0}}
    config = Config.from_dict(raw)
    theory = solve(build_system(config))
    Q, R, T = (np.array(config.student.Q0), np.array(config.student.R0),
               np.array(config.teacher.T))
    w, u0, eta = np.array(config.student.w0), np.array(config.teacher.u0), 0.4
    U = np.hstack([u0[:, None], np.eye(2)])
    S = np.array([1.0, 0.25, 0.25])
    Z = np.hstack([w[:, None], np.zeros((2, 2))])
    for _ in range(2):
        Z = Z - eta * (Q @ Z - R @ U)
    loss = 0.5 * np.sum(S * np.einsum("ki,kl,li->i", Z, Q, Z)) - np.sum(
        S * np.einsum("ki,km,mi->i", Z, R, U)) + 0.5 * np.sum(S * np.einsum("mi,mn,ni->i", U, T, U))
    assert abs(theory.column("error")[0] - loss) <= 1e-12
    assert theory.status == 0 and theory.column("error")[-1] < theory.column("error")[0]


def check_fewshot_refused() -> None:
    """This activation implements no four-point moments (``four_point=False``): the few-shot
    theory refuses it, and so does its simulation, in this process (TheoryUnavailable, a
    ConfigError naming the key)."""
    raw = {**LINEAR, "training": {"algorithm": "anil", "support": 5, "inner_lr": 0.3,
                                  "lr": 0.3, "lr_head": 0.3, "alpha_max": 1.0}}
    config = Config.from_dict(raw)
    for attempt in (lambda: build_system(config),
                    lambda: simulate(config, 200, range(2), progress=False)):
        try:
            attempt()
        except TheoryUnavailable as err:
            assert err.key == "student.activation" and "four-point moments" in str(err)
        else:
            raise AssertionError("the few-shot theory of an activation without F4 ran")


CHECKS = {"config": check_config_choice, "sgd": check_sgd_against_simulation,
          "anil": check_anil_closed_form, "fewshot": check_fewshot_refused}


def run_checks(names: list[str]) -> None:
    """Run the named checks, printing "name:ok" after each."""
    for name in names:
        CHECKS[name]()
        print(f"{name}:ok", flush=True)


#: The child imports this file as the module test_activation_registry, not as __main__: numba's
#: cache index records the marker class by module and name, and a class of __main__ is not found
#: again by a later process (it recompiles instead of loading).
CHILD = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
         "from test_activation_registry import run_checks; run_checks(sys.argv[1:])"]


def test_registered_activation(tmp_path: Path) -> None:
    """All checks in one child process (one compilation of the kernels for the new markers, into
    an empty NUMBA_CACHE_DIR of its own). Then numba's disk cache across processes: a second
    child that runs the anil check again compiles nothing (no new cache entry: the compiled
    integrator, the flow and the activation's kernels all come from disk) and takes under a
    tenth of the first child's time (measured ~4 min against ~5 s, imports included)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    started = time.perf_counter()
    run = subprocess.run([*CHILD, *CHECKS], env=env, capture_output=True, text=True,
                         timeout=1200)
    first = time.perf_counter() - started
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == [f"{name}:ok" for name in CHECKS]
    entries = sorted(p.name for p in (tmp_path / "numba").rglob("*.nbc"))
    started = time.perf_counter()
    again = subprocess.run([*CHILD, "anil"], env=env, capture_output=True, text=True,
                           timeout=1200)
    second = time.perf_counter() - started
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "numba").rglob("*.nbc")) == entries
    assert second < 0.1 * first, (first, second)

