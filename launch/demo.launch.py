"""The closed-loop demo on a ROS 2 install: Meta-World ``sim_bridge`` + ``dysl_node``, wired together.

    ros2 launch dysl_ros demo.launch.py model_dir:=/path/to/models/reference
    ros2 launch dysl_ros demo.launch.py model_dir:=... mode:=lockstep tasks:="[reach-v3,push-v3]" episodes_per_task:=5

``dysl_node`` runs as a lifecycle node that configures and activates itself (``autostart``; use
``dysl.launch.py`` for a node driven by launch's lifecycle events). ``sim_bridge`` waits until the
node is connected, runs the episodes and publishes one JSON object per episode on
``/sim_bridge/episode_result``; the launch ends when it is done (``on_finish: exit``):

    ros2 topic echo /sim_bridge/episode_result --qos-durability transient_local --qos-reliability reliable

Both processes share the rate (``control_rate_hz``: sim steps and the node's action stream) and the
topic names of ``dysl.launch.py``'s defaults. Fast DDS profile and discovery as in ``dysl.launch.py``
(``localhost_only:=false``: config/fastdds_network.xml and subnet discovery); the simulator renders
offscreen with EGL (``MUJOCO_GL=egl``; Meta-World and MuJoCo must be installed:
``pip install metaworld==3.1.1 packaging``).

Either process failing (dysl_node exits 1 on a failed configure) ends the launch with return code 1.

The launch files run in CI from a colcon install tree, with the ROS 2 launch and command-line tools of
the Kilted line on Python 3.11; nothing has run them on ROS 2 Humble. test/test_launch_dysl.py runs one
episode of this file.
"""

from __future__ import annotations

import os
from dataclasses import Field, fields
from typing import Any

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from dysl_ros.backends.registry import BACKEND_CHOICES
from dysl_ros.sim.params import DemoSettings
from dysl_ros.wiring import DEFAULT_TOPICS, PACKAGE, dds_environment


def demo_argument(setting: Field[Any]) -> DeclareLaunchArgument:
    """A launch argument for one of the demo's settings; a list default as YAML ("[a,b]")."""
    default = setting.default
    text = "[" + ",".join(default) + "]" if isinstance(default, tuple) else str(default)
    choices = [getattr(check, "choices", None) for check in setting.metadata["checks"]]
    options = next((list(c) for c in choices if c is not None), None)
    return DeclareLaunchArgument(
        setting.name, default_value=text, description=str(setting.metadata["description"]),
        **({"choices": options} if options else {}),
    )


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    localhost_only = IfCondition(LaunchConfiguration("localhost_only"))
    across_machines = UnlessCondition(LaunchConfiguration("localhost_only"))

    arguments = [
        DeclareLaunchArgument("model_dir", description="Trained VLA + DySL modules (required)."),
        DeclareLaunchArgument("engine_dir", default_value="", description="Engine cache; empty: <model_dir>/engines."),
        DeclareLaunchArgument(
            "backend", default_value="auto", choices=list(BACKEND_CHOICES),
            description="dysl_node backend.",
        ),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device: cpu, cuda, cuda:N."),
        DeclareLaunchArgument("dense", default_value="false", description="Run every layer (the dense baseline)."),
        DeclareLaunchArgument(
            "node_params_file",
            default_value=os.path.join(share, "config", "dysl.yaml"),
            description="dysl_node parameters (launch arguments above override it).",
        ),
        DeclareLaunchArgument(
            "bridge_params_file",
            default_value=os.path.join(share, "config", "sim_bridge.yaml"),
            description="sim_bridge parameters (launch arguments above override it).",
        ),
        # The demo's run: defaults and descriptions from DemoSettings, as `make demo`'s flags.
        *(demo_argument(f) for f in fields(DemoSettings)),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=["debug", "info", "warn", "error", "fatal"],
            description="Log level of both processes.",
        ),
        DeclareLaunchArgument(
            "localhost_only", default_value="true",
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
        SetEnvironmentVariable("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl")),
    ]
    remappings = [(f"~/{name}", topic) for name, topic in DEFAULT_TOPICS.items()]
    log_args = ["--ros-args", "--log-level", LaunchConfiguration("log_level")]
    rate = ParameterValue(LaunchConfiguration("control_rate_hz"), value_type=float)

    node = LifecycleNode(
        package=PACKAGE,
        executable="dysl_node",
        name="dysl_node",
        namespace="",
        parameters=[
            LaunchConfiguration("node_params_file"),
            {
                "model_dir": LaunchConfiguration("model_dir"),
                "engine_dir": LaunchConfiguration("engine_dir"),
                "backend": LaunchConfiguration("backend"),
                "device": LaunchConfiguration("device"),
                "dense": ParameterValue(LaunchConfiguration("dense"), value_type=bool),
                "control_rate_hz": rate,
                # No lifecycle manager here: the node configures and activates itself.
                "autostart": True,
            },
        ],
        remappings=remappings,
        arguments=log_args,
        output="screen",
        emulate_tty=True,
    )
    bridge = Node(
        package=PACKAGE,
        executable="sim_bridge",
        name="sim_bridge",
        parameters=[
            LaunchConfiguration("bridge_params_file"),
            {
                "mode": LaunchConfiguration("mode"),
                # A substitution's text is read as YAML by launch_ros: "[reach-v3,push-v3]" is a list.
                "tasks": LaunchConfiguration("tasks"),
                "episodes_per_task": ParameterValue(LaunchConfiguration("episodes_per_task"), value_type=int),
                "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
                "control_rate_hz": rate,
                "camera_rate_hz": ParameterValue(LaunchConfiguration("camera_rate_hz"), value_type=float),
                "execute_steps": ParameterValue(LaunchConfiguration("execute_steps"), value_type=int),
                "max_steps": ParameterValue(LaunchConfiguration("max_steps"), value_type=int),
                "on_finish": "exit",
            },
        ],
        remappings=remappings,
        arguments=log_args,
        output="screen",
        emulate_tty=True,
    )

    # The demo is over when the bridge has run every episode: stop dysl_node too. Either process
    # failing (dysl_node exits 1 on a failed configure, sim_bridge on an error) ends the launch with
    # return code 1 (launch returns 1 when an action raises) instead of leaving the other one waiting.
    def end_with(process: Node, name: str) -> RegisterEventHandler:
        def on_exit(event: Any, context: LaunchContext) -> list[Any] | None:
            if context.is_shutdown:
                return None
            if event.returncode != 0:
                raise RuntimeError(f"{name} exited with code {event.returncode}; see its log above")
            return [EmitEvent(event=Shutdown(reason=f"{name} finished"))]

        return RegisterEventHandler(OnProcessExit(target_action=process, on_exit=on_exit))

    handlers = [end_with(node, "dysl_node"), end_with(bridge, "sim_bridge")]
    return LaunchDescription([*arguments, *environment, *handlers, node, bridge])
