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
(``theory.fields.add_diffusion``). Only the support fields are sampled (and, for
P > EXACT_NOISE_SUPPORT, the label noise: its basis would make a support set cost O(P^2)). The
one part that is quartic in e through the inner loop's Jacobian (the support part of the lr^2
term, second order) uses one sampled e per support set and its mirror image. maml (with a
first-layer inner step, ``theory.maml``) adds per support set its difference to anil at the
sampled e (``maml_difference``).

Sampling. Fields z_p = S_Omega xi_p with S_Omega = Omega^(1/2) the symmetric square root and xi
standard normals from scrambled Sobol points (pseudo-random ones beyond the dimension of the Sobol
tables, P (K + M) > ~21000) (``support_sample``): ``theory.mc_streams``
independently scrambled streams, each of 2^m points, nested (a larger budget extends every stream,
keeping its first points). Every point is completed by its images under a group of unit
permutations (all permutations of the student units, and those of the teacher units that leave u0
and T unchanged): the sample set is then invariant, and since S_Omega commutes with a permutation
that leaves Omega unchanged, the Monte Carlo right-hand side is exactly equivariant. A permutation-
symmetric state (the plateau) stays symmetric, as in the exact dynamics.

Control variates. The same points give the one-step estimates, whose expectation is known in
closed form (``theory.fewshot.one_step_loss_and_gradient``), and the support moments C^, D^ (means
C, D). The loss and drift (inner_steps > 1) are controlled by both, the lr^2 term by the support
moments: the mean response minus hbar beta, beta the least-squares regression of the responses on
the controls fitted on the same points, all from the sums of one parallel pass over the sets
(``support_statistics``, ``controlled_mean``; docs/model.md §9.7).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from scipy.special import ndtri
from scipy.stats import qmc

from metaode.simulations.fewshot import inner_loop_fields, inner_loop_reverse
from metaode.theory.activations import Activations, g, g_prime
from metaode.theory.anil import loss_cotangents
from metaode.theory.fields import (
    add_diffusion,
    field_covariance,
    head_loss,
    loss_of_products,
    meta_loss,
    noise_weights,
    signed_i4_tensor,
    small_product,
    student_pairs,
)
from metaode.theory.flow import chain_apply, chain_coefficients, overlap_drift

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


@njit(cache=True, inline="always")
def support_features(acts, fields: np.ndarray, i: int, task: np.ndarray, root: np.ndarray,
                     K: int, u0: np.ndarray, noise: float, z: np.ndarray, phi: np.ndarray,
                     gp: np.ndarray, Y: np.ndarray) -> None:
    """Fill (z, phi, gp, Y) of support set i: fields z = xi S_Omega (xi = fields[i]), features
    phi = g(lambda), gp = g'(lambda), and the labels in the task basis Y = [psi u0 | psi |
    noise I_P] (P x d); without the zeta basis (P > EXACT_NOISE_SUPPORT) the sampled noise
    task[i, M + p] enters the first column instead."""
    P, n = fields.shape[1], fields.shape[2]
    M = n - K
    d = Y.shape[1]
    for p in range(P):
        for a in range(n):
            acc = 0.0
            for b in range(n):
                acc += fields[i, p, b] * root[b, a]
            z[p, a] = acc
        for k in range(K):
            phi[p, k] = g(acts.student, z[p, k])
            gp[p, k] = g_prime(acts.student, z[p, k])
        y0 = 0.0
        for m in range(M):
            psi = g(acts.teacher, z[p, K + m])
            y0 += u0[m] * psi
            Y[p, 1 + m] = psi
        for j in range(1 + M, d):
            Y[p, j] = noise if j == 1 + M + p else 0.0
        if d == 1 + M:
            y0 += noise * task[i, M + p]
        Y[p, 0] = y0


@njit(cache=True, inline="always")
def inner_forward(phi: np.ndarray, Y: np.ndarray, w: np.ndarray, inner_lr: float,
                  Zs: np.ndarray) -> None:
    """Fill Zs (shape (s + 1, K, d)) with Z^(0) = [w | 0], Z^(r+1) = Z^(r) - (inner_lr / P) phi^T
    (phi Z^(r) - Y) = (I - inner_lr C^) Z^(r) + (inner_lr / P) phi^T Y."""
    P, K = phi.shape
    d = Y.shape[1]
    c = inner_lr / P
    for k in range(K):
        Zs[0, k, 0] = w[k]
        for j in range(1, d):
            Zs[0, k, j] = 0.0
    for r in range(Zs.shape[0] - 1):
        for k in range(K):
            for j in range(d):
                Zs[r + 1, k, j] = Zs[r, k, j]
        for p in range(P):
            for j in range(d):
                resid = -Y[p, j]
                for k in range(K):
                    resid += phi[p, k] * Zs[r, k, j]
                for k in range(K):
                    Zs[r + 1, k, j] -= c * phi[p, k] * resid


