"""Node parameters: one declared list, a documented params file, validation that names the culprit."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from ros_harness import REPO

from dysl_ros.core.config import ConfigError
from dysl_ros.node.params import PARAMETERS, NodeParams


def shipped_values() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "config" / "dysl.yaml").read_text())
    return dict(data["/**"]["ros__parameters"])


def test_params_file_documents_exactly_the_declared_parameters() -> None:
    assert set(shipped_values()) == {spec.name for spec in PARAMETERS}
    text = (REPO / "config" / "dysl.yaml").read_text()
    for line in text.splitlines():
        if line.strip() and not line.strip().startswith("#") and ":" in line and line.startswith("    "):
            assert "#" in line, f"undocumented parameter line: {line!r}"


def test_shipped_defaults_validate_once_model_dir_is_set() -> None:
    values = shipped_values()
    with pytest.raises(ConfigError, match="model_dir is required"):
        NodeParams.from_values(values)
    params = NodeParams.from_values({**values, "model_dir": "/models/x"})
    assert params.dt == pytest.approx(0.02)
    assert params.action_limits(4, ((-2.0,) * 4, (3.0,) * 4)) == ([-2.0] * 4, [3.0] * 4)  # the model's range
    assert params.action_limits(2, None) == ([-math.inf] * 2, [math.inf] * 2)  # none stated: no clamp
    assert params.inference_threads >= 1
    # The DySL thresholds are left to the model's dysl.json: only the two switches are parameters.
    assert params.dysl_overrides == {"enable_pre_skip": True, "enable_post_verify": True}


def test_a_nonzero_dysl_setting_overrides_the_models() -> None:
    params = NodeParams.from_values({**shipped_values(), "model_dir": "/m", "eta": 0.3, "k": 3})
    assert params.dysl_overrides == {"eta": 0.3, "k": 3, "enable_pre_skip": True, "enable_post_verify": True}


def docs_parameter_table() -> dict[str, Any]:
    """docs/node.md's parameter table: name -> default (each cell a YAML literal in backticks)."""
    text = (REPO / "docs" / "node.md").read_text()
    section = text.split("\n## Parameters\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table: dict[str, Any] = {}
    for row in rows:
        name, default = (cell.strip().strip("`") for cell in row.split("|")[1:3])
        assert name not in table, f"docs/node.md lists {name} twice"
        table[name] = yaml.safe_load(default)
    return table


def test_docs_table_lists_the_declared_parameters_and_defaults() -> None:
    table = docs_parameter_table()
    assert list(table) == [spec.name for spec in PARAMETERS], "docs/node.md: names or order differ from the node's"
    for spec in PARAMETERS:
        assert table[spec.name] == spec.default, f"docs/node.md: {spec.name} defaults to {table[spec.name]!r}"
        assert type(table[spec.name]) is type(spec.default), f"docs/node.md: {spec.name} has the wrong type"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"backend": "cuda"}, "backend must be one of"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"on_stale": "drift"}, "on_stale must be one of"),
        ({"device": "gpu0"}, "device must be cpu, cuda or cuda:N"),
        ({"control_rate_hz": 0.0}, "control_rate_hz must lie in"),
        ({"max_image_age_ms": -5.0}, "max_image_age_ms must be a finite number > 0"),
        ({"num_threads": -1}, "num_threads must be an integer >= 0"),
        ({"eta": -0.1}, "eta must be a finite number > 0"),
        ({"k": -1}, "k must be an integer >= 1"),
        ({"static_ratio": 1.0}, "static_ratio must lie in"),
        ({"action_low": [1.0], "action_high": [-1.0]}, "action_low must be below action_high"),
        ({"action_low": [0.0, 0.0], "action_high": [1.0, 1.0, 1.0]}, "differ in length"),
        ({"autostart": "yes"}, "autostart must be true or false"),
        ({"replan_threshold": -1}, "replan_threshold must be an integer >= 0"),
        ({"replan_threshold": 2.5}, "replan_threshold must be an integer >= 0"),
        ({"chunk_aggregation": "median"}, "chunk_aggregation must be one of"),
        ({"aggregation_decay": float("nan")}, "aggregation_decay must be a finite number"),
        ({"stream_priority": 100}, "stream_priority must be an integer in"),
    ],
)
def test_bad_value_is_named(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeParams.from_values({**shipped_values(), "model_dir": "/m", **override})


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        NodeParams.from_values({"model_dir": "/m", "eta": -1.0, "on_stale": "x", "control_rate_hz": -2.0})
    text = str(info.value)
    assert "eta" in text and "on_stale" in text and "control_rate_hz" in text


def test_limits_must_match_the_models_action_size() -> None:
    params = NodeParams.from_values({"model_dir": "/m", "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0]})
    with pytest.raises(ConfigError, match="the model's actions have 4"):
        params.action_limits(4, None)


def test_replan_threshold_must_be_below_the_chunk_length() -> None:
    params = NodeParams.from_values({**shipped_values(), "model_dir": "/m", "replan_threshold": 8})
    with pytest.raises(ConfigError, match="replan_threshold must be below the model's chunk length 8"):
        params.check_chunk_length(8)
    NodeParams.from_values({**shipped_values(), "model_dir": "/m", "replan_threshold": 7}).check_chunk_length(8)
    assert NodeParams.from_values({**shipped_values(), "model_dir": "/m"}).replan_threshold == 4
