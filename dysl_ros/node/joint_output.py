"""What the arm's controllers receive: ``~/joint_trajectory`` for joint_trajectory_controller and
``~/commands`` for a forward command controller, planned within the joint limits (``motion.py``).

The stream process owns one ``JointOutput``. Each chunk's joint targets become a plan that starts at
a control period at least one period after now, from the state the current plan commands then (a
ramp from the measured pose when there is none: activation, after a stop); the plan is published at
once as a trajectory (its start state as the first point, then one point per period, positions and
velocities, accelerations where jerk limits are given, the last point at rest), and sampled each
period for ``~/commands``. Stops (stale input, e-stop, deactivate, shutdown, a dead node, a failing
model) replace the plan with one that brakes at the acceleration limit from the state commanded at
the next period. Every command passes ``check_command`` before it is written: a value that is not
finite or not within the limits is never published (the plan stops instead).

No rclpy import at module level: the messages are built by functions the stream passes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dysl_ros.action_queue import stamp_label
from dysl_ros.joint_limits import JointLimits
from dysl_ros.motion import MotionLimiter, MotionState, Plan, check_command

Array = npt.NDArray[np.float64]
STOP_LABELS = ("final", "stop", "estop")
"""Why a plan brakes: deactivate / shutdown, stale input or a failing model or a dead node, e-stop."""


@dataclass(frozen=True)
class JointConfig:
    """The stream's joint side, from the node's parameters and limits (picklable)."""

    joints: tuple[str, ...]
    limits: dict[str, Any]
    """``JointLimits.to_dict()``."""
    max_step: float
    commands_are_velocities: bool
    command_topic: str
    """Resolved ``~/commands``, or "" for none."""
    trajectory_topic: str
    """Resolved ``~/joint_trajectory``, or "" for none."""
    chunk_stamp: str
    """Trajectory header: ``now`` (its start time), ``image`` (the image stamp) or ``zero`` (the
    controller starts it on arrival; times from publication)."""
    max_age_ns: int
    max_tracking_error: float = 0.0
    """A chunk whose measured joints lie farther than this from what the plans commanded then starts
    over from the measured pose (the controller is not following: not connected yet, stopped by
    someone else); 0: never."""


@dataclass(frozen=True)
class Command:
    values: Array
    label: str


class JointOutput:
    def __init__(self, config: JointConfig, dt_ns: int) -> None:
        self.config = config
        self.limits = JointLimits.from_dict(config.limits)
        self.limiter = MotionLimiter(self.limits, dt_ns, config.max_step)
        self.dt_ns = dt_ns
        self.plans: list[tuple[Plan, str]] = []
        """Adopted plans with their chunk's image stamp label ("" for stops), oldest first: each one
        commands from its start time on, the one before it until then."""
        self.refused = 0
        """Commands or plans that failed ``check_command`` (never published)."""
        self.stops = 0
        self.rebased = 0
        """Chunks that started over from the measured pose (``max_tracking_error``)."""

    # ------------------------------------------------------------------ plans

    @property
    def plan(self) -> Plan | None:
        """The newest plan (it may start in the future)."""
        return self.plans[-1][0] if self.plans else None

    def active(self, t_ns: int) -> tuple[Plan, str] | None:
        """The plan that commands at ``t_ns`` and its label."""
        for plan, label in reversed(self.plans):
            if plan.start_ns <= t_ns:
                return plan, label
        return self.plans[0] if self.plans else None

    def reset(self) -> None:
        """Forget the plans: the next chunk ramps in from the measured pose (activate, enable)."""
        self.plans = []

    def state_at(self, t_ns: int) -> MotionState | None:
        current = self.active(t_ns)
        return None if current is None else current[0].state_at(t_ns)

    def start_state(self, t_ns: int, measured: Array | None) -> MotionState | None:
        state = self.state_at(t_ns)
        if state is not None:
            return state
        return None if measured is None else MotionState.at_rest(t_ns, measured)

    def _adopt(self, plan: Plan, label: str) -> None:
        # A plan that starts at or before another's start replaces it; the rest stay until superseded.
        earlier = [(p, lab) for p, lab in self.plans if p.start_ns < plan.start_ns][-2:]
        self.plans = [*earlier, (plan, label)]

    def plan_chunk(
        self, stamp_ns: int, targets: Array, measured: Array | None, start_ns: int, horizon: int, measured_ns: int = 0
    ) -> Plan | None:
        """Plan the chunk's targets from ``start_ns``, not yet adopted (``adopt``); None when the chunk
        is refused (non-finite) or nothing of it is left. Target k is where the joints are at
        ``stamp_ns + (k+1)*dt``: action k is commanded over period k (as ``~/action`` sends it) and
        reached at its end, the way a position-controlled arm records its demonstrations (and how
        deltas and velocities integrate: target k includes action k's whole period). Due at the
        period's start instead, the arm would run a period ahead of the gripper and of the state
        the model expects to see next."""
        self._check_tracking(measured_ns or stamp_ns, measured)
        start = self.start_state(start_ns, measured)
        if start is None:
            return None
        track_until = min(stamp_ns + horizon * self.dt_ns, stamp_ns + self.config.max_age_ns)
        if track_until <= start_ns:
            return None
        times = stamp_ns + self.dt_ns * (1 + np.arange(len(targets), dtype=np.int64))
        try:
            plan = self.limiter.plan(start, targets, times, track_until, measured)
        except ValueError:
            self.refused += 1
            return None
        return plan if self._plan_ok(plan) else None

    def _check_tracking(self, measured_ns: int, measured: Array | None) -> None:
        """Measured joints farther than max_tracking_error from what the plans commanded when they
        were measured: the controller is not following; the plans start over from the measured pose."""
        limit = self.config.max_tracking_error
        commanded = self.state_at(measured_ns)
        if limit <= 0 or measured is None or commanded is None:
            return
        if np.max(np.abs(commanded.p - np.asarray(measured))) > limit:
            self.rebased += 1
            self.reset()

    def plan_stop(self, start_ns: int, reason: str) -> Plan | None:
        """Brake from the state commanded at ``start_ns`` (not yet adopted); None with no plan to stop."""
        state = self.state_at(start_ns)
        return None if state is None else self.limiter.stop(state, reason)

    def adopt(self, plan: Plan, stamp_ns: int | None) -> None:
        """From its start time on, ``plan`` commands (the chunk's image stamp labels it; None: a stop)."""
        self._adopt(plan, "" if stamp_ns is None else stamp_label(stamp_ns))
        self.stops += int(plan.reason != "")

    def spliced(self, plan: Plan, sent_ns: int) -> Plan:
        """What the trajectory message sent at ``sent_ns`` carries: the states the controller already
        follows, on ``plan``'s period grid from the last period at least a control period before
        ``sent_ns``, up to ``plan``'s start, then ``plan``. A controller samples a trajectory whose
        first point has passed between its points only: the hand-off is exact whatever state
        joint_trajectory_controller would interpolate from (measured, the Humble/Jazzy default, or
        desired). A whole period back, so that a controller clock behind the node's (another
        machine's; a starved update) still finds the first point passed: on the measured rule a first
        point ahead is approached from the measured pose, a step by the arm's tracking lag.
        Nothing to follow yet: ``plan`` alone."""
        from_ns = plan.start_ns - math.ceil((plan.start_ns - (sent_ns - self.dt_ns)) / self.dt_ns) * self.dt_ns
        if not self.plans or from_ns >= plan.start_ns:
            return plan
        times = list(range(plan.start_ns - self.dt_ns, from_ns - 1, -self.dt_ns))[::-1]
        if not times:
            return plan
        states = [self.state_at(t) for t in times]
        if any(state is None for state in states):
            return plan
        p = np.array([s.p for s in states if s is not None])
        v = np.array([s.v for s in states if s is not None])
        velocities = np.vstack([v, plan.v])
        # a[j]: the acceleration over the period that ends at state j (the first: unknown, 0).
        accelerations = np.vstack([np.zeros((1, v.shape[1])), np.diff(velocities, axis=0) / (self.dt_ns / 1e9)])
        return Plan(
            times[0], plan.dt_ns, np.vstack([p, plan.p]), velocities, accelerations,
            plan.tracked + len(times), plan.reason,
        )

    def at_rest(self, t_ns: int) -> bool:
        plan = self.plan
        return plan is None or t_ns >= plan.end_ns

    def _plan_ok(self, plan: Plan) -> bool:
        for p, v in zip(plan.p, plan.v, strict=True):
            if check_command(p, self.limits) is not None or check_command(v, self.limits, velocities=True) is not None:
                self.refused += 1
                return False
        return True

    # ------------------------------------------------------------------ per period

    def command(self, t_ns: int) -> Command | None:
        """``~/commands`` for the period due at ``t_ns``: the plan's position (or velocity), labelled
        with the chunk's image stamp while it tracks, the stop's reason while it brakes, then ``hold``
        (positions) or ``zero`` (velocities) at rest. None before any plan, or if the guard refuses."""
        current = self.active(t_ns)
        if current is None:
            return None
        plan, plan_label = current
        state = plan.state_at(t_ns)
        velocities = self.config.commands_are_velocities
        values = state.v if velocities else state.p
        if check_command(values, self.limits, velocities=velocities) is not None:
            self.refused += 1
            return None
        tracking = plan.reason == "" and t_ns <= plan.start_ns + plan.tracked * plan.dt_ns
        if tracking and plan_label:
            label = plan_label
        elif t_ns < plan.end_ns:
            label = plan.reason or "stop"
        else:
            label = "zero" if velocities else "hold"
        return Command(values, label)


def trajectory_points(plan: Plan, with_accelerations: bool) -> list[tuple[int, Array, Array, Array | None]]:
    """(time ns, positions, velocities, accelerations) of each plan state, the last at rest.
    Accelerations (the mean of the periods on either side) only with jerk limits, where they change
    smoothly enough for joint_trajectory_controller's quintic spline."""
    points = []
    last = len(plan.p) - 1
    for j in range(len(plan.p)):
        acc = None
        if with_accelerations:
            acc = np.zeros_like(plan.a[j]) if j == last else 0.5 * (plan.a[j] + plan.a[j + 1])
        velocity = np.zeros_like(plan.v[j]) if j == last else plan.v[j]
        points.append((plan.start_ns + j * plan.dt_ns, plan.p[j], velocity, acc))
    return points


def trajectory_message(
    plan: Plan, config: JointConfig, with_accelerations: bool, image_ns: int | None, now_ns: int
) -> Any:
    """``trajectory_msgs/JointTrajectory`` of a plan, for joint_trajectory_controller."""
    from builtin_interfaces.msg import Duration, Time
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    header = header_stamp(plan, config.chunk_stamp, image_ns)
    msg = JointTrajectory()
    msg.header.stamp = Time(sec=header // 1_000_000_000, nanosec=header % 1_000_000_000)
    msg.joint_names = list(config.joints)
    for t, p, v, a in trajectory_points(plan, with_accelerations):
        offset = t - (header if header else now_ns)  # header 0: times count from publication
        point = JointTrajectoryPoint(positions=p.tolist(), velocities=v.tolist())
        if a is not None:
            point.accelerations = a.tolist()
        point.time_from_start = Duration(sec=offset // 1_000_000_000, nanosec=offset % 1_000_000_000)
        msg.points.append(point)
    return msg


def header_stamp(plan: Plan, chunk_stamp: str, image_ns: int | None) -> int:
    """The trajectory's header stamp (ns; 0 = the controller starts it on arrival, its times then
    count from publication)."""
    if chunk_stamp == "zero":
        return 0
    if chunk_stamp == "image" and image_ns is not None:
        return image_ns
    return plan.start_ns


def next_period_ns(now_ns: int, grid_ns: int, dt_ns: int, lead_ns: int) -> int:
    """The first control period at least ``lead_ns`` after ``now_ns`` on the grid ``grid_ns + k*dt``."""
    k = math.ceil((now_ns + lead_ns - grid_ns) / dt_ns)
    return grid_ns + k * dt_ns
