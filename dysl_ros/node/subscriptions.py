"""dysl_node's input subscriptions: cameras (raw or compressed), the instruction (raw bytes: rclpy
would quietly replace invalid UTF-8, and a robot should not act on that) and the joint states.
Each message is decoded and checked here (dysl_ros/inputs.py), rejected with a counter and a log
line every 2 s per kind, or put in the node's input slots (input_slots.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from dysl_ros.inputs import (
    InputRejected,
    JointStateReader,
    check_stamp,
    decode_compressed_image,
    decode_image,
    parse_instruction,
    parse_proprio,
    string_from_cdr,
)
from dysl_ros.model.observation_spec import ObservationSpec
from dysl_ros.node.input_slots import InputSlots, LatestImage
from dysl_ros.node.telemetry import Stats
from dysl_ros.qos import LATCHED_QOS, SENSOR_QOS

REJECT_LOG_PERIOD_S = 2.0


def camera_topic(spec: ObservationSpec, camera: str) -> str:
    """``~/image`` for a one-camera model, ``~/<camera>/image`` for each camera of several."""
    return "~/image" if len(spec.cameras) == 1 else f"~/{camera}/image"


class InputSubscriptions:
    def __init__(
        self,
        node: Node,
        spec: ObservationSpec,
        slots: InputSlots,
        stats: Callable[[], Stats],
        on_instruction: Callable[[], None],
        *,
        compressed: bool,
        max_future_stamp_ms: float,
        state_reader: JointStateReader | None,
        command_reader: JointStateReader | None,
    ) -> None:
        self.node, self.spec, self.slots, self.stats = node, spec, slots, stats
        self.on_instruction = on_instruction
        self.max_future_stamp_ms = max_future_stamp_ms
        self.state_reader, self.command_reader = state_reader, command_reader
        self._last_log: dict[str, float] = {}
        group = MutuallyExclusiveCallbackGroup()
        image_type = CompressedImage if compressed else Image
        self.subscriptions: list[Any] = [
            node.create_subscription(
                image_type,
                camera_topic(spec, c.name) + ("/compressed" if compressed else ""),
                partial(self._on_image, c.name),
                SENSOR_QOS,
                callback_group=group,
            )
            for c in spec.cameras
        ]
        self.subscriptions += [
            node.create_subscription(String, "~/instruction", self._on_instruction, LATCHED_QOS, callback_group=group,
                                     raw=True),
            node.create_subscription(JointState, "~/joint_states", self._on_joint_states, SENSOR_QOS,
                                     callback_group=group),
        ]

    def destroy(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.subscriptions = []

    def _reject(self, error: InputRejected, camera: str = "") -> None:
        counters = self.stats().rejected
        counters[error.counter] = counters.get(error.counter, 0) + 1
        now = time.monotonic()
        if now - self._last_log.get(error.counter, -1e9) >= REJECT_LOG_PERIOD_S:
            self._last_log[error.counter] = now
            source = f" from camera {camera}" if camera else ""
            self.node.get_logger().warning(
                f"rejected input{source} ({error.counter}, {counters[error.counter]} so far): {error}"
            )

    def _on_image(self, camera_name: str, msg: Image | CompressedImage) -> None:
        camera = self.spec.camera(camera_name)
        try:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            stamp = stamp_ns * 1e-9
            check_stamp(stamp, self.node.get_clock().now().nanoseconds * 1e-9, self.max_future_stamp_ms)
            size, fit, channels = (camera.height, camera.width), camera.fit, camera.channels
            if isinstance(msg, CompressedImage):
                rgb = decode_compressed_image(msg.format, msg.data, size, fit, channels)
            else:
                rgb = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, size, fit, channels)
        except InputRejected as error:
            self._reject(error, camera_name)
            return
        self.stats().images_received += 1
        self.slots.put_image(camera_name, LatestImage(rgb, stamp, stamp_ns, msg.header.stamp, time.monotonic()))

    def _on_instruction(self, serialized: bytes) -> None:
        try:
            text = parse_instruction(string_from_cdr(serialized))
        except InputRejected as error:
            self._reject(error)
            return
        # A new episode: the inference thread resets continuity and plans for it now rather than
        # when the old chunk runs down.
        self.node.get_logger().info(f"instruction: {text!r}")
        self.slots.put_instruction(text)
        self.on_instruction()

    def _on_joint_states(self, msg: JointState) -> None:
        names, positions = msg.name, msg.position
        try:
            if self.state_reader is not None:
                values = self.state_reader.read(names, positions, msg.velocity)
            else:
                values = parse_proprio(positions, self.spec.state_dim)
            joints = self.command_reader.read(names, positions) if self.command_reader is not None else None
        except InputRejected as error:
            self._reject(error)
            return
        self.slots.put_state(values, joints, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
