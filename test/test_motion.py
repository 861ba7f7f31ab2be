"""Joint limits from a URDF and ros2_control's parameters, and the motion planned within them: no ROS.

The URDF is arm_fixture's 7-joint arm (written for these tests); the bad ones name the joint or the
line. The planner's promises are checked on random chunks: every commanded state within the
position, velocity and acceleration limits and max_step, hand-offs that keep position and velocity,
stops that ramp down at the acceleration limit, every plan ending at rest."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from arm_fixture import ACCELERATION, LOWER, UPPER, VELOCITY, acceleration_parameters, urdf
from byom_fixture import JOINTS

from dysl_ros.core.config import ConfigError
from dysl_ros.joint_limits import JointLimits, resolve
from dysl_ros.motion import MotionLimiter, MotionState, check_command
from dysl_ros.node.joint_output import JointConfig, JointOutput, trajectory_points
from dysl_ros.sim.jtc import LaggedArm, Point, Trajectory, TrajectoryFollower

DT_NS = 20_000_000
DT = DT_NS / 1e9


def flat(params: dict[str, dict[str, object]]) -> dict[str, object]:
    return {f"joint_limits.{joint}.{key}": value for joint, fields in params.items() for key, value in fields.items()}


def arm_limits(**extra: object) -> JointLimits:
    return resolve(JOINTS, urdf(), {**flat(acceleration_parameters()), **extra})


# ------------------------------------------------------------------------------------ limits


def test_the_urdf_and_the_parameters_give_every_limit() -> None:
    limits = arm_limits()
    assert limits.joints == JOINTS
    np.testing.assert_array_equal(limits.min_position, LOWER)
    np.testing.assert_array_equal(limits.max_position, UPPER)
    np.testing.assert_array_equal(limits.max_velocity, VELOCITY)
    np.testing.assert_array_equal(limits.max_acceleration, ACCELERATION)
    assert not limits.has_jerk and np.all(np.isinf(limits.max_jerk))
    assert JointLimits.from_dict(limits.to_dict()).describe() == limits.describe()


def test_parameters_override_the_urdf_as_ros2_control_does() -> None:
    limits = arm_limits(**{
        "joint_limits.joint_0.max_velocity": 0.5,  # narrower than the URDF's 1.2
        "joint_limits.joint_1.has_position_limits": False,  # continuous from now on
        "joint_limits.joint_2.min_position": -0.3,
        "joint_limits.joint_3.has_jerk_limits": True,
        "joint_limits.joint_3.max_jerk": 50,  # an int is a number too
    })
    assert limits.max_velocity[0] == 0.5
    assert math.isinf(limits.min_position[1]) and math.isinf(limits.max_position[1])
    assert limits.min_position[2] == -0.3 and limits.max_position[2] == UPPER[2]
    assert limits.max_jerk[3] == 50.0 and math.isinf(limits.max_jerk[4])


@pytest.mark.parametrize(
    ("description", "parameters", "expected"),
    [
        (urdf(drop="joint_3"), {}, "robot_description has no joint 'joint_3'"),
        (urdf(limit_of={"joint_2": ""}), {}, "revolute joint 'joint_2' has no <limit>"),
        (urdf(limit_of={"joint_4": '<limit lower="a" upper="1" velocity="1" effort="1"/>'}), {},
         "joint 'joint_4' <limit lower='a'> is not a number"),
        (urdf().replace("</robot>", "<joint name='x'></robot>"), {}, "not valid XML"),
        ("", {}, "joint 'joint_0' has no position or velocity or acceleration limit"),
        (urdf(), {"joint_limits.joint_5.has_acceleration_limits": False}, "joint 'joint_5' has no acceleration limit"),
        (urdf(), {"joint_limits.joint_1.max_acceleration": -2.0},
         "joint_limits.joint_1.max_acceleration must be a positive"),
        (urdf(), {"joint_limits.joint_1.has_velocity_limits": "yes"}, "has_velocity_limits must be true or false"),
    ],
)
def test_bad_limits_name_the_joint_or_the_line(description: str, parameters: dict[str, object], expected: str) -> None:
    base = {} if "has_acceleration_limits" in str(parameters) or not description else flat(acceleration_parameters())
    with pytest.raises(ConfigError) as info:
        resolve(JOINTS, description, {**base, **parameters})
    assert expected in str(info.value), str(info.value)


def test_malformed_xml_names_its_line() -> None:
    broken = urdf().splitlines()
    broken[5] = broken[5].replace("/>", ">")  # an unclosed <limit> on line 6
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        resolve(JOINTS, "\n".join(broken), flat(acceleration_parameters()))


def test_parameters_alone_suffice_without_a_urdf() -> None:
    params = {
        f"joint_limits.{joint}.{key}": value
        for joint in JOINTS
        for key, value in (
            ("min_position", -1.0), ("max_position", 1.0), ("max_velocity", 2.0), ("max_acceleration", 5.0)
        )
    }
    limits = resolve(JOINTS, "", params)
    assert np.all(limits.max_velocity == 2.0) and np.all(limits.min_position == -1.0)


# ------------------------------------------------------------------------------------ motion


def check_plan(
    p: np.ndarray, v: np.ndarray, limits: JointLimits, box: tuple[np.ndarray, np.ndarray] | None = None
) -> None:
    low, high = box or (limits.min_position, limits.max_position)
    assert np.all(p >= low - 1e-9) and np.all(p <= high + 1e-9), "a state beyond the position box"
    assert np.all(np.abs(v) <= limits.max_velocity + 1e-9), "a state beyond the velocity limit"
    assert np.all(np.abs(np.diff(v, axis=0)) <= limits.max_acceleration * DT + 1e-9), "beyond the acceleration limit"
    np.testing.assert_allclose(np.diff(p, axis=0), 0.5 * (v[1:] + v[:-1]) * DT, atol=1e-12)


def test_random_chunks_are_planned_within_the_limits_and_end_at_rest() -> None:
    limits = arm_limits()
    limiter = MotionLimiter(limits, DT_NS)
    rng = np.random.default_rng(0)
    state = MotionState.at_rest(0, np.zeros(7))
    for _ in range(30):
        targets = rng.uniform(-1.5, 1.5, (10, 7))  # beyond the position limits on purpose
        plan = limiter.plan(state, targets, state.t_ns + DT_NS * np.arange(10), state.t_ns + 9 * DT_NS)
        check_plan(plan.p, plan.v, limits)
        assert (np.all(plan.v[-1] == 0.0) and np.all(plan.a[-1] == 0.0)) or np.all(plan.v[-1] == 0.0)
        np.testing.assert_array_equal(plan.p[0], state.p)  # starts where the previous one commands
        np.testing.assert_array_equal(plan.v[0], state.v)
        state = plan.state_at(state.t_ns + int(rng.integers(2, 7)) * DT_NS)


def test_targets_within_reach_are_followed() -> None:
    """A slow ramp inside the limits is tracked after the ramp-in (the planner is not just safe)."""
    limits = arm_limits()
    limiter = MotionLimiter(limits, DT_NS)
    times = DT_NS * np.arange(40)
    targets = 0.2 * np.sin(np.linspace(0, 1.0, 40))[:, None] * np.ones(7)
    plan = limiter.plan(MotionState.at_rest(0, np.zeros(7)), targets, times, times[-1])
    np.testing.assert_allclose(plan.p[20:40], targets[20:40], atol=2e-3)


@pytest.mark.parametrize("acceleration_scale", [1.0, 30.0])
def test_plans_close_in_on_their_targets_exactly(acceleration_scale: float) -> None:
    """No dead zone: a target nearer than a*dt^2/8 (where braking in whole periods was rounded up)
    is reached, and a ramp is tracked to the last digit once ramped in, whatever the acceleration
    limit (a plan stayed ~a*dt^2/8 behind: 0.1 rad at 300 rad/s^2 and 50 ms)."""
    base = arm_limits()
    limits = dataclasses.replace(base, max_acceleration=base.max_acceleration * acceleration_scale)
    limiter = MotionLimiter(limits, DT_NS)
    near = np.full(7, 0.125 * float(np.min(limits.max_acceleration)) * DT * DT * 0.5)
    held = limiter.plan(MotionState.at_rest(0, np.zeros(7)), near[None], np.array([DT_NS]), 20 * DT_NS)
    check_plan(held.p, held.v, limits)
    np.testing.assert_allclose(held.p[-1], near, atol=1e-12)
    times = DT_NS * (1 + np.arange(30))
    ramp = 0.004 * (1 + np.arange(30))[:, None] * np.ones(7)  # 0.2 rad/s at 20 ms
    plan = limiter.plan(MotionState.at_rest(0, np.zeros(7)), ramp, times, times[-1])
    check_plan(plan.p, plan.v, limits)
    np.testing.assert_allclose(plan.p[22:30], ramp[21:29], atol=1e-9)


def test_follow_moves_one_period_within_the_limits() -> None:
    """The demonstration recorder's arm: targets given one period at a time, far beyond the limits."""
    limits = arm_limits()
    limiter = MotionLimiter(limits, DT_NS)
    rng = np.random.default_rng(1)
    state = MotionState.at_rest(0, np.zeros(7))
    p, v = [state.p], [state.v]
    for _ in range(200):
        target = np.clip(state.p + rng.normal(0.0, 0.3, 7), -3.0, 3.0)
        state = limiter.follow(state, target, rng.normal(0.0, 5.0, 7))
        p.append(state.p)
        v.append(state.v)
    check_plan(np.array(p), np.array(v), limits)
    assert state.t_ns == 200 * DT_NS
    still = MotionState.at_rest(0, np.zeros(7))
    for _ in range(60):
        still = limiter.follow(still, np.full(7, 0.05))
    np.testing.assert_allclose(still.p, 0.05, atol=1e-9)  # a held target is reached and held
    np.testing.assert_allclose(still.v, 0.0, atol=1e-7)


