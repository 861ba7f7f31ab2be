"""Launch dysl_node as a managed lifecycle node and bring it to ``active``.

    ros2 launch dysl_ros dysl.launch.py model_dir:=/path/to/models/reference
    ros2 launch dysl_ros dysl.launch.py params_file:=my_robot.yaml image_topic:=/camera/color/image_raw \\
        joint_trajectory_topic:=/arm_controller/joint_trajectory log_level:=debug
    ros2 launch dysl_ros dysl.launch.py --show-args

The node starts ``unconfigured`` (``autostart: false``); this file emits ``configure`` and, once the
node reports ``inactive``, ``activate``. Later transitions (``ros2 lifecycle set``) are the user's.
Parameters come from ``params_file`` (default: the package's config/dysl.yaml); the arguments
``model_dir``, ``engine_dir``, ``backend``, ``device``, ``precision`` and ``control_rate_hz`` override
it when given and leave it alone when empty (their default).

A failed first configure (model files missing, a bad parameter) or dysl_node exiting on its own
ends the launch with the node's error and a non-zero exit status, instead of waiting.

Topics: every topic of the node has an argument (``<name>_topic``; ``--show-args`` lists them). A
camera topic ``X`` also maps the node's ``.../compressed`` subscription (``image_transport:
compressed``) to ``X/compressed``, as image_transport names it. A model with several cameras:
``camera_topics:="{wrist: /wrist/image_raw, front: /front/image_raw}"``.

DDS: with ``localhost_only:=true`` (default) the node's processes load the package's Fast DDS profile
config/fastdds.xml (shared memory with a 16 MB segment for camera frames, UDP on 127.0.0.1 only) and
restrict discovery to this host. With ``localhost_only:=false`` (camera or controller on another
machine) they load config/fastdds_network.xml instead (the same shared memory, UDP on every interface)
and discover the subnet (``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``; Humble: ``ROS_LOCALHOST_ONLY=0``).
Environment set here reaches the launched node and the launch's own ROS node (which drives the
lifecycle); export the same variables in the shell for ``ros2`` CLI tools and other processes that
should see the node (on the other machine too).

The launch files run in CI from a colcon install tree, with the ROS 2 launch and command-line tools of
the Kilted line on Python 3.11; nothing has run them on ROS 2 Humble. They run in
test/test_launch_dysl.py, test/test_ros2_cli.py and test/test_entrypoint.py.
"""

from __future__ import annotations

import os
import re
from collections import deque
from typing import Any

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
    TimerAction,
)
from launch.conditions import IfCondition, UnlessCondition
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown, matches_action
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

from dysl_ros.wiring import DEFAULT_TOPICS, DIAGNOSTICS_TOPIC, PACKAGE, TICK_TOPIC, dds_environment

NODE_NAME = "dysl_node"

# Topic arguments: argument -> (the node's topic, default remap target; "" = not remapped, help).
TOPICS: dict[str, tuple[str, str, str]] = {
    "image_topic": ("~/image", DEFAULT_TOPICS["image"], "Camera of a one-camera model (sensor_msgs/Image)."),
    "instruction_topic": ("~/instruction", DEFAULT_TOPICS["instruction"], "Task instruction (std_msgs/String)."),
    "joint_states_topic": ("~/joint_states", DEFAULT_TOPICS["joint_states"], "Robot state (sensor_msgs/JointState)."),
    "action_chunk_topic": (
        "~/action_chunk",
        DEFAULT_TOPICS["action_chunk"],
        "Action chunks, model space (trajectory_msgs/JointTrajectory).",
    ),
    "action_topic": (
        "~/action",
        DEFAULT_TOPICS["action"],
        "One action per control period, model space (std_msgs/Float64MultiArray).",
    ),
    "joint_trajectory_topic": (
        "~/joint_trajectory",
        "",
        "For joint_trajectory_controller, with command_joint_names; empty: not remapped.",
    ),
    "commands_topic": (
        "~/commands",
        "",
        "For a forward command controller, with command_joint_names; empty: not remapped.",
    ),
    "tick_topic": (TICK_TOPIC, "", "Per-inference telemetry (diagnostic_msgs/DiagnosticStatus); empty: not remapped."),
    "diagnostics_topic": (DIAGNOSTICS_TOPIC, "", "diagnostic_msgs/DiagnosticArray; empty: not remapped."),
}
CAMERA_TOPICS_HELP = (
    "A model with several cameras: a YAML mapping camera -> topic, e.g. "
    "'{wrist: /wrist/image_raw, front: /front/image_raw}' (the node's ~/<camera>/image)."
)
COMPRESSED = "/compressed"

