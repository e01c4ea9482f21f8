"""Online SGD of a two-layer erf network (MODEL.md §3 "sgd"): the Saad-Solla / Goldt et al. ODEs.

Per example, J_k <- J_k - (lr / sqrt N) Delta w_k g'(lambda_k) x and w <- w - (lr_head / N) Delta
g(lambda), with Delta = sum_a c_a g(z_a) - noise zeta and c = (w, -u0). With alpha = steps / N and
B = query * meta_batch examples per step (their gradients averaged), the order parameters obey
(Saad & Solla 1995, Goldt et al. 2019)

    dR_km/dalpha = -lr w_k sum_c c_c I3(k, K+m, c)
    dQ_kl/dalpha = -lr [w_k sum_c c_c I3(k, l, c) + w_l sum_c c_c I3(l, k, c)]
                   + lr^2 / B  w_k w_l [sum_ab c_a c_b I4(k, l, a, b) + noise^2 J2(k, l)]
    dw_k/dalpha  = -lr_head sum_c c_c I2(k, c)

with I3(a, b, c) = E[g'(z_a) z_b g(z_c)] and I4(k, l, a, b) = E[g'(z_k) g'(z_l) g(z_a) g(z_b)]
over the field covariance Omega (theory.fields). The lr^2 term is ``theory.fields.diffusion`` with a
deterministic head.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from metaode.config import Config
from metaode.theory.erf_kernels import I3
from metaode.theory.fields import diffusion, field_covariance, i2_matrix, population_error
from metaode.theory.state import pack, unpack
from metaode.theory.system import ODESystem


@njit(cache=True)
def sgd_rhs(y: np.ndarray, K: int, M: int, T: np.ndarray, u: np.ndarray, noise: float,
            lr: float, lr_head: float, batch: int) -> np.ndarray:
    """dy/dalpha of the sgd ODEs above, y = pack(Q, R, w)."""
    Q, R, w = unpack(y, K, M)
    omega = field_covariance(Q, R, T)
    n = K + M
    c = np.empty(n)
    c[:K] = w
    c[K:] = -u
    # drift[k, b] = E[Delta g'(lambda_k) z_b] / w_k = sum_c c_c I3(k, b, c)
    drift = np.zeros((K, n))
    for k in range(K):
        for b in range(n):
            acc = 0.0
            for a in range(n):
                acc += c[a] * I3(omega[k, k], omega[b, b], omega[a, a], omega[k, b],
                                 omega[k, a], omega[b, a])
            drift[k, b] = acc
    mean = np.empty(n)
    mean[:K] = w
    mean[K:] = u
    phi = diffusion(omega, K, mean, np.zeros((n, n)), noise)
    dQ = np.empty((K, K))
    for k in range(K):
        for l in range(K):
            dQ[k, l] = (-lr * (w[k] * drift[k, l] + w[l] * drift[l, k])
                        + lr * lr / batch * phi[k, l])
    dR = np.empty((K, M))
    for k in range(K):
        for m in range(M):
            dR[k, m] = -lr * w[k] * drift[k, K + m]
    i2 = i2_matrix(omega)
    dw = np.zeros(K)
    for k in range(K):
        for a in range(n):
            dw[k] -= lr_head * i2[k, a] * c[a]
    return pack(dQ, dR, dw)


class SGDSystem(ODESystem):
    """The sgd ODEs for one config; observables: the generalisation error (no noise floor)."""

    def __init__(self, config: Config):
        super().__init__(config)
        tr, te = config.training, config.teacher
        self.u = np.ascontiguousarray(te.u0, dtype=float)
        self.args = (self.K, self.M, self.T, self.u, float(te.noise), float(tr.lr),
                     float(tr.lr_head), int(tr.query * tr.meta_batch))

    def rhs(self, alpha: float, y: np.ndarray) -> np.ndarray:
        return sgd_rhs(y, *self.args)

    def observables(self, y: np.ndarray) -> dict[str, float]:
        Q, R, w = unpack(y, self.K, self.M)
        err = population_error(Q, R, self.T, w, self.u)
        return {"error": err, "error_before_adaptation": err,
                **self.common_observables(Q, R, w)}
