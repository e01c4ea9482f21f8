"""The finite-support simulation ``simulations.fewshot``: anil with P support examples, and maml.

References are independent of the field-space kernels: the inner loop is rerun explicitly in weight
space (J^(r+1) = J^(r) - inner_lr grad_J L_S, an N-dimensional numpy computation on the drawn
inputs), gradients are checked against central finite differences of that computation, and the
documented draw order is replayed with numpy's generator.

Not tested: inner_steps = 0 against the population-ANIL or sgd simulation stream. The few-shot
stream consumes the P support inputs of every task even when they are not used, so the two streams
differ and no exact comparison exists.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf
from states import ERF

from metaode.config import Config, ConfigError
from metaode.simulations.fewshot import (
    fewshot_steps,
    inner_loop_fields,
    task_gradients,
)
from metaode.simulations.run import FewShotRun, make_run, record_steps, simulate, simulate_seed
from metaode.theory.anil import metatest_errors


def g(z: np.ndarray) -> np.ndarray:
    """g(z) = erf(z / sqrt 2)."""
    return erf(z / np.sqrt(2.0))


def g_prime(z: np.ndarray) -> np.ndarray:
    """g'(z) = sqrt(2 / pi) exp(-z^2 / 2)."""
    return np.sqrt(2.0 / np.pi) * np.exp(-0.5 * z**2)


def weight_space_inner_loop(J, w, X, y, P, inner_lr, steps, adapt_J):
    """(J', w') after ``steps`` explicit gradient steps on L_S = (1/P) sum_p 1/2 Delta_p^2 over the
    rows p < P of X (both gradients at (J^(r), w^(r)), simultaneous update; J fixed for anil)."""
    N = X.shape[1]
    for _ in range(steps):
        lam = X[:P] @ J.T / np.sqrt(N)
        delta = g(lam) @ w - y[:P]
        grad_w = g(lam).T @ delta / P
        grad_J = (delta[:, None] * w[None, :] * g_prime(lam)).T @ X[:P] / (P * np.sqrt(N))
        w = w - inner_lr * grad_w
        if adapt_J:
            J = J - inner_lr * grad_J
    return J, w


def query_loss(J, w, X, y, P):
    """L_q = (1/query) sum_q 1/2 (w . g(J x_q / sqrt N) - y_q)^2 over the rows q >= P of X."""
    delta = g(X[P:] @ J.T / np.sqrt(X.shape[1])) @ w - y[P:]
    return 0.5 * np.mean(delta**2)


def meta_loss(J, w, X, y, P, inner_lr, steps, adapt_J):
    """The query loss as a function of the meta-parameters (J, w), through the inner loop."""
    Ja, wa = weight_space_inner_loop(J, w, X, y, P, inner_lr, steps, adapt_J)
    return query_loss(Ja, wa, X, y, P)


def one_task(seed, N=50, K=3, M=2, P=3, query=3, noise=0.1):
    """Random J, B, w and one task's inputs X ((P + query) x N, support first) and labels y."""
    rng = np.random.default_rng(seed)
    J = 0.8 * rng.standard_normal((K, N))
    B = rng.standard_normal((M, N))
    w = rng.standard_normal(K)
    X = rng.standard_normal((P + query, N))
    u = 1.0 + 0.5 * rng.standard_normal(M)
    y = g(X @ B.T / np.sqrt(N)) @ u + noise * rng.standard_normal(P + query)
    return J, B, w, X, y, rng


def kernel_inputs(J, X, P):
    """The kernels' inputs: initial fields lambda^(0) (n x K) and Gram matrix G = X_S X^T / N."""
    N = X.shape[1]
    return X @ J.T / np.sqrt(N), X[:P] @ X.T / N


# Central differences with h = 1e-5 on directions whose field perturbations are O(1) per unit h:
# truncation h^2 |L'''| / 6 ~ 2e-11 and rounding ~ 1e-16 |L| / h ~ 1e-11 (|L|, |L'''| = O(1) here),
# so the absolute error of a finite difference is ~1e-10. The requested 1e-7 relative accuracy is
# asserted, with an absolute floor FD_ATOL = 1e-9 (ten times the finite-difference error) for
# directional derivatives that happen to be small. Measured: relative errors <= 6e-9.
FD_STEP = 1e-5
FD_RTOL = 1e-7
FD_ATOL = 1e-9
INNER_LR = 0.8


def central_difference(f, h=FD_STEP):
    return (f(h) - f(-h)) / (2.0 * h)


