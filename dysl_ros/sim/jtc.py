"""ros2_control's joint_trajectory_controller (JTC), as a numpy model for tests, and an arm that lags.

What a position-commanded JTC writes to its command interfaces, update by update, for the trajectories it is
sent: the rules of ros2_controllers' ``joint_trajectory_controller.cpp`` (``validate_trajectory_msg``,
``fill_partial_goal``, ``sort_to_local_joint_order``, ``update``, ``set_hold_position``) and ``trajectory.cpp``
(``Trajectory::sample``, ``interpolate_between_points``, ``deduce_from_derivatives``), on the Humble and Jazzy
branches. Times are integer nanoseconds, as ``rclcpp::Time``.

- **Before any trajectory**, on activation and after ``cmd_timeout``: hold the measured position.
- **A received trajectory** replaces the current one at the next update. On its first sample the point before
  it is set from the measured state (Humble ``open_loop_control: false``, Jazzy
  ``interpolate_from_desired_state: false``: the defaults) or from the last command (``true``). A header stamp of
  0 starts the trajectory at its first sample.
- **Sampling**: from the point before to the first point, then point to point; linear with positions only,
  cubic with velocities, quintic with accelerations (the degree used is the one both ends have); after the
  last point, the last point with zero velocity and acceleration where the message has none.
- **Humble** commands the sample at the update time. **Jazzy** commands the sample one update period ahead
  (``command_next_``), and its desired-state rule places the last command at the time of the update that
  wrote it (``last_commanded_time_``).

Modelled: a position command interface; position state, and velocity state unless ``has_velocity_state`` is
false; interpolation ``splines``; speed scaling 1. Not modelled: angle wraparound of continuous joints, path
and goal tolerances (all 0 by default: unchecked), the FollowJointTrajectory action, effort fields, Jazzy's
``decelerate_on_cancel``, PID adapters. Non-finite values are not rejected (JTC has no such check): they are
counted in ``TrajectoryFollower.nonfinite_received`` and flow into the command as they would on a robot.

``LaggedArm`` is the simulated arm: each joint tracks its position command with a first-order lag.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Distro = Literal["humble", "jazzy"]
StartState = Literal["measured", "desired"]

NS_PER_S = 1_000_000_000
FLOAT_EPSILON = float(np.finfo(np.float32).eps)
"""``std::numeric_limits<float>::epsilon()``: JTC's threshold for a non-zero end velocity and a zero time."""
NONZERO_END_VELOCITY_DEFAULT: dict[str, bool] = {"humble": True, "jazzy": False}
"""``allow_nonzero_velocity_at_trajectory_end``'s default per branch (Humble deprecates ``true``)."""


def clock_pair(ros_now_ns: Callable[[], int]) -> tuple[int, int]:
    """(ROS time, monotonic time) of one instant, for a simulation clock that maps the monotonic clock onto
    ROS time: read back to back, and again if preempted in between, or the controller's clock would run
    behind the node's by the preemption (ms on a loaded machine)."""
    for _ in range(10):
        before = time.monotonic_ns()
        ros = ros_now_ns()
        after = time.monotonic_ns()
        if after - before < 50_000:
            break
    return ros, (before + after) // 2


def _array(values: Sequence[float] | Array) -> Array:
    return np.array(values, dtype=np.float64).reshape(-1)


EMPTY: Array = np.zeros(0)


# --------------------------------------------------------------------------------------------------------------
# Trajectory data: trajectory_msgs/JointTrajectory, with times in integer nanoseconds.


@dataclass
class Point:
    """One ``JointTrajectoryPoint``; an empty field is one the message leaves out."""

    time_from_start_ns: int
    positions: Array = field(default_factory=lambda: EMPTY.copy())
    velocities: Array = field(default_factory=lambda: EMPTY.copy())
    accelerations: Array = field(default_factory=lambda: EMPTY.copy())
    effort: Array = field(default_factory=lambda: EMPTY.copy())
    """Only for validation: a position-commanded JTC rejects trajectories that carry efforts."""

    @classmethod
    def at(
        cls,
        seconds: float,
        positions: Sequence[float] | Array = (),
        velocities: Sequence[float] | Array = (),
        accelerations: Sequence[float] | Array = (),
    ) -> Point:
        return cls(round(seconds * NS_PER_S), _array(positions), _array(velocities), _array(accelerations))

    def copy(self) -> Point:
        return Point(
            self.time_from_start_ns,
            self.positions.copy(),
            self.velocities.copy(),
            self.accelerations.copy(),
            self.effort.copy(),
        )


