"""MAML with P support examples: the few-shot theory with the inner loop's first-layer step
(docs/model.md §11).

In the inner loop J^(r+1) = J^(r) - (eta/P) sum_p c_p^(r) x_p^T / sqrt N with
c_pk = Delta_p w_k g'(lambda_pk), an input's field moves by -(eta/P) sum_p c_p^(r) x_p . x / N.
As N -> infinity, x_p . x / N -> 0 for a query input and for another support example, and -> 1
for the support example itself: the query fields, and hence Q and R, are those of anil, while
each support example's own fields follow

    lambda_p^(r+1) = lambda_p^(r) - (eta/P) Delta_p^(r) (w^(r) (.) g'(lambda_p^(r))),

simultaneously with the head step w^(r+1) = w^(r) - (eta/P) sum_p Delta_p^(r) g(lambda_p^(r)). That
is the simulation's field-space inner loop (``simulations.fewshot.inner_loop_fields`` and its
reverse pass ``inner_loop_reverse``) with the Gram matrix of the support inputs at its limit, the
identity. The terms of the outer step that the first-layer step adds beyond this map (the query
fields' shift, the second-order term of J' along the support inputs) are O(N^-1/2) per step and
leave the limit.

From the second inner step on, the head sees shifted support fields, so the adapted head is no
longer linear in the task: the task (head and label noise) is sampled with the support fields, on
the same points as few-shot anil. The theory is few-shot anil's plus the mean over the points of
the per-point difference maml - anil of the loss, the drift terms and the lr^2 term, both computed
at the same fields and task (``maml_differences``): unbiased, and with the small variance of a
difference of strongly correlated terms. With one inner step the difference is exactly zero.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.extending import overload

from metaode.config import Config, ConfigError
from metaode.simulations.fewshot import inner_loop_fields, inner_loop_reverse
from metaode.theory.activations import activation
from metaode.theory.anil import ANILSystem, metatest_errors
from metaode.theory.fewshot import (
    FewShotANILSystem,
    FewShotFlow,
    fewshot_estimate,
    four_point_tensor,
)
from metaode.theory.fields import (
    common_observables,
    diffusion_from_moments,
    error_blocks,
    field_covariance,
    signed_i4_tensor,
    symmetrise_pairs,
)
from metaode.theory.flow import flow_of_drift
from metaode.theory.state import unpack
from metaode.theory.support_mc import (
    SupportSample,
    column_means,
    drift_of_terms,
    support_features,
    symmetric_root,
    task_basis_maps,
    terms_size,
)
from metaode.theory.system import ODESystem, flow_observables, flow_rhs, is_flow


@njit(cache=True)
def _head_terms(acts, lam, y, eye, w, u, C, D, inner_lr, steps, P, adapt_J, second_order, z,
                row, lb):
    """Write (loss, Cbar, Dbar, SQ, SR, wbar) of one support set and task into ``row`` (the
    layout of ``support_mc.terms_size``) and return (w', lams, ws): loss = eps(w'; u) without
    the head term 1/2 u^T E u, Cbar = 1/2 w' w'^T, Dbar = -w' u^T; second order: wbar and
    lambdabar_p the reverse pass of the cotangent C w' - D u on w', SQ = sum_p lambdabar_p
    lambda_p^T, SR = sum_p lambdabar_p nu_p^T; first order: SQ = SR = 0, wbar = C w' - D u."""
    K, M = D.shape
    lams, ws, _ = inner_loop_fields(acts, lam, y, eye, w, inner_lr, steps, P, adapt_J)
    wp = ws[steps]
    Cw = C @ wp
    Du = D @ u
    gq = Cw - Du
    row[0] = 0.5 * (wp @ Cw) - wp @ Du
    i = 1
    for k in range(K):
        for l in range(K):
            row[i] = 0.5 * wp[k] * wp[l]
            i += 1
    for k in range(K):
        for m in range(M):
            row[i] = -wp[k] * u[m]
            i += 1
    if second_order:
        lb[:, :] = 0.0
        wbar = inner_loop_reverse(acts, lams, ws, y, eye, inner_lr, P, adapt_J, lb, gq)
        n = z.shape[1]
        for k in range(K):
            for a in range(n):
                acc = 0.0
                for p in range(P):
                    acc += lb[p, k] * z[p, a]
                if a < K:
                    row[i + k * K + a] = acc
                else:
                    row[i + K * K + k * M + (a - K)] = acc
    else:
        row[i:i + K * K + K * M] = 0.0
        wbar = gq
    i += K * K + K * M
    row[i:i + K] = wbar
    return wp, lams, ws


