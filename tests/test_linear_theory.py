"""The theory of linear networks (g(z) = z): its ODEs against the ones obtained by hand from
Gaussian moments, and what the tools report for a student whose units are not identifiable.

For a linear student and teacher, Omega's blocks are the moments themselves (C = Q, D = R,
E = T) and every integral is a polynomial in the overlaps, so the ODEs can be written down by
hand and compared with the right-hand side at random states to 1e-12:

* sgd (Saad & Solla's ODEs with g = z): with v = Q w - R u0 and rho = c^T Omega c (c = (w, -u0),
  the mean squared error before noise), dR = -lr w (R^T w - T u0)^T, dQ = -lr (w v^T + v w^T)
  + lr^2 / B (rho + noise^2) w w^T, dw = -lr_head v;
* population anil, second order: the meta-loss L_meta(Q, R, w) of the linear inner loop written
  with numpy, its exact gradient by the complex step (L is a polynomial, so Im L(x + i h e) / h is
  its derivative to rounding), pushed through the overlap flow (docs/model.md §5.2), and the
  lr^2 term E_task[w'_k w'_l (c^T Omega c + noise^2)] by Gauss-Hermite quadrature over the task
  (a polynomial of degree 4 in it: 3 nodes per dimension are exact).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import roots_hermitenorm

from metaode.config import Config
from metaode.solvers.fixedpoints import find_fixed_point, stability
from metaode.solvers.integrate import solve
from metaode.solvers.plateau import measure_plateau
from metaode.theory.jacobian import central_difference_jacobian, jacobian
from metaode.theory.state import pack, unpack
from metaode.theory.system import build_system

K, M = 3, 2


def linear_config(algorithm: str, **training) -> Config:
    """Linear student and teacher, K = 3, M = 2, label noise, query * meta_batch = 6."""
    return Config.from_dict({
        "teacher": {"M": M, "activation": "linear", "u0": [1.0, -0.6],
                    "task_std": 0.0 if algorithm == "sgd" else 0.7,
                    "noise": 0.3, "T": [[1.0, 0.2], [0.2, 0.8]]},
        "student": {"K": K, "activation": "linear"},
        "training": {"algorithm": algorithm, "lr": 0.4, "lr_head": 0.3, "query": 2,
                     "meta_batch": 3, "alpha_max": 4.0, **training},
        "output": {"points": 9},
    })


def random_state(rng: np.random.Generator) -> np.ndarray:
    """A state whose Omega is a covariance: Q, R from random J, B with B B^T = T."""
    T = np.array([[1.0, 0.2], [0.2, 0.8]])
    B = np.linalg.cholesky(T)
    J = rng.normal(size=(K, M + 3)) * 0.5
    Bf = np.hstack([B, np.zeros((M, 3))])
    return pack(J @ J.T, J @ Bf.T, rng.normal(size=K) * 0.5)


def test_sgd_is_the_hand_derived_linear_ode() -> None:
    config = linear_config("sgd")
    system = build_system(config)
    lr, lr_head, B, noise = 0.4, 0.3, 6, 0.3
    u0, T = np.array([1.0, -0.6]), np.array(config.teacher.T)
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = random_state(rng)
        Q, R, w = unpack(y, K, M)
        v = Q @ w - R @ u0
        c = np.concatenate([w, -u0])
        omega = np.block([[Q, R], [R.T, T]])
        rho = c @ omega @ c
        dQ = -lr * (np.outer(w, v) + np.outer(v, w)) + lr**2 / B * (rho + noise**2) * np.outer(w, w)
        dR = -lr * np.outer(w, R.T @ w - T @ u0)
        expected = pack(dQ, dR, -lr_head * v)
        np.testing.assert_allclose(system.rhs(0.0, y), expected, rtol=0, atol=1e-12)


def _meta_loss(Q, R, w, T, u0, task_std, inner_lr, steps):
    """L_meta of the linear population inner loop (C = Q, D = R, E = T), exact over the task:
    w^(r+1) = w^(r) - inner_lr (Q w^(r) - R u), heads linear in e = (1, xi),
    u = u0 + task_std xi."""
    U = np.hstack([u0[:, None], task_std * np.eye(M)])  # u = U e, E[e e^T] = I, e_0 = 1
    Z = np.zeros((K, M + 1), dtype=complex)
    Z[:, 0] = w
    for _ in range(steps):
        Z = Z - inner_lr * (Q @ Z - R @ U)
    return 0.5 * np.trace(Z.T @ Q @ Z) - np.trace(Z.T @ R @ U) + 0.5 * np.trace(U.T @ T @ U), Z, U


def _complex_step(f, x: np.ndarray, h: float = 1e-30) -> np.ndarray:
    """df/dx for every entry of x (f a polynomial: exact to rounding)."""
    out = np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        xc = x.astype(complex)
        xc[idx] += 1j * h
        out[idx] = f(xc).imag / h
    return out


def test_population_anil_is_the_hand_derived_linear_ode() -> None:
    config = linear_config("anil", inner_steps=2, inner_lr=0.5, order="second")
    system = build_system(config)
    lr, lr_head, B, noise, task_std, eta = 0.4, 0.3, 6, 0.3, 0.7, 0.5
    u0, T = np.array([1.0, -0.6]), np.array(config.teacher.T)
    x, wx = roots_hermitenorm(3)
    wx = wx / wx.sum()
    rng = np.random.default_rng(1)
    for _ in range(3):
        y = random_state(rng)
        Q, R, w = unpack(y, K, M)

        def loss(Qc, Rc, wc):
            return _meta_loss(Qc, Rc, wc, T, u0, task_std, eta, 2)[0]

        G = _complex_step(lambda Qc, R=R, w=w: loss(Qc, R, w), Q)  # entries independent,
        G = 0.5 * (G + G.T)                                        # then symmetrised
        H = _complex_step(lambda Rc, Q=Q, w=w: loss(Q, Rc, w), R)
        wbar = _complex_step(lambda wc, Q=Q, R=R: loss(Q, R, wc), w)
        _, Z, U = _meta_loss(Q, R, w, T, u0, task_std, eta, 2)
        Z, omega = Z.real, np.block([[Q, R], [R.T, T]])
        phi = np.zeros((K, K))
        for nodes, weights in zip(itertools.product(x, repeat=M),
                                  itertools.product(wx, repeat=M), strict=True):
            e = np.concatenate([[1.0], nodes])
            wp, u = Z @ e, U @ e
            c = np.concatenate([wp, -u])
            phi += np.prod(weights) * np.outer(wp, wp) * (c @ omega @ c + noise**2)
        X = 2 * G @ Q + H @ R.T
        expected = pack(-lr * (X + X.T) + lr**2 / B * phi, -lr * (2 * G @ R + H @ T),
                        -lr_head * wbar)
        np.testing.assert_allclose(system.rhs(0.0, y), expected, rtol=0, atol=1e-12)


def test_a_linear_student_records_no_specialisation() -> None:
    """Its units are not identifiable (only w^T J is): no specialisation index, no align_k; the
    plateau tools fall back on the error (sweeps) or say why."""
    run = solve(build_system(linear_config("sgd")))
    assert "specialisation" not in run.observables
    assert not any(name.startswith("align_") for name in run.observables)
    assert run.status == 0 and run.error[-1] < run.error[0]
    with pytest.raises(ValueError, match="no specialisation index"):
        measure_plateau(run, criterion="specialisation")


def test_fixed_point_tools_refuse_a_linear_student() -> None:
    system = build_system(linear_config("sgd"))
    y = system.initial_state()
    with pytest.raises(ValueError, match="form manifolds"):
        find_fixed_point(system, y)
    with pytest.raises(ValueError, match="form manifolds"):
        stability(system, y)


@pytest.mark.parametrize("student, teacher", [("linear", "linear"), ("erf", "linear")])
def test_exact_sgd_jacobian_with_linear_fields(student: str, teacher: str) -> None:
    """The exact sgd Jacobian (chain rule through the derived gradients of J2, I3 and I4, here
    the kernels with linear fields) equals central differences of the right-hand side to 1e-7
    relative (their error is ~1e-10 relative, tests/test_fixedpoints.py; a missing term is
    O(1e-2))."""
    config = linear_config("sgd").replace({"student.activation": student,
                                           "teacher.activation": teacher})
    system = build_system(config)
    rng = np.random.default_rng(2)
    for _ in range(2):
        y = random_state(rng)
        exact = jacobian(system, y)
        numeric = central_difference_jacobian(system, y)
        assert np.abs(exact - numeric).max() <= 1e-7 * np.abs(exact).max()
