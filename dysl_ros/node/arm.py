"""The node's side of the arm: the command joints' limits (robot description and ``joint_limits.*``),
the plans its stream process reports, and the node's own stop when that process is gone.

Normally the stream process plans and publishes everything a controller hears (joint_output.py).
This keeps a copy of the plans it follows (``Adopted``) so that, if the stream dies, the node can
brake the joints exactly as the stream would have: from the commanded state on its period grid, a
trajectory that continues the last one, and the ramp on ``~/commands`` at the control rate.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from dysl_ros import joint_limits
from dysl_ros.core.config import ConfigError
from dysl_ros.joint_wiring import JointWiring
from dysl_ros.motion import MotionLimiter, Plan
from dysl_ros.node.joint_output import JointConfig, JointOutput, trajectory_message
from dysl_ros.node.params import NodeParams
from dysl_ros.node.robot import declare_joint_limit_parameters, robot_description

PLAN_LEAD_NS = 5_000_000
"""As the stream: a stop starts on the first period a control period plus this from now."""


def read_limits(node: Node, params: NodeParams, wiring: JointWiring) -> joint_limits.JointLimits:
    """The command joints' limits: the URDF (the parameter, else the /robot_description topic unless
    the ``joint_limits.*`` parameters give every limit) under those parameters."""
    given = declare_joint_limit_parameters(node, wiring.joints)
    urdf = params.robot_description
    if not urdf.strip():
        try:
            return joint_limits.resolve(wiring.joints, "", given)
        except ConfigError:
            urdf = robot_description(node, node.resolve_topic_name("robot_description"), params.startup_timeout_s)
    return joint_limits.resolve(wiring.joints, urdf, given)


@contextlib.contextmanager
def published_or_logged(node: Node) -> Iterator[None]:
    """A publish during shutdown may find the context gone: logged, never raised (the caller is a
    stop path that must go on)."""
    try:
        yield
    except Exception as exc:
        node.get_logger().warning(f"could not publish while stopping: {exc!r}")


class ArmShadow:
    """The plans the stream follows, as it reports them, and the node's stop without it."""

    def __init__(self, config: JointConfig, limits: joint_limits.JointLimits, dt_ns: int) -> None:
        self.config, self.limits, self.dt_ns = config, limits, dt_ns
        self.plans = JointOutput(config, dt_ns)
        self._braking: threading.Thread | None = None

    def adopted(self, plan: Plan) -> None:
        self.plans.adopt(plan, None)

    def stop_duration_s(self, now_ns: int) -> float:
        """How long the stream's stop from now takes at most (deactivate waits that long)."""
        state = self.plans.state_at(now_ns)
        return 0.0 if state is None else MotionLimiter(self.limits, self.dt_ns).stop_duration_s(state.v)

    def brake(
        self, node: Node, reason: str, now_ns: Callable[[], int], trajectory_pub: Any, command_pub: Any
    ) -> bool:
        """Brake the joints with the node's own publishers; False when there is nothing to brake."""
        plan, dt, config = self.plans.plan, self.dt_ns, self.config
        if plan is None or self._braking is not None:
            return False
        now, grid = now_ns(), plan.start_ns
        stop = self.plans.plan_stop(grid + -(-(now + dt + PLAN_LEAD_NS - grid) // dt) * dt, reason)
        if stop is None:
            return False
        self.plans.adopt(stop, None)
        if trajectory_pub is not None:
            sent = self.plans.spliced(stop, now)
            with published_or_logged(node):
                trajectory_pub.publish(trajectory_message(sent, config, self.limits.has_jerk, None, now))

        def ramp() -> None:
            msg = Float64MultiArray()
            msg.layout.dim = [MultiArrayDimension(label=reason, size=len(config.joints), stride=len(config.joints))]
            t = grid + -(-(now_ns() - grid) // dt) * dt
            while t <= stop.end_ns + dt:
                delay = (t - now_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                command = self.plans.command(t)
                if command is not None:
                    msg.data = command.values.tolist()
                    with published_or_logged(node):
                        command_pub.publish(msg)
                t += dt

        if command_pub is not None:
            self._braking = threading.Thread(target=ramp, name="dysl_fallback_brake", daemon=True)
            self._braking.start()
        return True

    def join(self) -> None:
        if self._braking is not None:
            self._braking.join()
            self._braking = None
