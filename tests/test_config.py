"""``theory.config``: defaults, the checks (every message starts with the dotted key), replace()."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from metaode.config import SCHEMA, Config, ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_are_the_schema_defaults():
    config = Config.default()
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            if spec.default is not None:
                assert getattr(getattr(config, section), key) == spec.default, f"{section}.{key}"
    np.testing.assert_array_equal(config.teacher.u0, np.ones(config.M))
    np.testing.assert_array_equal(config.teacher.T, np.eye(config.M))
    assert config.metatest.inner_lr == config.training.inner_lr


def test_default_initial_overlaps_are_those_of_a_random_network():
    """Q0, R0, w0 default to the overlaps of one random network of width init_N (init_seed)."""
    config = Config.default()
    st = config.student
    K, M, N, s = config.K, config.M, st.init_N, st.init_scale
    assert st.Q0.shape == (K, K) and st.R0.shape == (K, M) and st.w0.shape == (K,)
    # J_ki ~ N(0, s^2): Q_kk = s^2 (1 +- sqrt(2/N)), Q_kl (k != l) = +- s^2 / sqrt(N), and
    # R_km = J_k . B_m / N with |B_m|^2 = N: +- s / sqrt(N). Five standard deviations.
    np.testing.assert_allclose(st.Q0, s**2 * np.eye(K), rtol=0, atol=5 * s**2 * math.sqrt(2 / N))
    np.testing.assert_allclose(st.R0, 0.0, atol=5 * s / math.sqrt(N))
    assert np.all(np.abs(st.w0) < 5 * st.init_head_scale)
    # the draw is a function of init_seed alone
    again = Config.default()
    np.testing.assert_array_equal(again.student.Q0, st.Q0)
    other = config.replace("student.init_seed", 1)
    assert not np.array_equal(other.student.R0, st.R0)


def test_explicit_initial_overlaps_are_kept_exactly():
    Q0, R0, w0 = [[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.05, 0.02]], [0.5, -0.5]
    config = Config.from_dict({"student": {"Q0": Q0, "R0": R0, "w0": w0}})
    np.testing.assert_array_equal(config.student.Q0, Q0)
    np.testing.assert_array_equal(config.student.R0, R0)
    np.testing.assert_array_equal(config.student.w0, w0)


def test_types_are_coerced_or_rejected():
    config = Config.from_dict({"training": {"inner_steps": 2.0, "lr": 1}})
    assert config.training.inner_steps == 2 and isinstance(config.training.inner_steps, int)
    assert config.training.lr == 1.0 and isinstance(config.training.lr, float)
    assert Config.from_dict({"training": {"support": 10}}).training.support == 10


BAD = [
    ({"training": {"lr_typo": 1.0}}, "training.lr_typo"),
    ({"trainig": {"lr": 1.0}}, "trainig"),
    ({"training": 1.0}, "training"),
    ({"training": {"lr": "fast"}}, "training.lr"),
    ({"training": {"lr": True}}, "training.lr"),
    ({"training": {"lr": -0.1}}, "training.lr"),
    ({"training": {"lr": float("nan")}}, "training.lr"),
    ({"training": {"inner_steps": 1.5}}, "training.inner_steps"),
    ({"training": {"alpha_max": 0.0}}, "training.alpha_max"),
    ({"training": {"algorithm": "adam"}}, "training.algorithm"),
    ({"training": {"support": "pop"}}, "training.support"),
    ({"training": {"support": 0}}, "training.support"),
    ({"student": {"K": 0}}, "student.K"),
    ({"student": {"Q0": [[1.0, 0.0]]}}, "student.Q0"),
    ({"student": {"Q0": [1.0, 0.0]}}, "student.Q0"),
    ({"student": {"Q0": [[0.3, 0.1], [0.0, 0.3]]}}, "student.Q0"),
    ({"student": {"Q0": [[0.3, "a"], [0.0, 0.3]]}}, "student.Q0"),
    ({"student": {"R0": [[0.0, 0.0]]}}, "student.R0"),
    ({"student": {"w0": [0.1, 0.1, 0.1]}}, "student.w0"),
    ({"teacher": {"u0": [1.0]}}, "teacher.u0"),
    ({"teacher": {"T": [[1.0]]}}, "teacher.T"),
    ({"teacher": {"T": [[1.0, 0.5], [0.4, 1.0]]}}, "teacher.T"),
    ({"teacher": {"T": [[1.0, 0.0], [0.0, -1.0]]}}, "teacher.T"),
    ({"teacher": {"task_std": 0.5}, "training": {"algorithm": "sgd"}}, "teacher.task_std"),
    # R_00^2 = 0.81 > Q_00 T_00 = 0.25: [[Q0, R0], [R0^T, T]] is not a covariance
    ({"student": {"Q0": [[0.25, 0.0], [0.0, 0.25]], "R0": [[0.9, 0.0], [0.0, 0.0]],
                  "w0": [0.1, 0.1]}}, "student.Q0"),
    ({"output": {"points": 1}}, "output.points"),
    ({"solver": {"method": "Euler"}}, "solver.method"),
    ({"simulation": {"N": 1}}, "simulation.N"),
    ({"simulation": {"N": 3}}, "simulation.N"),  # < K + M = 4
    ({"simulation": {"seeds": 0}}, "simulation.seeds"),
]


@pytest.mark.parametrize(("data", "key"), BAD, ids=[f"{k}-{i}" for i, (_, k) in enumerate(BAD)])
def test_every_check_message_starts_with_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert "\n" not in str(info.value)


def test_replace_returns_a_validated_copy():
    config = Config.default()
    faster = config.replace("training.lr", 1.5)
    assert faster.training.lr == 1.5 and faster.raw["training"]["lr"] == 1.5
    assert config.training.lr == SCHEMA["training"]["lr"].default  # the original is unchanged
    assert faster.training.lr_head == config.training.lr_head
    np.testing.assert_array_equal(faster.student.Q0, config.student.Q0)
    with pytest.raises(ConfigError, match=r"^training\.lr: "):
        config.replace("training.lr", -1.0)
    with pytest.raises(ConfigError, match=r"^training\.speed: "):
        config.replace("training.speed", 1.0)
    with pytest.raises(ConfigError, match=r"^simulation\.N: "):
        config.replace("simulation.N", 3)


def test_times():
    config = Config.from_dict({"training": {"alpha_max": 10.0}, "output": {"points": 6}})
    np.testing.assert_allclose(config.times(), [0, 2, 4, 6, 8, 10])
    log = config.replace("output.spacing", "log").replace("output.log_start", 0.1)
    np.testing.assert_allclose(log.times(), [0, 0.1, 10**-0.5, 1, 10**0.5, 10])


def test_from_toml_errors_name_the_config(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: no such file"):
        Config.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nlr = = 1\n")
    with pytest.raises(ConfigError, match=r"^config: .* is not valid TOML"):
        Config.from_toml(bad)


def test_describe_and_readme_document_every_key():
    table = Config.describe()
    text = README.read_text()
    for section, keys in SCHEMA.items():
        for key in keys:
            assert f"`{section}.{key}`" in table
            assert f"`{section}.{key}`" in text, f"README.md does not document {section}.{key}"


def test_replace_several_coupled_keys_at_once():
    """Shortening the horizon of a config with explicit meta-test times needs both keys at once."""
    config = Config.from_dict({"training": {"alpha_max": 80.0}, "metatest": {"at": [25.0, 80.0]}})
    with pytest.raises(ConfigError, match=r"^metatest\.at:"):
        config.replace("training.alpha_max", 40.0)
    short = config.replace({"training.alpha_max": 40.0, "metatest.at": [25.0, 40.0]})
    assert short.training.alpha_max == 40.0 and list(short.metatest.at) == [25.0, 40.0]
    with pytest.raises(ConfigError, match=r"^training\.nope:"):
        config.replace({"training.alpha_max": 40.0, "training.nope": 1})
