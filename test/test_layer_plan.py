"""Static/dynamic layer plans: selection by similarity, gaps, validation and the JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dysl_ros.core.config import ConfigError
from dysl_ros.core.layer_plan import Gap, LayerPlan


def test_from_similarities_picks_lowest_similarity_layers_and_the_last_layer() -> None:
    # Layer:   0     1     2     3     4     5     6     7     8     9
    sims = [0.90, 0.20, 0.95, 0.10, 0.80, 0.85, 0.30, 0.97, 0.93, 0.99]
    # round(0.4 * 10) = 4 static layers: the last one (9, even though it is the MOST similar)
    # plus the 3 least similar of the others: 3 (0.10), 1 (0.20), 6 (0.30).
    plan = LayerPlan.from_similarities(sims, static_ratio=0.4)
    assert plan.static_layers == (1, 3, 6, 9)
    assert plan.dynamic_layers == (0, 2, 4, 5, 7, 8)
    assert plan.num_layers == 10
    assert plan.similarities == tuple(sims)


@pytest.mark.parametrize(("ratio", "expected"), [(0.2, 2), (0.3, 3), (0.34, 3), (0.36, 4), (0.9, 9), (0.96, 10)])
def test_number_of_static_layers_is_rounded_ratio(ratio: float, expected: int) -> None:
    sims = [0.5 + 0.01 * i for i in range(10)]
    plan = LayerPlan.from_similarities(sims, static_ratio=ratio)
    assert len(plan.static_layers) == expected == round(ratio * 10)
    assert plan.static_layers[-1] == 9
    # Similarities increase with the index, so the least similar are the first layers.
    assert plan.static_layers[:-1] == tuple(range(expected - 1))


def test_at_least_the_last_layer_is_static() -> None:
    plan = LayerPlan.from_similarities([0.1, 0.2, 0.3, 0.99], static_ratio=0.01)  # round(0.04) = 0 -> 1
    assert plan.static_layers == (3,)
    assert plan.gaps == (Gap(0, 3),)


def test_ties_broken_by_layer_index() -> None:
    plan = LayerPlan.from_similarities([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], static_ratio=0.5)
    assert plan.static_layers == (0, 1, 5)


def test_gaps_and_dynamic_layers_of_a_hand_made_plan() -> None:
    # 8 layers, static 2, 3, 7:
    #   gap 0: dynamic 0, 1 -> static 2
    #   gap 1: (empty)      -> static 3
    #   gap 2: dynamic 4, 5, 6 -> static 7
    plan = LayerPlan(num_layers=8, static_layers=(2, 3, 7))
    assert plan.gaps == (Gap(0, 2), Gap(3, 3), Gap(4, 7))
    assert [len(g) for g in plan.gaps] == [2, 0, 3]
    assert [list(g.dynamic_layers) for g in plan.gaps] == [[0, 1], [], [4, 5, 6]]
    assert plan.dynamic_layers == (0, 1, 4, 5, 6)
    assert plan.gap_of(0) == Gap(0, 2)
    assert plan.gap_of(2) == Gap(0, 2)  # a static layer belongs to the gap it closes
    assert plan.gap_of(3) == Gap(3, 3)
    assert plan.gap_of(5) == Gap(4, 7)
    assert plan.gap_of(7) == Gap(4, 7)
    with pytest.raises(IndexError):
        plan.gap_of(8)
    with pytest.raises(IndexError):
        plan.gap_of(-1)


def test_first_static_layer_zero_gives_an_empty_first_gap() -> None:
    plan = LayerPlan(num_layers=4, static_layers=(0, 3))
    assert plan.gaps == (Gap(0, 0), Gap(1, 3))
    assert plan.dynamic_layers == (1, 2)


def test_dense_and_last_layer_only() -> None:
    dense = LayerPlan.dense(4)
    assert dense.static_layers == (0, 1, 2, 3)
    assert dense.dynamic_layers == ()
    assert dense.gaps == (Gap(0, 0), Gap(1, 1), Gap(2, 2), Gap(3, 3))
    assert all(len(g) == 0 for g in dense.gaps)

    last = LayerPlan.last_layer_only(4)
    assert last.static_layers == (3,)
    assert last.dynamic_layers == (0, 1, 2)
    assert last.gaps == (Gap(0, 3),)

    assert LayerPlan.dense(1) == LayerPlan.last_layer_only(1) == LayerPlan(1, (0,))


def test_json_round_trip(tmp_path: Path) -> None:
    plan = LayerPlan.from_similarities([0.9, 0.1, 0.8, 0.2, 0.7, 0.123456789012345], static_ratio=0.5)
    file = tmp_path / "layer_plan.json"
    plan.save(file)
    loaded = LayerPlan.load(file)
    assert loaded == plan
    assert loaded.similarities == plan.similarities
    data = json.loads(file.read_text())
    assert data["static_layers"] == [1, 3, 5]
    assert data["dynamic_layers"] == [0, 2, 4]
    assert data["num_layers"] == 6


def test_json_round_trip_without_similarities(tmp_path: Path) -> None:
    plan = LayerPlan(num_layers=5, static_layers=(1, 4))
    plan.save(tmp_path / "p.json")
    loaded = LayerPlan.load(tmp_path / "p.json")
    assert loaded == plan
    assert loaded.similarities is None


@pytest.mark.parametrize(
    ("num_layers", "static", "sims", "message"),
    [
        (0, (), None, "at least one layer"),
        (8, (3, 2, 7), None, "strictly increasing"),
        (8, (2, 2, 7), None, "strictly increasing"),
        (8, (2, 3, 6), None, "end with the last layer"),
        (8, (2, 3, 8), None, "end with the last layer"),
        (8, (-1, 7), None, r"lie in \[0, 7\]"),
        (8, (), None, "end with the last layer"),
        (4, (1, 3), (0.1, 0.2), "similarities has 2 entries for 4 layers"),
    ],
)
def test_invalid_plans_raise_config_error_naming_the_problem(
    num_layers: int, static: tuple[int, ...], sims: tuple[float, ...] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LayerPlan(num_layers=num_layers, static_layers=static, similarities=sims)


@pytest.mark.parametrize(
    ("sims", "ratio", "message"),
    [
        ([], 0.2, "no layer similarities"),
        ([0.1, math.nan, 0.3], 0.2, "must be finite"),
        ([0.1, math.inf, 0.3], 0.2, "must be finite"),
        ([0.1, 0.2, 0.3], 0.0, "static_ratio"),
        ([0.1, 0.2, 0.3], 1.0, "static_ratio"),
    ],
)
def test_from_similarities_validation(sims: list[float], ratio: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LayerPlan.from_similarities(sims, ratio)


def test_malformed_plan_file_raises_config_error(tmp_path: Path) -> None:
    file = tmp_path / "plan.json"
    file.write_text(json.dumps({"num_layers": 4}))
    with pytest.raises(ConfigError, match=r"malformed layer plan.*static_layers"):
        LayerPlan.load(file)
    file.write_text(json.dumps({"num_layers": 4, "static_layers": [1, 2]}))
    with pytest.raises(ConfigError, match="end with the last layer"):
        LayerPlan.load(file)
    file.write_text(json.dumps({"num_layers": 4, "static_layers": ["a", 3]}))
    with pytest.raises(ConfigError, match="malformed layer plan"):
        LayerPlan.load(file)


def test_max_gap_picks_the_lowest_total_similarity_with_short_gaps() -> None:
    """Checked against brute force over every static set of small stacks."""
    import itertools

    rng = np.random.default_rng(3)
    for _ in range(20):
        num_layers = int(rng.integers(4, 10))
        sims = rng.uniform(0.5, 1.0, num_layers).tolist()
        count = int(rng.integers(1, 4))
        max_gap = int(rng.integers(1, 4))
        plan = LayerPlan.from_similarities(sims, count / num_layers, max_gap)
        assert plan.rule == f"lowest_similarity, max_gap {max_gap}"
        assert all(len(gap) <= max_gap for gap in plan.gaps)
        size = len(plan.static_layers)
        feasible = [
            s for n in range(1, num_layers + 1) for s in itertools.combinations(range(num_layers), n)
            if s[-1] == num_layers - 1 and all(len(g) <= max_gap for g in LayerPlan(num_layers, s).gaps)
        ]
        smallest = min(len(s) for s in feasible)
        assert size == max(round(count / num_layers * num_layers), smallest)
        best = min(sum(sims[i] for i in s) for s in feasible if len(s) == size)
        assert sum(sims[i] for i in plan.static_layers) == pytest.approx(best)


def test_the_rule_is_recorded_and_older_plans_read_as_lowest_similarity(tmp_path: Path) -> None:
    plan = LayerPlan.explicit(6, [0, 3, 5], [0.5] * 6)
    plan.save(tmp_path / "plan.json")
    assert json.loads((tmp_path / "plan.json").read_text())["rule"] == "explicit"
    assert LayerPlan.load(tmp_path / "plan.json").rule == "explicit"
    old = plan.to_dict()
    del old["rule"]
    assert LayerPlan.from_dict(old).rule == "lowest_similarity"
    with pytest.raises(ConfigError, match="end with the last layer"):
        LayerPlan.explicit(6, [0, 3])
