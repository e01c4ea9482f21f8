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

from metaode.config import Config
from metaode.theory.anil import anil_flow
from metaode.theory.system import ODESystem


class SGDSystem(ODESystem):
    """The sgd ODEs for one config: the ``theory.anil.ANILFlow`` with no inner step on the one
    task u0 (task_std = 0); observables: the generalisation error (no noise floor) as both errors.

    ``args`` = (K, M, T, u0, noise, lr, lr_head, batch), the parameters of the flow that
    ``theory.jacobian.sgd_jacobian`` takes."""

    def __init__(self, config: Config):
        super().__init__(config)
        self.flow = f = anil_flow(config, steps=0, task_std=0.0, inner_lr=0.0)
        self.args = (f.K, f.M, f.T, f.u0, f.noise, f.lr, f.lr_head, f.batch)