@dataclass
class Trajectory:
    """One ``JointTrajectory``: ``stamp_ns`` is its header stamp (0: start when first sampled)."""

    joint_names: tuple[str, ...]
    points: list[Point]
    stamp_ns: int = 0

    def copy(self) -> Trajectory:
        return Trajectory(tuple(self.joint_names), [p.copy() for p in self.points], self.stamp_ns)


@dataclass(frozen=True)
class Setpoint:
    """What one update writes to the command interfaces (positions), with the sample's velocities and
    accelerations; ``handoff``: this update sampled a newly received trajectory for the first time."""

    positions: Array
    velocities: Array
    accelerations: Array
    handoff: bool = False


# --------------------------------------------------------------------------------------------------------------
# trajectory.cpp: one segment's spline, and Trajectory::sample.


@np.errstate(invalid="ignore", over="ignore")  # non-finite values flow through, as in JTC
def interpolate(t0_ns: int, a: Point, t1_ns: int, b: Point, t_ns: int) -> tuple[Array, Array, Array]:
    """``interpolate_between_points``: (positions, velocities, accelerations) at ``t_ns`` between ``a`` at
    ``t0_ns`` and ``b`` at ``t1_ns``. Linear when either end lacks velocities; cubic Hermite with velocities;
    quintic with velocities and accelerations. Outside [t0, t1] the time is clamped and the spline is linear.
    Upstream's branches leave accelerations-without-velocities unhandled: the output is then all zeros
    (positions included), as in JTC."""
    dim = a.positions.size
    positions, velocities, accelerations = np.zeros(dim), np.zeros(dim), np.zeros(dim)
    so_far = (t_ns - t0_ns) / NS_PER_S
    span = (t1_ns - t0_ns) / NS_PER_S
    has_velocity = a.velocities.size > 0 and b.velocities.size > 0
    has_acceleration = a.accelerations.size > 0 and b.accelerations.size > 0
    if so_far < 0.0:
        so_far, has_velocity, has_acceleration = 0.0, False, False
    if so_far > span:
        so_far, has_velocity, has_acceleration = span, False, False
    t = so_far
    p0, p1 = a.positions, b.positions
    if not has_velocity and not has_acceleration:
        slope = (p1 - p0) / span if span != 0.0 else np.zeros(dim)
        positions = p0 + t * slope
        velocities = slope.copy()
    elif has_velocity and not has_acceleration:
        v0, v1 = a.velocities, b.velocities
        c2 = (-3.0 * p0 + 3.0 * p1 - 2.0 * v0 * span - v1 * span) / span**2 if span != 0.0 else np.zeros(dim)
        c3 = (2.0 * p0 - 2.0 * p1 + v0 * span + v1 * span) / span**3 if span != 0.0 else np.zeros(dim)
        positions = p0 + v0 * t + c2 * t**2 + c3 * t**3
        velocities = v0 + 2.0 * c2 * t + 3.0 * c3 * t**2
        accelerations = 2.0 * c2 + 6.0 * c3 * t
    elif has_velocity and has_acceleration:
        v0, v1, a0, a1 = a.velocities, b.velocities, a.accelerations, b.accelerations
        c2 = 0.5 * a0
        if span != 0.0:
            c3 = (20.0 * (p1 - p0) - (3.0 * a0 - a1) * span**2 - (12.0 * v0 + 8.0 * v1) * span) / (2.0 * span**3)
            c4 = (30.0 * (p0 - p1) + (3.0 * a0 - 2.0 * a1) * span**2 + (16.0 * v0 + 14.0 * v1) * span) / (2.0 * span**4)
            c5 = (12.0 * (p1 - p0) - (a0 - a1) * span**2 - 6.0 * (v0 + v1) * span) / (2.0 * span**5)
        else:
            c3 = c4 = c5 = np.zeros(dim)
        positions = p0 + v0 * t + c2 * t**2 + c3 * t**3 + c4 * t**4 + c5 * t**5
        velocities = v0 + 2.0 * c2 * t + 3.0 * c3 * t**2 + 4.0 * c4 * t**3 + 5.0 * c5 * t**4
        accelerations = 2.0 * c2 + 6.0 * c3 * t + 12.0 * c4 * t**2 + 20.0 * c5 * t**3
    return positions, velocities, accelerations


