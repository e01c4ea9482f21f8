"""The worker processes of sweeps and multi-seed simulations (``theory.processes``).

Workers are forked from a fork server started with one BLAS / OpenMP thread, whatever the caller's
environment, and the caller's environment is left as it was.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from metaode.processes import ONE_THREAD, worker_context


def test_workers_run_with_one_thread_and_the_caller_keeps_its_environment(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    context = worker_context()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "7" and "OMP_NUM_THREADS" not in os.environ
    assert context.get_start_method() == "forkserver"
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        pids = {pool.submit(os.getpid).result() for _ in range(4)}
        seen = {name: pool.submit(os.getenv, name).result() for name in ONE_THREAD}
    assert os.getpid() not in pids
    assert seen == ONE_THREAD