@njit(cache=True)
def _support_diffusion(acts, lams, ws, y, eye, inner_lr, P, adapt_J, u, C, D, F, noise, query,
                       sign, SD, lb, jac):
    """SD += sign sum_p Jac_p Gamma Jac_p^T: the support part of the lr^2 term (second order) of one
    support set and task, Jac_p = dlambdabar_p / dwbar' (``inner_loop_reverse`` of unit
    cotangents) and Gamma = E_query[ghat ghat^T] = gbar gbar^T (1 - 1/query) + (sum_ab c_a c_b
    F_klab + noise^2 C_kl) / query, c = (w', -u), gbar = C w' - D u."""
    K, M = D.shape
    wp = ws[ws.shape[0] - 1]
    c = np.empty(K + M)
    c[:K] = wp
    c[K:] = -u
    gbar = C @ wp - D @ u
    Gamma = np.empty((K, K))
    for k in range(K):
        for l in range(K):
            cfc = 0.0
            for a in range(K + M):
                for b in range(K + M):
                    cfc += F[k, l, a, b] * c[a] * c[b]
            Gamma[k, l] = (gbar[k] * gbar[l] * (1.0 - 1.0 / query)
                           + (cfc + noise * noise * C[k, l]) / query)
    unit = np.zeros(K)
    for j in range(K):
        unit[:] = 0.0
        unit[j] = 1.0
        lb[:, :] = 0.0
        inner_loop_reverse(acts, lams, ws, y, eye, inner_lr, P, adapt_J, lb, unit)
        jac[:, :, j] = lb
    for p in range(P):
        for k in range(K):
            for l in range(K):
                acc = 0.0
                for a in range(K):
                    for b in range(K):
                        acc += jac[p, k, a] * Gamma[a, b] * jac[p, l, b]
                SD[k, l] += sign * acc


@njit(cache=True)
def _add_point_moments(wp, u, sign, M4, M2):
    """M4[k, l, a, b] += sign y_k y_l y_a y_b (k <= l < K, a <= b), M2 += sign y_k y_l for
    y = (w', u): the query part of the lr^2 term at one task (``diffusion_from_moments``)."""
    K, M = wp.shape[0], u.shape[0]
    yv = np.empty(K + M)
    yv[:K] = wp
    yv[K:] = u
    n = K + M
    for k in range(K):
        for l in range(k, K):
            M2[k, l] += sign * yv[k] * yv[l]
            if l != k:
                M2[l, k] += sign * yv[k] * yv[l]
            for a in range(n):
                for b in range(a, n):
                    M4[k, l, a, b] += sign * yv[k] * yv[l] * yv[a] * yv[b]


@njit(cache=True)
def maml_differences(acts, Q, R, T, w, u0, task_std, noise, inner_lr, steps, second_order, query,
                     fields, task, C, D, F, with_lr2_term):
    """Per support set and sampled task (``support_mc.support_features``; the task
    e = (1, task_std xi, zeta) of the point): the rows of maml - anil of (loss, Cbar, Dbar, SQ,
    SR, wbar) (``_head_terms``), and summed over the points the differences of the query moments
    (M4, M2) and of the support part SD of the lr^2 term (``_support_diffusion``)."""
    K, M = R.shape
    n = K + M
    n_pts, P, _ = fields.shape
    U, S, d = task_basis_maps(u0, task_std, noise, P)
    root = symmetric_root(field_covariance(Q, R, T))
    size = terms_size(K, M)
    rows = np.empty((n_pts, size))
    row_anil = np.empty(size)
    M4 = np.zeros((K, K, n, n))
    M2 = np.zeros((K, K))
    SD = np.zeros((K, K))
    z, phi, gp, Y = np.empty((P, n)), np.empty((P, K)), np.empty((P, K)), np.empty((P, d))
    eye = np.eye(P)
    e = np.empty(d)
    lam = np.empty((P, K))
    lb = np.empty((P, K))
    jac = np.empty((P, K, K))
    for i in range(n_pts):
        support_features(acts, fields[i], task[i], root, K, u0, noise, z, phi, gp, Y)
        e[0] = 1.0
        for m in range(M):
            e[1 + m] = task_std * task[i, m]
        for j in range(d - 1 - M):
            e[1 + M + j] = task[i, M + j]
        y = Y @ e
        u = U @ e
        lam[:, :] = z[:, :K]
        wm, lams_m, ws_m = _head_terms(acts, lam, y, eye, w, u, C, D, inner_lr, steps, P, True,
                                       second_order, z, rows[i], lb)
        wa, lams_a, ws_a = _head_terms(acts, lam, y, eye, w, u, C, D, inner_lr, steps, P, False,
                                       second_order, z, row_anil, lb)
        rows[i] -= row_anil
        if not with_lr2_term:
            continue
        _add_point_moments(wm, u, 1.0, M4, M2)
        _add_point_moments(wa, u, -1.0, M4, M2)
        if second_order:
            _support_diffusion(acts, lams_m, ws_m, y, eye, inner_lr, P, True, u, C, D, F, noise,
                               query, 1.0, SD, lb, jac)
            _support_diffusion(acts, lams_a, ws_a, y, eye, inner_lr, P, False, u, C, D, F, noise,
                               query, -1.0, SD, lb, jac)
    symmetrise_pairs(M4)
    return rows, M4, M2, SD


