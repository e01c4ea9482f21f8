"""Helpers shared by the tests: random valid states, a short ANIL config, stderr checks."""

import numpy as np


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