@njit(cache=True, inline="always")
def inner_backward(phi: np.ndarray, Y: np.ndarray, Zs: np.ndarray, steps: int, inner_lr: float,
                   Zbar: np.ndarray, phibar: np.ndarray, proj: np.ndarray) -> None:
    """Reverse pass of ``inner_forward`` over its first ``steps`` steps (heads Zs[0..steps]): the
    cotangent Zbar on Z^(steps) is replaced by Zbar^(0) and phibar (P x K) is filled. Per step,
    with resid = phi Z^(r) - Y and proj = phi Zbar^(r+1): phibar -= (inner_lr / P) (resid
    Zbar^(r+1)T + proj Z^(r)T), Zbar^(r) = Zbar^(r+1) - (inner_lr / P) phi^T proj. ``proj`` is
    workspace (P x d)."""
    P, K = phi.shape
    d = Y.shape[1]
    c = inner_lr / P
    for p in range(P):
        for k in range(K):
            phibar[p, k] = 0.0
    for r in range(steps - 1, -1, -1):
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


@njit(cache=True, inline="always")
def write_direction_terms(lb: np.ndarray, z: np.ndarray, second_order: bool, wbar: np.ndarray,
                          out: np.ndarray, at: int) -> None:
    """out[at:] = (SQ, SR, wbar) of one support set in the layout of ``terms_size``: second order
    SQ = sum_p lb_p lambda_p^T and SR = sum_p lb_p nu_p^T, with z_p = (lambda_p, nu_p) the fields of
    support example p and lb_p = lambdabar_p its cotangent (P x K); first order SQ = SR = 0."""
    P, K = lb.shape
    n = z.shape[1]
    M = n - K
    for k in range(K):
        for a in range(n):  # SQ (a < K) then SR (a >= K)
            acc = 0.0
            if second_order:
                for p in range(P):
                    acc += lb[p, k] * z[p, a]
            if a < K:
                out[at + k * K + a] = acc
            else:
                out[at + K * K + k * M + (a - K)] = acc
    at += K * K + K * M
    for k in range(K):
        out[at + k] = wbar[k]


@njit(cache=True, inline="always")
def gradient_terms(Zs, steps, C, D, DU, head_term, U, S, phi, gp, Y, z, inner_lr, second_order,
                   out, Zbar, phibar, proj):
    """Write (loss, Cbar, Dbar, SQ, SR, wbar) of one support set after ``steps`` inner steps
    (Z = Zs[steps]), exact in e, into ``out`` (Zbar, phibar, proj: workspace).

    loss = meta_loss(Z) (``loss_of_products``: D U and 1/2 tr(S U^T E U) given), Cbar = 1/2 Z S Z^T,
    Dbar = -Z S U^T; second order: SQ = sum_p lambdabar_p lambda_p^T, SR = sum_p lambdabar_p
    nu_p^T with lambdabar_p = g'(lambda_p) (.) phibar_p, and wbar = Zbar^(0) e_0
    (``inner_backward``); first order: SQ = SR = 0 and wbar = (C Z - D U)_0.
    """
    Z = Zs[steps]
    K, d = Z.shape
    M = U.shape[0]
    P = phi.shape[0]
    out[0] = loss_of_products(Z, C, DU, S, head_term)
    loss_cotangents(Z, C, D, U, S, Zbar, out[1:1 + K * K].reshape(K, K),
                    out[1 + K * K:1 + K * K + K * M].reshape(K, M))
    i = 1 + K * K + K * M
    if second_order:
        inner_backward(phi, Y, Zs, steps, inner_lr, Zbar, phibar, proj)
        for p in range(P):  # lambdabar_p = g'(lambda_p) (.) phibar_p
            for k in range(K):
                phibar[p, k] *= gp[p, k]
    write_direction_terms(phibar, z, second_order, Zbar[:, 0], out, i)