# Node parameters that a launch argument overrides when it is not empty: name -> (type, help).
PARAMETER_ARGUMENTS: dict[str, tuple[type, str]] = {
    "model_dir": (str, "Trained VLA + DySL modules (overrides params_file when given)."),
    "engine_dir": (str, "Engine cache root (overrides params_file when given)."),
    "backend": (str, "auto | torch | onnxruntime | tensorrt (overrides params_file when given)."),
    "device": (str, "torch device: cpu | cuda | cuda:N (overrides params_file when given)."),
    "precision": (str, "fp32 | fp16 (overrides params_file when given)."),
    "control_rate_hz": (float, "Action stream rate, Hz (overrides params_file when given)."),
}
LOG_LEVELS = ["debug", "info", "warn", "error", "fatal"]
REPORT_GRACE_S = 1.0
"""After a failed configure, how long the node's error text has to reach this process before the
launch ends (its console output and the lifecycle event travel separately)."""


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    localhost_only = IfCondition(LaunchConfiguration("localhost_only"))
    across_machines = UnlessCondition(LaunchConfiguration("localhost_only"))

    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "dysl.yaml"),
            description="YAML file with dysl_node parameters.",
        ),
        *(
            DeclareLaunchArgument(name, default_value="", description=text)
            for name, (_, text) in PARAMETER_ARGUMENTS.items()
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of dysl_node."),
        *(
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (_, default, text) in TOPICS.items()
        ),
        DeclareLaunchArgument("camera_topics", default_value="", description=CAMERA_TOPICS_HELP),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=LOG_LEVELS, description="Log level of dysl_node."
        ),
        DeclareLaunchArgument(
            "localhost_only",
            default_value="true",
            description="true: DDS on this host only (config/fastdds.xml, discovery range LOCALHOST); "
            "false: peers on other machines (config/fastdds_network.xml, discovery range SUBNET).",
        ),
    ]

    distro = os.environ.get("ROS_DISTRO", "")
    environment = [
        # localhost_only is only known at launch time: both variants, each under its condition.
        *(SetEnvironmentVariable(k, v, condition=localhost_only) for k, v in dds_environment(share, distro).items()),
        *(
            SetEnvironmentVariable(k, v, condition=across_machines)
            for k, v in dds_environment(share, distro, localhost_only=False).items()
        ),
    ]
    # The node's description needs the argument values (empty ones must not reach the node), so it
    # is made at launch time.
    return LaunchDescription([*arguments, *environment, OpaqueFunction(function=_node_and_lifecycle)])


def parameter_overrides(context: LaunchContext) -> dict[str, Any]:
    """The node parameters given as non-empty launch arguments, typed."""
    overrides: dict[str, Any] = {}
    for name, (kind, _) in PARAMETER_ARGUMENTS.items():
        text = LaunchConfiguration(name).perform(context).strip()
        if not text:
            continue
        if kind is float:
            try:
                overrides[name] = float(text)
            except ValueError:
                raise RuntimeError(f"launch argument {name}:={text!r} is not a number") from None
        else:
            # ParameterValue(str): launch_ros would otherwise read the text as YAML ("1" -> an integer).
            overrides[name] = ParameterValue(text, value_type=str)
    return overrides


def remappings(context: LaunchContext) -> list[tuple[str, str]]:
    """``(node topic, topic)`` for every topic argument that is not empty; cameras with ``/compressed``."""
    rules: list[tuple[str, str]] = []
    for name, (node_topic, _, _) in TOPICS.items():
        topic = LaunchConfiguration(name).perform(context).strip()
        if topic:
            rules.append((node_topic, topic))
            if name == "image_topic":
                rules.append((node_topic + COMPRESSED, topic + COMPRESSED))
    text = LaunchConfiguration("camera_topics").perform(context).strip()
    try:
        cameras = yaml.safe_load(text) if text else {}
    except yaml.YAMLError:
        cameras = None
    if not isinstance(cameras, dict) or not all(isinstance(v, str) and v for v in cameras.values()):
        raise RuntimeError(f"launch argument camera_topics:={text!r} is not a mapping camera -> topic")
    for camera, topic in cameras.items():
        rules += [(f"~/{camera}/image", topic), (f"~/{camera}/image{COMPRESSED}", topic + COMPRESSED)]
    return rules


