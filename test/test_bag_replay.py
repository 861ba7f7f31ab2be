"""`dysl_bench replay`: a robot's bag (Humble's sqlite3, rclpy's Fast CDR; two cameras, one of them
JPEG-compressed; joint states with extra joints, shuffled) played over real DDS into a running
dysl_node process, and the node's ticks, chunks, actions and diagnostics reported per episode."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from bag_fixture import STATE_JOINTS, bag_mapping, robot_scenario, write_db3
from byom_fixture import POSITION_SPEC, SPEC, make_imported_model
from ros_harness import PYTHON, REPO, check_alive, ros_env, ros_process, unique_domain_id
from test_node import node_command

from dysl_ros.bench.bag_replay import is_stale_label, node_camera_topic, transcode
from dysl_ros.inputs import decode_compressed_image
from dysl_ros.node.subscriptions import camera_topic
from dysl_ros.tools import bench

pytestmark = pytest.mark.ros
NAME = "dysl_replayed"


def test_camera_topics_are_the_nodes() -> None:
    one = dataclasses.replace(POSITION_SPEC, cameras=POSITION_SPEC.cameras[:1])
    for spec in (SPEC, one):
        names = [c.name for c in spec.cameras]
        for name in names:
            assert "~/" + node_camera_topic(names, name) == camera_topic(spec, name)


def test_stale_labels() -> None:
    assert not is_stale_label("1764000000.100000000") and not is_stale_label("1.000000000,2.000000000")
    assert all(is_stale_label(label) for label in ("hold", "zero", "final", ""))


def test_images_are_transcoded_for_the_nodes_transport() -> None:
    import cv2
    import numpy as np
    from sensor_msgs.msg import CompressedImage, Image

    rgb = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1])
    assert ok
    packet = CompressedImage(format="jpeg", data=jpeg.tobytes())
    packet.header.stamp.sec, packet.header.frame_id = 5, "wrist"
    raw = transcode(packet, "sensor_msgs/msg/CompressedImage", "raw")
    assert isinstance(raw, Image) and raw.encoding == "rgb8" and (raw.height, raw.width) == (6, 10)
    assert raw.header.stamp.sec == 5 and raw.header.frame_id == "wrist"
    as_decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1]
    assert bytes(raw.data) == np.ascontiguousarray(as_decoded).tobytes()
    bgr = Image(height=6, width=10, encoding="bgr8", step=30, data=rgb[:, :, ::-1].tobytes())
    png = transcode(bgr, "sensor_msgs/msg/Image", "compressed")
    assert isinstance(png, CompressedImage) and png.format == "png"
    assert np.array_equal(decode_compressed_image(png.format, png.data, None), rgb)  # lossless
    assert transcode(bgr, "sensor_msgs/msg/Image", "raw") is bgr


def test_usage_errors_start_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_db3(tmp_path / "bag", robot_scenario(episodes=1, seconds=0.6).records)
    mapping = tmp_path / "bag_mapping.yaml"
    mapping.write_text(yaml.safe_dump({**bag_mapping(), "instruction": "/task"}))
    model = make_imported_model(tmp_path, "llama", spec=POSITION_SPEC)
    base = ["replay", "--bag", str(bag), "--mapping", str(mapping), "--model-dir", str(model), "--no-progress",
            "--log", str(tmp_path / "node.log")]
    # A bag the mapping does not fit is refused, by topic, before any node starts.
    assert bench.main(base) == 2
    assert "/task is not in the bag" in capsys.readouterr().err and not (tmp_path / "node.log").exists()
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    assert bench.main([*base, "--attach", "dysl_node"]) == 2
    assert "set ROS_DOMAIN_ID" in capsys.readouterr().err
    assert bench.main([*base, "--rate", "0"]) == 2


def test_replay_into_a_running_node(tmp_path: Path) -> None:
    scenario = robot_scenario()
    bag = write_db3(tmp_path / "robot_bag", scenario.records)
    mapping = tmp_path / "bag_mapping.yaml"
    mapping.write_text(yaml.safe_dump(bag_mapping()))
    model = make_imported_model(tmp_path, "llama", spec=POSITION_SPEC)
    domain = unique_domain_id()
    joints = "[" + ",".join(STATE_JOINTS) + "]"
    command = node_command(model, NAME, backend="torch", state_joint_names=joints)
    replay = [
        PYTHON, "-m", "dysl_ros.tools.bench", "replay", "--bag", str(bag), "--mapping", str(mapping),
        "--model-dir", str(model), "--attach", NAME, "--json", "--no-progress", "--drain-s", "0.5",
        "--plot", str(tmp_path / "replay.png"), "--markdown", str(tmp_path / "replay.md"),
    ]
    with ros_process(command, domain, tmp_path / "node.log") as proc:
        done = subprocess.run(replay, env=ros_env(domain), cwd=REPO, capture_output=True, text=True, timeout=300)
        check_alive(proc, tmp_path / "node.log")
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["node"] == NAME and not report["started_node"] and report["domain_id"] == domain
    # Every camera, joint-state and instruction message of the bag went out, and the node took them all:
    # restamped images (no stale or future stamps), the JPEG camera as rgb8, joints by name.
    assert report["published"] == {"instruction": 2, "front": 48, "wrist": 48, "state": 140}
    diagnostics = report["diagnostics"]
    assert diagnostics["rejected_total"] == "0", diagnostics
    assert int(diagnostics["images_received"]) > 0 and int(diagnostics["ticks"]) > 0
    episodes = report["episodes"]
    assert [e["instruction"] for e in episodes] == [s[2] for s in scenario.episodes]
    overall = report["overall"]
    # Each tick's image is one the replay sent, in one of the two episodes.
    assert sum(e["ticks"] for e in episodes) == overall["ticks"] > 0
    for episode in episodes:
        assert episode["ticks"] > 0 and episode["chunks"] > 0 and episode["actions"] > 0
        assert 1 <= episode["executed_layers_mean"] <= 6 and episode["executed_layers_p99"] <= 6
        assert 0 <= episode["stale_action_periods"] <= episode["actions"]
        assert episode["tick_ms_p50"] > 0 and episode["image_to_chunk_ms_p50"] > 0
    assert report["num_layers"] == 6
    assert (tmp_path / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "replay.md").read_text()
    assert "| 0 | put the red block in the bowl |" in table and "| 1 | open the top drawer |" in table
