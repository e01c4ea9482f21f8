"""The installed package: one top-level module, no import cycles, no old top-level names, and the
erf kernels reachable only through the erf activation."""

import ast
import importlib
import json
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import metaode

ROOT = Path(__file__).resolve().parents[1]
OLD_NAMES = ("theory", "solvers", "simulations", "validation")
SOURCE_DIRS = ("metaode", "theory", "solvers", "simulations", "validation")


def package_modules() -> dict[str, Path]:
    """{module name: source file} of every module of the installed package."""
    modules = {"metaode": Path(metaode.__file__)}
    packages = [metaode] + [importlib.import_module(f"metaode.{name}") for name in OLD_NAMES]
    for package in packages:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name == "metaode.__main__":
                continue  # runs the command line when imported
            modules[info.name] = Path(importlib.import_module(info.name).__file__)
        modules[package.__name__] = Path(package.__file__)
    return modules


def imported_names(tree: ast.AST, package: str, modules: dict[str, Path]) -> set[str]:
    """Absolute names of the modules (of ``modules`` where a name is one) imported at module
    level of a source tree."""
    names = set()
    for node in tree.body if isinstance(tree, ast.Module) else []:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:  # a submodule if it is one, else a name of the module
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return names


def test_every_module_imports_and_no_import_cycle() -> None:
    """Module-level imports between metaode modules form no cycle (a DFS over that graph)."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        graph[name] = {m for m in imported_names(tree, package, modules)
                       if m in modules and m != name}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert len(modules) > 30


def _python_sources() -> list[tuple[Path, str]]:
    files = [p for d in (*SOURCE_DIRS, "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    sources = [(p, p.read_text()) for p in files]
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        sources.append((nb, "\n".join(line for line in code.split("\n")
                                      if not line.lstrip().startswith(("%", "!")))))
    return sources


def test_nothing_imports_the_old_top_level_names() -> None:
    """No module, test, benchmark or notebook imports theory/solvers/simulations/validation by
    their old top-level names (which would load a second copy of a module from the root)."""
    offenders = []
    for path, text in _python_sources():
        for node in ast.walk(ast.parse(text)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] in OLD_NAMES]
    assert not offenders, offenders


def test_only_the_erf_activation_imports_the_erf_kernels() -> None:
    allowed = {"metaode.theory.activations.erf", "metaode.theory.activations.erf_fourpoint"}
    kernels = "metaode.theory.activations.erf_kernels"
    modules = package_modules()
    users = [name for name, path in modules.items()
             if name not in allowed and name != kernels
             and kernels in imported_names(ast.parse(path.read_text()), name.rpartition(".")[0],
                                           modules)]
    assert not users, users


def test_only_the_activations_package_names_an_activation() -> None:
    """The theory, solvers, simulations and validation reach erf only through the generic
    functions of the registry: no module outside metaode.theory.activations imports an erf module
    (so another activation is a new module there, not an edit of the model)."""
    erf_modules = {name for name in package_modules() if name.rpartition(".")[2].startswith("erf")}
    modules = package_modules()
    users = [name for name, path in modules.items()
             if not name.startswith("metaode.theory.activations")
             and erf_modules & set(imported_names(ast.parse(path.read_text()),
                                                  name.rpartition(".")[0], modules))]
    assert erf_modules and not users, users


def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """A regular (non-editable) build: every file of the wheel is under metaode/ (or its
    dist-info), with the default config and the erf kernels."""
    source = tmp_path / "source"  # a copy: setuptools writes build/ next to the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "results", "__pycache__", "*.egg-info", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("metaode-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"metaode"}, tops
    for needed in ("metaode/validation/default.toml", "metaode/theory/activations/erf_kernels.py",
                   "metaode/cli/__init__.py", "metaode/__init__.py"):
        assert needed in names


def test_notebooks_use_the_public_api_only() -> None:
    """Notebooks import from ``metaode`` itself, and only names of ``metaode.__all__``."""
    for path, text in _python_sources():
        if path.suffix != ".ipynb":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("metaode"):
                assert node.module == "metaode", f"{path.name}: imports {node.module}"
                assert {a.name for a in node.names} <= set(metaode.__all__), path.name


def test_the_worker_server_preloads_modules_of_the_package() -> None:
    """The fork server of the worker pools imports ``PRELOAD`` by name (it ignores names it
    cannot import): each must be a module of the installed package, not an old top-level name."""
    from metaode.processes import PRELOAD

    modules = package_modules()
    assert PRELOAD and all(name in modules for name in PRELOAD), PRELOAD
