"""Launch dysl_node as a managed lifecycle node and bring it to ``active``.

    ros2 launch dysl_ros dysl.launch.py image_topic:=/camera/color/image_raw log_level:=debug

The node starts ``unconfigured`` (``autostart: false``); this file emits ``configure`` and, once the
node reports ``inactive``, ``activate``. A failed configure (model files missing, bad parameters) leaves
the node ``unconfigured`` with the reason in its log, and is reported here too.

DDS: the node's processes load the package's Fast DDS profile (config/fastdds.xml: shared memory with a
16 MB segment for camera frames, UDP on 127.0.0.1 only) and, with ``localhost_only:=true`` (default),
restrict discovery to this host. Environment set here reaches the launched node only; export the same
variables in the shell for ``ros2`` CLI tools and other processes that should see the node.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "dysl_ros"
# Distributions whose rcl predates ROS_AUTOMATIC_DISCOVERY_RANGE (introduced in Iron) and only know
# ROS_LOCALHOST_ONLY.
_LOCALHOST_ONLY_DISTROS = {"foxy", "galactic", "humble"}
# Distributions on Fast DDS 2.x, which reads FASTRTPS_DEFAULT_PROFILES_FILE rather than
# FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 3.x, Kilted on; its rmw warns when the old name is set).
_FASTDDS2_DISTROS = {"foxy", "galactic", "humble", "iron", "jazzy"}


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    fastdds_profile = os.path.join(share, "config", "fastdds.xml")
    localhost_only = IfCondition(LaunchConfiguration("localhost_only"))

    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "dysl.yaml"),
            description="YAML file with dysl_node parameters.",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of dysl_node."),
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/image_raw", description="Camera images (sensor_msgs/Image)."
        ),
        DeclareLaunchArgument(
            "instruction_topic", default_value="/instruction", description="Task instruction (std_msgs/String)."
        ),
        DeclareLaunchArgument(
            "joint_states_topic", default_value="/joint_states", description="Robot state (sensor_msgs/JointState)."
        ),
        DeclareLaunchArgument(
            "action_chunk_topic",
            default_value="/dysl/action_chunk",
            description="Predicted action chunks (trajectory_msgs/JointTrajectory).",
        ),
        DeclareLaunchArgument(
            "action_topic",
            default_value="/dysl/action",
            description="Per-period action stream (std_msgs/Float64MultiArray).",
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
            description="Keep DDS discovery on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).",
        ),
    ]

    distro = os.environ.get("ROS_DISTRO", "")
    environment = [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", fastdds_profile),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST", condition=localhost_only),
    ]
    if distro in _FASTDDS2_DISTROS:  # the profile parses with Fast DDS 2.x as well
        environment.append(SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", fastdds_profile))
    if distro in _LOCALHOST_ONLY_DISTROS:
        environment.append(SetEnvironmentVariable("ROS_LOCALHOST_ONLY", "1", condition=localhost_only))

    node = LifecycleNode(
        package=PACKAGE,
        executable="dysl_node",
        name="dysl_node",
        namespace=LaunchConfiguration("namespace"),
        # The launch file drives the lifecycle, so the node must not activate itself.
        parameters=[LaunchConfiguration("params_file"), {"autostart": False}],
        remappings=[
            ("~/image", LaunchConfiguration("image_topic")),
            ("~/instruction", LaunchConfiguration("instruction_topic")),
            ("~/joint_states", LaunchConfiguration("joint_states_topic")),
            ("~/action_chunk", LaunchConfiguration("action_chunk_topic")),
            ("~/action", LaunchConfiguration("action_topic")),
        ],
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