@njit(cache=True, inline="always")
def support_moments(phi: np.ndarray, Y: np.ndarray, C: np.ndarray, D: np.ndarray,
                    out: np.ndarray, at: int) -> None:
    """out[at:] = C^_kl - C_kl (k <= l), then D^_km - D_km, of one support set: C^ = phi^T phi / P
    and D^ = phi^T psi / P (psi = Y[:, 1:1 + M]), control variates of mean zero."""
    P, K = phi.shape
    M = D.shape[1]
    i = at
    for k in range(K):
        for l in range(k, K):
            acc = 0.0
            for p in range(P):
                acc += phi[p, k] * phi[p, l]
            out[i] = acc / P - C[k, l]
            i += 1
    for k in range(K):
        for m in range(M):
            acc = 0.0
            for p in range(P):
                acc += phi[p, k] * Y[p, 1 + m]
            out[i] = acc / P - D[k, m]
            i += 1


@njit(cache=True)
def terms_size(K: int, M: int) -> int:
    """Length of one support set's (loss, Cbar, Dbar, SQ, SR, wbar)."""
    return 1 + 2 * K * K + 2 * K * M + K


@njit(cache=True, inline="always")
def query_diffusion(Zs, steps, U, root_S, W, N, pairs, query, out, at, X, Y, forms) -> None:
    """out[at:at + K(K+1)/2] = the query part of Phi of one support set (k <= l, in the order of
    ``theory.fields.student_pairs``): ``theory.fields.add_diffusion`` of the Gaussian
    y = (w', u) = V e, V = [Z; U] (Z = Zs[steps]), over tasks: mean V e_0 and covariance
    sum_{j >= 1} S_j V_j V_j^T, i.e. X = [V_0 | sqrt(S_j) V_j] (root_S = sqrt(S)), divided by
    query. X, Y, forms: workspace."""
    K, d = Zs.shape[1], Zs.shape[2]
    M = U.shape[0]
    for j in range(d):
        for k in range(K):
            X[k, j] = root_S[j] * Zs[steps, k, j]
        for m in range(M):
            X[K + m, j] = root_S[j] * U[m, j]
    for j in range(at, at + pairs.shape[0]):
        out[j] = 0.0
    add_diffusion(W, N, pairs, X, 1.0 / query, out, at, Y, forms)


@njit(cache=True, inline="always")
def query_gradient_moment(c, C, D, F, noise, query, gbar, Gamma) -> None:
    """Gamma = E_query[ghat ghat^T] = gbar gbar^T (1 - 1/query) + (sum_ab c_a c_b F_..ab +
    noise^2 C) / query, the second moment of the query gradient ghat = (1/query) sum_q Delta_q
    g(lambda_q) with respect to the adapted head, for the signed head c = (w', -u):
    gbar = C w' - D u (docs/model.md §9.4)."""
    K = C.shape[0]
    n = c.shape[0]
    for k in range(K):
        acc = 0.0
        for a in range(n):  # C w' - D u = sum_a (C | D)_ka c_a
            acc += (C[k, a] if a < K else D[k, a - K]) * c[a]
        gbar[k] = acc
    for k in range(K):
        for l in range(k, K):
            cfc = 0.0
            for a in range(n):
                ca = 0.0
                for b in range(n):
                    ca += F[k, l, a, b] * c[b]
                cfc += c[a] * ca
            Gamma[k, l] = Gamma[l, k] = (gbar[k] * gbar[l] * (1.0 - 1.0 / query)
                                         + (cfc + noise * noise * C[k, l]) / query)


@njit(cache=True, inline="always")
def add_support_part(jac, Gamma, scale, out, at) -> None:
    """out[at:at + K(K+1)/2] += scale (sum_p Jac_p Gamma Jac_p^T)_kl (k <= l): the support part
    of Phi, lambdabar_p = Jac_p ghat, Gamma = ``query_gradient_moment``."""
    P, K = jac.shape[0], jac.shape[1]
    i = at
    for k in range(K):
        for l in range(k, K):
            acc = 0.0
            for p in range(P):
                for a in range(K):
                    ga = 0.0
                    for b in range(K):
                        ga += Gamma[a, b] * jac[p, l, b]
                    acc += jac[p, k, a] * ga
            out[i] += scale * acc
            i += 1


