"""ray_cluster.yaml passes the checks `ray up` makes before it talks to a cloud.

`ray up` runs `prepare_config` (merge with the provider's defaults.yaml, setup commands, min/max
workers per node type) and then `validate_config` (Ray's ray-schema.json plus its own checks).
Both are Ray's, from ray/autoscaler/_private/util.py; nothing here re-implements them.
"""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def checked(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_own_validation(raw):
    prepared = checked(raw)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types

    gpu = types["gpu_worker"]
    assert gpu["resources"]["GPU"] == 8

    executor = types["executor"]
    assert executor["min_workers"] == 0  # autoscales from zero
    assert executor["max_workers"] >= 1
    assert executor["resources"]["browser"] >= 1
    assert "browser" not in gpu["resources"] and "browser" not in types[prepared["head_node_type"]]["resources"]

    # The project is installed on every node.
    assert any("setup.sh" in command or "pip install" in command for command in prepared["setup_commands"])


def test_the_provider_settings_are_marked_for_the_user_to_fill_in():
    text = CLUSTER_YAML.read_text()
    assert "FILL IN BEFORE USE" in text
    for line in ("type: aws", "region:", "InstanceType:", "ImageId:", "ssh_user:"):
        assert any(line in row and "PLACEHOLDER" in row for row in text.splitlines()), line


@pytest.mark.parametrize(
    "break_it, error, message",
    [
        (
            lambda c: c["available_node_types"]["executor"]["resources"].update(browser=0.5),
            jsonschema.ValidationError,
            "is not of type 'integer'",
        ),
        (
            lambda c: c["available_node_types"]["executor"].update(min_worker=0),
            jsonschema.ValidationError,
            "'min_worker' was unexpected",
        ),
        (
            lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
            jsonschema.ValidationError,
            "'node_config' is a required",
        ),
        (lambda c: c.update(head_node_type="no_such_type"), ValueError, "must be one of `available_node_types`"),
        (
            lambda c: c.update(max_workers=0) or c["available_node_types"]["executor"].update(min_workers=1),
            ValueError,
            "smaller than the sum of `min_workers`",
        ),
        (lambda c: c.update(setup_command=[]), jsonschema.ValidationError, "'setup_command' was unexpected"),
    ],
    ids=[
        "fractional-resource",
        "misspelt-key",
        "no-node-config",
        "unknown-head-type",
        "min-over-max",
        "unknown-top-key",
    ],
)
def test_a_broken_copy_is_rejected(raw, break_it, error, message):
    broken = copy.deepcopy(raw)
    break_it(broken)
    with pytest.raises(error, match=re.escape(message)):
        checked(broken)


def test_validation_needs_the_defaults_that_prepare_config_fills_in(raw):
    # validate_config alone rejects a hand-written file: `ray up` always prepares it first.
    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(copy.deepcopy(raw))
