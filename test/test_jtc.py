"""The test-side joint_trajectory_controller (dysl_ros/sim/jtc.py) against values worked by hand from
ros2_control's rules, the lagged arm, the motion figures, and ``jtc_arm`` as a ROS 2 process over DDS."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from ros_harness import PYTHON, RELIABLE_QOS, SENSOR_QOS, ros_process, ros_session
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dysl_ros.sim.jtc import NS_PER_S, LaggedArm, Point, Trajectory, TrajectoryFollower
from dysl_ros.sim.motion_metrics import JointLimits, motion_report, report_from_log
from dysl_ros.sim.rosenv import stop_process

T = 2_000_000
"""The update period at 500 Hz, ns."""
T0 = 1_000 * NS_PER_S
"""A ROS time to start at (1000 s), ns."""


def ns(seconds: float) -> int:
    return round(seconds * NS_PER_S)


def started(follower: TrajectoryFollower, trajectory: Trajectory, measured: float | list[float] = 0.0) -> int:
    """Activate at T0, receive ``trajectory`` half a period later, and run the update at T0 + T that first
    samples it (its start when stamped 0). Returns that update's time."""
    q = [measured] * follower.dof if isinstance(measured, float) else measured
    follower.update(T0, q, [0.0] * follower.dof)
    assert follower.receive(trajectory, T0 + T // 2) is None
    assert follower.update(T0 + T, q, [0.0] * follower.dof).handoff
    return T0 + T


def sample(follower: TrajectoryFollower, t_ns: int, measured: float = 0.0) -> tuple[float, float, float]:
    sp = follower.update(t_ns, [measured] * follower.dof, [0.0] * follower.dof)
    return float(sp.positions[0]), float(sp.velocities[0]), float(sp.accelerations[0])


# --- segments -------------------------------------------------------------------------------------------------


def test_positions_only_interpolate_linearly_from_the_measured_state() -> None:
    follower = TrajectoryFollower(["j"])
    start = started(follower, Trajectory(("j",), [Point.at(0.1, [1.0]), Point.at(0.3, [2.0])]), measured=0.0)
    # Before the first point: from the measured 0 at the start to 1 at 0.1 s.
    assert sample(follower, start + ns(0.05)) == pytest.approx((0.5, 10.0, 0.0))
    # Between the points: 1 → 2 over 0.2 s.
    assert sample(follower, start + ns(0.2)) == pytest.approx((1.5, 5.0, 0.0))


def test_positions_and_velocities_give_a_cubic_hermite_segment() -> None:
    follower = TrajectoryFollower(["j"])
    trajectory = Trajectory(("j",), [Point.at(0.0, [0.0], [1.0]), Point.at(1.0, [1.0], [0.0])])
    start = started(follower, trajectory)
    # p(t) = t + t² − t³ has p(0) = 0, p'(0) = 1, p(1) = 1, p'(1) = 0.
    assert sample(follower, start + ns(0.5)) == pytest.approx((0.625, 1.25, -1.0))
    assert sample(follower, start + ns(0.75)) == pytest.approx((0.75 + 0.5625 - 0.421875, 1.0 + 1.5 - 1.6875, -2.5))


def test_accelerations_give_a_quintic_segment() -> None:
    follower = TrajectoryFollower(["j"])
    trajectory = Trajectory(("j",), [Point.at(0.0, [0.0], [0.0], [0.0]), Point.at(1.0, [1.0], [0.0], [0.0])])
    start = started(follower, trajectory)
    # Rest to rest: p(t) = 10t³ − 15t⁴ + 6t⁵.
    assert sample(follower, start + ns(0.25)) == pytest.approx((0.103515625, 1.0546875, 5.625))
    assert sample(follower, start + ns(0.5)) == pytest.approx((0.5, 1.875, 0.0))
    # From an acceleration of 2: p(t) = t² + 7t³ − 12t⁴ + 5t⁵ (p''(0) = 2, and p(1) = 1, p'(1) = p''(1) = 0).
    follower = TrajectoryFollower(["j"])
    trajectory = Trajectory(("j",), [Point.at(0.0, [0.0], [0.0], [2.0]), Point.at(1.0, [1.0], [0.0], [0.0])])
    start = started(follower, trajectory)
    assert sample(follower, start + ns(0.5)) == pytest.approx((0.53125, 1.8125, -0.5))


def test_after_the_last_point_the_last_point_is_held() -> None:
    # Humble allows a non-zero end velocity: it is reported as given, the position stays; accelerations
    # the message leaves out are zeros.
    follower = TrajectoryFollower(["j"], distro="humble")
    start = started(follower, Trajectory(("j",), [Point.at(0.1, [1.0], [0.3])]))
    for later in (0.1, 0.2, 5.0):
        assert sample(follower, start + ns(later)) == pytest.approx((1.0, 0.3, 0.0))
    follower = TrajectoryFollower(["j"])
    start = started(follower, Trajectory(("j",), [Point.at(0.1, [1.0])]))
    assert sample(follower, start + ns(1.0)) == (1.0, 0.0, 0.0)


def test_velocities_only_are_integrated_by_deduce_from_derivatives() -> None:
    follower = TrajectoryFollower(["j"], allow_integration_in_goal_trajectories=True)
    trajectory = Trajectory(("j",), [Point.at(0.1, velocities=[1.0]), Point.at(0.2, velocities=[1.0])])
    start = started(follower, trajectory)
    # First point: 0 + (0 + 1) / 2 · 0.1 = 0.05, reached along the cubic from rest p = 5t².
    assert sample(follower, start + ns(0.05)) == pytest.approx((0.0125, 0.5, 10.0))
    assert sample(follower, start + ns(0.1)) == pytest.approx((0.05, 1.0, 0.0))
    # Second: 0.05 + (1 + 1) / 2 · 0.1 = 0.15; between them the cubic is a straight line at 1.
    assert sample(follower, start + ns(0.15)) == pytest.approx((0.1, 1.0, 0.0))
    assert sample(follower, start + ns(0.5))[0] == pytest.approx(0.15)


def test_accelerations_without_velocities_command_zeros_as_upstream_does() -> None:
    # interpolate_between_points has no branch for accelerations without velocities: its output stays zero,
    # positions included. A trajectory with positions and accelerations only drives the arm to 0.
    follower = TrajectoryFollower(["j"])
    start = started(follower, Trajectory(("j",), [Point.at(0.5, [0.4], accelerations=[0.0])]), measured=0.3)
    assert sample(follower, start + ns(0.1), measured=0.3) == (0.0, 0.0, 0.0)


def test_a_state_without_velocities_gets_zeros_when_the_first_point_has_them() -> None:
    # set_point_before_trajectory_msg: the first segment is then cubic from rest, not linear.
    follower = TrajectoryFollower(["j"], has_velocity_state=False)
    follower.update(T0, [0.0])
    assert follower.receive(Trajectory(("j",), [Point.at(1.0, [1.0], [0.0])]), T0) is None
    follower.update(T0 + T, [0.0])
    sp = follower.update(T0 + T + ns(0.5), [0.0])
    assert (sp.positions[0], sp.velocities[0]) == pytest.approx((0.5, 1.5))


# --- where a new trajectory starts ------------------------------------------------------------------------------


def handed_over(distro: str, start_state: str) -> tuple[TrajectoryFollower, int]:
    """The controller has commanded 0.5 (a finished trajectory) while the arm lags at 0.4; a new trajectory
    to 1.5 in 0.1 s (positions only) arrives. Returns the follower and the update time that first samples it."""
    follower = TrajectoryFollower(["j"], distro=distro, start_state=start_state)  # type: ignore[arg-type]
    follower.update(T0, [0.4], [0.0])
    assert follower.receive(Trajectory(("j",), [Point.at(0.01, [0.5])]), T0) is None
    t = T0
    for _ in range(20):
        t += T
        follower.update(t, [0.4], [0.0])
    assert follower.command.positions[0] == 0.5
    assert follower.receive(Trajectory(("j",), [Point.at(0.1, [1.5])]), t + T // 2) is None
    return follower, t + T


@pytest.mark.parametrize(
    ("distro", "start_state", "first", "later"),
    [
        # Humble samples at the update: the first command is the point before itself.
        ("humble", "measured", 0.4, 0.4 + 1.1 * 0.5),
        ("humble", "desired", 0.5, 0.5 + 1.0 * 0.5),
        # Jazzy commands the sample one period ahead (command_next_) ...
        ("jazzy", "measured", 0.4 + 1.1 * 0.002 / 0.1, 0.4 + 1.1 * 0.052 / 0.1),
        # ... and places the last command at the time of the update that wrote it, one period back.
        ("jazzy", "desired", 0.5 + 1.0 * 0.004 / 0.102, 0.5 + 1.0 * 0.054 / 0.102),
    ],
)
def test_the_point_before_a_new_trajectory(distro: str, start_state: str, first: float, later: float) -> None:
    follower, t = handed_over(distro, start_state)
    assert sample(follower, t, measured=0.4)[0] == pytest.approx(first)
    assert sample(follower, t + ns(0.05), measured=0.4)[0] == pytest.approx(later)


def test_jazzy_commands_what_humble_commands_one_period_later() -> None:
    trajectory = Trajectory(
        ("a", "b"),
        [Point.at(0.02, [0.1, -0.1], [0.5, 0.0]), Point.at(0.05, [0.2, 0.3], [0.0, 1.0]), Point.at(0.08, [0.0, 0.0])],
    )
    commands = {}
    for distro in ("humble", "jazzy"):
        follower = TrajectoryFollower(["a", "b"], distro=distro)  # type: ignore[arg-type]
        follower.update(T0, [0.0, 0.0], [0.0, 0.0])
        follower.receive(trajectory, T0)
        commands[distro] = np.array(
            [follower.update(T0 + k * T, [0.0, 0.0], [0.0, 0.0]).positions for k in range(1, 60)]
        )
    np.testing.assert_allclose(commands["jazzy"][:-1], commands["humble"][1:], atol=1e-12)
    assert np.ptp(commands["humble"][:, 0]) > 0.1  # it did move


def test_stamp_zero_starts_at_the_first_sample_and_a_stamp_starts_at_that_time() -> None:
    follower = TrajectoryFollower(["j"])
    follower.update(T0, [0.0], [0.0])
    assert follower.receive(Trajectory(("j",), [Point.at(0.1, [1.0])]), T0 + T // 2) is None
    # Not sampled until 10 periods later: the trajectory starts then, not at its arrival.
    late = T0 + 10 * T
    follower.update(late, [0.0], [0.0])
    assert sample(follower, late + ns(0.1) - T)[0] == pytest.approx(1.0 - T / ns(0.1))
    assert sample(follower, late + ns(0.1))[0] == 1.0

    follower = TrajectoryFollower(["j"])
    follower.update(T0, [0.0], [0.0])
    stamp = T0 + ns(0.2)  # in the future: the first point is at stamp + 0.1 s, reached linearly from T0 + T
    assert follower.receive(Trajectory(("j",), [Point.at(0.1, [1.0])], stamp_ns=stamp), T0) is None
    follower.update(T0 + T, [0.0], [0.0])
    span = stamp + ns(0.1) - (T0 + T)
    assert sample(follower, T0 + T + span // 2)[0] == pytest.approx(0.5)
    assert sample(follower, stamp + ns(0.1))[0] == 1.0


def test_only_the_newest_of_two_trajectories_between_updates_is_followed() -> None:
    follower = TrajectoryFollower(["j"])
    follower.update(T0, [0.0], [0.0])
    follower.receive(Trajectory(("j",), [Point.at(0.01, [1.0])]), T0)
    follower.receive(Trajectory(("j",), [Point.at(0.01, [-1.0])]), T0)
    handoffs = [follower.update(T0 + k * T, [0.0], [0.0]).handoff for k in range(1, 20)]
    assert handoffs.count(True) == 1
    assert follower.command.positions[0] == -1.0


def test_cmd_timeout_holds_the_measured_position() -> None:
    follower = TrajectoryFollower(["j"], cmd_timeout=0.05)
    start = started(follower, Trajectory(("j",), [Point.at(0.1, [1.0])]), measured=0.0)
    t = start
    commands = []
    while t < start + ns(0.2):
        t += T
        commands.append((t, sample(follower, t, measured=0.8)[0]))
    # The last point is due at start + 0.1 s; the first update more than 0.05 s past it holds the position
    # measured then (0.8), from the next update on.
    timeout_update = next(when for when, _ in commands if when - (start + ns(0.1)) > ns(0.05))
    assert all(p == 1.0 for when, p in commands if start + ns(0.1) <= when <= timeout_update)
    assert all(p == 0.8 for when, p in commands if when > timeout_update)
    assert follower.timeouts == 1 and follower.holding


# --- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trajectory", "reason"),
    [
        (Trajectory(("a",), [Point.at(0.1, [0.0])]), "don't match the controller joints"),
        (Trajectory(("a", "x"), [Point.at(0.1, [0.0, 0.0])]), "Incoming joint x"),
        (Trajectory(("a", "b"), []), "Empty trajectory"),
        (Trajectory(("a", "b"), [Point.at(0.2, [0, 0]), Point.at(0.2, [1, 1])]), "not strictly increasing"),
        (Trajectory(("a", "b"), [Point.at(0.1, [0, 0])], stamp_ns=T0 - ns(1.0)), "ends in the past"),
        (Trajectory(("a", "b"), [Point.at(0.1, [0.0])]), "positions (1) at point #0"),
        (Trajectory(("a", "b"), [Point.at(0.1, [0, 0], [0.0])]), "velocities (1) at point #0"),
        (Trajectory(("a", "b"), [Point.at(0.1, velocities=[0, 0])]), "positions (0) at point #0"),
        (Trajectory(("a", "b"), [Point(ns(0.1), np.zeros(2), effort=np.zeros(2))]), "effort"),
    ],
)
def test_rejected_trajectories_leave_the_command_alone(trajectory: Trajectory, reason: str) -> None:
    follower = TrajectoryFollower(["a", "b"])
    follower.update(T0, [0.3, 0.4], [0.0, 0.0])
    got = follower.receive(trajectory, T0)
    assert got is not None and reason in got
    assert follower.rejections == [got] and follower.accepted == 0
    sp = follower.update(T0 + T, [0.3, 0.4], [0.0, 0.0])
    assert sp.positions.tolist() == [0.3, 0.4] and not sp.handoff


def test_a_nonzero_end_velocity_is_rejected_by_jazzy_by_default_and_accepted_by_humble() -> None:
    trajectory = Trajectory(("j",), [Point.at(0.1, [1.0], [0.2])])
    for distro, accepted in (("humble", True), ("jazzy", False)):
        follower = TrajectoryFollower(["j"], distro=distro)  # type: ignore[arg-type]
        follower.update(T0, [0.0], [0.0])
        reason = follower.receive(trajectory, T0)
        assert (reason is None) == accepted, reason
    jazzy = TrajectoryFollower(["j"], distro="jazzy", allow_nonzero_velocity_at_trajectory_end=True)
    jazzy.update(T0, [0.0], [0.0])
    assert jazzy.receive(trajectory, T0) is None


def test_each_distro_reports_the_first_failed_check_in_its_own_order() -> None:
    # Humble checks the end time before the joint names; Jazzy checks the names (and end velocity) first.
    trajectory = Trajectory(("a", "x"), [Point.at(0.1, [0.0, 0.0])], stamp_ns=T0 - ns(1.0))
    reasons = {}
    for distro in ("humble", "jazzy"):
        follower = TrajectoryFollower(["a", "b"], distro=distro)  # type: ignore[arg-type]
        follower.update(T0, [0.0, 0.0], [0.0, 0.0])
        reasons[distro] = follower.receive(trajectory, T0)
    assert "ends in the past" in str(reasons["humble"]) and "Incoming joint x" in str(reasons["jazzy"])


def test_a_stamped_trajectory_ending_now_or_later_is_accepted() -> None:
    follower = TrajectoryFollower(["j"])
    follower.update(T0, [0.0], [0.0])
    assert follower.receive(Trajectory(("j",), [Point.at(0.1, [1.0])], stamp_ns=T0 - ns(0.1)), T0) is None


def test_a_partial_goal_is_filled_with_the_last_command_and_sorted() -> None:
    follower = TrajectoryFollower(["a", "b", "c"], allow_partial_joints_goal=True)
    lagging = [0.1, 0.15, 0.3]
    follower.update(T0, lagging, [0.0] * 3)
    assert follower.receive(Trajectory(("a", "b", "c"), [Point.at(0.01, [0.1, 0.2, 0.3])]), T0) is None
    for k in range(1, 10):
        follower.update(T0 + k * T, lagging, [0.0] * 3)
    trajectory = Trajectory(("c", "a"), [Point.at(0.1, [3.0, 1.0], [0.0, 0.0])])
    assert follower.receive(trajectory, T0 + 9 * T) is None
    follower.update(T0 + 10 * T, lagging, [0.0] * 3)
    sp = follower.update(T0 + 10 * T + ns(0.2), lagging, [0.0] * 3)
    assert sp.positions.tolist() == [1.0, 0.2, 3.0]  # b holds its command (0.2), not the measured 0.15


def test_non_finite_values_are_counted_and_not_rejected() -> None:
    follower = TrajectoryFollower(["a", "b"])
    follower.update(T0, [0.0, 0.0], [0.0, 0.0])
    trajectory = Trajectory(("a", "b"), [Point.at(0.1, [math.nan, 1.0], [0.0, math.inf])])
    assert follower.receive(trajectory, T0) is None  # JTC has no such check; the end velocity check passes NaN
    assert follower.nonfinite_received == 2
    follower.update(T0 + T, [0.0, 0.0], [0.0, 0.0])
    sp = follower.update(T0 + T + ns(0.05), [0.0, 0.0], [0.0, 0.0])
    assert math.isnan(sp.positions[0])


def test_trajectories_before_activation_are_dropped() -> None:
    follower = TrajectoryFollower(["j"])
    assert follower.receive(Trajectory(("j",), [Point.at(0.1, [1.0])]), T0) is not None
    assert follower.update(T0, [0.2], [0.0]).positions.tolist() == [0.2]  # holds the measured position


# --- the arm ----------------------------------------------------------------------------------------------------


def test_lagged_arm_follows_a_first_order_response_exactly() -> None:
    fine = LaggedArm(2, tau_s=0.05, q0=[0.0, 1.0])
    for _ in range(50):
        fine.step([1.0, 1.0], 0.002)
    coarse = LaggedArm(2, tau_s=0.05, q0=[0.0, 1.0])
    coarse.step([1.0, 1.0], 0.1)
    expected = 1.0 - math.exp(-0.1 / 0.05)
    np.testing.assert_allclose(fine.positions, [expected, 1.0], rtol=1e-12)
    np.testing.assert_allclose(coarse.positions, fine.positions, rtol=1e-12)
    np.testing.assert_allclose(fine.velocities, [(1.0 - expected) / 0.05, 0.0], rtol=1e-12)
    fine.step([math.nan, 2.0], 0.002)
    assert fine.positions[0] == pytest.approx(expected) and fine.nonfinite_commands == 1


# --- motion figures ----------------------------------------------------------------------------------------------


def test_motion_figures_of_a_known_step_and_acceleration() -> None:
    dt, n = 0.002, 200
    t = np.arange(n) * dt
    accel = 2.0
    p = np.stack([0.5 * accel * t**2, np.where(np.arange(n) >= 100, 0.1, 0.0)], axis=1)
    v = np.stack([accel * t, np.zeros(n)], axis=1)
    a = np.stack([np.full(n, accel), np.zeros(n)], axis=1)
    limits = JointLimits.make(2, lower=-1.0, upper=[1.0, 0.05], velocity=[10.0, 1.0], acceleration=[1.5, 100.0])
    report = motion_report(t, p, v, a, p - 0.01, ["smooth", "step"], handoff_indices=[0, 100], limits=limits)
    smooth, step = report.joints
    assert smooth.max_acceleration_fd == pytest.approx(accel) and smooth.max_acceleration == accel
    assert smooth.max_jerk_fd == pytest.approx(0.0, abs=1e-6) and smooth.max_jerk == 0.0
    assert smooth.acceleration_hits == n and smooth.velocity_hits == 0 and smooth.position_hits == 0
    assert step.max_step == pytest.approx(0.1) and step.max_velocity_fd == pytest.approx(0.1 / dt)
    assert step.max_acceleration_fd == pytest.approx(0.1 / dt**2)
    assert step.position_hits == 100 and step.velocity_hits == 1  # one difference crosses the step
    assert step.max_handoff_jump == pytest.approx(0.1) and step.handoff_bound == pytest.approx(1.0 * dt)
    assert step.handoffs_over_bound == 1 and smooth.handoffs_over_bound == 0
    assert smooth.tracking_error_max == pytest.approx(0.01) and step.tracking_error_rms == pytest.approx(0.01)
    assert report.handoffs == 1  # index 0 has no update before it
    assert "| smooth |" in report.markdown(["joint", "max_step"]) and report.worst("max_step") == step.max_step


# --- over DDS ---------------------------------------------------------------------------------------------------

JOINTS = [f"joint{i}" for i in range(1, 8)]
SLOPES = np.array([0.05 * (i + 1) for i in range(7)])
"""Trajectory A: joint i ramps at SLOPES[i] rad/s from 0."""
TARGET = 0.5
"""Trajectory B: every joint to 0.5 in 0.2 s."""


def trajectory_msg(names: list[str], points: list[tuple[float, list[float]]], stamp_ns: int = 0) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, NS_PER_S)
    msg.joint_names = names
    for t, positions in points:
        point = JointTrajectoryPoint()
        point.positions = [float(p) for p in positions]
        sec, nanosec = divmod(ns(t), NS_PER_S)
        point.time_from_start = Duration(sec=sec, nanosec=nanosec)
        msg.points.append(point)
    return msg


@pytest.mark.ros
def test_jtc_arm_follows_two_overlapping_trajectories_over_dds(tmp_path: Path, domain_id: int) -> None:
    log_path = tmp_path / "jtc_arm.npz"
    args = [PYTHON, "-m", "dysl_ros.sim.jtc_arm", "--joints", ",".join(JOINTS), "--tau", "0.02", "--log", str(log_path)]
    with ros_process(args, domain_id, tmp_path / "jtc_arm.log") as proc, ros_session(domain_id, "probe") as ros:
        states = ros.subscribe(JointState, "/joint_states", SENSOR_QOS)
        pub = ros.publisher(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", RELIABLE_QOS)
        assert states.wait_for(1, timeout=30.0), (tmp_path / "jtc_arm.log").read_text()[-3000:]
        assert ros.wait_until(lambda: pub.get_subscription_count() >= 1, timeout=10.0)
        # A, in reversed joint order (the controller sorts): a 2 s ramp, positions only.
        reversed_joints = list(reversed(JOINTS))
        ramp = [(t, list(reversed(SLOPES * t))) for t in (0.5, 2.0)]
        pub.publish(trajectory_msg(reversed_joints, ramp))
        sent = time.monotonic()
        assert ros.wait_until(lambda: bool(states.messages) and states.messages[-1].position[0] > 0.0, timeout=10.0)
        time.sleep(max(0.0, 0.3 - (time.monotonic() - sent)))  # A taken (a later message cannot overwrite it)
        # One that ended a second ago (rejected), then B replaces A mid-way.
        now = ros.node.get_clock().now().nanoseconds
        pub.publish(trajectory_msg(JOINTS, [(0.1, [0.0] * 7)], stamp_ns=now - NS_PER_S))
        # JTC's reader is SystemDefaultsQoS: on Fast DDS best effort, keep last 1; B goes out once the
        # arm has taken (and refused) the stale one, or B would overwrite it on a loaded machine.
        arm_log = tmp_path / "jtc_arm.log"
        assert ros.wait_until(lambda: "trajectory rejected" in arm_log.read_text(), timeout=10.0), arm_log.read_text()
        pub.publish(trajectory_msg(JOINTS, [(0.2, [TARGET] * 7)]))
        # The arm settles at B's end: tau 0.02 s, so 0.2 s after B ends it is within e^-10 of it.
        assert ros.wait_until(
            lambda: bool(states.messages) and np.allclose(states.messages[-1].position, TARGET, atol=1e-3),
            timeout=10.0,
        ), states.messages[-1].position if states.messages else None
        assert stop_process(proc) == 0  # SIGINT: writes the log, exits 0
    state = states.messages[-1]
    assert list(state.name) == JOINTS and len(state.velocity) == 7

    with np.load(log_path) as npz:
        log = {key: npz[key] for key in npz.files}
    assert list(log["joint_names"]) == JOINTS and str(log["distro"]) == "humble"
    assert list(log["trajectory_rejection"][[0, 2]]) == ["", ""]
    assert "ends in the past" in str(log["trajectory_rejection"][1])
    handoffs = log["handoff_indices"]
    accepted_at = log["trajectory_update_index"][[0, 2]]
    np.testing.assert_array_equal(handoffs, accepted_at)  # each first sampled at the update it arrived for
    a, b = handoffs
    t = (log["time_ns"] - log["time_ns"][a]) * 1e-9
    p = log["setpoint_positions"]
    # A: the arm was at rest at 0, so the first segment continues the ramp; until B, p = slope · t exactly.
    np.testing.assert_allclose(p[a:b], t[a:b, None] * SLOPES, atol=1e-9)
    # B (Humble, measured start): the first command is the arm's measured position, a step back from A's.
    np.testing.assert_array_equal(p[b], log["positions"][b])
    assert np.all(p[b] < p[b - 1])
    np.testing.assert_allclose(p[-1], TARGET)
    np.testing.assert_allclose(log["setpoint_velocities"][-1], 0.0)
    assert int(log["nonfinite_received"]) == 0 and int(log["nonfinite_setpoints"]) == 0
    # The steps of the virtual clock are whole periods, whatever the scheduling.
    assert set(np.diff(log["time_ns"]).tolist()) == {T}
    report = report_from_log(log, JointLimits.make(7, velocity=1.0))
    assert report.handoffs == 2 and report.worst("max_handoff_jump") == pytest.approx(np.max(p[b - 1] - p[b]))