@njit(cache=True, inline="always")
def support_diffusion(Zs, steps, U, e, phi, gp, Y, C, D, F, noise, inner_lr, query, scale, out,
                      at, Zs_e, Y_e, c, gbar, Gamma, cot, phibar, proj_e, jac) -> None:
    """Add to out[at:at + K(K+1)/2] scale times the support part of Phi of one support set (second
    order, docs/model.md §9.4) at the task e: ``add_support_part`` with lambdabar_p = Jac_p ghat
    (``inner_backward`` on the heads projected on e, one pass per unit of the head) and Gamma of
    ``query_gradient_moment`` at c = (w', -u) = (Z e, -U e). The other arrays are workspace."""
    K, d = Zs.shape[1], Zs.shape[2]
    M = U.shape[0]
    P = phi.shape[0]
    for r in range(steps + 1):
        for k in range(K):
            acc = 0.0
            for j in range(d):
                acc += Zs[r, k, j] * e[j]
            Zs_e[r, k, 0] = acc
    for p in range(P):
        acc = 0.0
        for j in range(d):
            acc += Y[p, j] * e[j]
        Y_e[p, 0] = acc
    for k in range(K):
        c[k] = Zs_e[steps, k, 0]
    for m in range(M):
        acc = 0.0
        for j in range(d):
            acc += U[m, j] * e[j]
        c[K + m] = -acc
    query_gradient_moment(c, C, D, F, noise, query, gbar, Gamma)
    for j in range(K):
        for k in range(K):
            cot[k, 0] = 1.0 if k == j else 0.0
        inner_backward(phi, Y_e, Zs_e, steps, inner_lr, cot, phibar, proj_e)
        for p in range(P):
            for k in range(K):
                jac[p, k, j] = phibar[p, k] * gp[p, k]
    add_support_part(jac, Gamma, scale, out, at)


@njit(cache=True, inline="always")
def task_vector(task, i, M, task_std, sign, e) -> None:
    """e = (1, sign task_std eta, sign zeta) of support set i (task[i] = (eta, zeta); zeta only
    where e has its columns): the set's sampled task, sign = -1 its mirror image."""
    e[0] = 1.0
    for m in range(M):
        e[1 + m] = sign * task_std * task[i, m]
    for j in range(e.shape[0] - 1 - M):
        e[1 + M + j] = sign * task[i, M + j]


@njit(cache=True)
def maml_head_terms(acts, lams, ws, y, eye, u, C, D, inner_lr, steps, adapt_J, second_order, z,
                    row, lb, gq) -> None:
    """Write (loss, Cbar, Dbar, SQ, SR, wbar) of one support set at one task (head u, labels y)
    into ``row`` (the layout of ``terms_size``) from the field-space inner loop (lams, ws) of
    ``simulations.fewshot.inner_loop_fields``: loss = eps(w'; u) without the head term
    1/2 u^T E u, Cbar = 1/2 w' w'^T, Dbar = -w' u^T; second order: wbar and lambdabar_p from the
    reverse pass (``inner_loop_reverse``) of the cotangent gq = C w' - D u on w',
    SQ = sum_p lambdabar_p lambda_p^T, SR = sum_p lambdabar_p nu_p^T; first order: SQ = SR = 0,
    wbar = C w' - D u. lb (P x K), gq (K): workspace."""
    K, M = D.shape
    P = lb.shape[0]
    wp = ws[steps]
    loss = 0.0
    for k in range(K):
        cw, du = 0.0, 0.0
        for l in range(K):
            cw += C[k, l] * wp[l]
        for m in range(M):
            du += D[k, m] * u[m]
        gq[k] = cw - du
        loss += wp[k] * (0.5 * cw - du)
    row[0] = loss
    i = 1
    for k in range(K):
        for l in range(K):
            row[i] = 0.5 * wp[k] * wp[l]
            i += 1
    for k in range(K):
        for m in range(M):
            row[i] = -wp[k] * u[m]
            i += 1
    if not second_order:
        write_direction_terms(lb, z, False, gq, row, i)
        return
    lb[:, :] = 0.0
    wbar = inner_loop_reverse(acts, lams, ws, y, eye, inner_lr, P, adapt_J, lb, gq)
    write_direction_terms(lb, z, True, wbar, row, i)