@pytest.mark.parametrize("P", [2, 5])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("adapt_J", [False, True], ids=["anil", "maml"])
def test_second_order_gradients_match_finite_differences(adapt_J, steps, P):
    J, _, w, X, y, rng = one_task(10 * P + steps, P=P)
    N = X.shape[1]
    lam0, G = kernel_inputs(J, X, P)
    loss, lb, wb = task_gradients(ERF, lam0, y, G, w, INNER_LR, steps, P, adapt_J, True)
    # the field-space forward pass is the weight-space one (same numbers up to rounding)
    ref = meta_loss(J, w, X, y, P, INNER_LR, steps, adapt_J)
    assert loss == pytest.approx(ref, rel=1e-12)
    grad_J = lb.T @ X / np.sqrt(N)
    # the second-order gradient reaches the support inputs (for anil through w' only)
    assert np.abs(lb[:P]).max() > 1e-3
    for _ in range(3):
        V = rng.standard_normal(J.shape)
        fd = central_difference(lambda h, V=V: meta_loss(J + h * V, w, X, y, P, INNER_LR, steps,
                                                         adapt_J))
        assert abs(fd - np.sum(grad_J * V)) <= FD_RTOL * abs(fd) + FD_ATOL
    for k in range(w.size):
        e = np.eye(w.size)[k]
        fd = central_difference(lambda h, e=e: meta_loss(J, w + h * e, X, y, P, INNER_LR, steps,
                                                         adapt_J))
        assert abs(fd - wb[k]) <= FD_RTOL * abs(fd) + FD_ATOL


@pytest.mark.parametrize("adapt_J", [False, True], ids=["anil", "maml"])
def test_first_order_gradient_is_the_gradient_at_the_adapted_parameters(adapt_J):
    P, steps = 3, 2
    J, _, w, X, y, rng = one_task(7, P=P)
    N = X.shape[1]
    lam0, G = kernel_inputs(J, X, P)
    _, lb, wb = task_gradients(ERF, lam0, y, G, w, INNER_LR, steps, P, adapt_J, False)
    assert np.all(lb[:P] == 0.0)  # first order: the query inputs only
    Ja, wa = weight_space_inner_loop(J, w, X, y, P, INNER_LR, steps, adapt_J)
    grad_J = lb.T @ X / np.sqrt(N)
    for _ in range(3):
        V = rng.standard_normal(J.shape)
        fd = central_difference(lambda h, V=V: query_loss(Ja + h * V, wa, X, y, P))
        assert abs(fd - np.sum(grad_J * V)) <= FD_RTOL * abs(fd) + FD_ATOL
    for k in range(w.size):
        e = np.eye(w.size)[k]
        fd = central_difference(lambda h, e=e: query_loss(Ja, wa + h * e, X, y, P))
        assert abs(fd - wb[k]) <= FD_RTOL * abs(fd) + FD_ATOL


def test_maml_adapted_fields_and_overlaps_match_the_explicit_networks():
    P, steps = 4, 3
    J, B, w, X, y, _ = one_task(3, P=P)
    N = X.shape[1]
    lam0, G = kernel_inputs(J, X, P)
    lams, ws, shift = inner_loop_fields(ERF, lam0, y, G, w, INNER_LR, steps, P, True)
    Jr, wr = J, w
    for r in range(steps + 1):
        # fields of every input (support and query) at every inner step, from lambda^(0) and G
        np.testing.assert_allclose(lams[r], X @ Jr.T / np.sqrt(N), rtol=0, atol=1e-13)
        np.testing.assert_allclose(ws[r], wr, rtol=0, atol=1e-13)
        Jr, wr = weight_space_inner_loop(Jr, wr, X, y, P, INNER_LR, 1, True)
    Ja, _ = weight_space_inner_loop(J, w, X, y, P, INNER_LR, steps, True)
    np.testing.assert_allclose(J + shift.T @ X[:P] / np.sqrt(N), Ja, rtol=0, atol=1e-13)
    assert np.abs(Ja @ Ja.T / N - J @ J.T / N).max() > 1e-4  # the adaptation did move Q (O(1/N))


def steps_args(adapt_J, second_order, inner_lr=0.5, inner_steps=2, P=3, query=2, meta_batch=2,
               noise=0.1):
    """Arguments of fewshot_steps after (J, B, w): u0, task_std, noise, ..., meta_batch."""
    return (np.array([1.0, 0.5]), 0.4, noise, inner_lr, inner_steps, P, adapt_J, second_order,
            0.7, 0.6, query, meta_batch)