def deduce_from_derivatives(first: Point, second: Point, dim: int, delta_t_s: float) -> None:
    """``deduce_from_derivatives``: when ``second`` has no positions, integrate them (in place) from
    ``first``, trapezoidally, from velocities, themselves from accelerations when ``second`` has none."""
    if second.positions.size > 0:
        return
    if first.velocities.size == 0:
        first.velocities = np.zeros(dim)
    if second.velocities.size == 0:
        if first.accelerations.size == 0:
            first.accelerations = np.zeros(dim)
        # A point with neither positions nor velocities has accelerations (validation guarantees one field).
        second.velocities = first.velocities + (first.accelerations + second.accelerations) * 0.5 * delta_t_s
    second.positions = first.positions + (first.velocities + second.velocities) * 0.5 * delta_t_s


@dataclass
class _Sampled:
    positions: Array
    velocities: Array
    accelerations: Array
    start_index: int
    """The segment's first point (0 before the first point; the last point once it has played out)."""
    end_index: int
    """The segment's end point; ``len(points)`` (upstream's ``end()``) once the last point has played out."""


class _ActiveTrajectory:
    """``joint_trajectory_controller::Trajectory``: one message being followed, with the point before it.
    Sampling mutates the points (``deduce_from_derivatives`` fills positions in), as upstream does."""

    def __init__(self, trajectory: Trajectory, received: bool) -> None:
        self.joint_names = trajectory.joint_names
        self.points = trajectory.points
        self.start_ns = trajectory.stamp_ns
        self.received = received  # False: a hold position the controller made itself
        self.sampled_already = False
        self.last_sample_index = 0
        self.time_before_ns = 0
        self.state_before = Point(0)

    def set_point_before(self, time_ns: int, state: Point) -> None:
        """``set_point_before_trajectory_msg``: a state without velocities (accelerations) gets zeros where
        the first point has them, so the first segment uses the same spline degree as the rest."""
        self.time_before_ns = time_ns
        self.state_before = state.copy()
        first = self.points[0]
        if state.velocities.size == 0 and first.velocities.size > 0:
            self.state_before.velocities = np.zeros(first.velocities.size)
        if state.accelerations.size == 0 and first.accelerations.size > 0:
            self.state_before.accelerations = np.zeros(first.accelerations.size)

    def sample(self, t_ns: int, advance: bool = True) -> _Sampled | None:
        """``Trajectory::sample`` at ``t_ns``; None where upstream returns false (before the point before).
        ``advance=False``: Jazzy's look-ahead sample, which leaves the segment search where it was."""
        if not self.sampled_already:
            if self.start_ns == 0:
                self.start_ns = t_ns
            self.sampled_already = True
        if t_ns < self.time_before_ns:
            return None
        dim = self.state_before.positions.size
        first = self.points[0]
        first_ns = self.start_ns + first.time_from_start_ns
        if t_ns < first_ns:
            deduce_from_derivatives(self.state_before, first, dim, (first_ns - self.time_before_ns) / NS_PER_S)
            p, v, a = interpolate(self.time_before_ns, self.state_before, first_ns, first, t_ns)
            return _Sampled(p, v, a, 0, 0)
        last = len(self.points) - 1
        for i in range(self.last_sample_index, last):
            t0 = self.start_ns + self.points[i].time_from_start_ns
            t1 = self.start_ns + self.points[i + 1].time_from_start_ns
            if t0 <= t_ns < t1:
                deduce_from_derivatives(self.points[i], self.points[i + 1], dim, (t1 - t0) / NS_PER_S)
                p, v, a = interpolate(t0, self.points[i], t1, self.points[i + 1], t_ns)
                if advance:
                    self.last_sample_index = i
                return _Sampled(p, v, a, i, i + 1)
        # The whole trajectory has played out: hold its last point.
        self.last_sample_index = last
        end = self.points[last]
        if end.positions.size == 0 and last > 0 and self.points[last - 1].positions.size > 0:
            # Jazzy (#2282), applied on both branches (Humble would index an empty vector): a last segment
            # skipped between two updates still gets its positions deduced.
            before = self.points[last - 1]
            delta_s = (end.time_from_start_ns - before.time_from_start_ns) / NS_PER_S
            deduce_from_derivatives(before, end, dim, delta_s)
        if end.positions.size == 0:
            return None
        zeros = np.zeros(end.positions.size)
        velocities = end.velocities.copy() if end.velocities.size else zeros.copy()
        accelerations = end.accelerations.copy() if end.accelerations.size else zeros.copy()
        return _Sampled(end.positions.copy(), velocities, accelerations, last, last + 1)


