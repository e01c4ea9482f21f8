"""Online SGD of a two-layer network (docs/model.md §4.1, §7): the Saad-Solla / Goldt et al. ODEs.

Per example, J_k <- J_k - (lr / sqrt N) Delta w_k g'(lambda_k) x and w <- w - (lr_head / N) Delta
g(lambda), with Delta = sum_a c_a g(z_a) - noise zeta and c = (w, -u0). With alpha = steps / N and
B = query * meta_batch examples per step (their gradients averaged), the order parameters obey
(Saad & Solla 1995, Goldt et al. 2019)

    dR_km/dalpha = -lr w_k sum_c c_c I3(k, K+m, c)
    dQ_kl/dalpha = -lr [w_k sum_c c_c I3(k, l, c) + w_l sum_c c_c I3(l, k, c)]
                   + lr^2 / B  w_k w_l [sum_ab c_a c_b I4(k, l, a, b) + noise^2 J2(k, l)]
    dw_k/dalpha  = -lr_head sum_c c_c I2(k, c)

with I3(a, b, c) = E[g'(z_a) z_b g(z_c)] and I4(k, l, a, b) = E[g'(z_k) g'(z_l) g(z_a) g(z_b)]
over the field covariance Omega (theory.fields). By Stein's lemma the drift terms are the
gradient of the generalisation error eps_g(Q, R, w) pushed through the overlaps, so sgd is the
overlap flow (``theory.flow``) of anil with no inner step on one fixed task (task_std = 0):
``SGDSystem`` evaluates it with ``theory.anil.anil_rhs``. The I3 form above is the one
``theory.jacobian.sgd_jacobian`` differentiates exactly.
"""

from __future__ import annotations

import numpy as np

from metaode.config import Config
from metaode.theory.anil import anil_rhs
from metaode.theory.fields import population_error
from metaode.theory.state import unpack
from metaode.theory.system import ODESystem, specialised


class SGDSystem(ODESystem):
    """The sgd ODEs for one config; observables: the generalisation error (no noise floor).

    ``args`` = (K, M, T, u0, noise, lr, lr_head, batch), the parameters of the flow."""

    def __init__(self, config: Config):
        super().__init__(config)
        tr, te = config.training, config.teacher
        self.u = np.ascontiguousarray(te.u0, dtype=float)
        self.args = (self.K, self.M, self.T, self.u, float(te.noise), float(tr.lr),
                     float(tr.lr_head), int(tr.query * tr.meta_batch))

        K, M, T, u, noise, lr, lr_head, batch = self.args
        self._flow = (K, M, T, u, 0.0, noise, 0.0, 0, False, lr, lr_head, batch)
        self._rhs = specialised(anil_rhs, self.acts, self.initial_state(), *self._flow)

    def rhs(self, alpha: float, y: np.ndarray) -> np.ndarray:
        return self._rhs(self.acts, np.ascontiguousarray(y, dtype=float), *self._flow)

    def observables(self, y: np.ndarray) -> dict[str, float]:
        Q, R, w = unpack(y, self.K, self.M)
        err = population_error(self.acts, Q, R, self.T, w, self.u)
        return {"error": err, "error_before_adaptation": err,
                **self.common_observables(Q, R, w)}
