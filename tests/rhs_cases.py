"""The configs and random states of the right-hand-side regression reference
(tests/data/rhs_reference.npz, checked by tests/test_rhs_regression.py)."""

import zlib

import numpy as np

_TEACHER = {"M": 2, "u0": [1.0, 0.7], "task_std": 0.6, "noise": 0.3,
            "T": [[1.0, 0.2], [0.2, 0.8]]}
_STUDENT = {"K": 3}


def _case(**training):
    base = {"lr": 0.7, "lr_head": 0.4, "inner_lr": 0.9, "alpha_max": 1.0}
    teacher = dict(_TEACHER, task_std=0.0) if training["algorithm"] == "sgd" else dict(_TEACHER)
    return {"teacher": teacher, "student": dict(_STUDENT),
            "training": {**base, **training}, "theory": {"mc_rtol": 0.0, "mc_tasks": 256}}


#: One config per algorithm and variant whose right-hand side is computed differently.
CASES = {
    "sgd": _case(algorithm="sgd", inner_lr=0.5),
    "sgd_query_batch": _case(algorithm="sgd", inner_lr=0.5, query=3, meta_batch=2),
    "anil_second": _case(algorithm="anil", order="second"),
    "anil_first": _case(algorithm="anil", order="first"),
    "anil_second_3steps": _case(algorithm="anil", order="second", inner_steps=3, query=2),
    "anil_first_2steps": _case(algorithm="anil", order="first", inner_steps=2),
    "fewshot_second_1step": _case(algorithm="anil", order="second", support=4),
    "fewshot_first_2steps": _case(algorithm="anil", order="first", support=3, inner_steps=2),
    "fewshot_second_2steps": _case(algorithm="anil", order="second", support=5, inner_steps=2),
}


def random_states(raw: dict, n: int) -> np.ndarray:
    """n valid states y = (Q upper triangle, R, w): student vectors J_k drawn in R^(K+M) with
    the teacher vectors the rows of chol(T) (so Omega is a Gram matrix), w Gaussian."""
    K, M = raw["student"]["K"], raw["teacher"]["M"]
    T = np.array(raw["teacher"]["T"], dtype=float)
    rng = np.random.default_rng(zlib.crc32(repr(sorted(raw["training"].items())).encode()))
    B = np.zeros((M, K + M))
    B[:, :M] = np.linalg.cholesky(T)
    iu = np.triu_indices(K)
    states = []
    for _ in range(n):
        J = rng.standard_normal((K, K + M)) * rng.uniform(0.2, 1.0) / np.sqrt(K + M)
        states.append(np.concatenate([(J @ J.T)[iu], (J @ B.T).ravel(),
                                      rng.standard_normal(K)]))
    return np.array(states)
