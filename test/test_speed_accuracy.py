"""scripts/speed_accuracy.py end to end on a tiny model: the sweep's points, the matched coins, the
baselines, its files, and a rerun that takes every report from its cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from model_fixture import make_model_dir

REPO = Path(__file__).resolve().parents[1]


def test_the_frontier_sweep_writes_every_point_once(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "tiny")
    out = tmp_path / "frontier"
    command = [
        sys.executable, str(REPO / "scripts" / "speed_accuracy.py"), "--plans", str(model_dir),
        "--thresholds", "0.3,0.6", "--matched", "random_skip", "--deer-thresholds", "0.05",
        "--tasks", "reach-v3", "--episodes", "1", "--max-steps", "8", "--workers", "1", "--out", str(out),
    ]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("$ ") == 4  # dense, two thresholds (with their coins), deer_exit
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["dense"]["mean_executed_layers"] == result["num_layers"]
    points = result["points"]
    assert [(p["variant"], p.get("threshold")) for p in points] == [
        ("dysl", 0.3), ("random_skip", 0.3), ("dysl", 0.6), ("random_skip", 0.6), ("deer_exit", None)
    ]
    for point in points:
        assert 1 <= point["mean_executed_layers"] <= result["num_layers"] and point["episodes"] == 1
    assert points[-1]["setting"] == "deer-threshold 0.05"
    table = out.with_suffix(".md").read_text()
    assert table.count("| dysl |") == 2 and "| deer_exit | deer-threshold 0.05 |" in table
    assert out.with_suffix(".png").stat().st_size > 10_000
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and "$ " not in again.stdout  # every report from the cache
    assert json.loads(out.with_suffix(".json").read_text())["points"] == points
