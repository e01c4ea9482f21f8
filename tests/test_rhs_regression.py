"""Right-hand sides against the reference computed before the package restructure.

tests/data/rhs_reference.npz holds, for every case of tests/rhs_cases.py, random valid states and
the right-hand side that version 0.1.0 (commit 203c129, before the model was built from parts)
computed there: 100 states per exact system, 10 per few-shot system (fixed Monte Carlo budget,
mc_rtol = 0). A refactoring that changes no arithmetic reproduces them bit for bit; one that
reorders floating-point operations (sgd now runs through the overlap flow instead of its I3
form: Stein's lemma, 3e-15 measured) moves them by rounding, far below 1e-12.
"""

from pathlib import Path

import numpy as np
import pytest
from rhs_cases import CASES

from metaode.config import Config
from metaode.theory.system import build_system

REFERENCE = Path(__file__).parent / "data" / "rhs_reference.npz"


@pytest.mark.parametrize("name", list(CASES))
def test_right_hand_side_unchanged(name: str) -> None:
    ref = np.load(REFERENCE)
    system = build_system(Config.from_dict(CASES[name]))
    states, expected = ref[f"{name}/y"], ref[f"{name}/rhs"]
    got = np.array([system.rhs(0.0, y) for y in states])
    rel = np.abs(got - expected).max(axis=1) / np.abs(expected).max(axis=1)
    assert rel.max() <= 1e-12, f"{name}: right-hand side moved by {rel.max():.2e} (relative)"
