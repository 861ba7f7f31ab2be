"""How the processes are wired: topic names and the environment every ROS process of the project sets.

Used by both launch files, ``make demo`` (``dysl_ros.tools.demo``), ``sim_bridge`` and the tests, so
that a topic renamed here is renamed everywhere. No ROS imports: launch files import this too.
"""

from __future__ import annotations

PACKAGE = "dysl_ros"

NODE_TOPICS = ("image", "instruction", "joint_states", "action_chunk", "action")
"""dysl_node's remappable topics (relative ``~/<name>``); sim_bridge has the same five."""
DEFAULT_TOPICS: dict[str, str] = {
    "image": "/camera/image_raw",
    "instruction": "/instruction",
    "joint_states": "/joint_states",
    "action_chunk": "/dysl/action_chunk",
    "action": "/dysl/action",
}
"""The absolute names the launch files and the demo map them to."""
TICK_TOPIC = "~/dysl_tick"
DIAGNOSTICS_TOPIC = "/diagnostics"
EPISODE_RESULT_TOPIC = "~/episode_result"

FASTDDS_PROFILE = "config/fastdds.xml"
"""The Fast DDS profile, relative to the package share (or the source tree): shared memory with a
segment large enough for camera frames, UDP on 127.0.0.1 only."""
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


def localhost_environment(distro: str) -> dict[str, str]:
    """The variables that keep DDS discovery on this host on ROS distribution ``distro``."""
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    if distro in LOCALHOST_ONLY_DISTROS:
        env["ROS_LOCALHOST_ONLY"] = "1"
    return env
