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
the same points as few-shot anil. The estimate is few-shot anil's one-pass Monte Carlo
(``theory.support_mc.support_statistics`` with ``maml``) in which each support set's responses
also carry the per-set difference maml - anil of the loss, the drift terms and the lr^2 term,
both computed at the same fields and sampled task (``support_mc.maml_difference``), under the
same control variates: unbiased, and with the small variance of a difference of strongly
correlated terms. With one inner step the difference is exactly zero and is not computed.
"""

from __future__ import annotations

from metaode.config import Config, ConfigError
from metaode.theory.activations import activation
from metaode.theory.anil import ANILSystem
from metaode.theory.fewshot import FewShotANILSystem
from metaode.theory.system import ODESystem


class MAMLSystem(FewShotANILSystem):
    """The maml ODEs with P support examples (module docstring): few-shot anil's sample and
    uncertainty machinery (``theory.fewshot.FewShotANILSystem``, ``solvers.integrate.solve``)
    with the compiled flow ``theory.fewshot.FewShotFlow`` of ``maml = True`` (set from
    ``training.algorithm``)."""


def maml_system(config: Config) -> ODESystem:
    """The maml theory: with the population support the support fields' shift (O(eta / P) per
    step) vanishes and maml is anil (``theory.anil.ANILSystem``); with P examples
    ``MAMLSystem``, for a smooth student activation (ConfigError otherwise: with a jump in g' the
    expected pathwise gradient need not be the gradient of the expected loss). The
    ``metaode.algorithms`` entry of maml. Without an inner step maml is anil without one, whose
    population theory is exact for every P."""
    if config.training.support == "population" or config.training.inner_steps == 0:
        return ANILSystem(config)
    if config.training.inner_steps > 1 and not activation(config.student.activation).smooth:
        raise ConfigError("student.activation", f"the maml theory with inner_steps > 1 needs a "
                                                f"smooth student activation (g''), not "
                                                f"{config.student.activation!r}; its simulation "
                                                f"runs")
    return MAMLSystem(config)
