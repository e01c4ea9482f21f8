"""The order in which the suite's files run: the slowest first.

``pytest -n 2 --dist loadfile`` hands whole files to its two worker processes in collection order,
a new file to whichever worker has finished (``--no-loadscope-reorder``; by default pytest-xdist
would order the files by their number of tests, which put the few long theory-vs-simulation files
last, one worker finishing them alone while the other idled). Starting the longest files first
balances the two workers (longest-processing-time-first). The order within a file is kept (the
documentation site is built after the notebooks it renders).
"""

from __future__ import annotations

import pytest

#: Test files by decreasing duration in a cold run (numba's cache empty, ``pytest -n 2``, the
#: seconds of the slowest tests summed per file, measured on the 2-core machine); files not
#: listed follow in their usual order. Only the scheduling depends on it, never a result.
#: test_examples.py solves the examples of every activation (erf few-shot, ReLU, linear), so it
#: comes after the files that compile those kernels: started first, its compilation of the erf
#: few-shot theory ran at the same moment as the second file's (~150 s of each worker).
SLOWEST_FIRST = (
    "test_fewshot_theory_vs_simulation.py",  # 393 s
    "test_relu_theory_vs_simulation.py",  # 316 s
    "test_linear_theory_vs_simulation.py",  # 296 s
    "test_fewshot_uncertainty.py",  # 213 s
    "test_examples.py",  # 463 s when first: it runs every activation's theory (see below)
    "test_notebooks.py",  # 132 s
    "test_fuzz_cli.py",  # 108 s
    "test_dop853.py",  # 89 s
    "test_activation_registry.py",  # 63 s
    "test_relu_integrals.py",  # 59 s
    "test_fewshot_theory.py",  # 59 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Sort the items by their file's rank in SLOWEST_FIRST (stable: the order inside a file,
    and of the files not listed, is kept)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
