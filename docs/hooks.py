"""mkdocs hooks of the documentation site: the pages that come from the code, and the notebooks.

Generated at every build, so that the site cannot drift from the code it documents:

- ``index.md``: the README's first screen (the two commands for a fresh machine), what they
  produce, and the figures of docs/figures/ (made by ``python docs/figures.py``);
- ``configuration.md``: every config key, from the schema (``metaode.config.Config.describe``);
- ``cli.md``: ``metaode --help`` and each command's help, from the parser;
- ``api.md``: the public API, ``metaode.__all__``, rendered from docstrings by mkdocstrings;
- ``examples.md``: examples/README.md and every examples/*.toml;
- ``notebooks/*.ipynb``: every notebook of notebooks/, executed (``metaode.notebooks``: the cached
  copy when the test suite has just executed it), rendered with its figures by mkdocs-jupyter; the
  "Notebooks" section of the navigation lists them.
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
import tomllib
from pathlib import Path

import mkdocs.plugins
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
#: The package tree that mkdocstrings reads (``package_tree``; the ``paths`` of its handler).
API_TREE = ROOT / ".cache" / "api-tree"
NOTEBOOK_SECTION = "Notebooks"


@mkdocs.plugins.event_priority(100)  # before mkdocstrings reads its paths (the package tree)
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """The "Notebooks" section of the navigation: one entry per notebook of notebooks/; and the
    package tree that mkdocstrings reads (``package_tree``)."""
    from metaode import notebooks

    package_tree()

    entries = [f"notebooks/{path.name}" for path in notebooks.notebooks()]
    for item in config.nav:
        if isinstance(item, dict) and NOTEBOOK_SECTION in item:
            item[NOTEBOOK_SECTION] = entries
    return config


@mkdocs.plugins.event_priority(100)  # before mkdocs-jupyter wraps the notebooks as pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the executed notebooks."""
    from metaode import notebooks

    for path in notebooks.notebooks():  # a File of its own folder: mkdocs-jupyter reads src_dir
        copy = notebooks.executed_copy(path)
        files.append(File(str(copy.relative_to(notebooks.cache_dir())),
                          src_dir=str(notebooks.cache_dir()), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """The body of a generated page (``GENERATED``; its file in docs/ says so), else the page."""
    generate = GENERATED.get(page.file.src_uri)
    return generate() if generate else markdown


def package_tree() -> Path:
    """The installed package's tree, ``API_TREE/metaode``, for mkdocstrings (griffe reads the
    sources without importing them, and finds a package's subpackages in its folder; here
    ``metaode.theory`` and its siblings live in top-level folders, mapped by
    ``[tool.setuptools.package-dir]`` of pyproject.toml). Symbolic links: ``metaode``'s own
    entries and one per mapped subpackage, made anew at every build."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    package = API_TREE / "metaode"
    shutil.rmtree(API_TREE, ignore_errors=True)
    package.mkdir(parents=True)
    for entry in (ROOT / mapping["metaode"]).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        if name.startswith("metaode."):
            (package / name.removeprefix("metaode.")).symlink_to(ROOT / folder)
    return package


def index_page() -> str:
    """Getting started: the README up to its first rule, then what the commands produce."""
    from metaode.config import load_config

    readme = (ROOT / "README.md").read_text()
    first_screen = readme.split("\n---\n", 1)[0]
    simulation = load_config().simulation
    return first_screen + f"""
## What the two commands produce

`metaode validate --out results/default` solves the ODEs of the built-in experiment (ANIL, erf
student and teacher, K = M = 2, population support; `validation/default.toml`), simulates it at
N = {simulation.N} over {simulation.seeds} seeds, and writes to `results/default/`: `theory.csv`,
`simulation.csv` (the per-seed records), `validation.json` (the agreement of every column:
largest deviation, its z-score against the spread over seeds) and `validation.png`, the theory
as lines over the simulation as markers with their spread:

![The built-in experiment: theory over simulation](figures/validation.png)

The test command runs the test suite (every closed form against numerical integration, every
ODE against simulations at finite N, the notebooks, the examples and this site in strict mode).

The [explorer notebook](notebooks/07_explorer.ipynb) redraws the theory as its sliders move; at a
fixed setting it draws:

![The explorer at a fixed setting](figures/explorer.png)

Both figures are made by `python docs/figures.py`.

## Where to go next

- [The model](model.md): notation, the derivation of every equation and the function that
  computes it.
- [Configuration](configuration.md) and [command line](cli.md): every key and every option.
- [Python API](api.md): `metaode.solve`, `metaode.simulate`, `metaode.compare` and the analysis
  functions.
- [Examples](examples.md): configs of classic experiments, each with the number it reproduces.
- The notebooks (left): theory against simulation, phase diagrams, over-parameterisation, task
  variability, first against second order, activations, the explorer.
"""


def configuration_page() -> str:
    """Every key of the schema with its default, meaning and allowed range."""
    from metaode.config import Config

    return f"""# Configuration

One TOML file drives theory, simulation and validation. Every table and key is optional; a key
left out takes its default. An unknown key, a wrong type, a value out of range or inconsistent
shapes are refused with a message that starts with the dotted key (`training.lr: ...`) and the
allowed range, and the command exits with status 2. The built-in experiment is
`validation/default.toml` of the package; [the examples](examples.md) are complete configs.

This table is generated from the schema, `metaode.config.SCHEMA`, by
`metaode.config.Config.describe()`:

{Config.describe()}
"""


def cli_page() -> str:
    """``metaode --help`` and the help of every command, as argparse prints them."""
    from metaode.cli.program import COMMANDS, parser

    os.environ["COLUMNS"] = "100"  # argparse's line width
    main = parser()
    subcommands = next(a for a in main._actions if a.dest == "command").choices
    parts = ["# Command line\n", "The console script `metaode` (also `python -m metaode`). This "
             "page is the parser's own help, generated at build time.\n",
             "```text", main.format_help().rstrip(), "```\n"]
    for name in COMMANDS:
        parts += [f"## metaode {name}\n", "```text", subcommands[name].format_help().rstrip(),
                  "```\n"]
    return "\n".join(parts)


def api_page() -> str:
    """The package docstring (its indented example as a Python block), then one mkdocstrings
    block per name of ``metaode.__all__``, from the module that defines it."""
    import metaode

    intro = re.sub(r"(?:^    .*\n)+", lambda block: f"```python\n{textwrap.dedent(block[0])}```\n",
                   metaode.__doc__.split("\n\n", 1)[1], flags=re.M)
    parts = ["# Python API\n", intro]
    for name in metaode.__all__:
        parts.append(f"::: {metaode._REEXPORTED.get(name, 'metaode')}.{name}\n")
    return "\n".join(parts)


def examples_page() -> str:
    """examples/README.md (its links to the configs become links to their sections) and every
    example config."""
    folder = ROOT / "examples"
    configs = sorted(folder.glob("*.toml"))
    intro = (folder / "README.md").read_text() if (folder / "README.md").exists() else \
        "# Examples\n"
    intro = re.sub(r"\]\(([\w-]+)\.toml\)", r"](#\1)", intro)
    parts = [intro]
    for path in configs:
        parts += [f"## {path.name} {{#{path.stem}}}\n", "```toml", path.read_text().rstrip(),
                  "```\n"]
    return "\n".join(parts)


#: The pages whose body is generated at every build: docs/NAME holds a placeholder.
GENERATED = {"index.md": index_page, "configuration.md": configuration_page, "cli.md": cli_page,
             "api.md": api_page, "examples.md": examples_page}