@njit(cache=True)
def maml_estimate(flow, Q: np.ndarray, R: np.ndarray, w: np.ndarray, lr2_term: bool):
    """(loss and drift vector, Phi) of maml at (Q, R, w): few-shot anil's (``fewshot_estimate``)
    plus the mean maml - anil difference over the flow's points (``maml_differences``;
    ``support_mc.drift_of_terms`` is linear, and so is ``diffusion_from_moments`` in (M4, M2)).
    One inner step: anil's exactly."""
    base = flow.fewshot
    drift, phi = fewshot_estimate(base, Q, R, w, lr2_term)
    if base.steps == 1:
        return drift, phi
    K, M, T = base.K, base.M, base.T
    C, D, _ = error_blocks(base.acts, Q, R, T)
    omega = field_covariance(Q, R, T)
    F = four_point_tensor(base.acts, omega, K, base.nodes, base.weights)
    rows, M4, M2, SD = maml_differences(
        base.acts, Q, R, T, w, base.u0, base.task_std, base.noise, base.inner_lr, base.steps,
        base.second_order, base.query, base.fields, base.task, C, D, F, lr2_term)
    drift = drift + drift_of_terms(base.acts, column_means(rows), Q, R, T, K, M)
    if lr2_term:
        n = rows.shape[0]
        phi = phi + (diffusion_from_moments(base.acts, omega,
                                            signed_i4_tensor(base.acts, omega, K), M4 / n, M2 / n,
                                            base.noise) / base.query + SD / n)
    return drift, phi


class MAMLFlow(NamedTuple):
    """The maml ODEs: the few-shot anil flow (its parameters and points) whose estimate
    ``maml_estimate`` extends by the support fields' shift."""

    fewshot: FewShotFlow


@overload(flow_rhs)
def _maml_flow_rhs(flow, y):
    """dy/dalpha = ``theory.flow.flow_of_drift`` of maml's estimated drift and Phi."""
    if is_flow(flow, MAMLFlow):
        def rhs(flow, y):
            base = flow.fewshot
            Q, R, w = unpack(y, base.K, base.M)
            drift, phi = maml_estimate(flow, Q, R, w, True)
            return flow_of_drift(drift[1:], phi, base.lr, base.lr_head, base.meta_batch)
        return rhs


@overload(flow_observables)
def _maml_flow_observables(flow, y):
    """error = maml's L_P (``maml_estimate``), error_before_adaptation = the population error of
    w, and ``theory.fields.common_observables``."""
    if is_flow(flow, MAMLFlow):
        def observables(flow, y):
            base = flow.fewshot
            Q, R, w = unpack(y, base.K, base.M)
            out = np.empty(4 + base.K)
            out[0] = maml_estimate(flow, Q, R, w, False)[0][0]
            out[1] = metatest_errors(base.acts, Q, R, base.T, w, base.u0, base.task_std,
                                     base.inner_lr, 0)[0]
            common_observables(base.acts, Q, R, base.T, base.u0, base.task_std, out)
            return out
        return observables


class MAMLSystem(FewShotANILSystem):
    """The maml ODEs with P support examples (module docstring): few-shot anil's sample and
    uncertainty machinery (``theory.fewshot.FewShotANILSystem``, ``solvers.integrate.solve``)
    with the compiled flow ``MAMLFlow``."""

    def __init__(self, config: Config, sample: SupportSample | None = None):
        super().__init__(config, sample)
        self.flow = MAMLFlow(self.flow)

    def with_budget(self, budget: int) -> MAMLSystem:
        return MAMLSystem(self.config, self.sample_of(budget))

    def stream_systems(self) -> list[MAMLSystem]:
        return [MAMLSystem(self.config, self.sample.only(b)) for b in range(self.sample.streams)]


def maml_system(config: Config) -> ODESystem:
    """The maml theory: with the population support the support fields' shift (O(eta / P) per
    step) vanishes and maml is anil (``theory.anil.ANILSystem``); with P examples
    ``MAMLSystem``, for a smooth student activation (ConfigError otherwise: with a jump in g' the
    expected pathwise gradient need not be the gradient of the expected loss). The
    ``metaode.algorithms`` entry of maml."""
    if config.training.support == "population":
        return ANILSystem(config)
    if config.training.inner_steps > 1 and not activation(config.student.activation).smooth:
        raise ConfigError("student.activation", f"the maml theory with inner_steps > 1 needs a "
                                                f"smooth student activation (g''), not "
                                                f"{config.student.activation!r}; its simulation "
                                                f"runs")
    return MAMLSystem(config)
