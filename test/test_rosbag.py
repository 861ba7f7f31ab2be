"""rosbag2 recordings in: bags written by rclpy's Fast CDR into Humble's sqlite3 layout and by
mcap-ros2-support into MCAP (test/bag_fixture.py, not rosbags), converted by `dysl_train to-lerobot
--rosbag` frame for frame (pixels, stamps, joints by name, commands in force), read back by the
project's LeRobot reader, measured by `dysl_bench offline --demos BAG`; bad bags refused by topic and
time; and Meta-World demonstrations through a bag and back, with the same offline figures as their
LeRobot export."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from bag_fixture import (
    COMMAND_JOINTS,
    STATE_JOINTS,
    T0_NS,
    WRIST_SKEW_NS,
    Record,
    bag_mapping,
    command_value,
    robot_scenario,
    state_value,
    write_db3,
    write_mcap,
)
from byom_fixture import POSITION_SPEC, make_imported_model
from model_fixture import one_torch_thread

from dysl_ros.tools import bench, train
from dysl_ros.training.lerobot_dataset import MAPPING_FILE, DatasetMapping
from dysl_ros.training.lerobot_reader import LeRobotDataset
from dysl_ros.training.rosbag_dataset import BagDataset
from dysl_ros.training.rosbag_format import BagFormatError, BagMapping

REPO = Path(__file__).resolve().parents[1]
WRITERS = ("db3_rclpy", "mcap_ros2", "mcap_rclpy")
FRAMES = 12
"""Per episode: 1.2 s of 20 Hz images at the mapping's 10 fps."""


def write_bag(kind: str, records: list[Record], where: Path) -> Path:
    if kind == "db3_rclpy":
        return write_db3(where / "bag_db3", records)
    return write_mcap(where / f"bag_{kind}.mcap", records, "mcap_ros2" if kind == "mcap_ros2" else "rclpy")


