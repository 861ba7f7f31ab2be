"""The QoS profiles of the public topics (best-effort sensors, latched instruction, reliable
commands), shared by dysl_node and sim_bridge so both ends of every topic agree."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
"""Camera and joint states: the newest sample matters, a lost one is replaced by the next."""


def latched(depth: int = 1) -> QoSProfile:
    """Reliable and transient local: a late-joining subscriber still gets the last ``depth`` messages."""
    return QoSProfile(
        depth=depth,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def reliable(depth: int = 1) -> QoSProfile:
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


LATCHED_QOS = latched()
"""The instruction: a late-joining node still gets the current one."""

RELIABLE_QOS = reliable()
"""Action chunks and the action stream."""