@njit(cache=True)
def maml_support_diffusion(acts, lams, ws, y, eye, inner_lr, adapt_J, u, C, D, F, noise, query,
                           scale, out, at, lb, jac, c, gbar, Gamma, unit) -> None:
    """Add to out[at:at + K(K+1)/2] scale times the support part of Phi (second order) of one
    support set at one task with the field-space inner loop (lams, ws): ``add_support_part``
    with Jac_p = dlambdabar_p / dwbar' (``inner_loop_reverse`` of unit cotangents) and Gamma of
    ``query_gradient_moment`` at c = (w', -u). The other arrays are workspace."""
    K, M = D.shape
    P = lb.shape[0]
    steps = ws.shape[0] - 1
    for k in range(K):
        c[k] = ws[steps, k]
    for m in range(M):
        c[K + m] = -u[m]
    query_gradient_moment(c, C, D, F, noise, query, gbar, Gamma)
    for j in range(K):
        for k in range(K):
            unit[k] = 1.0 if k == j else 0.0
        lb[:, :] = 0.0
        inner_loop_reverse(acts, lams, ws, y, eye, inner_lr, P, adapt_J, lb, unit)
        for p in range(P):
            for k in range(K):
                jac[p, k, j] = lb[p, k]
    add_support_part(jac, Gamma, scale, out, at)


@njit(cache=True)
def maml_difference(acts, z, Y, U, e, w, C, D, F, noise, inner_lr, steps, second_order, query,
                    with_gradients, with_lr2_term, W, N, pairs, out, at, eye, lam, y, u, row, lb,
                    gq, X1, Y1, forms1, jac, c, gbar, Gamma, unit) -> None:
    """Add to ``out`` the maml - anil difference of one support set at its sampled task e
    (docs/model.md §11.3), both through the field-space inner loop
    ``simulations.fewshot.inner_loop_fields`` with the support inputs' Gram matrix at its limit,
    the identity ``eye`` (adapt_J for maml, not for anil): to out[:terms_size] (with_gradients)
    the difference of ``maml_head_terms``; to out[at:at + K(K+1)/2] (with_lr2_term) that of the
    query part of Phi at this one task (``add_diffusion`` of the head y = (w', u) without spread,
    divided by query) and, second order, of ``maml_support_diffusion``. The other arrays are
    workspace."""
    P, K = lam.shape
    M = U.shape[0]
    d = e.shape[0]
    for p in range(P):
        acc = 0.0
        for j in range(d):
            acc += Y[p, j] * e[j]
        y[p] = acc
        for k in range(K):
            lam[p, k] = z[p, k]
    for m in range(M):
        acc = 0.0
        for j in range(d):
            acc += U[m, j] * e[j]
        u[m] = acc
    for variant in range(2):
        adapt_J = variant == 0
        sign = 1.0 if adapt_J else -1.0
        lams, ws, _ = inner_loop_fields(acts, lam, y, eye, w, inner_lr, steps, P, adapt_J)
        if with_gradients:
            maml_head_terms(acts, lams, ws, y, eye, u, C, D, inner_lr, steps, adapt_J,
                            second_order, z, row, lb, gq)
            for j in range(row.shape[0]):
                out[j] += sign * row[j]
        if with_lr2_term:
            for k in range(K):
                X1[k, 0] = ws[steps, k]
            for m in range(M):
                X1[K + m, 0] = u[m]
            add_diffusion(W, N, pairs, X1, sign / query, out, at, Y1, forms1)
            if second_order:
                maml_support_diffusion(acts, lams, ws, y, eye, inner_lr, adapt_J, u, C, D, F,
                                       noise, query, sign, out, at, lb, jac, c, gbar, Gamma, unit)


#: Support sets per chunk of ``support_statistics``: the chunks are summed in order, so its result
#: does not depend on the number of threads.
CHUNK = 64


