"""dysl_node wired to ros2_control's controllers, over real DDS: a test process acts as
joint_trajectory_controller and as a forward position controller and checks every message as they
would, and against the arm's limits (arm_fixture.py's URDF and acceleration parameters), while a
recorded episode drives the node; joint states carry extra joints in shuffled order. Models of one's
own with joint-space actions (absolute positions, and deltas integrated from the measured joints),
random weights: the wiring and the limits are what is tested. Then: the camera stops, deactivate,
compressed images, a state missing a joint."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arm_fixture
import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from byom_fixture import ACTION_NAMES, JOINTS, POSITION_SPEC, SPEC, STATE_NAMES, make_imported_model
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import LATCHED_QOS, SENSOR_QOS, RosSession, check_alive, ros_process, ros_session, unique_domain_id
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from test_node import diag_values, node_command, stamp_ns
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.ros
RATE_HZ = 50.0
DT_NS = round(1e9 / RATE_HZ)
MAX_AGE_MS = 400.0
CONTROLLER_JOINTS = tuple(reversed(JOINTS))
"""The controller's joint order: not the model's."""
EXTRA_JOINTS = ("base_x", "camera_pan", "head_tilt")
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
EPISODE = 40
"""Frames of the recorded episode that drives the node."""


@dataclass
class Recorded:
    """A recorded episode: per frame, both cameras' images and the arm's joint positions."""

    images: list[dict[str, np.ndarray]]
    joints: list[dict[str, float]]

    @classmethod
    def make(cls, seed: int = 0) -> Recorded:
        rng = np.random.default_rng(seed)
        sizes = {"front": (48, 64), "wrist": (30, 80)}
        t = np.linspace(0.0, 1.0, EPISODE)
        images = [{c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c, (h, w) in sizes.items()} for _ in t]
        joints = [
            {name: float(0.3 * np.sin(2.0 * x + i)) for i, name in enumerate(STATE_NAMES)}
            | {extra: float(rng.normal()) for extra in EXTRA_JOINTS}
            for x in t
        ]
        return cls(images, joints)


@dataclass
class ControllerSide:
    """The robot: camera, joint states, and the two controllers that check what the node sends."""

    ros: RosSession
    name: str
    proc: Any
    log: Path
    compressed: bool = False

    def __post_init__(self) -> None:
        ns = f"/{self.name}"
        kind, suffix = (CompressedImage, "/compressed") if self.compressed else (Image, "")
        self.cameras = {c: self.ros.publisher(kind, f"{ns}/{c}/image{suffix}", SENSOR_QOS) for c in ("front", "wrist")}
        self.state_pub = self.ros.publisher(JointState, f"{ns}/joint_states", SENSOR_QOS)
        self.instruction_pub = self.ros.publisher(String, f"{ns}/instruction", LATCHED_QOS)
        # Each kept item: (the trajectory, its DDS write time in ns).
        self.trajectories = self.ros.subscribe_with_info(JointTrajectory, f"{ns}/joint_trajectory", RELIABLE)
        # Each kept item: ((values, label), the command's DDS write time in ns).
        self.commands = self.ros.subscribe_with_info(Float64MultiArray, f"{ns}/commands", RELIABLE, _command)
        self.chunks = self.ros.subscribe(JointTrajectory, f"{ns}/action_chunk", RELIABLE)
        self.diagnostics = self.ros.subscribe(
            DiagnosticArray, "/diagnostics", 10,
            lambda m: diag_values(m) if m.status and m.status[0].name == "dysl_node: inference" else None,
        )
        self.measured: dict[str, float] = {}

    def now(self) -> Time:
        return self.ros.node.get_clock().now().to_msg()

    def joint_states(self, positions: dict[str, float], drop: str | None = None) -> None:
        names = [n for n in positions if n != drop]
        random.shuffle(names)  # a real publisher's order is its own
        self.state_pub.publish(JointState(name=names, position=[positions[n] for n in names]))
        self.measured = dict(positions)

    def frame(self, images: dict[str, np.ndarray], stamp: Time | None = None) -> int:
        stamp = stamp or self.now()
        for camera, pixels in images.items():
            if self.compressed:
                ok, png = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
                assert ok
                msg: Any = CompressedImage(format="rgb8; png compressed bgr8", data=png.tobytes())
            else:
                height, width = pixels.shape[:2]
                msg = Image(encoding="rgb8", height=height, width=width, step=width * 3, data=pixels.tobytes())
            msg.header.stamp = stamp
            self.cameras[camera].publish(msg)
        return stamp_ns(stamp)

    def play(self, episode: Recorded, rate_hz: float = 15.0, drop: str | None = None) -> list[int]:
        """The recorded episode in time order: joint state, then both cameras; the images' stamps."""
        stamps = []
        for images, joints in zip(episode.images, episode.joints, strict=True):
            self.joint_states(joints, drop)
            stamps.append(self.frame(images))
            time.sleep(1.0 / rate_hz)
        return stamps

    def fresh_diag(self, timeout: float = 5.0) -> dict[str, str]:
        """The next /diagnostics of the node, not one already seen."""
        seen = len(self.diagnostics)
        assert self.ros.wait_until(lambda: len(self.diagnostics) > seen and bool(self.diag()), timeout)
        return self.diag()

    def diag(self) -> dict[str, str]:
        messages = [m for m in self.diagnostics.messages if m is not None]
        return messages[-1] if messages else {}

    def lifecycle(self, transition: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition
        return bool(self.ros.call_service(ChangeState, f"/{self.name}/change_state", request, timeout=10.0).success)


def _command(msg: Float64MultiArray) -> tuple[list[float], str]:
    return list(msg.data), msg.layout.dim[0].label if msg.layout.dim else ""


LIMITS_BY_CONTROLLER = {
    name: (arm_fixture.LOWER[i], arm_fixture.UPPER[i], arm_fixture.VELOCITY[i], arm_fixture.ACCELERATION[i])
    for i, name in enumerate(JOINTS)
}
LOW, HIGH, VMAX, AMAX = (np.array([LIMITS_BY_CONTROLLER[j][k] for j in CONTROLLER_JOINTS]) for k in range(4))
TOL = 1e-6


def check_trajectories(robot: ControllerSide) -> None:
    """Every trajectory so far within the limits; and each one continues the one before: the points
    that lie less than a control period after it was written (the past, and the period the
    controller needs to take it over) are the previous trajectory's own points, so the controller's
    setpoint cannot step at the hand-off, whatever state it interpolates from. One that breaks this
    must have been counted by the stream (preempted between planning and writing, loaded machine)."""
    broken = 0
    previous: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    for msg, written_ns in robot.trajectories.messages:
        times, p, v = check_trajectory(msg)
        early = times < written_ns + DT_NS - 1_000_000
        if previous is not None and early.any():
            for t, position, velocity in zip(times[early], p[early], v[early], strict=True):
                before = previous.get(int(t), previous[max(previous)])  # past its end: its rest point
                same = np.allclose(position, before[0], atol=1e-9) and np.allclose(velocity, before[1], atol=1e-9)
                broken += int(not same)
        elif previous is None and early.any():
            broken += 1
        previous = {int(t): (position, velocity) for t, position, velocity in zip(times, p, v, strict=True)}
    assert broken <= int(robot.fresh_diag().get("trajectories_late", "0")), f"{broken} hand-offs do not continue"


def check_trajectory(msg: JointTrajectory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What joint_trajectory_controller accepts and the arm's limits allow: its joints in its order; a
    point every control period with positions and velocities (a cubic spline for the controller),
    within the position and velocity limits, velocities changing by at most the acceleration limit
    and consistent with the positions; the last point at rest. Returns (absolute times, p, v)."""
    assert list(msg.joint_names) == list(CONTROLLER_JOINTS)
    header = stamp_ns(msg.header.stamp)
    times = header + np.array([p.time_from_start.sec * 10**9 + p.time_from_start.nanosec for p in msg.points])
    assert np.all(np.diff(times) == DT_NS)
    p = np.array([point.positions for point in msg.points])
    v = np.array([point.velocities for point in msg.points])
    assert p.shape == v.shape == (len(times), len(CONTROLLER_JOINTS))
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(v))
    assert np.all(p >= LOW - TOL) and np.all(p <= HIGH + TOL), "a point beyond the position limits"
    assert np.all(np.abs(v) <= VMAX + TOL), "a point beyond the velocity limits"
    dt = DT_NS / 1e9
    assert np.all(np.abs(np.diff(v, axis=0)) <= AMAX * dt + TOL), "velocities change faster than the acceleration limit"
    assert np.allclose(np.diff(p, axis=0), 0.5 * (v[1:] + v[:-1]) * dt, atol=1e-9), "positions and velocities disagree"
    assert np.all(v[-1] == 0.0), "the trajectory does not end at rest"
    return times, p, v


def start_node(root: Path, name: str, spec_kind: str, **params: Any) -> Any:
    spec = POSITION_SPEC if spec_kind == "positions" else SPEC
    model_dir = make_imported_model(root / "model", "qwen2", spec=spec)
    wiring: dict[str, Any] = {
        "state_joint_names": "[" + ",".join(STATE_NAMES) + "]",
        "command_joint_names": "[" + ",".join(CONTROLLER_JOINTS) + "]",
        "max_camera_skew_ms": 40.0,
        # The recorded joint states do not follow the commands (no arm here): no starting over from them.
        "max_tracking_error": 0.0,
    }
    if spec_kind == "deltas":  # the deltas' names are not the joints': map them
        by_joint = dict(zip(JOINTS, ACTION_NAMES, strict=True))
        wiring["action_to_joint"] = "[" + ",".join(by_joint[j] for j in CONTROLLER_JOINTS) + "]"
    limits = arm_fixture.write_params(root / "arm.yaml", f"/{name}", arm_fixture.urdf())
    return node_command(
        model_dir, name, limits, control_rate_hz=RATE_HZ, max_image_age_ms=MAX_AGE_MS, **wiring, **params
    )


@pytest.fixture(scope="module", params=["positions", "deltas"])
def robot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerSide]:
    kind = str(request.param)
    root = tmp_path_factory.mktemp(kind)
    name = f"dysl_{kind}"
    domain = unique_domain_id()
    with ros_process(start_node(root, name, kind), domain, root / "node.log") as proc, \
            ros_session(domain, f"{kind}_controllers") as ros:
        side = ControllerSide(ros, name, proc, root / "node.log")
        side.kind = kind  # type: ignore[attr-defined]
        side.instruction_pub.publish(String(data="put the red block in the bowl"))
        assert ros.wait_until(lambda: side.diag().get("waiting_for") is not None, 90.0), "node did not come up"
        yield side
        check_alive(proc, side.log)


def commands_since(robot: ControllerSide, start: float) -> list[tuple[np.ndarray, str, int]]:
    """(values, label, write time ns) of each ~/commands message received since monotonic ``start``."""
    items = robot.commands.items
    return [(np.asarray(values), label, written) for t, ((values, label), written) in items if t >= start]


def check_command_stream(sent: list[tuple[np.ndarray, str, int]]) -> None:
    """Position commands in the order written: within the limits, and from one to the next within
    the velocity limit over the periods between them (a period the loaded stream process skipped is
    counted, not made up), and within the acceleration limit where they came a period apart."""
    assert sent
    values = np.array([v for v, _, _ in sent])
    assert np.all(values >= LOW - TOL) and np.all(values <= HIGH + TOL), "a command beyond the position limits"
    periods = np.maximum(np.rint(np.diff([w for _, _, w in sent]) / DT_NS), 1.0)
    steps = np.diff(values, axis=0)
    within = np.abs(steps) <= VMAX * (DT_NS / 1e9) * periods[:, None] + TOL
    bad = np.flatnonzero(~np.all(within, axis=1))
    assert not len(bad), "a command step beyond the velocity limit: " + "; ".join(
        f"{sent[i][1]} -> {sent[i + 1][1]} over {periods[i]:g} periods ({(sent[i + 1][2] - sent[i][2]) / 1e6:.1f} ms): "
        f"{np.round(steps[i] / (VMAX * DT_NS / 1e9), 2)} of the limit"
        for i in bad[:5]
    )
    for i in range(len(steps) - 1):
        if periods[i] == 1 and periods[i + 1] == 1:
            assert np.all(np.abs(steps[i + 1] - steps[i]) <= AMAX * (DT_NS / 1e9) ** 2 * 1.01 + TOL), (
                f"command steps {i}, {i + 1} change beyond the acceleration limit"
            )


def test_controllers_accept_every_command(robot: ControllerSide) -> None:
    start = time.monotonic()
    stamps = robot.play(Recorded.make())
    assert robot.ros.wait_until(lambda: len(robot.trajectories) >= 3 and len(robot.commands) >= 20, 30.0), robot.diag()
    check_trajectories(robot)
    sent = commands_since(robot, start)
    fresh = [(values, label) for values, label, _ in sent if label[0].isdigit()]
    assert fresh, "no fresh joint command"
    for values, label in fresh:
        assert len(values) == len(CONTROLLER_JOINTS) and np.all(np.isfinite(values))
        assert all(int(s.replace(".", "")) in stamps for s in label.split(",")), f"command from unknown images {label}"
    check_command_stream(sent)
    assert robot.chunks.messages[-1].points and len(robot.chunks.messages[-1].points) == SPEC.horizon


def test_the_camera_stopping_brakes_to_rest_within_the_limits(robot: ControllerSide) -> None:
    episode = Recorded.make(seed=1)
    start = time.monotonic()
    robot.play(episode)
    last_image_ns = stamp_ns(robot.now())
    robot.frame(episode.images[-1], Time(sec=last_image_ns // 10**9, nanosec=last_image_ns % 10**9))
    for _ in range(int((MAX_AGE_MS / 1000.0 + 0.8) / 0.02)):  # the arm still reports its joints
        robot.joint_states(episode.joints[-1])
        time.sleep(0.02)
    sent = commands_since(robot, start)
    check_command_stream(sent)
    # After the last fresh command: the plan brakes ("stop"), then holds at rest; nothing moves again.
    fresh = [i for i, (_, label, _) in enumerate(sent) if label[0].isdigit()]
    after = sent[fresh[-1] + 1:]
    labels = [label for _, label, _ in after]
    assert labels and labels[-1] == "hold", f"not at rest after the camera stopped: {labels[-5:]}; {robot.diag()}"
    assert set(labels) <= {"stop", "hold"}, labels
    held = [values for values, label, _ in after if label == "hold"]
    assert all(np.array_equal(values, held[0]) for values in held), "the held position moved"
    first_hold = next(written for _, label, written in after if label == "hold")
    late = int(robot.diag().get("action_periods_late", "0"))  # periods the stream process was starved of
    bound_ms = MAX_AGE_MS + (3 + late) * 1000.0 / RATE_HZ + 1000.0 * float(np.max(VMAX / AMAX))
    assert first_hold - last_image_ns <= bound_ms * 1e6, f"at rest too late: {robot.diag()}"
    assert robot.diag()["joint_motion"] == "at rest"


def test_deactivate_brakes_to_rest_then_publishes_nothing(robot: ControllerSide) -> None:
    robot.play(Recorded.make(seed=2))
    start = time.monotonic()
    assert robot.lifecycle(Transition.TRANSITION_DEACTIVATE)  # answers once the joints are at rest
    time.sleep(0.3)
    sent = commands_since(robot, start)
    labels = [label for _, label, _ in sent]
    assert "final" in labels, f"no final stop: {labels}"
    first = labels.index("final")
    assert set(labels[first:]) == {"final"}, f"something after the final stop: {labels[first:]}"
    previous = [item for t, item in robot.commands.items if t < start][-1:]
    ramp = [(np.asarray(v), label, w) for (v, label), w in previous] + sent
    check_command_stream(ramp)  # from the last command before deactivate, through the ramp: no snap
    finals = [values for values, label, _ in sent if label == "final"]
    stop, _ = robot.trajectories.messages[-1]
    assert np.all(np.asarray(stop.points[-1].velocities) == 0.0)
    if len(finals) > 1:  # it was moving: the ramp ends where the stop trajectory comes to rest
        assert np.allclose(finals[-1], stop.points[-1].positions, atol=1e-12), "the final command is not at rest"
    check_trajectories(robot)
    count = len(robot.commands)
    robot.play(Recorded.make(seed=3))
    assert len(robot.commands) == count, "commands while inactive"
    assert robot.lifecycle(Transition.TRANSITION_ACTIVATE)
    robot.instruction_pub.publish(String(data="put the red block in the bowl"))  # activate waits for one


def test_a_state_missing_a_joint_is_counted_and_drives_nothing(robot: ControllerSide) -> None:
    time.sleep(MAX_AGE_MS / 1000.0 + 0.2)  # earlier good states age out
    before = int(robot.diag().get("rejected_missing_joint", "0"))
    stamps = set(robot.play(Recorded.make(seed=4), drop=CONTROLLER_JOINTS[2]))
    assert robot.ros.wait_until(lambda: int(robot.diag().get("rejected_missing_joint", "0")) > before, 5.0)
    assert not stamps & {stamp_ns(m.header.stamp) for m in robot.chunks.messages}, "a chunk from incomplete states"


def test_compressed_images_are_served_as_raw_ones(tmp_path: Path) -> None:
    """The same PNG frames, compressed to one dense node and raw in process: the same chunks."""
    from dysl_ros.inputs import decode_image
    from dysl_ros.model.observation_spec import Observation
    from dysl_ros.policy import PolicyOptions, load_policy

    command = start_node(tmp_path, "dysl_png", "positions", image_transport="compressed", dense="true")
    model_dir = Path(command[command.index("-p") + 1].split(":=", 1)[1])
    domain = unique_domain_id()
    with ros_process(command, domain, tmp_path / "node.log") as proc, ros_session(domain, "png_probe") as ros:
        side = ControllerSide(ros, "dysl_png", proc, tmp_path / "node.log", compressed=True)
        side.instruction_pub.publish(String(data="put the red block in the bowl"))
        episode = Recorded.make(seed=5)
        sent: dict[int, int] = {}

        def answered() -> bool:
            frame = len(sent) % EPISODE
            side.joint_states(episode.joints[frame])
            sent[side.frame(episode.images[frame])] = frame
            return any(stamp_ns(m.header.stamp) in sent for m in side.chunks.messages)

        assert ros.wait_until(answered, 90.0, period=0.1), side.diag()
        chunk = next(m for m in side.chunks.messages if stamp_ns(m.header.stamp) in sent)
        check_alive(proc, side.log)
    frame = sent[stamp_ns(chunk.header.stamp)]
    policy = load_policy(model_dir, PolicyOptions(dense=True))
    images = {}
    for camera in POSITION_SPEC.cameras:
        pixels = episode.images[frame][camera.name]
        height, width = pixels.shape[:2]
        images[camera.name] = decode_image(
            "rgb8", height, width, width * 3, pixels.tobytes(), (camera.height, camera.width), camera.fit
        )
    state = np.asarray([episode.joints[frame][n] for n in STATE_NAMES])
    out = policy.predict_action_chunk(Observation(images, "put the red block in the bowl", state))
    expected = np.clip(out.actions, -1.5, 1.5)  # the model's own range (its min_max normalisation)
    assert np.allclose([p.positions for p in chunk.points], expected, atol=1e-4)
