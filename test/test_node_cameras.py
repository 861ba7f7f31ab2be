"""dysl_node serving a model of your own over real DDS: one image topic per camera, images of any
size fitted to each camera, chunks of the model's horizon and action names, and cameras whose newest
images lie too far apart in time make the tick wait."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from byom_fixture import ACTION_NAMES, SPEC, make_imported_model
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import LATCHED_QOS, SENSOR_QOS, RosSession, check_alive, ros_process, ros_session, unique_domain_id
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from test_node import diag_values, node_command, stamp_ns
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.ros
NAME = "dysl_cams"
SIZES = {"front": (48, 64), "wrist": (30, 80)}
"""(height, width) the test's cameras send: neither is the model's size (24x32, 16x40)."""


@dataclass
class TwoCameraNode:
    ros: RosSession
    proc: Any
    log: Path

    def __post_init__(self) -> None:
        self.images = {c: self.ros.publisher(Image, f"/{NAME}/{c}/image", SENSOR_QOS) for c in SIZES}
        self.state_pub = self.ros.publisher(JointState, f"/{NAME}/joint_states", SENSOR_QOS)
        self.instruction_pub = self.ros.publisher(String, f"/{NAME}/instruction", LATCHED_QOS)
        self.chunks = self.ros.subscribe(
            JointTrajectory, f"/{NAME}/action_chunk", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.diagnostics = self.ros.subscribe(
            DiagnosticArray, "/diagnostics", 10,
            lambda m: diag_values(m) if m.status and m.status[0].name == "dysl_node: inference" else None,
        )

    def stamp(self, ago_ms: float = 0.0) -> Time:
        now = self.ros.node.get_clock().now().nanoseconds - int(ago_ms * 1e6)
        return Time(sec=now // 10**9, nanosec=now % 10**9)

    def send(self, wrist_lag_ms: float = 0.0) -> int:
        """State, then both cameras (the wrist's stamped ``wrist_lag_ms`` earlier); the front stamp (ns)."""
        self.state_pub.publish(JointState(position=[0.1 * i for i in range(8)]))
        stamps = {"front": self.stamp(), "wrist": self.stamp(wrist_lag_ms)}
        for camera, (height, width) in SIZES.items():
            msg = Image(encoding="rgb8", height=height, width=width, step=width * 3)
            msg.data = np.random.default_rng().integers(0, 255, height * width * 3, np.uint8).tobytes()
            msg.header.stamp = stamps[camera]
            self.images[camera].publish(msg)
        return stamp_ns(stamps["front"])

    def diag(self) -> dict[str, str]:
        messages = [m for m in self.diagnostics.messages if m is not None]
        return messages[-1] if messages else {}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoCameraNode]:
    model_dir = make_imported_model(tmp_path_factory.mktemp("byom"), "qwen2")
    domain = unique_domain_id()
    log = tmp_path_factory.mktemp("logs") / "dysl_cams.log"
    command = node_command(model_dir, NAME, backend="onnxruntime", max_camera_skew_ms=40.0)
    with ros_process(command, domain, log) as proc, ros_session(domain, "camera_probe") as ros:
        handle = TwoCameraNode(ros, proc, log)
        handle.instruction_pub.publish(String(data="put the red block in the bowl"))
        yield handle
        check_alive(proc, log)


def test_two_cameras_of_other_sizes_give_chunks_of_the_models_shape(node: TwoCameraNode) -> None:
    sent: set[int] = set()

    def answered() -> bool:
        sent.add(node.send())
        return any(stamp_ns(m.header.stamp) in sent for m in node.chunks.messages)

    assert node.ros.wait_until(answered, 90.0, period=0.1), f"no chunk; diagnostics {node.diag()}"
    chunk = next(m for m in node.chunks.messages if stamp_ns(m.header.stamp) in sent)
    assert list(chunk.joint_names) == list(ACTION_NAMES)
    assert len(chunk.points) == SPEC.horizon
    assert all(len(p.positions) == SPEC.action_dim and np.all(np.isfinite(p.positions)) for p in chunk.points)
    low, high = SPEC.action_normalisation.low, SPEC.action_normalisation.high
    values = np.asarray([p.positions for p in chunk.points])
    assert np.all(values >= np.asarray(low) - 1.0) and np.all(values <= np.asarray(high) + 1.0)


def test_cameras_out_of_step_make_the_tick_wait(node: TwoCameraNode) -> None:
    assert node.ros.wait_until(lambda: node.diag().get("images_skewed") is not None, 30.0)
    skewed_before = int(node.diag()["images_skewed"])
    late: set[int] = set()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        late.add(node.send(wrist_lag_ms=150.0))  # beyond max_camera_skew_ms (40)
        time.sleep(0.05)
    assert node.ros.wait_until(lambda: int(node.diag().get("images_skewed", "0")) > skewed_before, 5.0)
    assert "wrist" in node.diag().get("waiting_for", "") or int(node.diag()["images_skewed"]) > skewed_before
    assert not late & {stamp_ns(m.header.stamp) for m in node.chunks.messages}, "a chunk from out-of-step cameras"
    check_alive(node.proc, node.log)