@njit(cache=True)
def chunk_statistics(acts, Q, R, w, u0, task_std, noise, inner_lr, steps, second_order, query,
                     fields, task, lo, hi, C, D, F, L, known1, with_gradients, with_lr2_term, maml,
                     loss_only, nx, ng, root, root_S, U, S, DU, head_term, W, N, pairs, sum_h,
                     sum_r, sum_hh, sum_hr) -> None:
    """Add the sums over the support sets lo..hi - 1 of h, r, h h^T (upper triangle) and h r^T
    (the per-set controls h and responses r of ``support_statistics``) to sum_h, sum_r, sum_hh,
    sum_hr: one chunk of its parallel pass (a function of its own, so that numba's parallel
    transform sees a loop of one call instead of the whole inlined per-set code); h starts with
    nx controls before the support moments, r with ng gradient terms before Phi."""
    K, M = R.shape
    P, n = fields.shape[1], fields.shape[2]
    d = U.shape[1]
    size = terms_size(K, M)
    p, nr = sum_h.shape[0], sum_r.shape[0]
    z, phi, gp, Y = np.empty((P, n)), np.empty((P, K)), np.empty((P, K)), np.empty((P, d))
    Zs = np.empty((steps + 1, K, d))
    Zbar, phibar, proj = np.empty((K, d)), np.empty((P, K)), np.empty((P, d))
    g1, h, r = np.empty(size), np.empty(p), np.empty(nr)
    X, Yw, forms = np.empty((n, d)), np.empty((n, d)), np.empty((pairs.shape[0], d, d))
    e = np.empty(d)
    Zs_e, Y_e, c, gbar = np.empty((steps + 1, K, 1)), np.empty((P, 1)), np.empty(n), np.empty(K)
    Gamma, cot, proj_e = np.empty((K, K)), np.empty((K, 1)), np.empty((P, 1))
    jac = np.empty((P, K, K))
    eye, lam, y, u = np.eye(P), np.empty((P, K)), np.empty(P), np.empty(M)
    row, lb, gq, unit = np.empty(size), np.empty((P, K)), np.empty(K), np.empty(K)
    X1, Y1, forms1 = np.empty((n, 1)), np.empty((n, 1)), np.empty((pairs.shape[0], 1, 1))
    for i in range(lo, hi):
        support_features(acts, fields, i, task, root, K, u0, noise, z, phi, gp, Y)
        inner_forward(phi, Y, w, inner_lr, Zs)
        support_moments(phi, Y, C, D, h, nx)
        if loss_only:
            h[0] = loss_of_products(Zs[1], C, DU, S, head_term) - known1[0]
            r[0] = loss_of_products(Zs[steps], C, DU, S, head_term)
        elif with_gradients:
            gradient_terms(Zs, steps, C, D, DU, head_term, U, S, phi, gp, Y, z, inner_lr,
                           second_order, r, Zbar, phibar, proj)
            if steps > 1:
                gradient_terms(Zs, 1, C, D, DU, head_term, U, S, phi, gp, Y, z, inner_lr,
                               second_order, g1, Zbar, phibar, proj)
            else:
                for j in range(size):
                    g1[j] = r[j]
            for a in range(nx):
                acc = -known1[a]
                for j in range(size):
                    acc += L[a, j] * g1[j]
                h[a] = acc
        if with_lr2_term:
            query_diffusion(Zs, steps, U, root_S, W, N, pairs, query, r, ng, X, Yw, forms)
            for mirror in range(2 if second_order else 0):
                task_vector(task, i, M, task_std, 1.0 - 2.0 * mirror, e)
                support_diffusion(Zs, steps, U, e, phi, gp, Y, C, D, F, noise, inner_lr,
                                  query, 0.5, r, ng, Zs_e, Y_e, c, gbar, Gamma, cot, phibar,
                                  proj_e, jac)
        if maml:
            task_vector(task, i, M, task_std, 1.0, e)
            maml_difference(acts, z, Y, U, e, w, C, D, F, noise, inner_lr, steps,
                            second_order, query, with_gradients, with_lr2_term, W, N, pairs,
                            r, ng, eye, lam, y, u, row, lb, gq, X1, Y1, forms1, jac, c, gbar,
                            Gamma, unit)
        for a in range(p):
            ha = h[a]
            sum_h[a] += ha
            for b in range(a, p):
                sum_hh[a, b] += ha * h[b]
            for j in range(nr):
                sum_hr[a, j] += ha * r[j]
        for j in range(nr):
            sum_r[j] += r[j]


