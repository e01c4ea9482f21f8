"""Few-shot ANIL: the expectation over support sets, exact in the task and sampled in the fields.

Conditional exactness. Fix the fields of the P support examples, z_p = (lambda_p, nu_p), and write
phi = g(lambda) (P x K) and psi = g(nu) (P x M). The task enters linearly: with the task basis

    e = (1, u - u0, zeta) in R^d,  d = 1 + M (+ P with label noise),  E[e] = e_0,
    E[e e^T] = S = diag(1, task_std^2 1_M, 1_P),

the support labels are y = psi u + noise zeta = Y e with Y = [psi u0 | psi | noise I_P], the
task head is u = U e with U = [u0 | I_M | 0], and the inner loop
w^(r+1) = w^(r) - (inner_lr / P) phi^T (phi w^(r) - y) is linear in e as well: w^(r) = Z^(r) e with

    Z^(0) = [w | 0],  Z^(r+1) = (I - inner_lr C^) Z^(r) + (inner_lr / P) phi^T Y,

C^ = phi^T phi / P.

So, given the support fields, the query loss eps(w'; u) = 1/2 e^T [Z^T C Z - 2 Z^T D U + U^T E U] e
(Z = Z^(s)) has the exact task average ``theory.anil.meta_loss(Z, C, D, E, U, S)``, its gradients
are traces with S (Cbar = 1/2 Z S Z^T, Dbar = -Z S U^T, the cotangent Zbar = (C Z - D U) S
propagated back through the inner loop to phi and w: ``inner_backward``), and (w', u) = [Z; U] e
is Gaussian, so the query part of the lr^2 term follows from Isserlis' theorem
(``theory.fields.add_fourth_moments``). Only the support fields are sampled (and, for
P > EXACT_NOISE_SUPPORT, the label noise: its basis would make a support set cost O(P^2)). The
one part that is quartic in e through the inner loop's Jacobian (the support part of the lr^2
term, second order) uses one sampled e per support set.

Sampling. Fields z_p = S_Omega xi_p with S_Omega = Omega^(1/2) the symmetric square root and xi
standard normals from scrambled Sobol points (pseudo-random ones beyond the dimension of the Sobol
tables, P (K + M) > ~21000) (``support_sample``): ``theory.mc_streams``
independently scrambled streams, each of 2^m points, nested (a larger budget extends every stream,
keeping its first points). Every point is completed by its images under a group of unit
permutations (all permutations of the student units, and those of the teacher units that leave u0
and T unchanged): the sample set is then invariant, and since S_Omega commutes with a permutation
that leaves Omega unchanged, the Monte Carlo right-hand side is exactly equivariant. A permutation-
symmetric state (the plateau) stays symmetric, as in the exact dynamics.

Control variates (inner_steps > 1). The same points give the one-step estimates, whose expectation
is known in closed form (``theory.fewshot.one_step_loss_and_gradient``). Each component c of the
loss and of the drift is estimated by x_c - beta_c (x1_c - exact1_c), beta_c = Cov(x_c, x1_c) /
Var(x1_c) fitted on the same points.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.special import ndtri
from scipy.stats import qmc

from metaode.theory.activations import g, g_prime
from metaode.theory.anil import loss_cotangents
from metaode.theory.fields import (
    add_fourth_moments,
    field_covariance,
    meta_loss,
    symmetrise_pairs,
)
from metaode.theory.flow import chain_to_overlaps, overlap_drift

#: Largest permutation group whose images complete every sample point (K! beyond: the cyclic shifts
#: of the student units; the teacher part is dropped when the product would exceed it).
MAX_GROUP = 24


@dataclass(frozen=True)
class SupportSample:
    """Standard normals of the sampled support sets of one Monte Carlo estimate.

    ``fields[i]`` (P x (K + M)) gives the support fields z_p = S_Omega fields[i, p]; ``task[i]``
    (M + P) is the sampled (u - u0) / task_std and zeta of the one term that samples the task;
    ``stream[i]`` the stream of point i (points are grouped by stream, in stream order).
    """

    fields: np.ndarray
    task: np.ndarray
    stream: np.ndarray
    streams: int

    @property
    def size(self) -> int:
        return self.fields.shape[0]

    def only(self, stream: int) -> SupportSample:
        """The points of one stream."""
        keep = self.stream == stream
        return SupportSample(self.fields[keep], self.task[keep], self.stream[keep], 1)


def unit_permutations(K: int, M: int, u0: np.ndarray, T: np.ndarray) -> list[tuple]:
    """(student permutation, teacher permutation) pairs of the symmetrising group.

    All K! permutations of the student units (the dynamics are equivariant under them for every
    config), or the K cyclic shifts when K! > MAX_GROUP; times the permutations of the teacher units
    that leave u0 and T unchanged, while the product stays within MAX_GROUP.
    """
    if np.prod(np.arange(1, K + 1)) <= MAX_GROUP:
        students = list(itertools.permutations(range(K)))
    else:
        students = [tuple((k + s) % K for k in range(K)) for s in range(K)]
    teachers = [tuple(range(M))]
    if np.prod(np.arange(1, M + 1)) * len(students) <= MAX_GROUP:
        teachers = [p for p in itertools.permutations(range(M))
                    if np.array_equal(u0[list(p)], u0) and np.array_equal(T[np.ix_(p, p)], T)]
    return [(s, t) for s in students for t in teachers]


def points_per_stream(budget: int, streams: int, group: int) -> int:
    """Sobol points per stream: the power of two that makes streams * group * 2^m >= budget."""
    base = max(1, -(-budget // (streams * group)))
    return 1 << int(np.ceil(np.log2(base)))


def support_sample(K: int, M: int, P: int, u0: np.ndarray, T: np.ndarray, budget: int,
                   streams: int, seed: int) -> SupportSample:
    """The sample of about ``budget`` support sets (module docstring): ``streams`` scrambled Sobol
    streams (seeds spawned from ``seed``) of 2^m base points each, every point with its images
    under ``unit_permutations``; the size is streams * |group| * 2^m >= budget."""
    n = K + M
    group = unit_permutations(K, M, np.asarray(u0, float), np.asarray(T, float))
    m = int(np.log2(points_per_stream(budget, streams, len(group))))
    dim = P * n + M + P
    tiny = np.finfo(float).tiny
    fields, task, stream = [], [], []
    for b, child in enumerate(np.random.SeedSequence(seed).spawn(streams)):
        rng = np.random.default_rng(child)
        if dim <= qmc.Sobol.MAXDIM:
            z = ndtri(np.clip(qmc.Sobol(dim, scramble=True, seed=rng).random_base2(m), tiny,
                              1.0 - tiny))
        else:  # beyond the Sobol tables (P (K + M) > ~21000): pseudo-random points
            z = rng.standard_normal((1 << m, dim))
        xi = z[:, : P * n].reshape(-1, P, n)
        eta = z[:, P * n :]
        for perm_s, perm_t in group:
            order = np.array(list(perm_s) + [K + t for t in perm_t])
            fields.append(xi[:, :, order])
            task.append(np.concatenate([eta[:, list(perm_t)], eta[:, M:]], axis=1))
            stream.append(np.full(xi.shape[0], b))
    return SupportSample(np.ascontiguousarray(np.concatenate(fields)),
                         np.ascontiguousarray(np.concatenate(task)),
                         np.concatenate(stream), streams)


@njit(cache=True)
def symmetric_root(omega: np.ndarray) -> np.ndarray:
    """Omega^(1/2), symmetric (negative eigenvalues of a rounded singular Omega taken as 0); it
    commutes with every permutation that leaves Omega unchanged."""
    vals, vecs = np.linalg.eigh(omega)
    return (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T


#: Largest support set whose label noise is integrated exactly (a basis vector per example, so a
#: support set costs O(P^2)); beyond it zeta is sampled with the fields.
EXACT_NOISE_SUPPORT = 8


@njit(cache=True)
def task_basis_maps(u0: np.ndarray, task_std: float, noise: float, P: int):
    """(U, S, d): u = U e and E[e e^T] = diag(S) for e = (1, u - u0, zeta); zeta only with noise
    and P <= EXACT_NOISE_SUPPORT."""
    M = u0.shape[0]
    d = 1 + M + (P if noise > 0.0 and P <= EXACT_NOISE_SUPPORT else 0)
    U = np.zeros((M, d))
    U[:, 0] = u0
    S = np.ones(d)
    for m in range(M):
        U[m, 1 + m] = 1.0
        S[1 + m] = task_std * task_std
    return U, S, d


@njit(cache=True)
def support_features(acts, xi: np.ndarray, task_i: np.ndarray, root: np.ndarray, K: int,
                     u0: np.ndarray, noise: float, z: np.ndarray, phi: np.ndarray, gp: np.ndarray,
                     Y: np.ndarray) -> None:
    """Fill (z, phi, gp, Y) of one support set: fields z = xi S_Omega, features phi = g(lambda),
    gp = g'(lambda), and the labels in the task basis Y = [psi u0 | psi | noise I_P] (P x d);
    without the zeta basis (P > EXACT_NOISE_SUPPORT) the sampled noise task_i[M + p] enters the
    first column instead."""
    P, n = xi.shape
    M = n - K
    for p in range(P):
        for a in range(n):
            acc = 0.0
            for b in range(n):
                acc += xi[p, b] * root[b, a]
            z[p, a] = acc
        for k in range(K):
            phi[p, k] = g(acts.student, z[p, k])
            gp[p, k] = g_prime(acts.student, z[p, k])
        Y[p, :] = 0.0
        for m in range(M):
            psi = g(acts.teacher, z[p, K + m])
            Y[p, 0] += u0[m] * psi
            Y[p, 1 + m] = psi
        if Y.shape[1] > 1 + M:
            Y[p, 1 + M + p] = noise
        else:
            Y[p, 0] += noise * task_i[M + p]


@njit(cache=True)
def inner_forward(phi: np.ndarray, Y: np.ndarray, w: np.ndarray, inner_lr: float,
                  Zs: np.ndarray) -> None:
    """Fill Zs (shape (s + 1, K, d)) with Z^(0) = [w | 0], Z^(r+1) = Z^(r) - (inner_lr / P) phi^T
    (phi Z^(r) - Y) = (I - inner_lr C^) Z^(r) + (inner_lr / P) phi^T Y."""
    P, K = phi.shape
    d = Y.shape[1]
    c = inner_lr / P
    Zs[0, :, :] = 0.0
    Zs[0, :, 0] = w
    for r in range(Zs.shape[0] - 1):
        for p in range(P):
            for j in range(d):
                resid = -Y[p, j]
                for k in range(K):
                    resid += phi[p, k] * Zs[r, k, j]
                for k in range(K):
                    if p == 0:
                        Zs[r + 1, k, j] = Zs[r, k, j]
                    Zs[r + 1, k, j] -= c * phi[p, k] * resid


@njit(cache=True)
def inner_backward(phi: np.ndarray, Y: np.ndarray, Zs: np.ndarray, inner_lr: float,
                   Zbar: np.ndarray, phibar: np.ndarray, proj: np.ndarray) -> None:
    """Reverse pass of ``inner_forward`` over Zs (its s + 1 heads): the cotangent Zbar on Z^(s) is
    replaced by Zbar^(0) and phibar (P x K) is filled. Per step, with resid = phi Z^(r) - Y and
    proj = phi Zbar^(r+1): phibar -= (inner_lr / P) (resid Zbar^(r+1)T + proj Z^(r)T),
    Zbar^(r) = Zbar^(r+1) - (inner_lr / P) phi^T proj. ``proj`` is workspace (P x d)."""
    P, K = phi.shape
    d = Y.shape[1]
    c = inner_lr / P
    phibar[:, :] = 0.0
    for r in range(Zs.shape[0] - 2, -1, -1):
        for p in range(P):
            for j in range(d):
                resid = -Y[p, j]
                pr = 0.0
                for k in range(K):
                    resid += phi[p, k] * Zs[r, k, j]
                    pr += phi[p, k] * Zbar[k, j]
                proj[p, j] = pr
                for k in range(K):
                    phibar[p, k] -= c * (resid * Zbar[k, j] + pr * Zs[r, k, j])
        for p in range(P):
            for k in range(K):
                for j in range(d):
                    Zbar[k, j] -= c * phi[p, k] * proj[p, j]


@njit(cache=True)
def query_loss(Z: np.ndarray, C: np.ndarray, DU: np.ndarray, S: np.ndarray,
               head_term: float) -> float:
    """``meta_loss``(Z, C, D, E, U, S) = sum_j S_j sum_k Z_kj (1/2 (C Z)_kj - (D U)_kj) + head_term
    with D U and head_term = 1/2 tr(S U^T E U) (``meta_loss`` at Z = 0) given: written out, once
    per support set."""
    K, d = Z.shape
    loss = 0.0
    for j in range(d):
        acc = 0.0
        for k in range(K):
            cz = 0.0
            for l in range(K):
                cz += C[k, l] * Z[l, j]
            acc += Z[k, j] * (0.5 * cz - DU[k, j])
        loss += S[j] * acc
    return loss + head_term


@njit(cache=True)
def _gradient_terms(Z, Zs, C, D, DU, head_term, U, S, phi, gp, Y, z, inner_lr, second_order,
                    out, Zbar, phibar, proj):
    """Write (loss, Cbar, Dbar, SQ, SR, wbar) of one support set, exact in e, into ``out``
    (Z = Zs[-1]; Zbar, phibar, proj are workspace).

    loss = meta_loss(Z) (``query_loss``: D U and 1/2 tr(S U^T E U) given), Cbar = 1/2 Z S Z^T,
    Dbar = -Z S U^T; second order: SQ = sum_p lambdabar_p lambda_p^T, SR = sum_p lambdabar_p
    nu_p^T with lambdabar_p = g'(lambda_p) (.) phibar_p, and wbar = Zbar^(0) e_0
    (``inner_backward``); first order: SQ = SR = 0 and wbar = (C Z - D U)_0.
    """
    K, d = Z.shape
    M = U.shape[0]
    P = phi.shape[0]
    out[0] = query_loss(Z, C, DU, S, head_term)
    loss_cotangents(Z, C, D, U, S, Zbar, out[1:1 + K * K].reshape(K, K),
                    out[1 + K * K:1 + K * K + K * M].reshape(K, M))
    i = 1 + K * K + K * M
    if not second_order:
        out[i:i + K * K + K * M] = 0.0
        i += K * K + K * M
        for k in range(K):
            out[i + k] = Zbar[k, 0]
        return
    inner_backward(phi, Y, Zs, inner_lr, Zbar, phibar, proj)
    n = z.shape[1]
    for k in range(K):
        for a in range(n):  # SQ (a < K) then SR (a >= K)
            acc = 0.0
            for p in range(P):
                acc += phibar[p, k] * gp[p, k] * z[p, a]
            if a < K:
                out[i + k * K + a] = acc
            else:
                out[i + K * K + k * M + (a - K)] = acc
    i += K * K + K * M
    for k in range(K):
        out[i + k] = Zbar[k, 0]


@njit(cache=True)
def support_moments(phi: np.ndarray, Y: np.ndarray, M: int, out: np.ndarray) -> None:
    """C^_kl (k <= l) and D^_km of one support set, C^ = phi^T phi / P, D^ = phi^T psi / P (psi
    = Y[:, 1:1 + M]), whose expectations are C and D (control variates with known mean)."""
    P, K = phi.shape
    i = 0
    for k in range(K):
        for l in range(k, K):
            acc = 0.0
            for p in range(P):
                acc += phi[p, k] * phi[p, l]
            out[i] = acc / P
            i += 1
    for k in range(K):
        for m in range(M):
            acc = 0.0
            for p in range(P):
                acc += phi[p, k] * Y[p, 1 + m]
            out[i] = acc / P
            i += 1


@njit(cache=True)
def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """x . y, summed in order (no BLAS call for a few entries)."""
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * y[i]
    return acc


@njit(cache=True)
def terms_size(K: int, M: int) -> int:
    """Length of one support set's (loss, Cbar, Dbar, SQ, SR, wbar)."""
    return 1 + 2 * K * K + 2 * K * M + K