# --------------------------------------------------------------------------------------------------------------
# joint_trajectory_controller.cpp: validation, partial goals, joint order, update.


class TrajectoryFollower:
    """A position-commanded joint_trajectory_controller over ``joints`` (its ``joints`` parameter, in order).

    ``receive`` is the trajectory topic's callback, ``update`` the controller manager's update at
    ``update_rate_hz``: call it with strictly increasing times, once per period. ``start_state`` is where a new
    trajectory starts from: ``measured`` (the default of both branches) or ``desired`` (Humble
    ``open_loop_control: true``, Jazzy ``interpolate_from_desired_state: true``). The first ``update`` activates
    the controller (``on_activate``: hold the measured position); trajectories received before it are dropped.
    """

    def __init__(
        self,
        joints: Sequence[str],
        distro: Distro = "humble",
        start_state: StartState = "measured",
        update_rate_hz: float = 500.0,
        allow_partial_joints_goal: bool = False,
        allow_nonzero_velocity_at_trajectory_end: bool | None = None,
        cmd_timeout: float = 0.0,
        has_velocity_state: bool = True,
        allow_integration_in_goal_trajectories: bool = False,
    ) -> None:
        if distro not in ("humble", "jazzy"):
            raise ValueError(f"distro must be 'humble' or 'jazzy', got {distro!r}")
        if start_state not in ("measured", "desired"):
            raise ValueError(f"start_state must be 'measured' or 'desired', got {start_state!r}")
        if not joints or len(set(joints)) != len(joints):
            raise ValueError(f"joints must be distinct and at least one, got {list(joints)}")
        if not update_rate_hz > 0.0:
            raise ValueError(f"update_rate_hz must be positive, got {update_rate_hz}")
        self.joints = tuple(joints)
        self.dof = len(self.joints)
        self.distro: Distro = distro
        self.start_state: StartState = start_state
        # Jazzy: Duration(0, uint32(1e9 / update_rate)), truncated to whole nanoseconds.
        self.update_period_ns = int(1e9 / update_rate_hz)
        self.allow_partial_joints_goal = allow_partial_joints_goal
        self.allow_nonzero_velocity_at_trajectory_end = (
            NONZERO_END_VELOCITY_DEFAULT[distro]
            if allow_nonzero_velocity_at_trajectory_end is None
            else allow_nonzero_velocity_at_trajectory_end
        )
        # on_activate: a timeout not above constraints.goal_time (0 here) is switched off.
        self.cmd_timeout = cmd_timeout if cmd_timeout > 0.0 else 0.0
        self.has_velocity_state = has_velocity_state
        self.allow_integration_in_goal_trajectories = allow_integration_in_goal_trajectories

        self.active = False
        self.accepted = 0
        self.rejections: list[str] = []
        self.nonfinite_received = 0
        """Non-finite values (positions, velocities, accelerations) in received trajectories, accepted or not."""
        self.timeouts = 0
        self._pending: _ActiveTrajectory | None = None  # the realtime buffer: the newest message not yet taken
        self._current: _ActiveTrajectory | None = None
        self._holding = False  # rt_is_holding_
        self._measured = Point(0)  # state_current_
        self._last_command = Point(0)  # last_commanded_state_
        self._last_command_time_ns = 0  # Jazzy's last_commanded_time_
        self._traj_time_ns = 0  # Jazzy's traj_time_
        self._last_update_ns: int | None = None
        self._command = Setpoint(np.full(self.dof, math.nan), np.zeros(self.dof), np.zeros(self.dof))

    # -- the topic callback ------------------------------------------------------------------------------------

    def receive(self, trajectory: Trajectory, now_ns: int) -> str | None:
        """``topic_callback``: validate ``trajectory`` at ROS time ``now_ns``; None when accepted (it replaces
        the current trajectory at the next update), else the reason it was rejected."""
        self.nonfinite_received += sum(
            int(np.count_nonzero(~np.isfinite(field)))
            for point in trajectory.points
            for field in (point.positions, point.velocities, point.accelerations)
        )
        reason = self.validate(trajectory, now_ns)
        if reason is None and not self.active:
            reason = "controller not active yet: trajectory dropped"
        if reason is not None:
            self.rejections.append(reason)
            return reason
        self._pending = _ActiveTrajectory(trajectory.copy(), received=True)
        self._holding = False
        self.accepted += 1
        return None

    def validate(self, trajectory: Trajectory, now_ns: int) -> str | None:
        """``validate_trajectory_msg``: the first failed check's reason, in the branch's order, or None."""
        checks = (
            (self._check_partial, self._check_names, self._check_points, self._check_end_time,
             self._check_joints, self._check_end_velocity, self._check_times_and_fields)
            if self.distro == "humble"
            else (self._check_partial, self._check_names, self._check_points, self._check_joints,
                  self._check_end_velocity, self._check_end_time, self._check_times_and_fields)
        )  # fmt: skip
        for check in checks:
            reason = check(trajectory, now_ns)
            if reason is not None:
                return reason
        return None

    def _check_partial(self, trajectory: Trajectory, now_ns: int) -> str | None:
        if not self.allow_partial_joints_goal and len(trajectory.joint_names) != self.dof:
            return "Joints on incoming trajectory don't match the controller joints."
        return None

    def _check_names(self, trajectory: Trajectory, now_ns: int) -> str | None:
        return "Empty joint names on incoming trajectory." if not trajectory.joint_names else None

    def _check_points(self, trajectory: Trajectory, now_ns: int) -> str | None:
        return "Empty trajectory received." if not trajectory.points else None

    def _check_end_time(self, trajectory: Trajectory, now_ns: int) -> str | None:
        if trajectory.stamp_ns != 0:
            end_ns = trajectory.stamp_ns + trajectory.points[-1].time_from_start_ns
            if end_ns < now_ns:
                return (
                    f"Received trajectory with non-zero start time ({trajectory.stamp_ns / NS_PER_S:f}) that ends "
                    f"in the past ({end_ns / NS_PER_S:f})"
                )
        return None

    def _check_joints(self, trajectory: Trajectory, now_ns: int) -> str | None:
        for name in trajectory.joint_names:
            if name not in self.joints:
                return f"Incoming joint {name} doesn't match the controller's joints."
        return None

    def _check_end_velocity(self, trajectory: Trajectory, now_ns: int) -> str | None:
        if self.allow_nonzero_velocity_at_trajectory_end:
            return None
        for i, v in enumerate(trajectory.points[-1].velocities):
            if abs(v) > FLOAT_EPSILON:  # NaN passes, as upstream's fabs(NaN) > eps is false
                name = trajectory.joint_names[i] if i < len(trajectory.joint_names) else f"#{i}"
                return f"Velocity of last trajectory point of joint {name} is not zero: {v:.15f}"
        return None

    def _check_times_and_fields(self, trajectory: Trajectory, now_ns: int) -> str | None:
        count = len(trajectory.joint_names)
        previous_ns = 0
        for i, point in enumerate(trajectory.points):
            if i > 0 and point.time_from_start_ns <= previous_ns:
                return (
                    f"Time between points {i - 1} and {i} is not strictly increasing, it is "
                    f"{previous_ns / NS_PER_S:f} and {point.time_from_start_ns / NS_PER_S:f} respectively"
                )
            previous_ns = point.time_from_start_ns
            fields = {
                "positions": point.positions,
                "velocities": point.velocities,
                "accelerations": point.accelerations,
            }
            if self.allow_integration_in_goal_trajectories:
                if all(values.size == 0 for values in fields.values()):
                    return "The given trajectory has no position, velocity, or acceleration points."
                may_be_empty = set(fields)
            else:
                may_be_empty = {"velocities", "accelerations"}
            for name, values in fields.items():
                if name in may_be_empty and values.size == 0:
                    continue
                if values.size != count:
                    return f"Mismatch between joint_names size ({count}) and {name} ({values.size}) at point #{i}."
            if point.effort.size:
                return (
                    "Trajectories with effort fields are currently not supported."
                    if self.distro == "humble"
                    else "Trajectories with effort fields are only supported for controllers using the 'effort' "
                    "command interface."
                )
        return None

    # -- the controller manager's update -----------------------------------------------------------------------

    def activate(self, positions: Sequence[float] | Array, velocities: Sequence[float] | Array = ()) -> None:
        """``on_activate``: read the state, start by holding the measured position."""
        self._read_state(positions, velocities)
        self._last_command = self._measured.copy()
        self._last_command_time_ns = 0
        self._pending = self._hold_position()
        self._current = None
        self._last_update_ns = None
        self.active = True

    def update(
        self, now_ns: int, positions: Sequence[float] | Array, velocities: Sequence[float] | Array = ()
    ) -> Setpoint:
        """One ``update`` at ROS time ``now_ns`` with the measured ``positions`` and ``velocities`` (controller
        joint order): the command written, unchanged from the last one when nothing valid was sampled."""
        if not self.active:
            self.activate(positions, velocities)
        period_ns = 0 if self._last_update_ns is None else now_ns - self._last_update_ns
        self._last_update_ns = now_ns

        # A new message from the topic replaces the current trajectory: joints filled in and sorted first.
        if self._pending is not None and self._pending is not self._current:
            self._current = self._pending
            self._fill_partial_goal(self._current)
            self._sort_to_local_joint_order(self._current)
        self._read_state(positions, velocities)
        current = self._current
        if current is None:
            return self._command

        first_sample = not current.sampled_already
        if first_sample:
            if self.start_state == "measured":
                current.set_point_before(now_ns, self._measured)
            elif self.distro == "humble":
                current.set_point_before(now_ns, self._last_command)
            else:
                if abs(self._last_command_time_ns / NS_PER_S) < FLOAT_EPSILON:
                    self._last_command_time_ns = now_ns
                current.set_point_before(self._last_command_time_ns, self._last_command)
            self._traj_time_ns = now_ns
        else:
            self._traj_time_ns += period_ns  # Jazzy: speed scaling 1; Humble samples at now_ns itself

        if self.distro == "humble":
            sampled = current.sample(now_ns)
            check_time_ns = now_ns
        else:
            current.sample(self._traj_time_ns)  # state_desired_: advances the segment search
            sampled = current.sample(self._traj_time_ns + self.update_period_ns, advance=False)
            check_time_ns = self._traj_time_ns

        if sampled is not None:
            before_last_point = sampled.end_index != len(current.points)
            segment_ns = current.start_ns + current.points[sampled.start_index].time_from_start_ns
            if (
                not before_last_point
                and not self._holding
                and self.cmd_timeout > 0.0
                and (check_time_ns - segment_ns) / NS_PER_S > self.cmd_timeout
            ):
                self._pending = self._hold_position()  # taken at the next update
                self.timeouts += 1
            self._command = Setpoint(sampled.positions, sampled.velocities, sampled.accelerations)
            self._last_command = Point(0, sampled.positions, sampled.velocities, sampled.accelerations)
            self._last_command_time_ns = now_ns
        command = self._command
        return Setpoint(command.positions, command.velocities, command.accelerations, first_sample and current.received)

    # -- helpers of update -------------------------------------------------------------------------------------

    def _read_state(self, positions: Sequence[float] | Array, velocities: Sequence[float] | Array) -> None:
        """``read_state_from_state_interfaces``: velocities only where there is a velocity state interface."""
        measured_p = _array(positions)
        if measured_p.size != self.dof:
            raise ValueError(f"expected {self.dof} measured positions, got {measured_p.size}")
        measured_v = _array(velocities) if self.has_velocity_state else EMPTY.copy()
        if self.has_velocity_state and measured_v.size != self.dof:
            raise ValueError(f"expected {self.dof} measured velocities (has_velocity_state), got {measured_v.size}")
        self._measured = Point(0, measured_p, measured_v)

    def _hold_position(self) -> _ActiveTrajectory:
        """``set_hold_position``: one point at the measured position, no velocities, starting at once."""
        self._holding = True
        hold = Trajectory(self.joints, [Point(0, self._measured.positions.copy())], stamp_ns=0)
        return _ActiveTrajectory(hold, received=False)

    def _fill_partial_goal(self, active: _ActiveTrajectory) -> None:
        """``fill_partial_goal``: a joint the message leaves out holds its last position command (the measured
        position while there is none), with zero velocity and acceleration."""
        names = list(active.joint_names)
        if len(names) == self.dof:
            return
        for index, joint in enumerate(self.joints):
            if joint in names:
                continue
            names.append(joint)
            held = self._command.positions[index]
            if not math.isfinite(held):
                held = self._measured.positions[index]
            for point in active.points:
                if point.positions.size:
                    point.positions = np.append(point.positions, held)
                if point.velocities.size:
                    point.velocities = np.append(point.velocities, 0.0)
                if point.accelerations.size:
                    point.accelerations = np.append(point.accelerations, 0.0)
        active.joint_names = tuple(names)

    def _sort_to_local_joint_order(self, active: _ActiveTrajectory) -> None:
        """``sort_to_local_joint_order``: every field into the controller's joint order."""
        mapping = [self.joints.index(name) for name in active.joint_names]
        for point in active.points:
            for attr in ("positions", "velocities", "accelerations"):
                values = getattr(point, attr)
                if values.size != len(mapping):
                    continue  # upstream leaves an empty (or, after a warning, a mis-sized) field as it is
                ordered = np.empty_like(values)
                ordered[mapping] = values
                setattr(point, attr, ordered)
        active.joint_names = self.joints

    @property
    def command(self) -> Setpoint:
        """The command interfaces' current value."""
        return self._command

    @property
    def holding(self) -> bool:
        """Holding a position the controller set itself (activation, ``cmd_timeout``), not following a message."""
        return self._current is not None and not self._current.received


