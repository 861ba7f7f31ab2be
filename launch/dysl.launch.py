"""Launch dysl_node as a managed lifecycle node and bring it to ``active``.

    ros2 launch dysl_ros dysl.launch.py image_topic:=/camera/color/image_raw log_level:=debug

The node starts ``unconfigured`` (``autostart: false``); this file emits ``configure`` and, once the
node reports ``inactive``, ``activate``. A failed configure (model files missing, bad parameters) leaves
the node ``unconfigured`` with the reason in its log, and is reported here too.

DDS: with ``localhost_only:=true`` (default) the node's processes load the package's Fast DDS profile
config/fastdds.xml (shared memory with a 16 MB segment for camera frames, UDP on 127.0.0.1 only) and
restrict discovery to this host. With ``localhost_only:=false`` (camera or controller on another
machine) they load config/fastdds_network.xml instead (the same shared memory, UDP on every interface)
and discover the subnet (``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``; Humble: ``ROS_LOCALHOST_ONLY=0``).
Environment set here reaches the launched node only; export the same variables in the shell for
``ros2`` CLI tools and other processes that should see the node (on the other machine too).

The launch files need a ROS 2 install (`launch`, `launch_ros`); they have not been run here, where the
tests start the node processes themselves.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from dysl_ros.wiring import DEFAULT_TOPICS, PACKAGE, dds_environment

TOPIC_HELP = {
    "image": "Camera images (sensor_msgs/Image).",
    "instruction": "Task instruction (std_msgs/String).",
    "joint_states": "Robot state (sensor_msgs/JointState).",
    "action_chunk": "Predicted action chunks (trajectory_msgs/JointTrajectory).",
    "action": "Per-period action stream (std_msgs/Float64MultiArray).",
}


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
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of dysl_node."),
        *(
            DeclareLaunchArgument(f"{name}_topic", default_value=topic, description=TOPIC_HELP[name])
            for name, topic in DEFAULT_TOPICS.items()
        ),
        DeclareLaunchArgument(
            "log_level",
            default_value="info",
            choices=["debug", "info", "warn", "error", "fatal"],
            description="Log level of dysl_node.",
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

    node = LifecycleNode(
        package=PACKAGE,
        executable="dysl_node",
        name="dysl_node",
        namespace=LaunchConfiguration("namespace"),
        # The launch file drives the lifecycle, so the node must not activate itself.
        parameters=[LaunchConfiguration("params_file"), {"autostart": False}],
        remappings=[(f"~/{name}", LaunchConfiguration(f"{name}_topic")) for name in DEFAULT_TOPICS],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )

    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=Transition.TRANSITION_CONFIGURE,
        )
    )
    activate_when_inactive = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            entities=[
                LogInfo(msg="dysl_node configured; activating"),
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(node),
                        transition_id=Transition.TRANSITION_ACTIVATE,
                    )
                ),
            ],
        )
    )
    report_active = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="activating",
            goal_state="active",
            entities=[LogInfo(msg="dysl_node is active")],
        )
    )
    report_configure_failure = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="unconfigured",
            entities=[LogInfo(msg="dysl_node failed to configure; see its log above")],
        )
    )

    # Handlers are registered before the node starts and before 'configure' is emitted, so no
    # transition can be missed. The ChangeState event waits for the node's change_state service.
    return LaunchDescription(
        [
            *arguments,
            *environment,
            activate_when_inactive,
            report_active,
            report_configure_failure,
            node,
            configure,
        ]
    )
