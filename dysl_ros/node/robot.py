"""What dysl_node asks the robot's ROS graph at configure and activate: the robot description
(``/robot_description``, transient local, as robot_state_publisher offers it), the
``joint_limits.<joint>.*`` parameters, and a forward command controller's ``joints``.

The node's transitions run inside its executor's callbacks, so a wait for another node's answer
cannot spin the node itself: each query makes a short-lived helper node in the same context with an
executor of its own, and destroys it before returning.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from dysl_ros.core.config import ConfigError
from dysl_ros.joint_limits import FIELDS, parameter_names

DESCRIPTION_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def declare_joint_limit_parameters(node: Node, joints: Sequence[str]) -> dict[str, Any]:
    """Declare ros2_control's ``joint_limits.<joint>.<field>`` for each command joint (once; typed as
    given, so ``max_velocity: 2`` and ``2.0`` both work) and return the ones given (name -> value)."""
    given: dict[str, Any] = {}
    for name in parameter_names(joints):
        if not node.has_parameter(name):
            field = name.rsplit(".", 1)[1]
            kind = "true/false" if field.startswith("has_") else "a number"
            node.declare_parameter(
                name,
                None,
                ParameterDescriptor(
                    description=f"ros2_control joint limit ({kind}); overrides the robot description",
                    dynamic_typing=True,
                    read_only=True,
                ),
            )
        value = node.get_parameter(name).value
        if value is not None:
            given[name] = value
    return given


def robot_description(node: Node, topic: str, timeout_s: float) -> str:
    """The URDF published on ``topic`` (transient local), waited for up to ``timeout_s``."""
    received: list[str] = []
    helper = Node(f"{node.get_name()}_robot_description", context=node.context, start_parameter_services=False)
    executor = SingleThreadedExecutor(context=node.context)
    try:
        helper.create_subscription(String, topic, lambda msg: received.append(msg.data), DESCRIPTION_QOS)
        executor.add_node(helper)
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        helper.destroy_node()
    if not received:
        raise ConfigError(
            f"no robot description within startup_timeout_s={timeout_s:g} s on {topic} (robot_state_publisher "
            "publishes it, transient local); set the robot_description parameter or give every limit as "
            f"joint_limits.<joint>.* parameters ({', '.join(FIELDS)})"
        )
    return received[-1]


def controller_joints(node: Node, controller: str, timeout_s: float) -> list[str]:
    """The ``joints`` parameter of the controller node ``controller``, over its parameter service."""
    name = controller.rstrip("/")
    helper = Node(f"{node.get_name()}_controller_query", context=node.context, start_parameter_services=False)
    executor = SingleThreadedExecutor(context=node.context)
    try:
        client: Any = helper.create_client(GetParameters, f"{name}/get_parameters")
        executor.add_node(helper)
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"forward_controller {controller}: no parameter service {name}/get_parameters within "
                    f"startup_timeout_s={timeout_s:g} s (is the controller loaded and configured?)"
                )
            executor.spin_once(timeout_sec=0.05)
        future = client.call_async(GetParameters.Request(names=["joints"]))
        while not future.done():
            if time.monotonic() >= deadline:
                raise ConfigError(f"forward_controller {controller}: no answer about its joints within {timeout_s:g} s")
            executor.spin_once(timeout_sec=0.05)
        answer: Any = future.result()
        values = answer.values if answer is not None else []
    finally:
        executor.shutdown()
        helper.destroy_node()
    if not values or values[0].type != ParameterType.PARAMETER_STRING_ARRAY:
        raise ConfigError(f"forward_controller {controller} has no 'joints' parameter (a string array)")
    return list(values[0].string_array_value)