def test_max_step_keeps_every_command_near_the_measured_position() -> None:
    limits = arm_limits()
    limiter = MotionLimiter(limits, DT_NS, max_step=0.1)
    measured = np.full(7, 0.3)
    plan = limiter.plan(MotionState.at_rest(0, measured), np.ones((10, 7)), DT_NS * np.arange(10), 9 * DT_NS, measured)
    box = (np.maximum(LOWER, measured - 0.1), np.minimum(UPPER, measured + 0.1))
    check_plan(plan.p, plan.v, limits, box)
    assert np.max(plan.p) == pytest.approx(0.4, abs=0.02)  # it goes as far as allowed


def test_a_stop_ramps_down_at_the_acceleration_limit() -> None:
    limits = arm_limits()
    limiter = MotionLimiter(limits, DT_NS)
    state = MotionState(0, np.zeros(7), 0.9 * VELOCITY, np.zeros(7))
    stop = limiter.stop(state, "estop")
    check_plan(stop.p, stop.v, limits, (np.full(7, -10.0), np.full(7, 10.0)))
    assert stop.reason == "estop" and np.all(stop.v[-1] == 0.0)
    # No snap: the first period changes the velocity by at most a*dt, and it takes v/a to stop.
    assert np.all(np.abs(stop.v[1] - stop.v[0]) <= ACCELERATION * DT + 1e-12)
    assert (len(stop.p) - 1) * DT == pytest.approx(np.max(0.9 * VELOCITY / ACCELERATION), abs=2 * DT)
    assert limiter.stop_duration_s(state.v) >= (len(stop.p) - 1) * DT