@njit(cache=True, parallel=True)
def support_statistics(student, teacher, Q, R, T, w, u0, task_std, noise, inner_lr, steps,
                       second_order, query, fields, task, C, D, E, F, L, known1, with_gradients,
                       with_lr2_term, maml, loss_only):
    """(hbar, rbar, S_hh, S_hr) over the support sets (``fields``, ``task``) of the control variates
    h (mean zero) and the responses r of each set, with the centred cross-products
    S_hh = sum_i (h_i - hbar)(h_i - hbar)^T and S_hr = sum_i (h_i - hbar)(r_i - rbar)^T.

    Per set: h = (L g1 - known1 with ``with_gradients``, then ``support_moments``) and r = (g with
    ``with_gradients``, then Phi with ``with_lr2_term``: ``query_diffusion`` and, second order,
    ``support_diffusion`` averaged over the set's sampled task e = (1, task_std eta, zeta) and its
    mirror image (1, -task_std eta, -zeta): SD is a polynomial of degree 4 in (eta, zeta), whose
    odd terms the pair cancels exactly), where g and g1 are the (loss, Cbar, Dbar,
    SQ, SR, wbar) of ``gradient_terms`` after all and after one inner step (one forward pass), L
    the ``drift_map`` and known1 the exact one-step drift (loss first). With ``maml`` r also gets
    the set's maml - anil difference at its sampled task (``maml_difference``), so that the
    statistics are maml's. With ``loss_only`` (anil, the other flags ignored) the pass computes the
    loss alone: h = (loss after one inner step - known1[0], ``support_moments``) and r = (loss),
    without the backward passes (the observables' error, ``theory.fewshot.fewshot_loss``).

    One pass over the sets in chunks of CHUNK, in parallel (``prange``), each chunk summing h, r,
    h h^T and h r^T; the chunks' sums are added in order and centred at the end (hbar is a Monte
    Carlo error away from zero: sum h h^T - n hbar hbar^T does not cancel), so the result does
    not depend on the number of threads. The activations come as their two markers: numba's
    parallel loop takes scalar, array or flat tuple arguments only, so each chunk rebuilds acts.
    """
    acts = Activations(student, teacher)
    K, M = R.shape
    n_pts, P, n = fields.shape
    U, S, _ = task_basis_maps(u0, task_std, noise, P)
    root_S = np.sqrt(S)
    omega = field_covariance(Q, R, T)
    root = symmetric_root(omega)
    W = signed_i4_tensor(acts, omega, K) if with_lr2_term else np.zeros((K, K, n, n))
    N = noise_weights(acts, omega, K, noise)
    pairs = student_pairs(K)
    DU = small_product(D, U)
    head_term = head_loss(E, U, S)
    size = terms_size(K, M)
    nx = 1 if loss_only else (L.shape[0] if with_gradients else 0)
    ng = size if with_gradients else 0
    p = nx + K * (K + 1) // 2 + K * M
    nr = 1 if loss_only else ng + (K * (K + 1) // 2 if with_lr2_term else 0)
    chunks = (n_pts + CHUNK - 1) // CHUNK
    sum_h, sum_r = np.zeros((chunks, p)), np.zeros((chunks, nr))
    sum_hh, sum_hr = np.zeros((chunks, p, p)), np.zeros((chunks, p, nr))
    for ch in prange(chunks):
        chunk_statistics(Activations(student, teacher), Q, R, w, u0, task_std, noise, inner_lr,
                         steps, second_order, query, fields, task, ch * CHUNK,
                         min(n_pts, (ch + 1) * CHUNK), C, D, F, L, known1, with_gradients,
                         with_lr2_term, maml, loss_only, nx, ng, root, root_S, U, S, DU,
                         head_term, W, N, pairs, sum_h[ch], sum_r[ch], sum_hh[ch], sum_hr[ch])
    mean_h, mean_r = np.zeros(p), np.zeros(nr)
    S_hh, S_hr = np.zeros((p, p)), np.zeros((p, nr))
    for ch in range(chunks):
        for a in range(p):
            mean_h[a] += sum_h[ch, a]
            for b in range(a, p):
                S_hh[a, b] += sum_hh[ch, a, b]
            for j in range(nr):
                S_hr[a, j] += sum_hr[ch, a, j]
        for j in range(nr):
            mean_r[j] += sum_r[ch, j]
    for a in range(p):
        mean_h[a] /= n_pts
    for j in range(nr):
        mean_r[j] /= n_pts
    for a in range(p):
        for b in range(a, p):
            S_hh[a, b] -= n_pts * mean_h[a] * mean_h[b]
            S_hh[b, a] = S_hh[a, b]
        for j in range(nr):
            S_hr[a, j] -= n_pts * mean_h[a] * mean_r[j]
    return mean_h, mean_r, S_hh, S_hr


#: ``controlled_mean`` drops the eigenvalues of the controls' correlation matrix below this
#: fraction of the largest.
PINV_RTOL = 1e-10

#: ``controlled_mean`` regresses on p controls only with at least this many support sets per
#: control (n >= 4 p): the fitted regression inflates the residual variance by
#: (n - 2) / (n - p - 2) (<= 1.35 here) and, with n <= p + 1, interpolates the sets exactly (an
#: arbitrary estimate, which made a right-hand side on 8 sets with 16 controls blow up).
SETS_PER_CONTROL = 4


@njit(cache=True)
def controlled_mean(mean_h, mean_r, S_hh, S_hr, h0, h1, r0, r1, n) -> np.ndarray:
    """rbar - hbar beta for the responses r0..r1 - 1 with the control variates h0..h1 - 1 (mean
    zero) of ``support_statistics`` over n sets: beta = S_hh^+ S_hr, the least-squares
    regression of the centred responses on the centred controls, fitted on the same points. The
    pseudo-inverse is taken of the controls' correlation matrix (S_hh scaled to unit diagonal; a
    constant control is dropped), its eigenvalues below PINV_RTOL of the largest dropped. With
    fewer than SETS_PER_CONTROL sets per control: rbar, the plain mean."""
    out = mean_r[r0:r1].copy()
    p = h1 - h0
    if n < SETS_PER_CONTROL * p:
        return out
    scale = np.zeros(p)
    for a in range(p):
        if S_hh[h0 + a, h0 + a] > 0.0:
            scale[a] = 1.0 / np.sqrt(S_hh[h0 + a, h0 + a])
    corr = np.empty((p, p))
    for a in range(p):
        for b in range(p):
            corr[a, b] = S_hh[h0 + a, h0 + b] * scale[a] * scale[b]
    vals, vecs = np.linalg.eigh(corr)
    top = vals.max() if p else 0.0
    for q in range(p):
        if not vals[q] > PINV_RTOL * top:
            continue
        along = 0.0  # (scaled hbar) . v_q
        for a in range(p):
            along += mean_h[h0 + a] * scale[a] * vecs[a, q]
        along /= vals[q]
        for j in range(r1 - r0):
            proj = 0.0  # v_q . (scaled S_hr column)
            for a in range(p):
                proj += vecs[a, q] * scale[a] * S_hr[h0 + a, r0 + j]
            out[j] -= along * proj
    return out


@njit(cache=True)
def drift_of_terms(acts, terms: np.ndarray, Q, R, T, K: int, M: int) -> np.ndarray:
    """(loss, X + X^T upper triangle, 2 G R + H T + SR, wbar) from mean (loss, Cbar, Dbar, SQ, SR,
    wbar): the loss and the drift up to the factors -lr, -lr, -lr_head (docs/model.md §5.2), with
    (G, H) = ``chain_to_overlaps``(Cbar, Dbar) and X = 2 G Q + H R^T + SQ. Linear in ``terms``."""
    dC, dD = chain_coefficients(acts, Q, R, T)
    return _drift_of_terms(dC, dD, terms, Q, R, T, K, M)


@njit(cache=True)
def _drift_of_terms(dC, dD, terms, Q, R, T, K, M):
    """``drift_of_terms`` with the derivatives of ``chain_coefficients`` given."""
    i = 1
    Cbar = terms[i:i + K * K].reshape(K, K)
    i += K * K
    Dbar = terms[i:i + K * M].reshape(K, M)
    i += K * M
    SQ = terms[i:i + K * K].reshape(K, K)
    i += K * K
    SR = terms[i:i + K * M].reshape(K, M)
    i += K * M
    G, H = chain_apply(dC, dD, Cbar, Dbar)
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
    dC, dD = chain_coefficients(acts, Q, R, T)
    size = terms_size(K, M)
    unit = np.zeros(size)
    first = _drift_of_terms(dC, dD, unit, Q, R, T, K, M)
    L = np.empty((first.shape[0], size))
    for j in range(size):
        unit[:] = 0.0
        unit[j] = 1.0
        L[:, j] = _drift_of_terms(dC, dD, unit, Q, R, T, K, M)
    return L


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
        support_features(acts, fields, i, task, root, K, u0, noise, z, phi, gp, Y)
        inner_forward(phi, Y, w, inner_lr, Zs)
        for r in range(steps + 1):
            out[i, r] = meta_loss(Zs[r], C, D, E, U, S)
    return out
