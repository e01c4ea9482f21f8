"""The configs the benchmarks time (shared by ``benchmarks.run`` and ``benchmarks.child``)."""

from __future__ import annotations

from metaode.config import Config

#: anil settings of every anil benchmark: second order, population support, one task per step.
ANIL_TEACHER = {"task_std": 0.5}
ANIL_TRAINING = {"algorithm": "anil", "order": "second", "inner_lr": 0.5}
#: the swept learning rates of the sweep benchmark (sgd, K = M = 2 to alpha = 1000)
SWEEP_LR = "0.2:0.6"


def theory_config(K: int, M: int, alpha_max: float, algorithm: str = "sgd",
                  inner_steps: int = 1) -> Config:
    """lr = lr_head = 0.5, the default drawn initial condition, the default integrator (compiled
    DOP853) at rtol 1e-6, atol 1e-8,
    201 linearly spaced records (multiples of 0.01, so Euler at dt = 0.01 hits them exactly)."""
    teacher: dict = {"M": M}
    training: dict = {"algorithm": algorithm, "lr": 0.5, "lr_head": 0.5, "alpha_max": alpha_max}
    if algorithm == "anil":
        teacher.update(ANIL_TEACHER)
        training.update(ANIL_TRAINING, inner_steps=inner_steps)
    return Config.from_dict({"teacher": teacher, "student": {"K": K}, "training": training,
                             "solver": {"rtol": 1e-6, "atol": 1e-8}})


def simulation_config(algorithm: str, alpha_max: float, K: int = 2, M: int = 2) -> Config:
    """sgd or anil (population support) with lr = lr_head = 0.5 and two records."""
    return theory_config(K, M, alpha_max, algorithm).replace("output.points", 2)


#: The cases of issue 13 ("theory at compiled speed"): (name, K, M, alpha_max, algorithm, seconds
#: before, seconds targeted) of one solve at the default solver tolerances (rtol 1e-8,
#: atol 1e-10); "before" is the figure the issue quotes.
LARGE_CASES = (
    ("sgd", 32, 16, 100.0, "sgd", 47.0, 10.0),
    ("anil (population, second order)", 32, 2, 100.0, "anil", 9.6, 2.0),
    ("sgd", 64, 2, 100.0, "sgd", 281.0, 60.0),
)
#: The grid of the sweep benchmark of issue 13 (sgd, K = M = 2 to alpha = 1000): training.lr and
#: training.lr_head, GRID_SIDE values each.
GRID_LR = "0.2:1.0"
GRID_SIDE = 100


def exact_config(K: int, M: int, alpha_max: float, algorithm: str = "sgd") -> Config:
    """``theory_config`` at the default solver tolerances (rtol 1e-8, atol 1e-10), the setting
    of the exact systems' targets of issue 13."""
    config = theory_config(K, M, alpha_max, algorithm)
    defaults = Config.default().solver
    return config.replace({"solver.rtol": defaults.rtol, "solver.atol": defaults.atol})
