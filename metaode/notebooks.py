"""Executing the notebooks of notebooks/: one runner for the test suite and the documentation site.

``execute`` runs a notebook top to bottom in a Jupyter kernel of this Python (nbclient, kernel
'python3' over IPC sockets, a fresh working folder, at most ``CELL_TIMEOUT`` seconds per
cell). ``executed_copy`` returns the executed copy of a notebook from a cache folder, executing it
only when the cache holds no copy made from the same notebook by the same code: the copy records
``fingerprint``, the SHA-256 of the notebook's source and of every Python file of the package, so
an edit of either executes it anew. The test suite stores what it executes (``store``), so the
documentation build that follows renders those copies instead of executing every notebook twice.

The cache folder is ``METAODE_NOTEBOOK_CACHE`` if set, else ``.cache/executed`` at the root of
the repository; the copy of notebooks/NAME.ipynb is its notebooks/NAME.ipynb (the same relative
path, which the documentation build needs). Copies are written atomically (a temporary file, then
a rename).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL = "python3"
#: Seconds per cell (the slowest cell, the first of notebook 06, compiles the anil theory for three
#: pairs of activations on a cold numba cache: 124 s measured with the test suite on the other
#: core).
CELL_TIMEOUT = 300
#: The folders whose Python files the executed copies depend on (the installed package).
CODE_DIRS = ("metaode", "theory", "solvers", "simulations", "validation")
FINGERPRINT_KEY = "metaode_fingerprint"


def notebooks() -> list[Path]:
    """The notebooks of notebooks/, in the order of their names."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def cache_dir() -> Path:
    """Where executed copies are kept: ``METAODE_NOTEBOOK_CACHE`` or ROOT/.cache/executed."""
    return Path(os.environ.get("METAODE_NOTEBOOK_CACHE", ROOT / ".cache" / "executed"))


def copy_path(path: Path) -> Path:
    """The cached executed copy of the notebook at ``path``: cache_dir()/notebooks/NAME."""
    return cache_dir() / "notebooks" / path.name


def fingerprint(path: Path) -> str:
    """SHA-256 of the notebook's bytes and of the package's Python files (path and bytes)."""
    digest = hashlib.sha256(path.read_bytes())
    for folder in CODE_DIRS:
        for source in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(source.relative_to(ROOT)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def execute(path: Path, workdir: Path, extra_cells: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """The notebook at ``path`` with its outputs, executed with ``workdir`` as the working folder
    (``extra_cells``, code appended to the in-memory copy, run last). A failing cell raises
    nbclient's CellExecutionError with the cell's traceback."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in extra_cells)
    # IPC sockets in the working folder: a kernel on TCP warns that its traffic is unencrypted
    kernel = KernelManager(kernel_name=KERNEL, transport="ipc", ip=str(workdir / "kernel"))
    client = NotebookClient(nb, km=kernel, timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def store(path: Path, executed: nbformat.NotebookNode, key: str) -> Path:
    """Write ``executed`` (the executed notebook at ``path``) to the cache under fingerprint
    ``key``, atomically; returns the copy's path."""
    target = copy_path(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    executed.metadata[FINGERPRINT_KEY] = key
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}-", suffix=".ipynb")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        nbformat.write(executed, handle)
    os.replace(tmp, target)
    return target


def executed_copy(path: Path) -> Path:
    """The cached executed copy of the notebook at ``path``, executing (and storing) it unless a
    copy with the current fingerprint is there."""
    key = fingerprint(path)
    target = copy_path(path)
    if target.exists():
        cached = nbformat.read(target, as_version=4)
        if cached.metadata.get(FINGERPRINT_KEY) == key:
            return target
    with tempfile.TemporaryDirectory(prefix="metaode-notebook-") as workdir:
        executed = execute(path, Path(workdir))
    return store(path, executed, key)