@njit(cache=True)
def support_terms(acts, Q, R, T, w, u0, task_std, noise, inner_lr, steps, second_order, query,
                  fields, task, C, D, E, F, with_gradients, with_lr2_term):
    """Per support set, with ``with_gradients``: (loss, Cbar, Dbar, SQ, SR, wbar) after ``steps``
    inner steps (rows of ``grads``), and the control variates of known mean: the same after one
    step (``grads1``) and the support moments (``hats``, ``support_moments``); summed
    over the support sets, with ``with_lr2_term``: the Gaussian moments of y = (w', u) for the
    query part of the lr^2 term (M4 = sum E[y_k y_l y_a y_b], M2 = sum E[y_k y_l]) and its
    support part (second order) SD = sum_p Jac_p Gamma Jac_p^T at one sampled e, with
    lambdabar_p = Jac_p ghat and Gamma = E_query[ghat ghat^T] = gbar gbar^T (1 - 1/query)
    + (sum_ab c_a c_b F_..ab + noise^2 C) / query, c = (w', -u), gbar = C w' - D u.
    """
    K, M = R.shape
    n = K + M
    n_pts, P, _ = fields.shape
    U, S, d = task_basis_maps(u0, task_std, noise, P)
    root = symmetric_root(field_covariance(Q, R, T))
    size = terms_size(K, M)
    rows = n_pts if with_gradients else 0
    grads, grads1 = np.empty((rows, size)), np.empty((rows, size))
    hats = np.empty((rows, K * (K + 1) // 2 + K * M))
    M4 = np.zeros((K, K, n, n))
    M2 = np.zeros((K, K))
    SD = np.zeros((K, K))
    z, phi, gp, Y = np.empty((P, n)), np.empty((P, K)), np.empty((P, K)), np.empty((P, d))
    Zs = np.empty((steps + 1, K, d))
    Zbar, phibar, proj = np.empty((K, d)), np.empty((P, K)), np.empty((P, d))
    mean, cov = np.empty(n), np.empty((n, n))
    V = np.empty((n, d))
    V[K:] = U
    e = np.empty(d)
    Zs_e, Y_e = np.empty((steps + 1, K, 1)), np.empty((P, 1))
    cot, proj_e = np.empty((K, 1)), np.empty((P, 1))
    c = np.empty(n)
    gbar = np.empty(K)
    Gamma = np.empty((K, K))
    jac = np.empty((P, K, K))
    DU = D @ U
    head_term = meta_loss(np.zeros((K, d)), C, D, E, U, S)
    for i in range(n_pts):
        support_features(acts, fields[i], task[i], root, K, u0, noise, z, phi, gp, Y)
        inner_forward(phi, Y, w, inner_lr, Zs)
        if with_gradients:
            _gradient_terms(Zs[steps], Zs, C, D, DU, head_term, U, S, phi, gp, Y, z, inner_lr,
                            second_order, grads[i], Zbar, phibar, proj)
            _gradient_terms(Zs[1], Zs[:2], C, D, DU, head_term, U, S, phi, gp, Y, z, inner_lr,
                            second_order, grads1[i], Zbar, phibar, proj)
            support_moments(phi, Y, M, hats[i])
        if not with_lr2_term:
            continue
        V[:K] = Zs[steps]
        for a in range(n):
            mean[a] = V[a, 0]
            for b in range(a, n):
                acc = 0.0
                for j in range(1, d):
                    acc += V[a, j] * S[j] * V[b, j]
                cov[a, b] = cov[b, a] = acc
        add_fourth_moments(mean, cov, K, M4, M2)
        if not second_order:
            continue
        e[0] = 1.0
        for m in range(M):
            e[1 + m] = task_std * task[i, m]
        for j in range(d - 1 - M):
            e[1 + M + j] = task[i, M + j]
        for r in range(steps + 1):
            for k in range(K):
                Zs_e[r, k, 0] = _dot(Zs[r, k], e)
        for p in range(P):
            Y_e[p, 0] = _dot(Y[p], e)
        for a in range(n):
            c[a] = _dot(V[a], e) if a < K else -_dot(V[a], e)
        for k in range(K):
            acc = 0.0
            for a in range(n):
                acc += (C[k, a] if a < K else D[k, a - K]) * (c[a] if a < K else -c[a])
            gbar[k] = acc
        for k in range(K):
            for l in range(K):
                cfc = 0.0
                for a in range(n):
                    for b in range(n):
                        cfc += F[k, l, a, b] * c[a] * c[b]
                Gamma[k, l] = (gbar[k] * gbar[l] * (1.0 - 1.0 / query)
                               + (cfc + noise * noise * C[k, l]) / query)
        for j in range(K):
            cot[:, 0] = 0.0
            cot[j, 0] = 1.0
            inner_backward(phi, Y_e, Zs_e, inner_lr, cot, phibar, proj_e)
            for p in range(P):
                for k in range(K):
                    jac[p, k, j] = phibar[p, k] * gp[p, k]
        for p in range(P):
            for k in range(K):
                for l in range(K):
                    acc = 0.0
                    for a in range(K):
                        for b in range(K):
                            acc += jac[p, k, a] * Gamma[a, b] * jac[p, l, b]
                    SD[k, l] += acc
    symmetrise_pairs(M4)
    return grads, grads1, hats, M4, M2, SD


@njit(cache=True)
def drift_of_terms(acts, terms: np.ndarray, Q, R, T, K: int, M: int) -> np.ndarray:
    """(loss, X + X^T upper triangle, 2 G R + H T + SR, wbar) from mean (loss, Cbar, Dbar, SQ, SR,
    wbar): the loss and the drift up to the factors -lr, -lr, -lr_head (docs/model.md §5.2), with
    (G, H) = ``chain_to_overlaps``(Cbar, Dbar) and X = 2 G Q + H R^T + SQ. Linear in ``terms``."""
    i = 1
    Cbar = terms[i:i + K * K].reshape(K, K)
    i += K * K
    Dbar = terms[i:i + K * M].reshape(K, M)
    i += K * M
    SQ = terms[i:i + K * K].reshape(K, K)
    i += K * K
    SR = terms[i:i + K * M].reshape(K, M)
    i += K * M
    G, H = chain_to_overlaps(acts, Q, R, T, np.ascontiguousarray(Cbar),
                             np.ascontiguousarray(Dbar))
    return drift_vector(terms[0], G, H, np.ascontiguousarray(SQ), np.ascontiguousarray(SR),
                        terms[i:i + K].copy(), Q, R, T)


@njit(cache=True)
def drift_vector(loss, G, H, SQ, SR, wbar, Q, R, T) -> np.ndarray:
    """(loss, X + X^T, 2 G R + H T + SR, wbar) with X = 2 G Q + H R^T + SQ, the last three in the
    layout of the state (``theory.state.pack``)."""
    state = overlap_drift(Q, R, T, G, H, SQ, SR, wbar)
    out = np.empty(1 + state.shape[0])
    out[0] = loss
    out[1:] = state
    return out


@njit(cache=True)
def drift_map(acts, Q, R, T, K: int, M: int) -> np.ndarray:
    """The matrix of the linear map ``drift_of_terms`` (rows: drift components)."""
    size = terms_size(K, M)
    unit = np.zeros(size)
    first = drift_of_terms(acts, unit, Q, R, T, K, M)
    L = np.empty((first.shape[0], size))
    for j in range(size):
        unit[:] = 0.0
        unit[j] = 1.0
        L[:, j] = drift_of_terms(acts, unit, Q, R, T, K, M)
    return L


@njit(cache=True)
def controlled_mean(x: np.ndarray, h: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Column means of x corrected by control variates h of known mean: mean(x) - (mean(h) - known)
    beta, with beta the least-squares regression of the centred x on the centred h (fitted on the
    same points; for every column of x all columns of h; LAPACK's gelsd, singular values below
    1e-10 of the largest dropped)."""
    xbar, hbar = column_means(x), column_means(h)
    beta = np.linalg.lstsq(h - hbar, x - xbar, rcond=1e-10)[0]
    return xbar - np.dot(hbar - known, beta)


@njit(cache=True)
def column_means(x: np.ndarray) -> np.ndarray:
    """The mean of each column of x, the rows summed in order (as numpy's mean over axis 0)."""
    out = np.zeros(x.shape[1])
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[j] += x[i, j]
    return out / x.shape[0]


@njit(cache=True)
def adaptation_errors(acts, Q, R, T, w, u0, task_std, noise, inner_lr, steps, fields, task, C, D,
                      E):
    """Per support set: E_task eps(w^(r); u) for r = 0..steps (rows), exact in e."""
    n_pts, P, n = fields.shape
    K = Q.shape[0]
    U, S, d = task_basis_maps(u0, task_std, noise, P)
    root = symmetric_root(field_covariance(Q, R, T))
    z, phi, gp, Y = np.empty((P, n)), np.empty((P, K)), np.empty((P, K)), np.empty((P, d))
    Zs = np.empty((steps + 1, K, d))
    out = np.empty((n_pts, steps + 1))
    for i in range(n_pts):
        support_features(acts, fields[i], task[i], root, K, u0, noise, z, phi, gp, Y)
        inner_forward(phi, Y, w, inner_lr, Zs)
        for r in range(steps + 1):
            out[i, r] = meta_loss(Zs[r], C, D, E, U, S)
    return out
