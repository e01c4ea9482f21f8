"""A live explorer of the theory: ipywidgets for the parameters of an experiment, a figure of the
ODE solution that redraws as a widget moves, and a button that overlays a small simulation.

``Explorer(config)`` starts from a config (default: the built-in experiment, ``load_config()``)
and shows one widget per entry of ``CONTROLS`` (docs/model.md §1 notation): the outer learning
rates eta (``training.lr``) and eta_h (``training.lr_head``), the inner learning rate eta_i
(``training.inner_lr``) and the number of inner steps s (``training.inner_steps``), the spread
sigma_tau of the task heads around u0 (``teacher.task_std``), the student width K
(``student.K``), the support, P examples per task or the population loss
(``training.support``), and the horizon alpha_max (``training.alpha_max``). Every change rebuilds
the config with ``Config.from_dict`` from the config's raw values with the changed keys (an
invalid combination shows its ``ConfigError`` message and leaves the figure at the last valid
setting), solves the ODEs (``metaode.solve``) and redraws three panels:

- the errors against alpha: L_meta = E_tau eps(w'_tau; u_tau) after adaptation and
  E_tau eps(w; u_tau) before it, or eps_g for sgd (docs/model.md §13; ``plots.error_panel``);
- the order parameters R_km (solid), Q_kl (dashed) and w_k (dotted) against alpha;
- the meta-test curve at alpha_max, E_tau eps(w^(r); u_tau) for r = 0..S test adaptation steps
  with the config's [metatest] rate and support (docs/model.md §12), above the representation
  error E_tau min_w eps(w; u_tau), the floor of any adapted head.

The meta-test curve is recorded at alpha_max (the config's ``metatest.at`` is dropped, so that
it follows the horizon). A student width other than the config's draws its initial overlaps
(``student.init_*``, docs/model.md §3) instead of the config's Q0, R0 and w0.

The button runs ``simulate``: ``metaode.simulate`` at width N (default 1000) for a few seeds in
this process, drawn as markers, the seed mean with error bars +- the standard deviation over
seeds, on all three panels; a change of the parameters removes them.

A finite support makes the theory a Monte Carlo estimate (docs/model.md §9, §10); the explorer
solves it with ``FAST_THEORY``: tolerance theory.mc_rtol = 0.05 on a budget of 512 to 2048
support sets (the validation runs use 0.01, up to 262144) and solver.rtol = 1e-6, and shows the
band +- 2 mc_err and any unmet tolerance (a budget capped at 1024 left two inner steps at
support = 5 with a relative uncertainty of 1.0). Redraws, measured on two cores shared with
other jobs: the built-in experiment 0.4 - 0.8 s (the solve takes milliseconds, the rest is
drawing); with support = 5, in one numba thread, 1.3 - 2.1 s for one inner step and 13 s for two
(2048 support sets). With numba's default of one thread per core the same few-shot redraws took
9 - 100 s, because OpenMP's barrier in every evaluation waits for a thread that the busy machine
has descheduled: on a busy machine ``numba.set_num_threads(1)`` makes them several times faster.

Without a front end every widget is driven by ``set(**values)``, ``simulate()``, the widgets'
``value`` and the button's ``click()``; ``figure`` is the matplotlib figure and ``png()`` its
image. Displayed in a notebook, an explorer offers the widget view and a PNG of the current
figure: a live front end shows the widgets; a rendering that replays the stored widget state
(nbconvert, mkdocs-jupyter) shows them with the figure, an <img> whose data URI is in that
state; one without widget state (a notebook viewer) shows the PNG.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metaode import simulate as simulate_networks
from metaode import solve
from metaode.config import Config, ConfigError, load_config
from metaode.solvers.integrate import RHS_ERRORS
from metaode.trajectory import SUCCESS, Trajectory
from metaode.validation.plots import (
    entry_label,
    error_panel,
    overlay_columns,
    save_figure,
    seed_markers,
)

try:
    import ipywidgets as widgets
    from traitlets import TraitError
except ImportError:  # pragma: no cover - ipywidgets is in the test and docs extras
    raise ImportError("the explorer needs ipywidgets: python -m pip install ipywidgets") from None

#: Widget name -> (config key, its meaning in docs/model.md notation, shown as the tooltip).
CONTROLS: dict[str, tuple[str, str]] = {
    "lr": ("training.lr", "eta: outer learning rate of the first layer J"),
    "lr_head": ("training.lr_head", "eta_h: outer learning rate of the head w (0: fixed head)"),
    "inner_lr": ("training.inner_lr", "eta_i: inner (adaptation) learning rate of the head"),
    "inner_steps": ("training.inner_steps", "s: inner gradient steps per task"),
    "task_std": ("teacher.task_std", "sigma_tau: std of a task head u around u0"),
    "K": ("student.K", "K: hidden units of the student (M = teacher.M is fixed)"),
    "support": ("training.support", "P: support examples per task, or the population loss"),
    "alpha_max": ("training.alpha_max", "alpha_max: horizon in meta-time alpha = steps / N"),
}
#: Slider ranges (min, max, step); a value outside is shown by widening the range.
RANGES: dict[str, tuple[float, float, float]] = {
    "lr": (0.0, 3.0, 0.05), "lr_head": (0.0, 3.0, 0.05), "inner_lr": (0.0, 3.0, 0.05),
    "inner_steps": (0, 5, 1), "task_std": (0.0, 1.5, 0.05), "K": (1, 6, 1),
    "alpha_max": (5.0, 200.0, 5.0),
}
#: The choices of the support.
SUPPORTS: tuple[str | int, ...] = ("population", 1, 2, 5, 10, 20, 50)
#: The explorer's theory settings, applied over the config's: a looser Monte Carlo tolerance and
#: a bounded budget for a finite support, and a looser integration tolerance.
FAST_THEORY: dict[str, Any] = {"theory.mc_rtol": 0.05, "theory.mc_tasks": 512,
                               "theory.mc_max_tasks": 2048, "solver.rtol": 1e-6}
#: Resolution of the figure shown in the widget and in the notebook's PNG.
DPI = 80


class Explorer:
    """Widgets, figure and simulation overlay of one experiment (module docstring).

    ``values`` holds the controls' current values, ``config`` the config they make (None while
    they are invalid), ``theory`` its ODE solution, ``sims`` the simulations overlaid (empty after
    a change), ``message`` what went wrong ('' if nothing: an invalid config, a divergence, an
    unmet Monte Carlo tolerance, a failed simulation) and ``timings`` the seconds of the last
    redraw (``theory_s``: the solve, ``redraw_s``: rebuild, solve and drawing) and simulation
    (``simulation_s``).
    """

    def __init__(self, config: Config | None = None, *, N: int = 1000, seeds: int = 2) -> None:
        self.base = load_config() if config is None else config
        self.N, self.seeds = int(N), int(seeds)
        self.values: dict[str, Any] = {}
        for name, (key, _) in CONTROLS.items():
            section, _, entry = key.partition(".")
            self.values[name] = self.base.raw[section][entry]
        self.config: Config | None = None
        self.theory: Trajectory | None = None
        self.sims: list[Trajectory] = []
        self.message = ""
        self.timings: dict[str, float] = {}
        self.figure = Figure(figsize=(15, 4.6), layout="constrained")
        FigureCanvasAgg(self.figure)
        self._png = b""
        self._quiet = False  # set() is moving the widgets: their observers do not redraw

        self.controls = {name: _widget(name, value) for name, value in self.values.items()}
        for name, control in self.controls.items():
            control.observe(partial(self._changed, name), names="value")
        self.button = widgets.Button(description=f"simulate N = {self.N}, {self.seeds} seeds",
                                     layout=widgets.Layout(width="auto"),
                                     tooltip="run metaode.simulate and overlay the seed mean "
                                             "+- std as markers")
        self.button.on_click(lambda _: self.simulate())
        self.status = widgets.HTML()
        self.image = widgets.HTML()  # an <img> of the PNG: its data URI is in the widget state
        header = widgets.HTML(
            "Lines: the ODEs (docs/model.md); markers: simulated networks. A finite support is "
            f"solved by Monte Carlo at theory.mc_rtol = {FAST_THEORY['theory.mc_rtol']:g} "
            f"({FAST_THEORY['theory.mc_tasks']} to {FAST_THEORY['theory.mc_max_tasks']} support "
            "sets; the validation uses 0.01), drawn with a band of +- 2 mc_err.")
        names = list(self.controls)
        self.widget = widgets.VBox([
            header,
            widgets.HBox([widgets.VBox([self.controls[n] for n in names[:4]]),
                          widgets.VBox([self.controls[n] for n in names[4:]])]),
            widgets.HBox([self.button, self.status]),
            self.image,
        ])
        self.redraw()

    # -- driving the explorer ------------------------------------------------------------------
    def set(self, **values: Any) -> None:
        """Set controls by name (``CONTROLS``), move their widgets there (widening a slider's
        range or adding a support choice where needed) and redraw once."""
        unknown = sorted(set(values) - set(CONTROLS))
        if unknown:
            raise TypeError(f"Explorer.set: unknown control(s) {', '.join(unknown)} "
                            f"(controls: {', '.join(CONTROLS)})")
        self.values.update(values)
        self._quiet = True
        try:
            for name, value in values.items():
                _move(self.controls[name], value)
        finally:
            self._quiet = False
        self.redraw()

    def config_for(self, values: dict[str, Any]) -> Config:
        """The config of control values: the base config's raw values with the controls' keys
        and ``FAST_THEORY`` set, without metatest.at (the curve is taken at alpha_max) and, for a
        width other than the base config's, without its initial overlaps (drawn instead)."""
        data = copy.deepcopy({section: dict(keys) for section, keys in self.base.raw.items()})
        data["metatest"].pop("at", None)
        if values["K"] != self.base.K:
            for name in ("Q0", "R0", "w0"):
                data["student"].pop(name, None)
        settings = {key: values[name] for name, (key, _) in CONTROLS.items()}
        for dotted, value in {**settings, **FAST_THEORY}.items():
            section, _, key = dotted.partition(".")
            data[section][key] = value
        return Config.from_dict(data)

    def redraw(self) -> None:
        """Rebuild the config from ``values``, solve its ODEs and redraw the figure (without
        the simulations, which belong to the former setting); an invalid config or a theory that
        is unavailable shows its message and keeps the figure."""
        start = time.perf_counter()
        self.sims = []
        try:
            config = self.config_for(self.values)
            theory = solve(config)
        except RHS_ERRORS as err:  # an invalid config, or a theory that failed to evaluate
            self.config, self.theory = None, None
            reason = str(err) if isinstance(err, ConfigError) else (
                f"theory failed: {type(err).__name__}: {err}")
            self._report(f"{reason} (the figure shows the last valid setting)")
            return
        self.timings = {"theory_s": time.perf_counter() - start}
        if not len(theory.alpha):  # not even the initial state is valid
            self.config, self.theory = None, None
            self._report(f"theory: {theory.message} (the figure shows the last valid setting)")
            return
        self.config, self.theory = config, theory
        self._draw()
        self.timings["redraw_s"] = time.perf_counter() - start
        self._report(_theory_problem(theory))

    def simulate(self) -> list[Trajectory]:
        """Simulate the current config at width N for seeds 0..seeds-1 (in this process) and
        overlay the runs; returns them (none while the config is invalid)."""
        if self.config is None:
            self._report(self.message)
            return []
        self.button.disabled = True
        self.status.value = f"simulating N = {self.N}, {self.seeds} seeds ..."
        start = time.perf_counter()
        try:
            sims = simulate_networks(self.config, N=self.N, seeds=range(self.seeds), workers=1)
        except ConfigError as err:
            self._report(str(err))
            return []
        finally:
            self.button.disabled = False
        self.timings["simulation_s"] = time.perf_counter() - start
        self.sims = sims
        self._draw()
        problems = [_theory_problem(self.theory),
                    *(f"seed {s.seed}: {s.message}" for s in sims if s.status != SUCCESS)]
        self._report("; ".join(p for p in problems if p))
        return sims

    def png(self) -> bytes:
        """The current figure as PNG (DPI dots per inch)."""
        return self._png

    def save(self, path: str | Path) -> None:
        """Write the current figure to ``path`` (format from the suffix), atomically."""
        save_figure(self.figure, path)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The widget view for a live front end, with the current figure as image/png for
        renderings without one."""
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        if self._png:  # none if not even the first setting could be drawn
            bundle["image/png"] = self._base64()
        bundle["text/plain"] = f"<Explorer: {self._title()}>"
        return bundle

    # -- internals -----------------------------------------------------------------------------
    def _changed(self, name: str, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.set(**{name: change["new"]})

    def _report(self, message: str) -> None:
        """Show ``message`` (an error or warning; '' for none) and the timings."""
        self.message = message
        parts = []
        if message:
            parts.append(f'<b style="color:#b00000">{html.escape(message)}</b>')
        if self.theory is not None:
            t = self.timings
            parts.append(f"theory {t['theory_s']:.2f} s, redraw {t['redraw_s']:.2f} s")
            if self.sims:
                parts.append(f"simulation {t['simulation_s']:.1f} s")
        self.status.value = "; ".join(parts)

    def _title(self) -> str:
        v = self.values
        head = (f"{self.base.training.algorithm} ({self.base.training.order} order), K = {v['K']}, "
                f"M = {self.base.M}")
        rates = (f"lr = {v['lr']:g}, lr_head = {v['lr_head']:g}, inner_lr = {v['inner_lr']:g}, "
                 f"s = {v['inner_steps']}, task_std = {v['task_std']:g}, "
                 f"support = {v['support']}")
        sims = f"markers: N = {self.N}, {len(self.sims)} seeds" if self.sims else ""
        return ", ".join(p for p in (head, rates, sims) if p)

    def _draw(self) -> None:
        """Redraw the three panels from ``theory`` and ``sims`` and render the PNG."""
        config, theory, sims = self.config, self.theory, self.sims
        fig = self.figure
        fig.clear()
        errors, overlaps, metatest = fig.subplots(1, 3)
        error_panel(errors, theory, sims, config.training.algorithm)
        K, M = config.K, config.M
        groups = [([f"R_{k}_{m}" for k in range(K) for m in range(M)], "-"),
                  ([f"Q_{k}_{l}" for k in range(K) for l in range(k, K)], "--"),
                  ([f"w_{k}" for k in range(K)], ":")]
        for names, linestyle in groups:
            overlay_columns(overlaps, theory, sims, names, [entry_label(n) for n in names],
                            linestyle)
        entries = sum(len(names) for names, _ in groups)
        overlaps.legend(fontsize=7, ncol=max(1, math.ceil(entries / 10)))
        overlaps.set_ylabel(r"$R_{km}$, $Q_{kl}$, $w_k$")
        overlaps.set_title("order parameters: R (solid), Q (dashed), w (dotted)")
        _metatest_panel(metatest, config, theory, sims)
        fig.suptitle(self._title(), fontsize=10)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        self._png = buffer.getvalue()
        self.image.value = (f'<img src="data:image/png;base64,{self._base64()}" '
                            f'alt="{html.escape(self._title())}">')

    def _base64(self) -> str:
        return base64.b64encode(self._png).decode("ascii")


def _widget(name: str, value: Any) -> widgets.Widget:
    """The widget of control ``name`` at ``value`` (sliders update on release)."""
    style = {"description_width": "80px"}
    if name == "support":
        options = SUPPORTS if value in SUPPORTS else (*SUPPORTS, value)
        widget = widgets.Dropdown(options=options, description=name, style=style)
    else:
        low, high, step = RANGES[name]
        kind = widgets.IntSlider if isinstance(step, int) else widgets.FloatSlider
        widget = kind(min=low, max=high, step=step, description=name, continuous_update=False,
                      style=style)
    widget.tooltip = CONTROLS[name][1]
    _move(widget, value)
    return widget


def _move(widget: widgets.Widget, value: Any) -> None:
    """Show ``value`` on ``widget``: a dropdown gains it as a choice, a slider widens its range
    to it; a value of the wrong type leaves the widget as it is (the config reports it)."""
    try:
        if isinstance(widget, widgets.Dropdown):
            if value not in widget.options:
                widget.options = (*widget.options, value)
        else:
            widget.min, widget.max = min(widget.min, value), max(widget.max, value)
        widget.value = value
    except (TraitError, TypeError):
        pass


def _theory_problem(theory: Trajectory) -> str:
    """Why the theory stopped or how its Monte Carlo tolerance was missed ('' if neither)."""
    if theory.status != SUCCESS:
        return f"theory: {theory.message}"
    return theory.monte_carlo.get("warning", "")


def _metatest_panel(ax: Axes, config: Config, theory: Trajectory,
                    sims: list[Trajectory]) -> None:
    """E_tau eps(w^(r); u_tau) against the test step r at alpha_max: theory line, simulation
    markers (the curve of each run's overlaps) and the representation error."""
    at, mt = float(config.training.alpha_max), config.metatest
    steps = np.arange(int(mt.inner_steps) + 1)
    ax.set_title(f"meta-test at alpha = {at:g}: inner_lr = {mt.inner_lr:g}, support = "
                 f"{mt.support}", fontsize=10)
    ax.set_xlabel("test adaptation steps $r$")
    ax.set_ylabel(r"$\mathbb{E}_\tau\,\epsilon(w^{(r)}; u_\tau)$")
    ax.grid(alpha=0.3)
    if at not in theory.metatest:
        ax.text(0.5, 0.5, f"no curve: the theory stopped at alpha = {theory.alpha[-1]:g}",
                ha="center", va="center", transform=ax.transAxes)
        return
    ax.plot(steps, theory.metatest[at], color="C0", lw=1.5, label="theory")
    if "representation_error" in theory.observables:
        ax.axhline(theory.column("representation_error")[-1], color="0.4", ls=":", lw=1.2,
                   label=r"representation error $\mathbb{E}_\tau \min_w \epsilon(w; u_\tau)$")
    curves = [s.metatest[at] for s in sims if at in s.metatest]
    if curves:
        seed_markers(ax, steps, np.array(curves), "C0")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
