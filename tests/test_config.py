"""Config: YAML + overrides into typed dataclasses, and one-line errors that name the key."""
import pytest

from envisions_ray.config import RunConfig, load_config
from envisions_ray.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_are_typed(tmp_path):
    cfg = load_config(write(tmp_path, "run_dir: r\nalgorithm:\n  k: 3\n"), ["train.lr=1e-4", "algorithm.refine=false"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.algorithm.k, cfg.train.lr, cfg.algorithm.refine) == (3, 1e-4, False)
    assert cfg.algorithm.n1 == 10 and cfg.algorithm.n2 == 2  # paper defaults stay


def test_unknown_key_names_it_and_the_nearest_valid_one(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\n"), ["algorithm.itrations=3"])
    assert "algorithm.itrations" in str(err.value) and "algorithm.iterations" in str(err.value)
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\ntrain:\n  lerning_rate: 1\n"))
    assert "train.lerning_rate" in str(err.value) and "did you mean 'train." in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\n"), ["algorithm.k=five"])
    assert "algorithm.k" in str(err.value) and "\n" not in str(err.value)


def test_choices_and_missing_run_dir(tmp_path):
    with pytest.raises(UserError, match="algorithm.train_from"):
        load_config(write(tmp_path, "run_dir: r\n"), ["algorithm.train_from=middle"])
    with pytest.raises(UserError, match="run_dir"):
        load_config(write(tmp_path, "seed: 1\n"))
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("conf/*.yaml")):
        assert load_config(path).run_dir


def test_env_settings_are_checked_against_the_env_own_schema(tmp_path):
    cfg = load_config(write(tmp_path, "run_dir: r\nenv:\n  name: logic\n  settings:\n    timeout_s: 0.5\n"))
    assert cfg.env.settings == {"timeout_s": 0.5, "backstop_margin_s": 2.0, "memory_mb": 1024}  # defaults filled in
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\n"), ["env.settings.timout_s=3"])
    assert "env.settings.timout_s" in str(err.value) and "did you mean 'env.settings.timeout_s'" in str(err.value)
    with pytest.raises(UserError, match="'env.settings.memory_mb' has the wrong type"):
        load_config(write(tmp_path, "run_dir: r\nenv:\n  name: logic\n"), ["env.settings.memory_mb=lots"])
    with pytest.raises(UserError, match="unknown environment 'chess'"):
        load_config(write(tmp_path, "run_dir: r\n"), ["env.name=chess"])
