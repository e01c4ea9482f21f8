"""The maml matrix study (``metaode.validation.maml_matrix``) on its cheapest case at a small
width: it writes one JSON per (case, N) and the table, resumes without recomputing, and at N = 500
(4 seeds; the criterion's bias allowance 3 / N was calibrated at N = 500) the maml theory passes
the criterion (measured ratio 0.30), the paired simulated difference maml - anil is resolved
(measured 19 standard errors) and the theory's difference matches it column by column, with sign
(measured z <= 1.5). The full matrix at N = 4000 and 8000 is the study itself (README, maml)."""

import json
from pathlib import Path

from metaode.config import load_config
from metaode.validation.maml_matrix import CASES, main


def test_study_runs_resumes_and_agrees(tmp_path):
    args = [str(tmp_path), "--N", "500", "--cases", "s2_P2_first"]
    assert main(args) == 0
    path = tmp_path / "s2_P2_first_N500.json"
    result = json.loads(path.read_text())
    assert result["ratio"] <= 1.0, result
    assert result["tolerance_met"]
    assert result["paired_signal"] > 5.0, result
    assert result["difference_z"] <= 5.0 and result["signs_agree"], result
    table = (tmp_path / "maml_matrix.md").read_text()
    assert table.count("\n") == 3 and "| s2_P2_first | 500 |" in table
    stamp = path.stat().st_mtime_ns
    assert main(args) == 0
    assert path.stat().st_mtime_ns == stamp


def test_convergence_config_is_a_case_of_the_matrix():
    """docs/maml_convergence.toml (the maml convergence study of docs/maml_matrix.md) is the case
    s2_P5_second to alpha = 6 with a tighter Monte Carlo tolerance, nothing else."""
    docs = Path(__file__).parent.parent / "docs" / "maml_convergence.toml"
    study = load_config(str(docs))
    expected = CASES["s2_P5_second"].replace({"training.alpha_max": 6.0, "output.points": 7,
                                              "theory.mc_rtol": 0.002})
    assert study.raw == expected.raw
