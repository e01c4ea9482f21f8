"""ANIL with a population inner loop (docs/model.md §4.2, §8): the meta-learning ODEs.

Inner loop. With the population support loss, w^(r+1) = w^(r) - inner_lr (C w^(r) - D u), so the
adapted head after s steps is w' = A w + F u with P = I - inner_lr C, A = P^s and
F = sum_{r<s} P^r inner_lr D. The task head is u = u0 + task_std xi, xi ~ N(0, I_M). Writing
e = (1, task_std xi) (so E[e e^T] = S = diag(1, task_std^2, ..., task_std^2)) and U = [u0 | I_M]
(M x (1 + M)), every head is linear in e: u = U e and w^(r) = Z^(r) e with

    Z^(0) = [w | 0],    Z^(r+1) = P Z^(r) + inner_lr D U                       (K x (1 + M)).

Meta-loss. eps(w'; u) = 1/2 e^T [Z^T C Z - 2 Z^T D U + U^T E U] e, hence exactly

    L_meta(Q, R, w) = E_tau eps(w'_tau; u_tau)
                    = 1/2 tr(S Z^T C Z) - tr(S Z^T D U) + 1/2 tr(S U^T E U)

with Z = Z^(s) (Z^(0) gives the error before adaptation).

Drift. Second order: the exact gradient of L_meta through C(Q), D(Q, R) and the recursion, by
reverse accumulation (``inner_loop_vjp``): Zbar^(s) = (C Z - D U) S, Cbar = 1/2 Z S Z^T
- inner_lr sum_r Zbar^(r+1) Z^(r)T, Dbar = -Z S U^T + inner_lr sum_r Zbar^(r+1) U^T,
Zbar^(r) = P Zbar^(r+1), wbar = Zbar^(0) e_0. First order: w' is held fixed, so only the direct
terms Cbar = 1/2 Z S Z^T, Dbar = -Z S U^T remain and wbar = E_tau[dEps/dw'] = (C Z - D U) e_0.
``chain_to_overlaps`` pushes (Cbar, Dbar) through C_kl = I2(Q_kk, Q_ll, Q_kl), D_km = I2(Q_kk,
T_mm, R_km) to G = dL/dQ (symmetrised) and H = dL/dR, and (docs/model.md §5.2)

    dR/dalpha = -lr (2 G R + H T),   dQ/dalpha = -lr (X + X^T) + lr^2 / (query meta_batch) Phi,
    X = 2 G Q + H R^T,               dw/dalpha = -lr_head wbar,

with Phi the diffusion term of ``theory.fields.diffusion`` for the Gaussian pair y = (w', u):
mean (Z e_0, u0) and covariance task_std^2 V V^T, V = [Z_{:,1:}; I_M] (spread task_std V).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.extending import overload

from metaode.config import Config
from metaode.theory.activations import Activations
from metaode.theory.fields import (
    common_observables,
    diffusion,
    error_blocks,
    field_covariance,
    meta_loss,
    small_product,
    student_blocks,
    task_basis,
)
from metaode.theory.flow import chain_to_overlaps, overlap_flow
from metaode.theory.state import unpack
from metaode.theory.system import ODESystem, flow_observables, flow_rhs, is_flow


@njit(cache=True)
def inner_loop(C: np.ndarray, D: np.ndarray, w: np.ndarray, U: np.ndarray, inner_lr: float,
               steps: int) -> np.ndarray:
    """Z^(0..s), shape (s + 1, K, 1 + M).

    Z^(0) = [w | 0], Z^(r+1) = (I - inner_lr C) Z^(r) + inner_lr D U (written out: the matrices
    are small, a BLAS call per product would cost more than the arithmetic).
    """
    K = C.shape[0]
    n = U.shape[1]
    Zs = np.zeros((steps + 1, K, n))
    Zs[0, :, 0] = w
    if steps == 0:
        return Zs
    DU = small_product(D, U)
    P = step_matrix(C, inner_lr)
    for r in range(steps):
        for k in range(K):
            for j in range(n):
                acc = 0.0
                for l in range(K):
                    acc += P[k, l] * Zs[r, l, j]
                Zs[r + 1, k, j] = acc + inner_lr * DU[k, j]
    return Zs


@njit(cache=True)
def step_matrix(C: np.ndarray, inner_lr: float) -> np.ndarray:
    """P = I - inner_lr C, the linear part of one inner step."""
    P = -inner_lr * C
    for k in range(C.shape[0]):
        P[k, k] += 1.0
    return P


@njit(cache=True)
def inner_loop_vjp(Zs: np.ndarray, C: np.ndarray, U: np.ndarray, inner_lr: float,
                   Zbar: np.ndarray):
    """Reverse pass of ``inner_loop``: the cotangent Zbar on Z^(s) -> (Cbar, Dbar, wbar).

    For Z^(r+1) = P Z^(r) + inner_lr D U with P = I - inner_lr C (symmetric):
    Cbar += -inner_lr Zbar^(r+1) Z^(r)T, Dbar += inner_lr Zbar^(r+1) U^T, Zbar^(r) = P Zbar^(r+1),
    and wbar = Zbar^(0) e_0 (only the first column of Z^(0) depends on w).
    """
    K = C.shape[0]
    M, n = U.shape
    steps = Zs.shape[0] - 1
    P = step_matrix(C, inner_lr)
    Cbar = np.zeros((K, K))
    Dbar = np.zeros((K, M))
    Zb = Zbar.copy()
    previous = np.empty((K, n))
    for r in range(steps - 1, -1, -1):
        for k in range(K):
            for l in range(K):
                acc = 0.0
                for j in range(n):
                    acc += Zb[k, j] * Zs[r, l, j]
                Cbar[k, l] -= inner_lr * acc
            for m in range(M):
                acc = 0.0
                for j in range(n):
                    acc += Zb[k, j] * U[m, j]
                Dbar[k, m] += inner_lr * acc
        for k in range(K):
            for j in range(n):
                acc = 0.0
                for l in range(K):
                    acc += P[k, l] * Zb[l, j]
                previous[k, j] = acc
        Zb, previous = previous, Zb
    return Cbar, Dbar, Zb[:, 0].copy()


@njit(cache=True)
def loss_cotangents(Z: np.ndarray, C: np.ndarray, D: np.ndarray, U: np.ndarray, S: np.ndarray,
                    Zbar: np.ndarray, Cbar: np.ndarray, Dbar: np.ndarray) -> None:
    """Write the cotangents of ``meta_loss`` at Z into (Zbar, Cbar, Dbar): Zbar = (C Z - D U) S,
    Cbar = 1/2 Z S Z^T, Dbar = -Z S U^T (S diagonal; written out, the matrices are small, and in
    place: the few-shot Monte Carlo calls it once per support set)."""
    K, n = Z.shape
    M = U.shape[0]
    for k in range(K):
        for j in range(n):
            acc = 0.0
            for l in range(K):
                acc += C[k, l] * Z[l, j]
            for m in range(M):
                acc -= D[k, m] * U[m, j]
            Zbar[k, j] = acc * S[j]
    for k in range(K):
        for l in range(K):
            acc = 0.0
            for j in range(n):
                acc += Z[k, j] * S[j] * Z[l, j]
            Cbar[k, l] = 0.5 * acc
    for k in range(K):
        for m in range(M):
            acc = 0.0
            for j in range(n):
                acc += Z[k, j] * S[j] * U[m, j]
            Dbar[k, m] = -acc


@njit(cache=True)
def meta_gradient(acts, Q, R, T, w, U, S, inner_lr, steps, second_order):
    """(G, H, wbar, Zs) for L_meta at (Q, R, w): the drift's gradients (module docstring)."""
    C, D = student_blocks(acts, Q, R, T)
    Zs = inner_loop(C, D, w, U, inner_lr, steps)
    K, M = R.shape
    resid, Cbar, Dbar = np.empty((K, U.shape[1])), np.empty((K, K)), np.empty((K, M))
    loss_cotangents(Zs[steps], C, D, U, S, resid, Cbar, Dbar)
    if second_order and steps > 0:  # without an inner step both orders are the direct terms
        Cb, Db, wbar = inner_loop_vjp(Zs, C, U, inner_lr, resid)
        Cbar += Cb
        Dbar += Db
    else:
        wbar = resid[:, 0].copy()
    G, H = chain_to_overlaps(acts, Q, R, T, Cbar, Dbar)
    return G, H, wbar, Zs


