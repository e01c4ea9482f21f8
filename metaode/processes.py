"""The worker processes of sweeps (``solvers.sweep``) and multi-seed simulations
(``simulations.run``): one ``multiprocessing`` context for both.

Workers are forked from a "forkserver" process (``multiprocessing.forkserver``) that imports the
packages once (``PRELOAD``): a worker then starts in a few milliseconds and only loads the
compiled kernels it calls from numba's disk cache (~0.3 s), where a "spawn" worker also pays
~0.5 s of imports. The server is started once per Python process, at the first pool, and serves
every later pool of that process (a notebook's successive sweeps start their workers at once).
Unlike "fork", the workers do not inherit the caller's threads or state: the server is a fresh
interpreter that only ran the imports, which start no thread (numba starts its threading layer
when ``parallel=True`` code first runs: the I4 slices of a large network, ``theory.fields.
diffusion``, and the few-shot theory's one pass over its support sets, ``theory.support_mc.
support_statistics``; GNU OpenMP's threads, numba's default on Linux, do not survive a fork).

The server, hence every worker, runs with one BLAS / OpenMP / numba thread (``ONE_THREAD``): the
parallelism is over points or seeds, and threaded OpenBLAS on the small matrices of the ODEs only
costs (the few-shot ANIL theory runs ~2x slower with its default threads on two cores). Dask's
nanny does the same for its workers but for numba's threads, and the calling process computes
points too: ``one_numba_thread`` limits those.

As with "spawn", a script that starts workers must guard its top level with
``if __name__ == "__main__":`` (the workers import the caller's main module).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.context import BaseContext

import numba

#: Modules the server imports before it forks any worker (all that a worker runs).
PRELOAD = ("metaode.solvers.sweep", "metaode.simulations.run")
#: Environment of the server and so of every worker.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}


def worker_context() -> BaseContext:
    """The "forkserver" context, its server running (started now, in the background, with
    ``PRELOAD`` and ``ONE_THREAD``, unless this process already has one).

    Returns at once: the server imports ``PRELOAD`` while the caller goes on, and the first worker
    forks once that is done. A fork server that other code of this process started first is
    reused as it is (``multiprocessing`` keeps one per process).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    with _environment(ONE_THREAD):  # the server inherits the environment it is started with
        multiprocessing.forkserver.ensure_running()
    return context


@contextmanager
def one_numba_thread() -> Iterator[None]:
    """Run the block's ``parallel=True`` code on one thread of the calling thread (numba's
    ``set_num_threads``, which is per thread), then restore the number it had: for this process's
    share of the points of a pool, and for the tasks of a Dask worker."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
