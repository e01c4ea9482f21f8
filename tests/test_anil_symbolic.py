"""The numerically assembled ANIL ODEs against sympy's fully symbolic system (docs/model.md §8).

``theory.anil`` evaluates the meta-loss in the Z-form and its gradient by a hand-written reverse
pass. Here the same quantities are built by sympy from the definitions of docs/model.md alone, for
small K, M and s, without the Z recursion or any reverse pass:

* Q is the symmetrisation (q + q^T) / 2 of K^2 independent symbols q_kl, R and T are symbols;
  C_kl = I2(Q_kk, Q_ll, Q_kl), D_km = I2(Q_kk, T_mm, R_km), E_mn = I2(T_mm, T_nn, T_mn) with the I2
  of ``theory.derive.derive_I2``;
* the adapted head is written directly, w' = A w + F u with A = (I - eta C)^s and
  F = sum_{r<s} (I - eta C)^r eta D;
* eps(v; u) = 1/2 [v^T C v - 2 v^T D u + u^T E u]. Every expectation over the task head
  u ~ N(u0, sigma^2 I_M) below is of a polynomial of degree 2 in u (w' is affine in u), for which
  E f(u) = f(u0) + sigma^2 / 2 sum_m d^2 f / du_m^2 holds exactly;
* second order: L = E_u eps(w'(u); u), G = dL/dq (all K^2 entries independent, hence the
  symmetrised gradient), H = dL/dR, wbar = dL/dw, all by sympy.diff;
* first order: G, H, wbar are the derivatives of eps(v; u) at fixed v (fresh symbols) with
  respect to q, R and v, with v = w'(u) substituted afterwards and then averaged over u.

The drift of docs/model.md §5.2, dR = -lr (2 G R + H T), dQ = -lr (X + X^T) with X = 2 G Q + H R^T,
dw = -lr_head wbar, is compared with the ANIL system's right-hand side. The system's rhs is
f(lr, lr_head) = drift + lr^2 Phi / (query meta_batch), the drift linear in (lr, lr_head); so with
both rates doubled the drift is exactly 2 f(lr) - f(2 lr) / 2, and the diffusion part is
f(2 lr) / 2 - f(lr). That diffusion part is compared with the task average of the single-task
(sgd-type) diffusion term, ``theory.fields.diffusion`` with a deterministic head w'(u) (no
spread), an average computed exactly by Gauss-Hermite quadrature over xi (the single-task term
is a polynomial of degree 4 in (w', u), hence in xi, and the 3-point rule is exact to degree 5).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import sympy as sp
from numpy.polynomial.hermite_e import hermegauss
from states import ERF, random_state

from metaode.config import Config
from metaode.theory.anil import meta_gradient
from metaode.theory.derive import covariance, derive_I2
from metaode.theory.fields import diffusion, error_blocks, meta_loss, task_basis
from metaode.theory.state import pack, unpack
from metaode.theory.system import build_system

# Both sides evaluate the same closed forms in double precision: sympy's expression tree after
# common-subexpression elimination, and the Z-form with its reverse pass. Their difference is
# rounding: measured <= 1.2e-15 relative for (L, G, H, wbar) and the drift, <= 3.4e-14 for the
# lr^2 part (f(2 lr) / 2 - f(lr) cancels the drift). 1e-10 leaves over three orders of margin,
# while a wrong or missing term is an O(1) relative error.
RTOL = 1e-10

# (K, M, s): K = M = 2 with s = 1 and 2; K = 2, M = 1 and K = 3, M = 2 with s = 1.
CASES = [(2, 2, 1), (2, 2, 2), (2, 1, 1), (3, 2, 1)]
INNER_LR, TASK_STD, NOISE = 0.7, 0.6, 0.3
LR, LR_HEAD, QUERY, META_BATCH = 0.4, 0.3, 2, 3


@cache
def _i2_expr() -> tuple[sp.Expr, tuple[sp.Symbol, sp.Symbol, sp.Symbol]]:
    c = covariance(2)
    return derive_I2(), (c[0, 0], c[1, 1], c[0, 1])


def _i2(a: sp.Expr, b: sp.Expr, x: sp.Expr) -> sp.Expr:
    """I2(a, b, x) = E[g(z1) g(z2)] for the covariance [[a, x], [x, b]] (theory.derive)."""
    expr, (c11, c22, c12) = _i2_expr()
    return expr.subs({c11: a, c22: b, c12: x}, simultaneous=True)


@cache
def symbolic_anil(K: int, M: int, s: int):
    """Lambdified (L, G2, H2, wbar2, G1, H1, wbar1) of (q, R, T_upper, w, u0, eta, sigma).

    Index 2 is second order (exact gradient of L = E_u eps(w'; u)), index 1 first order
    (gradient of eps at fixed w', then averaged over u); see the module docstring.
    """
    q = sp.Matrix(K, K, lambda k, l: sp.Symbol(f"q_{k}_{l}", real=True))
    Q = (q + q.T) / 2
    R = sp.Matrix(K, M, lambda k, m: sp.Symbol(f"r_{k}_{m}", real=True))
    t_upper = {(m, n): sp.Symbol(f"t_{m}_{n}", real=True) for m in range(M) for n in range(m, M)}
    T = sp.Matrix(M, M, lambda m, n: t_upper[min(m, n), max(m, n)])
    w = sp.Matrix(sp.symbols(f"w_0:{K}", real=True))
    v = sp.Matrix(sp.symbols(f"v_0:{K}", real=True))
    u = sp.Matrix(sp.symbols(f"u_0:{M}", real=True))
    u0 = sp.Matrix(sp.symbols(f"u0_0:{M}", real=True))
    eta, sigma = sp.symbols("eta sigma", positive=True)

    C = sp.Matrix(K, K, lambda k, l: _i2(Q[k, k], Q[l, l], Q[k, l]))
    D = sp.Matrix(K, M, lambda k, m: _i2(Q[k, k], T[m, m], R[k, m]))
    E = sp.Matrix(M, M, lambda m, n: _i2(T[m, m], T[n, n], T[m, n]))
    P = sp.eye(K) - eta * C
    A = P**s
    F = sp.zeros(K, M)
    for r in range(s):
        F += P**r * eta * D
    w_adapted = A * w + F * u

    def eps(head: sp.Matrix) -> sp.Expr:
        return ((head.T * C * head - 2 * head.T * D * u + u.T * E * u) / 2)[0, 0]

    at_mean = dict(zip(u, u0, strict=True))

    def task_average(f: sp.Expr) -> sp.Expr:
        """E_u f(u) for f quadratic in u ~ N(u0, sigma^2 I): f(u0) + sigma^2/2 tr(Hessian)."""
        return f.subs(at_mean) + sigma**2 / 2 * sum(sp.diff(f, um, 2) for um in u).subs(at_mean)

    L = task_average(eps(w_adapted))
    G2 = sp.Matrix(K, K, lambda k, l: sp.diff(L, q[k, l]))
    H2 = sp.Matrix(K, M, lambda k, m: sp.diff(L, R[k, m]))
    wbar2 = sp.Matrix(K, 1, lambda k, _: sp.diff(L, w[k]))

    eps_fixed = eps(v)
    adapted = dict(zip(v, w_adapted, strict=True))

    def first_order(symbol: sp.Symbol) -> sp.Expr:
        return task_average(sp.diff(eps_fixed, symbol).subs(adapted))

    G1 = q.applyfunc(first_order)
    H1 = R.applyfunc(first_order)
    wbar1 = v.applyfunc(first_order)
    args = [list(q), list(R), list(t_upper.values()), list(w), list(u0), eta, sigma]
    return sp.lambdify(args, [L, G2, H2, wbar2, G1, H1, wbar1], modules="numpy", cse=True)


def evaluate_symbolic(K, M, s, Q, R, T, w, u0):
    """Numerical values of the symbolic (L, second (G, H, wbar), first (G, H, wbar))."""
    f = symbolic_anil(K, M, s)
    t_upper = [T[m, n] for m in range(M) for n in range(m, M)]
    L, G2, H2, W2, G1, H1, W1 = f(Q.ravel(), R.ravel(), t_upper, w, u0, INNER_LR, TASK_STD)
    second = tuple(np.array(x, dtype=float) for x in (G2, H2, np.ravel(W2)))
    first = tuple(np.array(x, dtype=float) for x in (G1, H1, np.ravel(W1)))
    return float(L), second, first


def anil_config(K, M, s, order, Q, R, T, w, u0, lr=LR, lr_head=LR_HEAD) -> Config:
    return Config.from_dict({
        "teacher": {"M": M, "u0": u0.tolist(), "task_std": TASK_STD, "noise": NOISE,
                    "T": T.tolist()},
        "student": {"K": K, "Q0": Q.tolist(), "R0": R.tolist(), "w0": w.tolist()},
        "training": {"algorithm": "anil", "order": order, "inner_lr": INNER_LR,
                     "inner_steps": s, "lr": lr, "lr_head": lr_head, "query": QUERY,
                     "meta_batch": META_BATCH},
    })


def drift_and_diffusion(K, M, s, order, Q, R, T, w, u0):
    """(drift, lr^2-part) of the ANIL system's rhs at y0, separated by doubling (lr, lr_head)."""
    rhs = []
    for scale in (1.0, 2.0):
        system = build_system(anil_config(K, M, s, order, Q, R, T, w, u0, scale * LR,
                                          scale * LR_HEAD))
        rhs.append(system.rhs(0.0, system.initial_state()))
    return 2.0 * rhs[0] - 0.5 * rhs[1], 0.5 * rhs[1] - rhs[0]


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    scale = np.abs(expected).max()
    assert scale > 0, what
    err = np.abs(actual - expected).max() / scale
    assert err <= RTOL, f"{what}: relative difference {err:.3g}"


@pytest.mark.parametrize("order", ["second", "first"])
@pytest.mark.parametrize(("K", "M", "s"), CASES)
def test_meta_loss_and_gradient_match_sympy(K: int, M: int, s: int, order: str) -> None:
    """meta_loss and meta_gradient's (G, H, wbar) equal sympy's to RTOL, at two random points."""
    for seed in (1, 2):
        Q, R, T, w, u0 = random_state(K, M, seed)
        L_sym, second, first = evaluate_symbolic(K, M, s, Q, R, T, w, u0)
        U, S = task_basis(u0, TASK_STD)
        G, H, wbar, Zs = meta_gradient(ERF, Q, R, T, w, U, S, INNER_LR, s, order == "second")
        C, D, E = error_blocks(ERF, Q, R, T)
        assert abs(meta_loss(Zs[s], C, D, E, U, S) - L_sym) <= RTOL * abs(L_sym)
        for name, ours, theirs in zip(("G", "H", "wbar"), (G, H, wbar),
                                      second if order == "second" else first, strict=True):
            assert_close(ours, theirs, f"{name} ({order} order, seed {seed})")


@pytest.mark.parametrize("order", ["second", "first"])
@pytest.mark.parametrize(("K", "M", "s"), CASES)
def test_drift_matches_sympy(K: int, M: int, s: int, order: str) -> None:
    """The ANIL system's drift equals the drift of docs/model.md §5.2 assembled from sympy's
    (G, H, wbar)."""
    Q, R, T, w, u0 = random_state(K, M, 3)
    _, second, first = evaluate_symbolic(K, M, s, Q, R, T, w, u0)
    G, H, wbar = second if order == "second" else first
    X = 2.0 * G @ Q + H @ R.T
    expected = pack(-LR * (X + X.T), -LR * (2.0 * G @ R + H @ T), -LR_HEAD * wbar)
    drift, _ = drift_and_diffusion(K, M, s, order, Q, R, T, w, u0)
    assert_close(drift, expected, f"drift ({order} order)")


def adapted_head(Q, R, T, w, u, s):
    """w' = A w + F u, A = (I - eta C)^s, F = sum_{r<s} (I - eta C)^r eta D (no Z recursion)."""
    C, D, _ = error_blocks(ERF, Q, R, T)
    P = np.eye(len(w)) - INNER_LR * C
    F = sum((np.linalg.matrix_power(P, r) @ (INNER_LR * D) for r in range(s)),
            np.zeros_like(D))
    return np.linalg.matrix_power(P, s) @ w + F @ u


@pytest.mark.parametrize(("K", "M", "s"), CASES)
def test_diffusion_is_the_task_average_of_the_single_task_term(K: int, M: int, s: int) -> None:
    """lr^2 part of dQ = lr^2 / (query meta_batch) E_xi[Phi(w'(u), u)]; nothing in dR, dw.

    Phi(w', u) is ``diffusion`` with the deterministic pair (w', u), i.e. the sgd term of one task
    with head u and student head w'. E_xi by the tensor 3-point Gauss-Hermite rule, exact here
    (module docstring), so the comparison is to rounding (RTOL).
    """
    Q, R, T, w, u0 = random_state(K, M, 4)
    _, lr2_part = drift_and_diffusion(K, M, s, "second", Q, R, T, w, u0)
    dQ, dR, dw = unpack(lr2_part, K, M)
    nodes, weights = hermegauss(3)
    weights = weights / weights.sum()
    omega = np.block([[Q, R], [R.T, T]])  # covariance of the fields (lambda, nu)
    phi = np.zeros((K, K))
    for index in np.ndindex(*(3,) * M):
        xi = nodes[list(index)]
        u = u0 + TASK_STD * xi
        pair = np.concatenate([adapted_head(Q, R, T, w, u, s), u])
        phi += np.prod(weights[list(index)]) * diffusion(ERF, omega, K, pair,
                                                         np.zeros((K + M, 0)), NOISE)
    assert_close(dQ, LR**2 / (QUERY * META_BATCH) * phi, "lr^2 part of dQ")
    # dR and dw are linear in (lr, lr_head): their lr^2 part is zero up to rounding of the rhs
    scale = np.abs(dQ).max()
    assert np.abs(dR).max() <= RTOL * scale and np.abs(dw).max() <= RTOL * scale
