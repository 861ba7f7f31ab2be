"""How the processes are wired: topic names, the parameters they share, and the environment every
ROS process of the project sets.

Used by both launch files, ``make demo`` (``dysl_ros.tools.demo``), ``sim_bridge`` and the tests, so
that a topic renamed here is renamed everywhere. No ROS imports: launch files import this too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dysl_ros.params import number_in, param

PACKAGE = "dysl_ros"

DEFAULT_TOPICS: dict[str, str] = {
    "image": "/camera/image_raw",
    "instruction": "/instruction",
    "joint_states": "/joint_states",
    "action_chunk": "/dysl/action_chunk",
    "action": "/dysl/action",
}
"""dysl_node's remappable topics (relative ``~/<name>``; sim_bridge has the same five) and the
absolute names the launch files and the demo map them to."""
CONTROLLER_TOPICS: dict[str, str] = {
    "joint_trajectory": "/joint_trajectory_controller/joint_trajectory",
    "commands": "/forward_position_controller/commands",
}
"""dysl_node's joint command topics and sim_bridge's joint arm inputs (``~/joint_trajectory``,
``~/commands``) as ros2_control names them for controllers of those names."""


@dataclass(frozen=True)
class SharedParams:
    """Parameters that dysl_node and sim_bridge both take and must agree on, declared once (each
    process's parameter set derives its field from here, ``dysl_ros.params.same_as``)."""

    control_rate_hz: float = param(
        50.0,
        "Control rate (Hz): dysl_node's ~/action stream and the spacing of its chunk points; sim_bridge's "
        "simulation steps in real_time mode (one action per step). Give both processes the same.",
        number_in(0.0, 1000.0, open_low=True),
    )


TICK_TOPIC = "~/dysl_tick"
DIAGNOSTICS_TOPIC = "/diagnostics"
EPISODE_RESULT_TOPIC = "~/episode_result"

FASTDDS_PROFILE = "config/fastdds.xml"
"""The Fast DDS profile, relative to the package share (or the source tree): shared memory with a
segment large enough for camera frames, UDP on 127.0.0.1 only."""
FASTDDS_NETWORK_PROFILE = "config/fastdds_network.xml"
"""The profile for peers on other machines (``localhost_only`` false): the same shared memory, UDP on
every interface."""
LOCALHOST_ONLY_DISTROS = frozenset({"foxy", "galactic", "humble"})
"""Distributions whose rcl predates ROS_AUTOMATIC_DISCOVERY_RANGE (Iron) and read ROS_LOCALHOST_ONLY."""
FASTDDS2_DISTROS = frozenset({"foxy", "galactic", "humble", "iron", "jazzy"})
"""Distributions on Fast DDS 2.x, which reads FASTRTPS_DEFAULT_PROFILES_FILE (3.x, from Kilted on,
reads FASTDDS_DEFAULT_PROFILES_FILE and warns when the old name is set)."""


def private_topic(node_name: str, relative: str) -> str:
    """The absolute name of ``~/<topic>`` of a node in the root namespace: ``/<node_name>/<topic>``."""
    return f"/{node_name}/{relative.removeprefix('~/')}"


def remap_arguments(topics: dict[str, str] | None = None) -> list[str]:
    """``-r ~/<name>:=<topic>`` for every node topic (command-line remaps)."""
    args: list[str] = []
    for name, topic in (topics or DEFAULT_TOPICS).items():
        args += ["-r", f"~/{name}:={topic}"]
    return args


def profile_environment(profile: str, distro: str) -> dict[str, str]:
    """The variables that make Fast DDS load ``profile`` on ROS distribution ``distro``."""
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    if distro in FASTDDS2_DISTROS:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    return env


def fastdds_profile_path(localhost_only: bool = True) -> str:
    """The Fast DDS profile (relative path) for host-only processes or for peers on other machines."""
    return FASTDDS_PROFILE if localhost_only else FASTDDS_NETWORK_PROFILE


def discovery_environment(distro: str, localhost_only: bool = True) -> dict[str, str]:
    """The variables that keep DDS discovery on this host (``localhost_only``) or open it to the subnet.

    The network variant sets the unrestricted values explicitly rather than leaving the variables out,
    so that a ``LOCALHOST`` / ``1`` exported in the shell does not keep the node on this host.
    """
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST" if localhost_only else "SUBNET"}
    if distro in LOCALHOST_ONLY_DISTROS:
        env["ROS_LOCALHOST_ONLY"] = "1" if localhost_only else "0"  # rcl treats anything but "1" as off
    return env


def localhost_environment(distro: str) -> dict[str, str]:
    """The variables that keep DDS discovery on this host on ROS distribution ``distro``."""
    return discovery_environment(distro, localhost_only=True)


def dds_environment(root: str, distro: str, localhost_only: bool = True) -> dict[str, str]:
    """Profile and discovery variables of one variant; ``root``: the package share or the source tree.

    ``localhost_only`` true: config/fastdds.xml + discovery on this host (everything stays on loopback);
    false: config/fastdds_network.xml + subnet discovery (camera or controller on another machine).
    """
    profile = os.path.join(root, fastdds_profile_path(localhost_only))
    return {**profile_environment(profile, distro), **discovery_environment(distro, localhost_only)}
