"""`dysl_bench offline` on a tiny random model and a tiny LeRobotDataset: the report's structure,
its figures recomputed by hand, episode selection and datasets that do not fit the model."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from model_fixture import TINY, make_model_dir, one_torch_thread

from dysl_ros.inputs import decode_image
from dysl_ros.model.spec import Observation
from dysl_ros.policy import PolicyOptions, load_policy
from dysl_ros.tools import bench
from dysl_ros.training.lerobot_dataset import MAPPING_FILE, DatasetMapping, RecordedEpisode
from dysl_ros.training.lerobot_writer import write_lerobot_dataset

NUM_LAYERS = TINY.num_layers
HORIZON = TINY.chunk_len  # 8
LENGTHS = (12, 10, 13)
"""Ticks at 0, 4, 8 (and 12): the last ones see fewer than HORIZON recorded actions."""
FRAME = (40, 48)
"""Not the model's 32 x 32: the frames are letterboxed as the node would."""
CONFIG = dataclasses.replace(TINY, action_offset=(0.1, -0.2, 0.0, 0.3), action_scale=(0.5, 2.0, 1.0, 1.5))
"""Action normalisation that is not the identity: the errors are in normalised units."""


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def _episodes(state_dim: int = 4) -> list[RecordedEpisode]:
    rng = np.random.default_rng(0)
    instructions = ("push the puck", "open the drawer", "push the puck")
    return [
        RecordedEpisode(
            index=number,
            instruction=instructions[number],
            images={"image": rng.integers(0, 256, (steps, *FRAME, 3), dtype=np.uint8)},
            state=rng.normal(size=(steps, state_dim)).astype(np.float32),
            actions=rng.uniform(-1, 1, (steps, 4)).astype(np.float32),
            fps=10.0,
        )
        for number, steps in enumerate(LENGTHS)
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny", CONFIG)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lerobot_dataset(tmp_path_factory.mktemp("data") / "lerobot", _episodes(), fps=10.0, codec="images")


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    code = bench.main(["offline", "--no-progress", *argv])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    report = json.loads(lines[-1]) if code == 0 and "--json" in argv else None
    return code, report, captured.err


@pytest.fixture(scope="module")
def report(model_dir: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("out")
    # A low skip threshold: random controllers then skip at their allow points on most ticks.
    argv = [
        "offline", "--no-progress", "--model-dir", str(model_dir), "--demos", str(dataset), "--json",
        "--variants", "dense,dysl,random_skip,oracle_exit", "--oracle-tolerance", "0.05", "--skip-threshold", "0.05",
        "--markdown", str(out / "offline.md"), "--plot", str(out / "offline.png"),
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert bench.main(argv) == 0
    result: dict[str, Any] = json.loads(stdout.getvalue().strip().splitlines()[-1])
    assert (out / "offline.md").read_text().startswith("### Offline")
    assert (out / "offline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return result


def test_report_structure(report: dict[str, Any], model_dir: Path, dataset: Path) -> None:
    assert list(report["variants"]) == ["dense", "dysl", "random_skip", "oracle_exit"]
    assert report["episodes"] == 3 and report["episode_indices"] == [0, 1, 2]
    assert report["num_layers"] == NUM_LAYERS and report["horizon"] == HORIZON
    assert report["execute_steps"] == 4 and report["backend"] == "torch" and report["machine"]
    assert report["model_dir"] == str(model_dir) and report["dataset"] == str(dataset)
    assert report["oracle_tolerance"] == 0.05 and report["wall_s"] > 0
    assert report["dysl_overrides"] == {"skip_threshold": 0.05} and report["left_out"] == []
    ticks = sum(len(range(0, n, 4)) for n in LENGTHS)  # 3 + 3 + 4
    assert report["ticks"] == ticks
    keys = {
        "mean_dense_error", "mean_recorded_error", "mean_dense_error_executed", "mean_recorded_error_executed",
        "mean_executed_layers", "p99_executed_layers", "executed_fraction", "verification_rate", "ticks",
    }
    for name, v in report["variants"].items():
        assert keys <= set(v), name
        assert v["ticks"] == ticks and set(v["per_episode"]) == {"0", "1", "2"}
        assert sum(e["ticks"] for e in v["per_episode"].values()) == ticks
        assert 0 < v["mean_executed_layers"] <= v["p99_executed_layers"] <= NUM_LAYERS
        assert v["executed_fraction"] == pytest.approx(v["mean_executed_layers"] / NUM_LAYERS)
        assert 0 <= v["verification_rate"] <= 1
        assert v["mean_recorded_error"] > 0 and v["mean_dense_error"] >= 0
    random = report["variants"]["random_skip"]
    assert random["target_layers"] == pytest.approx(report["variants"]["dysl"]["mean_executed_layers"])
    assert 0 <= random["skip_probability"] <= 1


def test_dense_is_the_reference(report: dict[str, Any]) -> None:
    dense = report["variants"]["dense"]
    assert dense["mean_dense_error"] == 0 and dense["mean_dense_error_executed"] == 0
    assert dense["mean_executed_layers"] == NUM_LAYERS and dense["verification_rate"] == 0
    dysl = report["variants"]["dysl"]
    assert dysl["mean_executed_layers"] < NUM_LAYERS  # it skipped somewhere ...
    assert dysl["mean_dense_error"] > 0  # ... and that changed its chunks


def test_recorded_error_recomputed_by_hand(report: dict[str, Any], model_dir: Path) -> None:
    episode = _episodes()[1]  # 10 frames: the tick at 8 sees 2 recorded actions
    policy = load_policy(model_dir, PolicyOptions(dense=True, num_threads=1))
    scale, offset = np.asarray(CONFIG.action_scale), np.asarray(CONFIG.action_offset)
    assert policy.spec.action_normalisation.low == CONFIG.action_offset  # (x - offset) / scale: model units
    errors, executed = [], []
    for t in range(0, episode.steps, 4):
        frame = episode.images["image"][t]
        image = decode_image("rgb8", *FRAME, FRAME[1] * 3, frame.tobytes(), size=(32, 32), fit="letterbox")
        out = policy.predict_action_chunk(Observation(image, episode.instruction, episode.state[t]), slice(0, 4))
        chunk = (out.actions - offset) / scale  # back to the model's units
        recorded = (episode.actions[t : t + HORIZON].astype(np.float64) - offset) / scale
        errors.append(np.abs(chunk[: len(recorded)] - recorded).mean())
        executed.append(np.abs(chunk[: min(4, len(recorded))] - recorded[:4]).mean())
    figures = report["variants"]["dense"]["per_episode"]["1"]
    assert figures["ticks"] == 3
    assert figures["mean_recorded_error"] == pytest.approx(float(np.mean(errors)), rel=1e-5)
    assert figures["mean_recorded_error_executed"] == pytest.approx(float(np.mean(executed)), rel=1e-5)


def test_episodes_limits_and_defaults(
    model_dir: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, err = _bench(
        capsys, "--model-dir", str(model_dir), "--demos", str(dataset), "--episodes", "2", "--json",
        "--execute-steps", "8",
    )
    assert code == 0 and report is not None
    # The default variants; oracle_exit needs a tolerance, so it is left out (and said so).
    assert list(report["variants"]) == ["dense", "dysl", "random_skip"] and report["left_out"] == ["oracle_exit"]
    assert "oracle_exit left out" in err
    assert report["episodes"] == 2 and report["episode_indices"] == [0, 1]
    assert report["variants"]["dense"]["ticks"] == 2 + 2 and set(report["variants"]["dysl"]["per_episode"]) == {
        "0", "1"
    }


def test_wrong_state_dimension_exits_2(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_lerobot_dataset(tmp_path / "wide", _episodes(state_dim=5)[:1], fps=10.0, codec="images")
    code, _, err = _bench(capsys, "--model-dir", str(model_dir), "--demos", str(root), "--variants", "dense")
    assert code == 2
    assert err.startswith("dysl_bench offline: error:") and "'observation.state'" in err and "5-D" in err


def test_unmapped_camera_and_bad_arguments_exit_2(
    model_dir: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = DatasetMapping({"wrist": "observation.images.image"}).save(tmp_path / "mapping.yaml")
    code, _, err = _bench(capsys, "--model-dir", str(model_dir), "--demos", str(dataset), "--mapping", str(mapping))
    assert code == 2 and "dysl_bench offline: error:" in err and "'image'" in err
    assert (dataset / MAPPING_FILE).is_file()
    for argv in (["--episodes", "0"], ["--execute-steps", "9"], ["--variants", "oracle_exit"],
                 ["--variants", "bogus"], ["--variants", "random_skip"]):
        code, _, err = _bench(capsys, "--model-dir", str(model_dir), "--demos", str(dataset), *argv)
        assert code == 2 and "dysl_bench offline: error:" in err, argv
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["offline", "--model-dir", str(model_dir)])  # --demos missing: argparse's own exit
    assert exit_info.value.code == 2
