"""The few-shot Monte Carlo (``theory.support_mc``) and its trajectory uncertainty.

* Exact in the task: for fixed support fields, the support set's loss and gradient terms equal the
  expectation over the task head and label noise computed independently here (numpy inner loop
  on a vector head at symmetric sigma points, exact for the quadratic polynomials in e they are).
* Equivariance: with the sample completed by its unit permutations, rhs(pi y) = pi rhs(y) to
  rounding, so a symmetric state stays symmetric.
* inner_steps = 1: the loss and drift are the exact closed form (``one_step_loss_and_gradient``).
* Calibration: over 20 Monte Carlo seeds, the spread of every column divided by the uncertainty
  the solver reports (``mc_err_<column>``) lies in [0.7, 1.4] for >= 90 % of the columns, in a
  strongly adapting case (P = 2, inner_steps = 3, inner_lr = 1).
* Control: ``theory.mc_rtol`` is met (the reported uncertainty within the tolerance), and a budget
  cap that cannot meet it says so on stderr and in run.json.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import erf
from states import ERF, random_state

from metaode.cli import main
from metaode.config import Config
from metaode.solvers.integrate import controlled_columns, solve
from metaode.theory.activations import path_rule
from metaode.theory.fewshot import four_point_tensor, one_step_loss_and_gradient
from metaode.theory.fields import error_blocks, field_covariance
from metaode.theory.state import column_names, pack, unpack
from metaode.theory.support_mc import (
    drift_map,
    support_sample,
    support_statistics,
    symmetric_root,
)
from metaode.theory.system import build_system

RULE = path_rule()


def fewshot_config(Q, R, T, w, u0, **training) -> Config:
    """Few-shot anil at the state (Q, R, w): task_std 0.6, noise 0.3, P = 3, inner_steps 2."""
    base = {"algorithm": "anil", "support": 3, "inner_steps": 2, "inner_lr": 0.8, "lr": 0.7,
            "lr_head": 0.9}
    return Config.from_dict({
        "teacher": {"M": len(u0), "u0": list(u0), "T": T.tolist(), "task_std": 0.6,
                    "noise": 0.3},
        "student": {"K": len(w), "Q0": Q.tolist(), "R0": R.tolist(), "w0": list(w)},
        "training": {**base, **training},
        "theory": {"mc_tasks": 256},
    })


def reference_terms(z, w, u0, C, D, E, task_std, noise, inner_lr, steps):
    """E over u ~ N(u0, task_std^2) and zeta ~ N(0, 1) of (eps(w'; u), 1/2 w' w'^T, -w' u^T,
    C w' - D u) for the support fields z, by a vector inner loop at the 2 d' sigma points
    e = +- sqrt(d') e_j of the d' random coordinates (weights 1 / (2 d')): exact for polynomials
    of degree <= 3 in (u, zeta)."""
    K = len(w)
    M = len(u0)
    P = z.shape[0]
    phi = erf(z[:, :K] / np.sqrt(2))
    psi = erf(z[:, K:] / np.sqrt(2))
    dims = M + (P if noise > 0 else 0)
    scale = np.sqrt(dims)
    total = None
    for j in range(dims):
        for sign in (1.0, -1.0):
            du = np.zeros(M)
            zeta = np.zeros(P)
            if j < M:
                du[j] = sign * scale * task_std
            else:
                zeta[j - M] = sign * scale
            u = u0 + du
            y = psi @ u + noise * zeta
            wp = w.copy()
            for _ in range(steps):
                wp = wp - inner_lr / P * phi.T @ (phi @ wp - y)
            eps = 0.5 * wp @ C @ wp - wp @ D @ u + 0.5 * u @ E @ u
            terms = [np.array([eps]), 0.5 * np.outer(wp, wp).ravel(), -np.outer(wp, u).ravel(),
                     C @ wp - D @ u]
            vec = np.concatenate(terms) / (2 * dims)
            total = vec if total is None else total + vec
    return total


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_support_set_terms_are_exact_in_the_task(noise: float) -> None:
    """First order: the kernel's (loss, Cbar, Dbar, wbar = E[C w' - D u]) of single support sets
    equal ``reference_terms`` to rounding (measured <= 2e-16; held to 1e-12)."""
    K, M, steps = 2, 2, 3
    Q, R, T, w, u0 = random_state(K, M, 3)
    C, D, E = error_blocks(ERF, Q, R, T)
    F = four_point_tensor(ERF, field_covariance(Q, R, T), K, *RULE)
    sample = support_sample(K, M, 3, u0, T, 16, 2, 5)
    L = drift_map(ERF, Q, R, T, K, M)
    root = symmetric_root(field_covariance(Q, R, T))
    for i in range(4):
        # the mean responses of one support set are its terms
        terms = support_statistics(ERF.student, ERF.teacher, Q, R, T, w, u0, 0.6, noise, 0.8,
                                   steps, False, 1, sample.fields[i:i + 1], sample.task[i:i + 1],
                                   C, D, E, F, L, np.zeros(len(L)), True, False,
                                   False, False)[1]
        ref = reference_terms(sample.fields[i] @ root, w, u0, C, D, E, 0.6, noise, 0.8, steps)
        got = np.concatenate([terms[:1 + K * K + K * M], terms[-K:]])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", ["first", "second"])
def test_monte_carlo_rhs_is_equivariant_under_unit_permutations(order: str) -> None:
    """K = 3, M = 2 with u0 = (1, 1), T = I: the sample is closed under the 6 student and 2 teacher
    permutations, so rhs(pi y) = pi rhs(y) for each of them, to rounding (held to 1e-12 relative);
    observables likewise."""
    K, M = 3, 2
    Q, R, T, w, _ = random_state(K, M, 7)
    vals, vecs = np.linalg.eigh(T)
    R = R @ (vecs / np.sqrt(vals)) @ vecs.T  # whiten the teacher: Omega stays a covariance
    T, u0 = np.eye(M), np.ones(M)
    config = fewshot_config(Q, R, T, w, u0, order=order)
    system = build_system(config)
    y = system.initial_state()
    rhs = system.rhs(0.0, y)
    error = system.observables(y)["error"]
    for perm_s, perm_t in (((1, 0, 2), (0, 1)), ((2, 0, 1), (1, 0)), ((0, 1, 2), (1, 0))):
        ps, pt = list(perm_s), list(perm_t)

        def permute(v, ps=ps, pt=pt):
            Qv, Rv, wv = unpack(v, K, M)
            return pack(Qv[np.ix_(ps, ps)], Rv[np.ix_(ps, pt)], wv[ps])

        moved = system.rhs(0.0, permute(y))
        np.testing.assert_allclose(moved, permute(rhs), rtol=1e-12,
                                   atol=1e-12 * np.abs(rhs).max())
        assert abs(system.observables(permute(y))["error"] - error) <= 1e-12 * error


@pytest.mark.parametrize("order", ["first", "second"])
def test_one_step_loss_and_drift_are_the_closed_form(order: str) -> None:
    """inner_steps = 1: the error observable and the drift (rhs at lr = lr_head = 1 minus its lr^2
    term, i.e. the rhs with lr -> lr and the diffusion removed by linearity in lr^2) equal the exact
    one-step closed form to 1e-12."""
    K, M = 2, 2
    Q, R, T, w, u0 = random_state(K, M, 5)
    config = fewshot_config(Q, R, T, w, u0, inner_steps=1, order=order, lr=1.0, lr_head=1.0)
    system = build_system(config)
    y = system.initial_state()
    loss, G, H, wbar = one_step_loss_and_gradient(ERF, Q, R, T, w, u0, 0.6, 0.3, 0.8, 3,
                                                  order == "second", *RULE)
    assert abs(system.observables(y)["error"] - loss) <= 1e-12 * loss
    X = 2.0 * G @ Q + H @ R.T
    drift = np.concatenate([-(X + X.T)[np.triu_indices(K)], -(2.0 * G @ R + H @ T).ravel(),
                            -wbar])
    half = build_system(config.replace({"training.lr": 0.5, "training.lr_head": 0.5}))
    # rhs(lr) = lr a + lr^2 b on Q, lr a on R and w (lr_head = lr): a = 2 (2 rhs(1/2) - rhs(1) / 2)
    a = 2.0 * (2.0 * half.rhs(0.0, y) - 0.5 * system.rhs(0.0, y))
    np.testing.assert_allclose(a, drift, rtol=0, atol=1e-12 * np.abs(drift).max())


def strong_case(seed: int, rtol: float = 0.0, tasks: int = 512) -> Config:
    """The strongly adapting case (P = 2, inner_steps = 3, inner_lr = 1, second order) to
    alpha = 3, at a fixed budget (mc_rtol = 0) unless ``rtol`` is given."""
    return Config.from_dict({
        "teacher": {"M": 2, "u0": [1.0, 0.6], "task_std": 0.7},
        "student": {"K": 2, "Q0": [[0.3, 0.02], [0.02, 0.25]], "R0": [[0.03, -0.01], [0.0, 0.04]],
                    "w0": [0.3, 0.2]},
        "training": {"algorithm": "anil", "support": 2, "inner_steps": 3, "inner_lr": 1.0,
                     "lr": 0.5, "lr_head": 0.5, "alpha_max": 3.0},
        "output": {"points": 4},
        "solver": {"method": "RK45", "rtol": 1e-6, "atol": 1e-8},
        "theory": {"mc_tasks": tasks, "mc_rtol": rtol, "mc_seed": seed},
    })


def test_reported_uncertainty_is_calibrated() -> None:
    """20 Monte Carlo seeds at 512 support sets: for each controlled column c at alpha = 3,
    std over seeds of c / rms over seeds of mc_err_c lies in [0.7, 1.4] for >= 90 % of the columns
    (with 20 seeds the ratio of a well calibrated error bar falls outside this band with
    probability ~4 %; an error bar from one solve's per-state standard error, which ignores the
    integrated noise, is several times too small, and one inflated by 2 fails as well)."""
    runs = [solve(build_system(strong_case(seed))) for seed in range(20)]
    names = controlled_columns(runs[0])
    ratios = {}
    for name in names:
        values = np.array([r.column(name)[-1] for r in runs])
        errors = np.array([r.uncertainty[name][-1] for r in runs])
        ratios[name] = values.std(ddof=1) / np.sqrt(np.mean(errors**2))
    inside = [0.7 <= q <= 1.4 for q in ratios.values()]
    print({k: round(v, 2) for k, v in ratios.items()})
    assert np.mean(inside) >= 0.9, ratios


def test_tolerance_is_met_by_raising_the_budget() -> None:
    """mc_rtol = 0.02 from a budget of 256: the solver raises the budget until every controlled
    column's uncertainty is within 2 % of its scale, and records it."""
    theory = solve(build_system(strong_case(0, rtol=0.02, tasks=256)))
    mc = theory.monte_carlo
    assert mc["tolerance_met"] and mc["tasks"] > 256
    for name in controlled_columns(theory):
        scale = np.abs(theory.column(name)).max()
        assert theory.uncertainty[name].max() <= 0.02 * 1.3 * scale, name
    assert all(f"mc_err_{c}" in theory.columns() for c in column_names(2, 2))


def test_unmet_tolerance_is_reported(tmp_path, capsys) -> None:
    """A cap that cannot meet mc_rtol: exit status 0, a warning on stderr naming mc_rtol and
    mc_max_tasks, run.json with tolerance_met false, theory.csv with the mc_err_ columns."""
    text = """
[teacher]
u0 = [1.0, 0.6]
task_std = 0.7
[training]
algorithm = "anil"
support = 2
inner_steps = 3
inner_lr = 1.0
alpha_max = 1.0
[output]
points = 3
[theory]
mc_tasks = 64
mc_max_tasks = 64
mc_rtol = 1e-4
"""
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert main(["solve", str(path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "theory.mc_rtol" in err and "theory.mc_max_tasks" in err
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["monte_carlo"]["tolerance_met"] is False
    header = (tmp_path / "out" / "theory.csv").read_text().splitlines()[0].split(",")
    assert header[-1].startswith("mc_err_") and "mc_err_R_0_0" in header
    assert header.index("mc_err_error") > header.index("w_1")
