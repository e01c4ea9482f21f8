"""The live explorer (``metaode.Explorer``, notebooks/07_explorer.ipynb) without a front end.

Every widget's observer is triggered by setting the widget's ``value``, and the simulation
button's handler by ``button.click()``, as a front end would: each redraws the figure with
different data, an invalid value shows its ConfigError message, and the button overlays the
simulated seeds. The display carries the figure as a PNG: the executed notebook converted to
HTML by nbconvert shows it where no widget state is stored (the page of a notebook viewer), and
the widget view where it is (whose figure, an <img> with a data URI, is in that state).

The few-shot redraw runs with one numba thread: on two cores shared with the other test worker,
OpenMP's barrier in every parallel evaluation of the Monte Carlo right-hand side waits for a
descheduled thread (measured ~80 ms per evaluation instead of 2 - 4 ms). Measured with the
notebook executed anew (the notebook cache holds no copy for the current code): 38 s.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numba
import numpy as np
import pytest
from nbconvert import HTMLExporter

import metaode
from metaode import notebooks
from metaode.validation.explorer import CONTROLS, Explorer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "07_explorer.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: A new value for every control (from the built-in experiment at alpha_max = 20).
NEW = {"lr": 1.5, "lr_head": 0.5, "inner_lr": 2.0, "inner_steps": 2, "task_std": 1.0, "K": 3,
       "alpha_max": 30.0, "support": 5}


@pytest.fixture(scope="module", autouse=True)
def one_numba_thread() -> Iterator[None]:
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.fixture(scope="module")
def explorer() -> Explorer:
    """The built-in experiment at a shorter horizon, simulated at N = 500."""
    explorer = Explorer(N=500, seeds=2)
    explorer.set(alpha_max=20.0)
    assert explorer.message == ""
    return explorer


def line_data(explorer: Explorer) -> list[np.ndarray]:
    return [np.asarray(line.get_xydata()) for ax in explorer.figure.axes for line in ax.lines]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, equal_nan=True)
                                    for x, y in zip(a, b, strict=True))


def markers(explorer: Explorer) -> list[int]:
    """The number of marker lines (simulation) in each panel."""
    return [sum(line.get_marker() == "o" for line in ax.lines) for ax in explorer.figure.axes]


def test_every_widget_redraws_the_figure(explorer: Explorer) -> None:
    assert set(NEW) == set(CONTROLS)
    base = dict(explorer.values)
    for name, value in NEW.items():
        before, shown = line_data(explorer), explorer.image.value
        explorer.controls[name].value = value
        assert explorer.values[name] == value, name
        assert explorer.message == "", (name, explorer.message)
        assert not same(before, line_data(explorer)), f"{name}: the figure did not change"
        assert explorer.image.value != shown, f"{name}: the widget shows the old figure"
        explorer.set(**base)
        assert same(before, line_data(explorer)), name
    assert explorer.controls["support"].value == "population"


def test_an_invalid_value_shows_the_config_message(explorer: Explorer) -> None:
    before = line_data(explorer)
    explorer.set(support=0)
    assert explorer.message.startswith("training.support: must be in [1, 1000000]")
    assert "training.support: must be in" in explorer.status.value
    assert explorer.config is None and same(before, line_data(explorer))
    assert explorer.simulate() == [] and explorer.message.startswith("training.support")
    explorer.set(support="population")
    assert explorer.message == "" and explorer.config is not None

    sgd = Explorer(metaode.load_config().replace({"training.algorithm": "sgd",
                                                  "teacher.task_std": 0.0}))
    assert sgd.message == ""
    sgd.controls["task_std"].value = 0.5
    assert sgd.message.startswith("teacher.task_std: must be 0 for training.algorithm = 'sgd'")
    assert "teacher.task_std: must be 0" in sgd.status.value
    sgd.controls["task_std"].value = 0.0
    assert sgd.message == "" and sgd.status.value.startswith("theory")


def test_the_button_overlays_a_simulation(explorer: Explorer) -> None:
    assert markers(explorer) == [0, 0, 0]
    explorer.button.click()
    assert [s.seed for s in explorer.sims] == [0, 1] and explorer.message == ""
    assert all(s.status == 0 and s.alpha[-1] == 20.0 for s in explorer.sims)
    assert all(n > 0 for n in markers(explorer)), markers(explorer)
    assert "simulation" in explorer.status.value
    explorer.controls["lr"].value = 1.1  # a new setting: the simulation is gone
    assert explorer.sims == [] and markers(explorer) == [0, 0, 0]


def test_the_display_falls_back_to_a_png(explorer: Explorer) -> None:
    """The display holds the widget view and a PNG; in the executed notebook converted to HTML
    the PNG is an <img> when no widget state is stored, the widget view when it is."""
    bundle = explorer._repr_mimebundle_()
    assert WIDGET_VIEW in bundle
    assert base64.b64decode(bundle["image/png"]) == explorer.png()
    assert explorer.png().startswith(b"\x89PNG")

    executed = nbformat.read(notebooks.executed_copy(NOTEBOOK), as_version=4)
    (shown,) = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs
                if WIDGET_VIEW in o.get("data", {})]
    png, model = shown.data["image/png"], shown.data[WIDGET_VIEW]["model_id"]
    state = executed.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(str(m["state"].get("value")).startswith('<img src="data:image/png;base64,')
               for m in state.values()), "no figure in the widget state"
    with_state, _ = HTMLExporter().from_notebook_node(executed)
    assert model in with_state and "application/vnd.jupyter.widget-state+json" in with_state
    assert f'src="data:image/png;base64,{png}"' not in with_state
    viewer = copy.deepcopy(executed)
    del viewer.metadata["widgets"]
    without_state, _ = HTMLExporter().from_notebook_node(viewer)
    assert f'src="data:image/png;base64,{png}"' in without_state


def test_the_readme_shows_the_figures_of_the_command() -> None:
    """README.md shows both figures of docs/figures/ and names the command that makes them."""
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / "docs" / "figures.py").read_text()
    assert "python docs/figures.py" in readme
    for name in ("validation.png", "explorer.png"):
        assert f"](docs/figures/{name})" in readme and name in script, name
        assert (ROOT / "docs" / "figures" / name).read_bytes().startswith(b"\x89PNG"), name