def run_cli(module: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = module.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def scenario() -> Any:
    return robot_scenario()


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mapping") / "bag_mapping.yaml"
    path.write_text(yaml.safe_dump(bag_mapping()))
    return path


@pytest.mark.parametrize("kind", WRITERS)
def test_bags_of_other_writers_convert_frame_for_frame(
    kind: str, scenario: Any, mapping_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(kind, scenario.records, tmp_path)
    out = tmp_path / "lerobot"
    codec = "h264" if kind == "db3_rclpy" else "images"
    code, stdout, err = run_cli(
        train, ["to-lerobot", "--rosbag", str(bag), "--mapping", str(mapping_file), "--out", str(out),
                "--codec", codec, "--json", "--no-progress"], capsys,
    )
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert [e["frames"] for e in summary["episodes"]] == [FRAMES, FRAMES]
    assert [e["instruction"] for e in summary["episodes"]] == [s[2] for s in scenario.episodes]
    assert summary["dropped_frames"] == {} and "dropped frames: none" in stdout
    # Each trajectory's last two points are replaced by the next one (13 per episode).
    assert summary["skipped_messages"] == {"trajectory points replaced by a newer trajectory": 52}
    # Fast CDR's JointState and JointTrajectory carry bytes rosbags' strict check rejects; mcap_ros2's do not.
    fast_cdr = kind != "mcap_ros2"
    assert bool(summary["messages_with_trailing_bytes"].get("/joint_states")) == fast_cdr
    assert summary["storage"] == ("sqlite3" if kind == "db3_rclpy" else "mcap")

    dataset = BagDataset(bag, BagMapping.load(mapping_file))
    lerobot = LeRobotDataset(out, DatasetMapping.load(out / MAPPING_FILE))
    assert lerobot.fps == 10 and lerobot.episode_indices == [0, 1]
    sources = {camera: dict(frames) for camera, frames in scenario.frames.items()}
    for number, (start, _, text) in enumerate(scenario.episodes):
        episode = dataset.episode(number)
        grid = start + np.arange(FRAMES, dtype=np.int64) * 100_000_000
        # Stamps: every other 20 Hz front image; the wrist's 3 ms later; nothing shifted.
        assert episode.frame_ns.tolist() == grid.tolist()
        assert episode.stamps_ns["front"].tolist() == grid.tolist()
        assert episode.stamps_ns["wrist"].tolist() == (grid + WRIST_SKEW_NS).tolist()
        for camera in ("front", "wrist"):  # pixels: raw rgb8 exact; the JPEG exactly as it decodes
            expected = np.stack([sources[camera][int(s)] for s in episode.stamps_ns[camera]])
            assert np.array_equal(episode.images[camera], expected), camera
        # Joints by name out of shuffled messages with extra joints; the command in force at each frame.
        want_state = [[state_value(j, int(t)) for j in STATE_JOINTS] for t in grid]
        want_action = [[command_value(j, int(t)) for j in COMMAND_JOINTS] for t in grid]
        assert np.allclose(episode.state, want_state, atol=1e-6)
        assert np.allclose(episode.actions, want_action, atol=1e-6)
        back = lerobot.episode(number)
        assert back.instruction == text and back.steps == FRAMES
        assert np.array_equal(back.state, episode.state) and np.array_equal(back.actions, episode.actions)
        for camera in ("front", "wrist"):
            error = np.abs(back.images[camera].astype(int) - episode.images[camera].astype(int))
            if codec == "images":
                assert error.max() == 0, camera
            else:  # H.264 (yuv420p: the noisy colour stripes lose chroma), each frame nearest its own source
                assert error.mean() < 10, (camera, error.mean())
                distance = np.abs(back.images[camera][:, None].astype(int) - episode.images[camera][None].astype(int))
                assert distance.mean(axis=(2, 3, 4)).argmin(axis=1).tolist() == list(range(FRAMES)), camera


def test_dysl_node_action_stream_as_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dysl_node's own ~/action (Float64MultiArray): stop-labelled messages are no actions, and a frame
    with no action near it is dropped, both counted."""
    scenario = robot_scenario(command="array")
    bag = write_mcap(tmp_path / "array.mcap", scenario.records)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(bag_mapping("array")))
    code, stdout, err = run_cli(train, ["to-lerobot", "--rosbag", str(bag), "--mapping", str(mapping), "--out",
                                        str(tmp_path / "out"), "--codec", "images", "--json", "--no-progress"], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    # The first three actions of each episode are labelled hold: the first frame has none within 15 ms.
    assert summary["skipped_messages"] == {"action messages labelled 'hold' (no policy action)": 6}
    assert summary["dropped_frames"] == {"no action near the frame": 2}
    assert [e["frames"] for e in summary["episodes"]] == [FRAMES - 1, FRAMES - 1]
    episode = BagDataset(bag, BagMapping.load(mapping)).episode(1)
    grid = episode.frame_ns
    assert grid[0] == scenario.episodes[1][0] + 100_000_000
    assert np.allclose(episode.actions, [[command_value(j, int(t)) for j in COMMAND_JOINTS] for t in grid], atol=1e-6)


def test_joint_states_of_another_driver_are_left_out(tmp_path: Path) -> None:
    """A second driver on /joint_states (its own joints, its own clock 30 ms behind): not used, counted,
    and its stamps do not count as the topic's order."""
    from sensor_msgs.msg import JointState

    scenario = _short()
    extra = []
    for k in range(10):
        t = T0_NS + k * 50_000_000
        msg = JointState(name=["wheel_left"], position=[0.1 * k])
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t - 30_000_000, 1_000_000_000)
        extra.append(Record("/joint_states", "sensor_msgs/msg/JointState", t + 3_000_000, msg))
    bag = write_db3(tmp_path / "bag", sorted(scenario.records + extra, key=lambda r: r.log_ns))
    dataset = BagDataset(bag, BagMapping.from_dict(bag_mapping()))
    assert dataset.skipped["joint_states without every state joint"] == 10
    assert dataset.frames == 6 and not dataset.dropped


# Bad input ----------------------------------------------------------------------------------------


def _short() -> Any:
    return robot_scenario(episodes=1, seconds=0.6)


def _replace(records: list[Record], topic: str, number: int, change: Any) -> list[Record]:
    """``records`` with the ``number``-th message of ``topic`` changed in place by ``change(message)``."""
    seen = 0
    for record in records:
        if record.topic == topic:
            if seen == number:
                change(record.message)
            seen += 1
    return records


def _expect_error(bag: Path, mapping: dict[str, Any], *needles: str, min_length: int = 1) -> str:
    with pytest.raises(BagFormatError) as info:
        BagDataset(bag, BagMapping.from_dict(mapping), min_length=min_length)
    text = str(info.value)
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def test_missing_topic_and_wrong_type_are_named(tmp_path: Path) -> None:
    bag = write_db3(tmp_path / "bag", _short().records)
    mapping = bag_mapping()
    _expect_error(
        bag, {**mapping, "instruction": "/task"}, "/task is not in the bag", "/instruction (std_msgs/msg/String)"
    )
    wrong = {**mapping, "state": {"topic": "/front/image_raw", "joints": list(STATE_JOINTS)}}
    _expect_error(bag, wrong, "/front/image_raw carries sensor_msgs/msg/Image", "sensor_msgs/msg/JointState")


def test_unsorted_stamps_are_named_by_topic_and_time(tmp_path: Path) -> None:
    scenario = _short()

    def back_in_time(msg: Any) -> None:  # 1 ms before the first image
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(T0_NS - 1_000_000, 1_000_000_000)

    records = _replace(scenario.records, "/front/image_raw", 3, back_in_time)
    bag = write_mcap(tmp_path / "bag.mcap", records)
    # The 4th image (0.15 s after the first, received at 0.205 s into the bag) is stamped before the first.
    _expect_error(bag, bag_mapping(), "/front/image_raw at 0.205 s into the bag", "unsorted stamps")


def test_encodings_the_node_does_not_take_are_named(tmp_path: Path) -> None:
    def depth(msg: Any) -> None:
        msg.encoding = "16UC1"

    bag = write_db3(tmp_path / "raw", _replace(_short().records, "/front/image_raw", 2, depth))
    _expect_error(bag, bag_mapping(), "/front/image_raw at 0.155 s into the bag", "'16UC1'", "rgb8")

    def h264(msg: Any) -> None:
        msg.format = "h264"

    bag = write_db3(tmp_path / "packet", _replace(_short().records, "/wrist/image_raw/compressed", 0, h264))
    _expect_error(bag, bag_mapping(), "/wrist/image_raw/compressed at 0.058 s into the bag", "'h264'", "JPEG or PNG")


def test_truncated_bags_are_refused(tmp_path: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = _short()
    cut = write_mcap(tmp_path / "cut.mcap", scenario.records)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    db3 = write_db3(tmp_path / "cut_db3", scenario.records)
    database = next(db3.glob("*.db3"))
    database.write_bytes(database.read_bytes()[: database.stat().st_size // 2])
    for bag in (cut, db3):
        code, _, err = run_cli(train, ["to-lerobot", "--rosbag", str(bag), "--mapping", str(mapping_file), "--out",
                                       str(tmp_path / f"out_{bag.name}"), "--no-progress"], capsys)
        assert code == 2 and err.startswith("dysl_train to-lerobot:"), err
        assert str(bag) in err and "truncated" in err, err
        assert not (tmp_path / f"out_{bag.name}").exists()


def test_episode_shorter_than_the_horizon_is_named(tmp_path: Path, mapping_file: Path) -> None:
    bag = write_db3(tmp_path / "bag", _short().records)
    _expect_error(bag, bag_mapping(), "episode 0 ('put the red block in the bowl', from /front/image_raw at 0.050 s",
                  "6 frames at 10 fps, shorter than 8", min_length=8)


def test_mapping_errors_name_the_key(tmp_path: Path) -> None:
    for change, needle in (({"fps": 0}, "'fps'"), ({"episodes": {"split": "time"}}, "episodes.split"),
                           ({"state": {"topic": "/joint_states"}}, "state.joints"), ({"extra": 1}, "'extra'"),
                           ({"time": "bag"}, "'time'")):
        with pytest.raises(BagFormatError) as info:
            BagMapping.from_dict({**bag_mapping(), **change})
        assert needle in str(info.value)
    bag = write_db3(tmp_path / "bag", _short().records)
    with pytest.raises(ValueError, match="--mapping"):
        from dysl_ros.training.dataset import load_episodes

        load_episodes(bag)


# DySL on the bag ----------------------------------------------------------------------------------


def _offline(argv: list[str]) -> dict[str, Any]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert bench.main(["offline", "--no-progress", "--json", *argv]) == 0
    report: dict[str, Any] = json.loads(stdout.getvalue().strip().splitlines()[-1])
    return report


def test_offline_dysl_on_the_bag_equals_its_lossless_export(
    scenario: Any, mapping_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_imported_model(tmp_path, "llama", spec=POSITION_SPEC)
    bag = write_bag("db3_rclpy", scenario.records, tmp_path)
    variants = ["--variants", "dense,dysl,random_skip", "--skip-threshold", "0.3", "--model-dir", str(model)]
    with one_torch_thread():
        on_bag = _offline([*variants, "--demos", str(bag), "--mapping", str(mapping_file)])
        code, _, err = run_cli(train, ["to-lerobot", "--rosbag", str(bag), "--mapping", str(mapping_file), "--out",
                                       str(tmp_path / "lossless"), "--codec", "images", "--no-progress"], capsys)
        assert code == 0, err
        on_export = _offline([*variants, "--demos", str(tmp_path / "lossless")])
    assert on_bag["bag"]["frames"] == 2 * FRAMES and on_bag["dataset_version"] == "rosbag2 (sqlite3)"
    assert on_bag["ticks"] == 2 * math.ceil(FRAMES / 4)
    for name in ("dense", "dysl", "random_skip"):
        a, b = on_bag["variants"][name], on_export["variants"][name]
        for key in ("mean_dense_error", "mean_recorded_error", "mean_executed_layers", "verification_rate"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (name, key)
    assert on_bag["variants"]["dense"]["mean_recorded_error"] > 0
    assert on_bag["variants"]["dysl"]["mean_executed_layers"] < 6  # it skipped on the bag's frames
    # Without --mapping a bag is refused, by name.
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        assert bench.main(["offline", "--no-progress", "--model-dir", str(model), "--demos", str(bag)]) == 2
    assert "--mapping" in stderr.getvalue()


def test_calibrate_and_distill_read_the_bag(
    scenario: Any, mapping_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_imported_model(tmp_path, "llama", spec=POSITION_SPEC)
    bag = write_bag("mcap_rclpy", scenario.records, tmp_path)
    plan = (model / "layer_plan.json").read_text()
    common = ["--model-dir", str(model), "--demos", str(bag), "--mapping", str(mapping_file), "--batch-size", "4",
              "--device", "cpu"]
    with one_torch_thread():
        code, _, err = run_cli(train, ["calibrate", *common, "--batches", "2", "--static-ratio", "0.5"], capsys)
        assert code == 0, err
        assert "2 episode(s), 24 frames" in err  # the bag's summary, as the reader made it
        assert (model / "layer_plan.json").read_text() != plan  # a new plan, from the bag's frames
        code, _, err = run_cli(train, ["distill", *common, "--stage1-steps", "2", "--stage2-steps", "2",
                                       "--adapter-bottleneck", "2", "--controller-hidden", "2"], capsys)
        assert code == 0, err
    # Too short for the model's horizon (10): refused, with the episode named.
    short = write_db3(tmp_path / "short", robot_scenario(episodes=1, seconds=0.6).records)
    code, _, err = run_cli(train, ["calibrate", "--model-dir", str(model), "--demos", str(short), "--mapping",
                                   str(mapping_file), "--batches", "1"], capsys)
    assert code == 2 and "episode 0" in err and "shorter than 10" in err, err


# Meta-World through a bag and back ----------------------------------------------------------------


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("demos_to_rosbag", REPO / "scripts" / "demos_to_rosbag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (REPO / "models" / "reference" / "vla_config.json").is_file(), reason="no shipped model")
def test_metaworld_demos_round_trip_through_a_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dysl_ros.training.demos import generate_demos, load_demo_dirs
    from dysl_ros.training.settings import DemosSettings

    demos_dir = tmp_path / "demos"
    settings = DemosSettings(tasks="reach-v3", episodes_per_task=2, seed=3000, workers=1)
    generate_demos(demos_dir, settings, progress=False)
    demos = load_demo_dirs(demos_dir)
    script = _script()
    records = [Record(*m) for m in script.demo_messages(demos)]
    bag = write_db3(tmp_path / "metaworld_bag", records)
    mapping = tmp_path / "bag_mapping.yaml"
    mapping.write_text(yaml.safe_dump(script.bag_mapping()))
    for argv in (["--rosbag", str(bag), "--mapping", str(mapping), "--out", str(tmp_path / "via_bag")],
                 ["--demos", str(demos_dir), "--out", str(tmp_path / "direct")]):
        code, _, err = run_cli(train, ["to-lerobot", *argv, "--no-progress"], capsys)
        assert code == 0, err
    variants = ["--model-dir", str(REPO / "models" / "reference"), "--variants", "dense,dysl"]
    with one_torch_thread():
        via_bag = _offline([*variants, "--demos", str(tmp_path / "via_bag")])
        direct = _offline([*variants, "--demos", str(tmp_path / "direct")])
        on_bag = _offline([*variants, "--demos", str(bag), "--mapping", str(mapping)])
    steps = sum(e.steps for e in demos.episodes)
    assert on_bag["bag"]["frames"] == steps and on_bag["bag"]["dropped_frames"] == {}
    assert via_bag["ticks"] == direct["ticks"] == on_bag["ticks"] == sum(math.ceil(e.steps / 4) for e in demos.episodes)
    for name in ("dense", "dysl"):
        # The same frames through the same H.264 encoder: the same figures.
        for key in ("mean_dense_error", "mean_recorded_error", "mean_executed_layers"):
            assert via_bag["variants"][name][key] == pytest.approx(direct["variants"][name][key], abs=1e-6), key
        # The bag read directly has the source pixels: within the codec's error of the export's figures.
        assert on_bag["variants"][name]["mean_recorded_error"] == pytest.approx(
            direct["variants"][name]["mean_recorded_error"], abs=0.02
        )
    assert on_bag["variants"]["dysl"]["mean_executed_layers"] == pytest.approx(
        direct["variants"]["dysl"]["mean_executed_layers"], abs=1.0
    )
    shutil.rmtree(tmp_path / "via_bag")