class NodeErrors:
    """The ERROR and FATAL messages of a process's console output (rcutils' default format), with their
    continuation lines, so that the launch can end with the node's own words."""

    LINE = re.compile(r"^\[(ERROR|FATAL)\] \[[^\]]*\] \[[^\]]*\]: ?(.*)$")
    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self) -> None:
        self.messages: deque[str] = deque(maxlen=5)
        self._pending = {True: "", False: ""}  # from_stdout -> a partial line
        self._open = False  # the last line began an error message: indented lines continue it

    def feed(self, event: Any) -> None:
        """An OnProcessIO callback: ``event.text`` is bytes, not necessarily whole lines."""
        text = self._pending[event.from_stdout] + event.text.decode(errors="replace")
        *lines, self._pending[event.from_stdout] = text.split("\n")
        for raw in lines:
            line = self.ANSI.sub("", raw).rstrip("\r")
            match = self.LINE.match(line)
            if match:
                self.messages.append(match.group(2))
                self._open = True
            elif self._open and line.startswith((" ", "\t")):
                self.messages[-1] += "\n" + line
            else:
                self._open = False

    def summary(self) -> str:
        return "\n".join(self.messages) if self.messages else f"no error message from {NODE_NAME} (see its log above)"


def _node_and_lifecycle(context: LaunchContext) -> list[Any]:
    node = LifecycleNode(
        package=PACKAGE,
        executable=NODE_NAME,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        # The launch file drives the lifecycle, so the node must not activate itself.
        parameters=[LaunchConfiguration("params_file"), parameter_overrides(context), {"autostart": False}],
        remappings=remappings(context),
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    errors = NodeErrors()

    def change_state(transition: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition))

    def fail_later(what: str) -> TimerAction:
        # Raising makes launch log the message, shut down and return 1 (launch.LaunchService.run).
        def fail(_: LaunchContext) -> None:
            raise RuntimeError(f"{NODE_NAME} {what}:\n{errors.summary()}")

        return TimerAction(period=REPORT_GRACE_S, actions=[OpaqueFunction(function=fail)])

    def after_configure(context: LaunchContext) -> list[Any]:
        if context.locals.event.goal_state == "inactive":
            return [LogInfo(msg=f"{NODE_NAME} configured; activating"), change_state(Transition.TRANSITION_ACTIVATE)]
        return [fail_later("failed to configure")]

    def after_activate(context: LaunchContext) -> list[Any]:
        if context.locals.event.goal_state == "active":
            return [LogInfo(msg=f"{NODE_NAME} is active")]
        return [fail_later("failed to activate")]

    def on_exit(event: Any, context: LaunchContext) -> list[Any] | None:
        if context.is_shutdown:  # stopped by the launch (Ctrl-C, or a failure reported above)
            return None
        if event.returncode != 0:
            raise RuntimeError(f"{NODE_NAME} exited with code {event.returncode}:\n{errors.summary()}")
        return [EmitEvent(event=Shutdown(reason=f"{NODE_NAME} exited"))]

    # Registered before the node starts and before 'configure' is emitted, so no transition can be
    # missed; each lifecycle handler acts on the launch's own transition only (handle_once). The
    # ChangeState event waits for the node's change_state service.
    return [
        RegisterEventHandler(OnProcessIO(target_action=node, on_stdout=errors.feed, on_stderr=errors.feed)),
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state="configuring",
                entities=[OpaqueFunction(function=after_configure)],
                handle_once=True,
            )
        ),
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state="activating",
                entities=[OpaqueFunction(function=after_activate)],
                handle_once=True,
            )
        ),
        RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit)),
        node,
        change_state(Transition.TRANSITION_CONFIGURE),
    ]
