"""The overlap flow: dQ, dR, dw from the gradient of a loss of (Q, R, w), for every algorithm.

A loss L(J, w) that depends on the first layer only through C(Q) and D(Q, R) (docs/model.md §5.2)
has the cotangents (Cbar, Dbar) = (dL/dC, dL/dD); ``chain_to_overlaps`` pushes them through the
Gaussian integrals C_kl = I2(s, s; Q_kk, Q_ll, Q_kl) and D_km = I2(s, t; Q_kk, T_mm, R_km) to
G = dL/dQ (symmetrised) and H = dL/dR. A gradient step on J projected on J and B then moves the
overlaps by (``overlap_flow``)

    dQ/dalpha = -lr (X + X^T) + lr^2 / batch Phi,   X = 2 G Q + H R^T + SQ,
    dR/dalpha = -lr (2 G R + H T + SR),              dw/dalpha = -lr_head wbar,

with Phi the lr^2 (diffusion) term of ``theory.fields``, batch = query x meta_batch, and (SQ, SR)
the directions a finite support set adds through its own fields (few-shot second order; zero
otherwise). sgd (no inner step), population anil and few-shot anil all end here: the first two
through ``overlap_flow``, few-shot anil (whose Monte Carlo estimates the drift directly in the
layout of the state) through ``flow_of_drift``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from metaode.theory.activations import Activations, dI2_dc11, dI2_dc12, dI2_dc22


@njit(cache=True)
def chain_to_overlaps(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray,
                      Cbar: np.ndarray, Dbar: np.ndarray):
    """(G, H) = (dL/dQ, dL/dR) from (Cbar, Dbar) = (dL/dC, dL/dD).

    Every ordered entry is its own function: C_kl = I2(s, s; Q_kk, Q_ll, Q_kl), D_km =
    I2(s, t; Q_kk, T_mm, R_km), with all K^2 entries of Q independent; G is then symmetrised, i.e.
    L is evaluated on (Q + Q^T) / 2 (docs/model.md §5.2). ``chain_apply`` of
    ``chain_coefficients``.
    """
    dC, dD = chain_coefficients(acts, Q, R, T)
    return chain_apply(dC, dD, Cbar, Dbar)


@njit(cache=True)
def chain_coefficients(acts: Activations, Q: np.ndarray, R: np.ndarray, T: np.ndarray):
    """(dC, dD): dC[k, l] = (dI2/dc11, dI2/dc22, dI2/dc12) of C_kl at (Q_kk, Q_ll, Q_kl) for
    k <= l (C_kl and C_lk are one function of (Q_kk, Q_ll, Q_kl), I2 being symmetric in its two
    fields: its partials are computed once per pair; on the diagonal d/dc11 = d/dc22), and
    dD[k, m] = (dI2/dc11, dI2/dc12) of D_km at (Q_kk, T_mm, R_km): the derivatives that
    ``chain_apply`` contracts with the cotangents."""
    s, t = acts.student, acts.teacher
    K, M = R.shape
    dC = np.zeros((K, K, 3))
    dD = np.empty((K, M, 2))
    for k in range(K):
        a = Q[k, k]
        dC[k, k, 0] = dC[k, k, 1] = dI2_dc11(s, s, a, a, a)
        dC[k, k, 2] = dI2_dc12(s, s, a, a, a)
        for l in range(k + 1, K):
            b, c = Q[l, l], Q[k, l]
            dC[k, l, 0] = dI2_dc11(s, s, a, b, c)
            dC[k, l, 1] = dI2_dc22(s, s, a, b, c)
            dC[k, l, 2] = dI2_dc12(s, s, a, b, c)
        for m in range(M):
            dD[k, m, 0] = dI2_dc11(s, t, a, T[m, m], R[k, m])
            dD[k, m, 1] = dI2_dc12(s, t, a, T[m, m], R[k, m])
    return dC, dD


@njit(cache=True)
def chain_apply(dC: np.ndarray, dD: np.ndarray, Cbar: np.ndarray, Dbar: np.ndarray):
    """(G, H) of ``chain_to_overlaps`` from the derivatives of ``chain_coefficients``."""
    K, M = Dbar.shape
    G = np.zeros((K, K))
    H = np.zeros((K, M))
    for k in range(K):
        G[k, k] += 2.0 * Cbar[k, k] * dC[k, k, 0] + Cbar[k, k] * dC[k, k, 2]
        for l in range(k + 1, K):
            d11, d22, d12 = dC[k, l, 0], dC[k, l, 1], dC[k, l, 2]
            G[k, k] += (Cbar[k, l] + Cbar[l, k]) * d11
            G[l, l] += (Cbar[k, l] + Cbar[l, k]) * d22
            G[k, l] += Cbar[k, l] * d12
            G[l, k] += Cbar[l, k] * d12
        for m in range(M):
            G[k, k] += Dbar[k, m] * dD[k, m, 0]
            H[k, m] += Dbar[k, m] * dD[k, m, 1]
    for k in range(K):  # symmetrise: G <- (G + G^T) / 2
        for l in range(k + 1, K):
            G[k, l] = G[l, k] = 0.5 * (G[k, l] + G[l, k])
    return G, H


@njit(cache=True)
def overlap_drift(Q: np.ndarray, R: np.ndarray, T: np.ndarray, G: np.ndarray, H: np.ndarray,
                  SQ: np.ndarray | None, SR: np.ndarray | None, wbar: np.ndarray) -> np.ndarray:
    """pack(X + X^T, 2 G R + H T + SR, wbar) with X = 2 G Q + H R^T + SQ: the drift of the overlaps
    per unit of -lr (of w: of -lr_head), in the layout of the state (written out: K and M are
    small, a BLAS call per product would cost more than the arithmetic). SQ = SR = None: no
    support-field directions (zero)."""
    K, M = R.shape
    out = np.empty(K * (K + 1) // 2 + K * M + K)
    i = 0
    for k in range(K):
        for l in range(k, K):
            acc = 0.0
            if SQ is not None:
                acc = SQ[k, l] + SQ[l, k]
            for j in range(K):
                acc += 2.0 * (G[k, j] * Q[j, l] + G[l, j] * Q[j, k])
            for m in range(M):
                acc += H[k, m] * R[l, m] + H[l, m] * R[k, m]
            out[i] = acc
            i += 1
    for k in range(K):
        for m in range(M):
            acc = 0.0
            if SR is not None:
                acc = SR[k, m]
            for j in range(K):
                acc += 2.0 * G[k, j] * R[j, m]
            for n in range(M):
                acc += H[k, n] * T[n, m]
            out[i] = acc
            i += 1
    for k in range(K):
        out[i + k] = wbar[k]
    return out


@njit(cache=True)
def flow_of_drift(drift: np.ndarray, phi: np.ndarray, lr: float, lr_head: float,
                  batch: int) -> np.ndarray:
    """dy/dalpha = pack(-lr dQ + lr^2 / batch Phi, -lr dR, -lr_head wbar) from the drift in the
    layout of the state (``overlap_drift``) and the K x K matrix Phi."""
    out = np.empty_like(drift)
    scale_drift(drift, phi, lr, lr_head, batch, out)
    return out


@njit(cache=True)
def scale_drift(drift: np.ndarray, phi: np.ndarray, lr: float, lr_head: float, batch: int,
                out: np.ndarray) -> None:
    """out = ``flow_of_drift`` (out may be drift itself)."""
    K = phi.shape[0]
    diffusion = lr * lr / batch
    i = 0
    for k in range(K):
        for l in range(k, K):
            out[i] = -lr * drift[i] + diffusion * phi[k, l]
            i += 1
    head = drift.shape[0] - K
    for j in range(i, head):
        out[j] = -lr * drift[j]
    for j in range(head, drift.shape[0]):
        out[j] = -lr_head * drift[j]


@njit(cache=True)
def overlap_flow(Q: np.ndarray, R: np.ndarray, T: np.ndarray, G: np.ndarray, H: np.ndarray,
                 wbar: np.ndarray, phi: np.ndarray, lr: float, lr_head: float,
                 batch: int) -> np.ndarray:
    """dy/dalpha = pack(dQ, dR, dw) of the module docstring without support-field directions
    (SQ = SR = 0)."""
    out = overlap_drift(Q, R, T, G, H, None, None, wbar)
    scale_drift(out, phi, lr, lr_head, batch, out)
    return out