@njit(cache=True)
def adapted_head_moments(Z: np.ndarray, U: np.ndarray, task_std: float):
    """Mean and spread of the Gaussian pair y = (w', u) = ([Z; U] e) over tasks: mean [Z; U] e_0,
    covariance spread spread^T with spread = task_std [Z_{:,1:}; U_{:,1:}] ((K + M) x M; no
    column for one task, task_std = 0)."""
    K = Z.shape[0]
    M = U.shape[0]
    mean = np.empty(K + M)
    mean[:K] = Z[:, 0]
    mean[K:] = U[:, 0]
    spread = np.empty((K + M, M if task_std != 0.0 else 0))
    for j in range(spread.shape[1]):
        for k in range(K):
            spread[k, j] = task_std * Z[k, 1 + j]
        for m in range(M):
            spread[K + m, j] = task_std * U[m, 1 + j]
    return mean, spread


@njit(cache=True)
def anil_rhs(acts: Activations, y: np.ndarray, K: int, M: int, T: np.ndarray, u0: np.ndarray,
             task_std: float, noise: float, inner_lr: float, steps: int, second_order: bool,
             lr: float, lr_head: float, batch: int) -> np.ndarray:
    """dy/dalpha of the ANIL ODEs (module docstring), y = pack(Q, R, w): ``overlap_flow`` of the
    meta-gradient and of the diffusion term of the adapted head."""
    Q, R, w = unpack(y, K, M)
    U, S = task_basis(u0, task_std)
    G, H, wbar, Zs = meta_gradient(acts, Q, R, T, w, U, S, inner_lr, steps, second_order)
    mean, spread = adapted_head_moments(Zs[steps], U, task_std)
    phi = diffusion(acts, field_covariance(Q, R, T), K, mean, spread, noise)
    return overlap_flow(Q, R, T, G, H, wbar, phi, lr, lr_head, batch)