def test_a_stop_near_a_position_limit_stays_inside_it() -> None:
    limits = arm_limits()
    limiter = MotionLimiter(limits, DT_NS)
    start = MotionState.at_rest(0, np.zeros(7))
    plan = limiter.plan(start, np.tile(UPPER, (10, 1)), DT_NS * np.arange(10), 200 * DT_NS)
    check_plan(plan.p, plan.v, limits)
    assert np.all(plan.p[-1] <= UPPER + 1e-9)


def test_non_finite_targets_are_refused() -> None:
    limiter = MotionLimiter(arm_limits(), DT_NS)
    targets = np.zeros((10, 7))
    targets[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        limiter.plan(MotionState.at_rest(0, np.zeros(7)), targets, DT_NS * np.arange(10), 9 * DT_NS)
    assert check_command(np.array([0.0] * 6 + [np.inf]), arm_limits()) == "non-finite value"
    assert "joint_0 beyond its position limit" in str(check_command(np.array([5.0] + [0.0] * 6), arm_limits()))


def test_commands_hand_off_without_a_step_and_stop_labelled() -> None:
    """The stream's joint output: commands sampled each period across chunk hand-offs and a stop
    change by at most v_max*dt and (v change) a_max*dt^2; labels say what each one is."""
    limits = arm_limits()
    config = JointConfig(JOINTS, limits.to_dict(), 0.0, False, "c", "t", "now", 400_000_000)
    out = JointOutput(config, DT_NS)
    rng = np.random.default_rng(1)
    commands, labels = [], []
    measured = np.zeros(7)
    for k in range(400):
        now = 10**12 + k * DT_NS
        if k % 5 == 0 and k < 300:
            stamp = now - 30_000_000
            plan = out.plan_chunk(stamp, rng.uniform(-1.5, 1.5, (10, 7)), measured, now + 2 * DT_NS, 10)
            assert plan is not None
            out.adopt(plan, stamp)
        if k == 300:
            stop = out.plan_stop(now + 2 * DT_NS, "estop")
            assert stop is not None
            out.adopt(stop, None)
        command = out.command(now)
        if command is not None:
            commands.append(command.values)
            labels.append(command.label)
    values = np.array(commands)
    assert np.all(np.abs(np.diff(values, axis=0)) <= VELOCITY * DT + 1e-9)
    assert np.all(np.abs(np.diff(values, n=2, axis=0)) <= ACCELERATION * DT * DT + 1e-9)
    assert labels[0][0].isdigit() and "estop" in labels and labels[-1] == "hold"
    assert labels.index("estop") > 290 and set(labels[labels.index("estop"):]) <= {"estop", "hold"}


def test_target_k_is_reached_at_the_end_of_its_period() -> None:
    """A joint-space chunk within reach: target k is where the plan is at stamp + (k+1)*dt (action k
    commanded over period k, as the demonstrations were recorded), not a period earlier."""
    limits = arm_limits()
    out = JointOutput(JointConfig(JOINTS, limits.to_dict(), 0.0, False, "c", "t", "now", 2_000_000_000), DT_NS)
    stamp = 10**12
    targets = 0.05 * np.sin(np.linspace(0.0, 1.0, 40))[:, None] * np.ones(7)  # slow: tracked exactly
    first = out.plan_chunk(stamp - 40 * DT_NS, np.zeros((40, 7)), np.zeros(7), stamp - 40 * DT_NS, 40)
    assert first is not None
    out.adopt(first, stamp - 40 * DT_NS)
    plan = out.plan_chunk(stamp, targets, np.zeros(7), stamp + DT_NS, 40)
    assert plan is not None
    reached = np.array([plan.state_at(stamp + (k + 1) * DT_NS).p for k in range(10, 35)])
    np.testing.assert_allclose(reached, targets[10:35], atol=2e-4)
    early = np.array([plan.state_at(stamp + k * DT_NS).p for k in range(10, 35)])
    assert np.max(np.abs(early - targets[10:35])) > 1e-3  # a period earlier is measurably elsewhere


@pytest.mark.parametrize("controller_behind_ns", [0, 19_000_000])
def test_spliced_trajectories_hand_off_exactly_on_the_measured_rule(controller_behind_ns: int) -> None:
    """joint_trajectory_controller on Humble's default rule, its clock up to a period behind the
    node's (another machine, a late update): every trajectory's first point has passed when it is
    taken, so no hand-off steps back to the lagging arm's measured pose."""
    limits = arm_limits()
    config = JointConfig(JOINTS, limits.to_dict(), 0.0, False, "", "t", "now", 400_000_000)
    out = JointOutput(config, DT_NS)
    follower = TrajectoryFollower(JOINTS, "humble", "measured", update_rate_hz=500.0)
    arm = LaggedArm(7, tau_s=0.02)
    rng = np.random.default_rng(2)
    grid, update_ns, delivery_ns = 10**12, 2_000_000, 1_000_000
    pending: list[tuple[int, Trajectory]] = []
    setpoints = []
    for k in range(1500):
        node_now = grid + k * update_ns + controller_behind_ns  # the node's clock at this update
        if k % 50 == 7:  # a chunk every 100 ms, sent off the grid, planned a period (+5 ms) ahead
            start = grid + math.ceil((node_now + DT_NS + 5_000_000 - grid) / DT_NS) * DT_NS
            plan = out.plan_chunk(node_now, rng.uniform(-1.5, 1.5, (10, 7)), arm.positions, start, 10)
            assert plan is not None
            out.adopt(plan, node_now)
            sent = out.spliced(plan, node_now)
            assert sent.start_ns <= node_now - DT_NS and (plan.start_ns - sent.start_ns) % DT_NS == 0
            points = [Point(t - sent.start_ns, p, v) for t, p, v, _ in trajectory_points(sent, False)]
            pending.append((node_now + delivery_ns, Trajectory(JOINTS, points, sent.start_ns)))
        while pending and pending[0][0] <= node_now:
            assert follower.receive(pending.pop(0)[1], node_now - controller_behind_ns) is None
        setpoint = follower.update(node_now - controller_behind_ns, arm.positions, arm.velocities)
        arm.step(setpoint.positions, update_ns / 1e9)
        setpoints.append(setpoint.positions)
    steps = np.abs(np.diff(np.array(setpoints)[10:], axis=0))
    assert follower.accepted >= 25
    assert np.all(steps <= VELOCITY * update_ns / 1e9 * 1.001 + 1e-9), steps.max(axis=0)


def test_trajectory_points_carry_velocities_and_end_at_rest() -> None:
    limits = arm_limits(**{f"joint_limits.{j}.max_jerk": 100.0 for j in JOINTS})
    assert limits.has_jerk
    plan = MotionLimiter(limits, DT_NS).plan(MotionState.at_rest(0, np.zeros(7)), np.ones((10, 7)) * 0.5,
                                             DT_NS * np.arange(10), 9 * DT_NS)
    points = trajectory_points(plan, with_accelerations=True)
    assert [t for t, *_ in points] == [j * DT_NS for j in range(len(plan.p))]
    assert all(a is not None for *_, a in points)
    _, _, velocity, acceleration = points[-1]
    assert np.all(velocity == 0.0) and acceleration is not None and np.all(acceleration == 0.0)
