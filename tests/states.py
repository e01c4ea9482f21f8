"""Helpers shared by the tests: random valid states, a short ANIL config, stderr checks."""

import numpy as np
from numba import njit

from metaode.theory.activations import I3, activations
from metaode.theory.fields import diffusion, field_covariance, i2_matrix
from metaode.theory.state import pack, unpack


def random_state(K: int, M: int, seed: int):
    """A valid (Q, R, T): blocks of Omega = L L^T / (K + M + 1), L a Gaussian matrix; w, u0."""
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((K + M, K + M + 1))
    omega = L @ L.T / (K + M + 1)
    omega = 0.5 * (omega + omega.T)
    return (omega[:K, :K].copy(), omega[:K, K:].copy(), omega[K:, K:].copy(),
            rng.standard_normal(K), rng.standard_normal(M))


#: The built-in ANIL experiment (validation/default.toml) cut to alpha_max = 40: plateau, then
#: specialisation; a TOML text for tests that drive the command line (sweeps, their signals).
SHORT_ANIL_TOML = """
[teacher]
M = 2
u0 = [1.0, 1.0]
task_std = 0.5

[student]
K = 2
Q0 = [[0.2, 0.0], [0.0, 0.2]]
R0 = [[0.02, 0.0], [0.0, 0.01]]
w0 = [0.1, 0.1]

[training]
algorithm = "anil"
inner_lr = 1.0
lr = 1.0
lr_head = 1.0
alpha_max = 40.0

[output]
points = 41
"""


def one_line(err: str) -> str:
    """The one line a command wrote on stderr; fails on several lines or a traceback."""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and "Traceback" not in err, f"expected one line on stderr, got {err!r}"
    return lines[0]


#: The markers of an erf student and an erf teacher, the first argument of the compiled kernels.
ERF = activations("erf", "erf")


@njit(cache=True)
def sgd_i3_rhs(acts, y, K, M, T, u, noise, lr, lr_head, batch):
    """The sgd flow in its I3 form (Saad & Solla; docs/model.md §7), written out independently of
    ``metaode.theory.flow``: dR_km = -lr w_k sum_a c_a I3(k, K+m, a), dQ_kl = -lr (w_k sum_a c_a
    I3(k, l, a) + (k <-> l)) + lr^2 / batch Phi_kl, dw_k = -lr_head sum_a c_a I2(k, a)."""
    s, t = acts.student, acts.teacher
    Q, R, w = unpack(y, K, M)
    omega = field_covariance(Q, R, T)
    n = K + M
    c = np.empty(n)
    c[:K] = w
    c[K:] = -u
    drift = np.zeros((K, n))
    for k in range(K):
        for b in range(n):
            for a in range(n):
                args = (omega[k, k], omega[b, b], omega[a, a], omega[k, b], omega[k, a],
                        omega[b, a])
                drift[k, b] += c[a] * (I3(s, s, *args) if a < K else I3(s, t, *args))
    mean = np.empty(n)
    mean[:K] = w
    mean[K:] = u
    phi = diffusion(acts, omega, K, mean, np.zeros((n, 0)), noise)
    dQ = np.empty((K, K))
    for k in range(K):
        for l in range(K):
            dQ[k, l] = (-lr * (w[k] * drift[k, l] + w[l] * drift[l, k])
                        + lr * lr / batch * phi[k, l])
    dR = np.empty((K, M))
    for k in range(K):
        for m in range(M):
            dR[k, m] = -lr * w[k] * drift[k, K + m]
    i2 = i2_matrix(acts, omega, K)
    dw = np.zeros(K)
    for k in range(K):
        for a in range(n):
            dw[k] -= lr_head * i2[k, a] * c[a]
    return pack(dQ, dR, dw)
