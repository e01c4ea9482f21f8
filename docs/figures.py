"""Make the README's figures, in docs/figures/ (from the repository root, a few minutes on two
cores, most of it simulation):

    python docs/figures.py

- ``validation.png``: the overlay figure of the built-in experiment, theory against simulation,
  as ``metaode validate --out DIR`` writes it (that command, run into a temporary folder);
- ``explorer.png``: the figure of ``metaode.Explorer`` on the built-in experiment at
  ``EXPLORER_SETTING`` (support = 5: the few-shot Monte Carlo theory with its band), with the
  simulation of its button at ``EXPLORER_SIMULATION`` (N = 2000, seeds 0..3, in place of the
  button's default N = 1000 and two seeds, whose spread over seeds after the plateau is wider).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from metaode import Explorer

FIGURES = Path(__file__).resolve().parent / "figures"
#: The explorer's controls for explorer.png (the others as in the built-in experiment).
EXPLORER_SETTING = {"support": 5}
#: The width and number of seeds of the explorer's simulation in explorer.png.
EXPLORER_SIMULATION = {"N": 2000, "seeds": 4}


def main() -> None:
    FIGURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="metaode-figures-") as out:
        subprocess.run([sys.executable, "-m", "metaode", "validate", "--out", out], check=True)
        shutil.copyfile(Path(out) / "validation.png", FIGURES / "validation.png")
    explorer = Explorer(**EXPLORER_SIMULATION)
    explorer.set(**EXPLORER_SETTING)
    explorer.simulate()
    if explorer.message:
        raise SystemExit(f"explorer: {explorer.message}")
    explorer.save(FIGURES / "explorer.png")
    print(f"wrote {FIGURES / 'validation.png'} and {FIGURES / 'explorer.png'}")


if __name__ == "__main__":
    main()