@njit(cache=True)
def metatest_errors(acts, Q, R, T, w, u0, task_std, inner_lr, max_steps):
    """E_tau eps(w^(r); u_tau) for r = 0..max_steps adaptation steps on the population loss."""
    C, D, E = error_blocks(acts, Q, R, T)
    U, S = task_basis(u0, task_std)
    Zs = inner_loop(C, D, w, U, inner_lr, max_steps)
    out = np.empty(max_steps + 1)
    for r in range(max_steps + 1):
        out[r] = meta_loss(Zs[r], C, D, E, U, S)
    return out


class ANILFlow(NamedTuple):
    """The parameters of the ANIL ODEs (``anil_rhs``), the compiled form of ``ANILSystem`` and, with
    no inner step on one task, of ``theory.sgd.SGDSystem``. batch = query x meta_batch."""

    acts: Activations
    K: int
    M: int
    T: np.ndarray
    u0: np.ndarray
    task_std: float
    noise: float
    inner_lr: float
    steps: int
    second_order: bool
    lr: float
    lr_head: float
    batch: int


@overload(flow_rhs)
def _anil_flow_rhs(flow, y):
    if is_flow(flow, ANILFlow):
        return lambda flow, y: anil_rhs(flow.acts, y, flow.K, flow.M, flow.T, flow.u0,
                                        flow.task_std, flow.noise, flow.inner_lr, flow.steps,
                                        flow.second_order, flow.lr, flow.lr_head, flow.batch)


@overload(flow_observables)
def _anil_flow_observables(flow, y):
    if is_flow(flow, ANILFlow):
        def observables(flow, y):
            Q, R, w = unpack(y, flow.K, flow.M)
            errors = metatest_errors(flow.acts, Q, R, flow.T, w, flow.u0, flow.task_std,
                                     flow.inner_lr, flow.steps)
            out = np.empty(4 + flow.K)
            out[0], out[1] = errors[-1], errors[0]
            common_observables(flow.acts, Q, R, flow.T, flow.u0, flow.task_std, out)
            return out
        return observables


def anil_flow(config: Config, steps: int | None = None, task_std: float | None = None,
              inner_lr: float | None = None) -> ANILFlow:
    """The ``ANILFlow`` of a config (steps, task_std and inner_lr overridable: sgd sets them 0)."""
    te, tr = config.teacher, config.training
    return ANILFlow(
        config.activations, int(config.K), int(config.M),
        np.ascontiguousarray(te.T, dtype=float), np.ascontiguousarray(te.u0, dtype=float),
        float(te.task_std if task_std is None else task_std), float(te.noise),
        float(tr.inner_lr if inner_lr is None else inner_lr),
        int(tr.inner_steps if steps is None else steps), tr.order == "second", float(tr.lr),
        float(tr.lr_head), int(tr.query * tr.meta_batch))


class ANILSystem(ODESystem):
    """The ANIL ODEs (population inner loop) for one config."""

    def __init__(self, config: Config):
        super().__init__(config)
        self.flow = anil_flow(config)
