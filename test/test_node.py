"""dysl_node over real DDS: the node runs as its own process (as on a robot) and the test talks to it
with rclpy on its own loopback-only domain."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from model_fixture import TINY, make_model_dir
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import (
    LATCHED_QOS,
    PYTHON,
    REPO,
    SENSOR_QOS,
    RosSession,
    check_alive,
    ros_process,
    ros_session,
    unique_domain_id,
)
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.ros

RELIABLE_QOS_DEEP = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
RATE_HZ = 50.0
MAX_AGE_MS = 400.0
PROPRIO = [0.0, 0.6, 0.2, 1.0]


def node_command(model_dir: Path, name: str, **params: Any) -> list[str]:
    values = {
        "model_dir": str(model_dir),
        "autostart": True,
        "control_rate_hz": RATE_HZ,
        "max_image_age_ms": MAX_AGE_MS,
        "diagnostics_period_s": 0.2,
        "warmup_ticks": 1,
        **params,
    }
    args = [PYTHON, "-m", "dysl_ros.node.dysl_node", "--ros-args", "-r", f"__node:={name}"]
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return args


def stamp_to_float(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def diag_values(msg: DiagnosticArray) -> dict[str, str]:
    status = msg.status[0]
    return {"_message": status.message, **{kv.key: kv.value for kv in status.values}}


@dataclass
class NodeUnderTest:
    ros: RosSession
    name: str
    proc: Any
    log: Path
    domain: int

    def __post_init__(self) -> None:
        ns = f"/{self.name}"
        self.image_pub = self.ros.publisher(Image, f"{ns}/image", SENSOR_QOS)
        self.state_pub = self.ros.publisher(JointState, f"{ns}/joint_states", SENSOR_QOS)
        self.instruction_pub = self.ros.publisher(String, f"{ns}/instruction", LATCHED_QOS)
        # Deeper reader queues than the node's depth-1 writers, so the test sees everything the node sends.
        self.chunks = self.ros.subscribe(JointTrajectory, f"{ns}/action_chunk", RELIABLE_QOS_DEEP)
        self.actions = self.ros.subscribe(Float64MultiArray, f"{ns}/action", RELIABLE_QOS_DEEP, lambda m: list(m.data))
        self.diagnostics = self.ros.subscribe(
            DiagnosticArray,
            "/diagnostics",
            10,
            lambda m: diag_values(m) if m.status and m.status[0].name == "dysl_node: inference" else None,
        )

    # -------------------------------------------------------------- inputs

    def now(self) -> Time:
        return self.ros.node.get_clock().now().to_msg()

    def image(
        self,
        stamp: Time | None = None,
        encoding: str = "rgb8",
        width: int = 64,
        height: int = 48,
        step: int | None = None,
        data: bytes | None = None,
    ) -> Time:
        channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding, 3)
        msg = Image(encoding=encoding, width=width, height=height)
        msg.step = width * channels if step is None else step
        msg.data = (
            np.random.default_rng().integers(0, 255, msg.step * height, np.uint8).tobytes() if data is None else data
        )
        msg.header.stamp = self.now() if stamp is None else stamp
        self.image_pub.publish(msg)
        return msg.header.stamp

    def state(self, values: list[float] = PROPRIO) -> None:
        self.state_pub.publish(JointState(position=values))

    def instruction(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    # -------------------------------------------------------------- observations

    def diag(self) -> dict[str, str]:
        messages = [m for m in self.diagnostics.messages if m is not None]
        return messages[-1] if messages else {}

    def counter(self, key: str) -> int:
        value = self.diag().get(key, "0")
        return int(value) if value.isdigit() else 0

    def wait_counter_above(self, key: str, value: int, timeout: float = 5.0) -> bool:
        return self.ros.wait_until(lambda: self.counter(key) > value, timeout)

    def chunk_stamps(self) -> set[float]:
        return {stamp_to_float(m.header.stamp) for m in self.chunks.messages}

    def serve_good_input(self, timeout: float = 8.0) -> JointTrajectory | None:
        """Publish fresh state + images until a chunk carrying one of their stamps arrives."""
        sent: set[float] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.state()
            sent.add(stamp_to_float(self.image()))
            time.sleep(0.05)
            for msg in self.chunks.messages:
                if stamp_to_float(msg.header.stamp) in sent:
                    return msg
        return None

    def lifecycle(self, transition: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition
        return bool(self.ros.call_service(ChangeState, f"/{self.name}/change_state", request, timeout=10.0).success)

    def state_label(self) -> str:
        return str(
            self.ros.call_service(GetState, f"/{self.name}/get_state", GetState.Request(), 10.0).current_state.label
        )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def node(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeUnderTest]:
    domain = unique_domain_id()
    log = tmp_path_factory.mktemp("logs") / "dysl_node.log"
    with (
        ros_process(node_command(model_dir, "dysl_node", on_stale="hold"), domain, log) as proc,
        ros_session(domain, "node_probe") as ros,
    ):
        handle = NodeUnderTest(ros, "dysl_node", proc, log, domain)
        assert ros.wait_until(lambda: handle.state_label() == "active", 60.0), "node never reached active"
        handle.instruction("pick up the puck and place it at the goal")
        assert handle.serve_good_input(20.0) is not None, "no chunk for good input after start-up"
        yield handle
        check_alive(proc, log)


def test_chunk_has_image_stamp_names_and_timing(node: NodeUnderTest) -> None:
    chunk = node.serve_good_input()
    assert chunk is not None
    assert list(chunk.joint_names) == list(TINY.action_names)
    assert len(chunk.points) == TINY.chunk_len
    for k, point in enumerate(chunk.points):
        assert len(point.positions) == TINY.action_dim
        assert all(-1.0 <= p <= 1.0 for p in point.positions)  # clamped to the default limits
        t = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
        assert t == pytest.approx(k / RATE_HZ, abs=1e-6)


def test_action_stream_runs_at_control_rate(node: NodeUnderTest) -> None:
    start = time.monotonic()
    while time.monotonic() - start < 1.0:  # keep input fresh so the stream serves chunks
        node.state()
        node.image()
        time.sleep(1 / 30)
    window_start = time.monotonic()
    while time.monotonic() - window_start < 3.0:
        node.state()
        node.image()
        time.sleep(1 / 30)
    window_end = time.monotonic()
    arrivals = [t for t, _ in node.actions.items if window_start <= t <= window_end]
    rate = len(arrivals) / (window_end - window_start)
    assert rate == pytest.approx(RATE_HZ, rel=0.10), f"action stream at {rate:.1f} Hz; diagnostics {node.diag()}"
    assert float(node.diag()["action_rate_hz"]) == pytest.approx(RATE_HZ, rel=0.25)  # 0.2 s window: +-1 message


def _serialized_string(payload: bytes) -> bytes:
    # CDR little endian: encapsulation header, uint32 length including the NUL, bytes, NUL.
    return b"\x00\x01\x00\x00" + struct.pack("<I", len(payload) + 1) + payload + b"\x00"


BAD_IMAGES = {
    "bad_data_length": dict(data=b"\x00" * 100),
    "bad_step": dict(step=10),
    "unknown_encoding": dict(encoding="yuv422"),
    "empty_image": dict(width=0, height=0, data=b""),
}


@pytest.mark.parametrize("counter", [*sorted(BAD_IMAGES), "future_stamp"])
def test_malformed_image_is_rejected_and_node_keeps_serving(node: NodeUnderTest, counter: str) -> None:
    key = f"rejected_{counter}"
    before = node.counter(key)
    if counter == "future_stamp":
        future = node.ros.node.get_clock().now().nanoseconds + 5_000_000_000
        stamp = node.image(stamp=Time(sec=future // 10**9, nanosec=future % 10**9))
    else:
        stamp = node.image(**BAD_IMAGES[counter])
    if not node.wait_counter_above(key, before):  # best effort: one retry if the frame was dropped
        node.image(stamp=stamp, **BAD_IMAGES.get(counter, {}))
        assert node.wait_counter_above(key, before), f"{key} did not go up; diagnostics: {node.diag()}"
    time.sleep(0.3)
    assert stamp_to_float(stamp) not in node.chunk_stamps(), "a chunk was published for a rejected image"
    assert node.serve_good_input() is not None, "node stopped serving after a rejected image"


@pytest.mark.parametrize(
    ("counter", "values"),
    [
        ("non_finite_joint_states", [0.0, math.nan, 0.2, 1.0]),
        ("non_finite_joint_states", [math.inf, 0, 0, 0]),
        ("bad_proprio_length", [0.0, 0.6]),
    ],
)
def test_malformed_joint_states_are_rejected(node: NodeUnderTest, counter: str, values: list[float]) -> None:
    key = f"rejected_{counter}"
    before = node.counter(key)
    time.sleep(MAX_AGE_MS / 1000.0 + 0.2)  # let the last good state go stale
    node.state(values)
    assert node.wait_counter_above(key, before), f"{key} did not go up; diagnostics: {node.diag()}"
    stamps = {stamp_to_float(node.image()) for _ in range(3) if time.sleep(0.05) is None}
    time.sleep(0.5)
    assert not stamps & node.chunk_stamps(), "a chunk was computed with a rejected joint state"
    assert node.diag()["waiting_for"] == "joint_states"
    assert node.serve_good_input() is not None


@pytest.mark.parametrize(
    ("counter", "payload"),
    [("empty_instruction", b"   "), ("instruction_too_long", b"a" * 1025), ("instruction_not_utf8", b"\xff\xfepick")],
)
def test_malformed_instruction_is_rejected(node: NodeUnderTest, counter: str, payload: bytes) -> None:
    key = f"rejected_{counter}"
    before = node.counter(key)
    node.instruction_pub.publish(_serialized_string(payload))
    assert node.wait_counter_above(key, before), f"{key} did not go up; diagnostics: {node.diag()}"
    assert node.serve_good_input() is not None
    node.instruction("pick up the puck and place it at the goal")


def test_stale_image_gives_no_chunk_and_stream_holds(node: NodeUnderTest) -> None:
    assert node.serve_good_input() is not None
    before = node.counter("images_stale")
    old = node.ros.node.get_clock().now().nanoseconds - int(3 * MAX_AGE_MS * 1e6)
    stamp = Time(sec=old // 10**9, nanosec=old % 10**9)
    node.state()
    node.image(stamp=stamp)
    assert node.wait_counter_above("images_stale", before), f"stale image not counted: {node.diag()}"
    assert stamp_to_float(stamp) not in node.chunk_stamps()
    # With no fresh image the chunk runs out and ages: the stream must hold the last action.
    time.sleep(MAX_AGE_MS / 1000.0 + 0.3)
    window_start = time.monotonic()
    time.sleep(0.5)
    held = [a for t, a in node.actions.items if t >= window_start]
    assert len(held) >= 0.5 * RATE_HZ * 0.8
    assert all(np.allclose(a, held[0]) for a in held), "stream did not hold a single action while stale"
    last_chunk = node.chunks.messages[-1]
    assert any(np.allclose(held[0], p.positions) for p in last_chunk.points), "held action is not from the last chunk"
    assert node.counter("stale_action_periods") > 0


def test_deactivate_stops_publishing_and_activate_resumes(node: NodeUnderTest) -> None:
    assert node.lifecycle(Transition.TRANSITION_DEACTIVATE)
    assert node.state_label() == "inactive"
    time.sleep(0.2)
    chunks_before, actions_before = len(node.chunks), len(node.actions)
    for _ in range(20):
        node.state()
        node.image()
        time.sleep(0.05)
    assert len(node.chunks) == chunks_before, "chunks published while inactive"
    assert len(node.actions) == actions_before, "actions published while inactive"
    assert node.lifecycle(Transition.TRANSITION_ACTIVATE)
    assert node.state_label() == "active"
    assert node.serve_good_input() is not None, "no chunk after re-activation"


def test_camera_stream_640x480_at_30hz_is_received(node: NodeUnderTest, tmp_path: Path) -> None:
    """Best-effort 640x480 rgb8 at 30 Hz for 10 s from another process: >= 95 % reach the node."""
    received_before = node.counter("images_received") + sum(
        int(v) for k, v in node.diag().items() if k.startswith("rejected_") and k != "rejected_total"
    )
    publisher = [
        PYTHON,
        str(REPO / "test" / "dds_publisher.py"),
        "--topic",
        "/dysl_node/image",
        "--width",
        "640",
        "--height",
        "480",
        "--rate",
        "30",
        "--duration",
        "10",
    ]
    log = tmp_path / "camera.log"
    with ros_process(publisher, node.domain, log) as proc:
        proc.wait(timeout=60)
    sent = int(log.read_text().strip().splitlines()[-1].split("=")[1])
    time.sleep(2 * 0.2 + 0.1)  # two diagnostics periods
    received = (
        node.counter("images_received")
        + sum(int(v) for k, v in node.diag().items() if k.startswith("rejected_") and k != "rejected_total")
        - received_before
    )
    assert sent == 300
    assert received >= 0.95 * sent, f"node received {received} of {sent} images"


def test_missing_instruction_then_on_stale_zero(model_dir: Path, tmp_path: Path) -> None:
    """A node that never got an instruction does not infer and says why; with on_stale=zero its stream
    sends zeros once input goes stale."""
    domain = unique_domain_id()
    log = tmp_path / "node_zero.log"
    with (
        ros_process(node_command(model_dir, "dysl_zero", on_stale="zero"), domain, log),
        ros_session(domain, "zero_probe") as ros,
    ):
        handle = NodeUnderTest(ros, "dysl_zero", None, log, domain)
        assert ros.wait_until(lambda: handle.state_label() == "active", 60.0)
        for _ in range(20):
            handle.state()
            handle.image()
            time.sleep(0.05)
        assert ros.wait_until(lambda: handle.diag().get("waiting_for") == "instruction", 5.0), handle.diag()
        assert handle.diag()["_message"] == "waiting for instruction"
        assert len(handle.chunks) == 0
        assert all(np.allclose(a, 0.0) for a in handle.actions.messages)
        assert float(handle.diag()["tick_rate_hz"]) == 0.0  # no inference without an instruction
        handle.instruction("open the drawer")
        assert handle.serve_good_input() is not None
        time.sleep(MAX_AGE_MS / 1000.0 + 0.3)
        window_start = time.monotonic()
        time.sleep(0.4)
        zeros = [a for t, a in handle.actions.items if t >= window_start]
        assert zeros and all(np.allclose(a, 0.0) for a in zeros)


def test_bad_parameter_is_a_clear_startup_error(model_dir: Path, tmp_path: Path) -> None:
    domain = unique_domain_id()
    log = tmp_path / "bad.log"
    import subprocess

    from ros_harness import ros_env

    result = subprocess.run(
        node_command(model_dir, "dysl_bad", eta=-1.0, on_stale="sideways"),
        env=ros_env(domain),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    log.write_text(result.stdout + result.stderr)
    assert result.returncode != 0
    assert "eta must be a finite number > 0" in result.stderr + result.stdout
    assert "on_stale must be one of" in result.stderr + result.stdout