def replay_steps(J, B, w, n_steps, seed, u0, task_std, noise, inner_lr, inner_steps, P, adapt_J,
                 second_order, lr, lr_head, query, meta_batch):
    """fewshot_steps written out with numpy draws in the documented order: per task xi (M), then
    each support input and its label noise, then each query input and its label noise."""
    rng = np.random.default_rng(seed)
    K, N = J.shape
    M = B.shape[0]
    J, w = J.copy(), w.copy()
    for _ in range(n_steps):
        grad_J, grad_w = np.zeros_like(J), np.zeros_like(w)
        for _b in range(meta_batch):
            u = u0 + task_std * rng.standard_normal(M)
            X = np.empty((P + query, N))
            zeta = np.empty(P + query)
            for i in range(P + query):
                X[i] = rng.standard_normal(N)
                zeta[i] = rng.standard_normal() if noise > 0.0 else 0.0
            y = g(X @ B.T / np.sqrt(N)) @ u + noise * zeta
            lam0, G = kernel_inputs(J, X, P)
            _, lb, wb = task_gradients(ERF, lam0, y, G, w, inner_lr, inner_steps, P, adapt_J,
                                       second_order)
            grad_J += lb.T @ X / np.sqrt(N)
            grad_w += wb
        J -= lr * grad_J / meta_batch
        w -= lr_head / N * grad_w / meta_batch
    return J, w, rng


@pytest.mark.parametrize("second_order", [False, True], ids=["first", "second"])
@pytest.mark.parametrize("adapt_J", [False, True], ids=["anil", "maml"])
def test_fewshot_steps_follow_the_documented_draw_order_and_update(adapt_J, second_order):
    J, B, w, _, _, _ = one_task(5, N=80, K=2)
    args = steps_args(adapt_J, second_order)
    J_ref, w_ref, rng_ref = replay_steps(J, B, w, 3, 11, *args)
    rng = np.random.default_rng(11)
    fewshot_steps(ERF, J, B, w, *args, 3, rng)
    # the same arithmetic summed in another order: rounding ~1e-15 on O(1) entries
    np.testing.assert_allclose(J, J_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w, w_ref, rtol=0, atol=1e-13)
    assert rng.standard_normal() == rng_ref.standard_normal()  # same number of draws consumed


@pytest.mark.parametrize("second_order", [False, True], ids=["first", "second"])
def test_anil_and_maml_streams_are_paired(second_order):
    J0, B, w0, _, _, _ = one_task(8, N=100, K=2)
    out = {}
    for adapt_J in (False, True):
        for inner_lr in (0.0, 0.5):
            J, w, rng = J0.copy(), w0.copy(), np.random.default_rng(4)
            fewshot_steps(ERF, J, B, w, *steps_args(adapt_J, second_order, inner_lr=inner_lr), 20,
                          rng)
            out[adapt_J, inner_lr] = (J, w, rng.standard_normal())
    # inner_lr = 0: the first-layer inner step is an exact zero, so the runs agree bit for bit
    for a, b in zip(out[False, 0.0], out[True, 0.0], strict=True):
        assert np.array_equal(a, b)
    # inner_lr > 0: the same draws (next draw equal) but maml's J adaptation changes the result
    assert out[False, 0.5][2] == out[True, 0.5][2]
    assert np.abs(out[False, 0.5][0] - out[True, 0.5][0]).max() > 1e-6


def fewshot_config(algorithm, support=3):
    return Config.from_dict({
        "teacher": {"task_std": 0.5, "noise": 0.1},
        "training": {"algorithm": algorithm, "support": support, "inner_steps": 2,
                     "alpha_max": 0.5, "query": 2},
        "output": {"points": 3},
    })


def test_maml_simulation_with_population_support_is_a_config_error():
    config = fewshot_config("maml", "population")  # valid: its theory is population anil's
    with pytest.raises(ConfigError) as err:
        simulate(config, 50, [0], progress=False, workers=1)
    assert err.value.key == "training.support"
    assert "finite support" in str(err.value)


@pytest.mark.parametrize("algorithm", ["anil", "maml"])
def test_simulate_finite_support_records_observables_without_disturbing_training(algorithm):
    config = fewshot_config(algorithm)
    N = 60
    traj = simulate_seed(config, N, 3, progress=False)
    assert traj.status == 0
    assert len(traj.alpha) == 3
    # the observables are the theory's (few-shot anil's, maml's) at the networks' overlaps
    for name in ["error", "error_before_adaptation", "representation_error"]:
        assert np.all(np.isfinite(traj.observables[name])), name
    st, te = config.student, config.teacher
    before0 = metatest_errors(ERF, st.Q0, st.R0, te.T, st.w0, te.u0, te.task_std, 0.5, 0)[0]
    # the networks start at exactly (Q0, R0, T): rounding ~1e-15
    assert traj.observables["error_before_adaptation"][0] == pytest.approx(before0, rel=1e-10)
    # the same seed without evaluations: identical states, so the eval stream is separate
    run = make_run(config, N, np.random.default_rng(3))
    assert isinstance(run, FewShotRun)
    done = 0
    for i, target in enumerate(record_steps(config, N)):
        run.advance(int(target - done))
        done = int(target)
        Q, R, w = run.state()
        np.testing.assert_array_equal(traj.order_parameters(i)[1], R)
        np.testing.assert_array_equal(traj.order_parameters(i)[2], w)