# --------------------------------------------------------------------------------------------------------------
# The arm.


class LaggedArm:
    """``n`` joints, each tracking its position command with a first-order lag: q̇ = (setpoint − q) / τ.

    ``step`` integrates one command held for ``dt_s`` exactly (q ← p + (q − p)·e^(−dt/τ)), so the response does
    not depend on the step size; the velocity reported is q̇ at the end of the step. A non-finite command is not
    followed (that joint stays where it is, at rest) and is counted in ``nonfinite_commands``.
    """

    def __init__(self, n: int, tau_s: float, q0: Sequence[float] | Array | None = None) -> None:
        if not tau_s > 0.0:
            raise ValueError(f"tau_s must be positive, got {tau_s}")
        self.tau_s = tau_s
        self.positions = np.zeros(n) if q0 is None else _array(q0).copy()
        if self.positions.size != n:
            raise ValueError(f"q0 has {self.positions.size} values for {n} joints")
        self.velocities = np.zeros(n)
        self.nonfinite_commands = 0

    def step(self, setpoint_positions: Sequence[float] | Array, dt_s: float) -> None:
        target = _array(setpoint_positions)
        finite = np.isfinite(target)
        self.nonfinite_commands += int(finite.size - np.count_nonzero(finite))
        target = np.where(finite, target, self.positions)
        self.positions = target + (self.positions - target) * math.exp(-dt_s / self.tau_s)
        self.velocities = (target - self.positions) / self.tau_s
