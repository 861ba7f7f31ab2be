"""The arm's safety, over DDS against the real node: dysl_node drives a simulated 7-joint arm
through joint_trajectory_controller's sampling rules (test/arm_loop.py), with re-plans and
instruction changes, then the faults: the camera stops, e-stop on and off, deactivate and activate,
SIGINT, SIGTERM, kill -9 of the node and of its stream process, and a model that emits NaN.

Every setpoint the controller wrote is checked against the arm's limits (position, velocity,
acceleration) and for being finite, each hand-off against v_max * control period, and each fault's
stop: the controller gets a stop command and the arm comes to rest. The 60 s runs and the before /
after figures of docs/results.md come from scripts/arm_motion.py, on the same harness."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from arm_loop import (
    Stop,
    arm_loop,
    enable,
    lifecycle,
    lifecycle_state,
    lost_windows,
    make_arm_model,
    motion_without,
    stop_after,
    stream_pid,
)
from byom_fixture import ModulePart
from lifecycle_msgs.msg import Transition
from ros_harness import REPO

pytestmark = pytest.mark.ros
MAX_AGE_S = 0.4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_arm_model(tmp_path_factory.mktemp("arm_model"))


def check_motion(log: dict, sent: list[int], since_ns: int, until_ns: int | None = None, **limits: object) -> None:
    """Every setpoint within the limits and finite; no hand-off beyond v_max * control period; the
    controller refused nothing and received nothing non-finite. A trajectory the controller never
    got (its subscription is best effort and keeps one, as joint_trajectory_controller's) or took
    after its new motion had begun (the controller process starved on these 2 shared cores) makes a
    hand-off step: those stretches are left out, counted, and must stay rare."""
    windows = lost_windows(log, sent, since_ns)
    assert len(windows) <= max(3, len(sent) // 10), f"{len(windows)} of {len(sent)} trajectories lost or late"
    reports = motion_without(log, windows, since_ns, until_ns, **limits)  # type: ignore[arg-type]
    assert sum(report.handoffs for report in reports) > 0
    for report in reports:
        for joint in report.joints:
            assert joint.nonfinite == 0
            assert (joint.position_hits, joint.velocity_hits, joint.acceleration_hits) == (0, 0, 0), joint
            assert joint.handoffs_over_bound == 0, joint
    assert int(log["nonfinite_received"]) == 0
    assert not [reason for reason in log["trajectory_rejection"] if reason], "the controller refused a trajectory"


def check_stop(stop: Stop, within_s: float, command: bool = True) -> None:
    if command:
        assert stop.to_stop_command_ms is not None, f"{stop.fault}: no stop command reached the controller"
    assert stop.to_rest_ms is not None and stop.to_rest_ms <= within_s * 1000.0, f"{stop.fault}: {stop}"
    for joint in stop.report.joints:
        assert (joint.position_hits, joint.velocity_hits, joint.acceleration_hits, joint.nonfinite) == (0, 0, 0, 0)


def brake_s() -> float:
    """The longest stop from full speed at the acceleration limit, plus hand-over periods."""
    import arm_fixture

    return float(np.max(arm_fixture.VELOCITY / arm_fixture.ACCELERATION)) + 0.2


@pytest.mark.parametrize(("distro", "start_state"), [("humble", "measured"), ("jazzy", "desired")])
def test_through_the_controller_within_the_limits_then_each_stop(
    model_dir: Path, tmp_path: Path, distro: str, start_state: str
) -> None:
    """Re-plans and instruction changes, then (one session) the camera stops, e-stop off and on,
    deactivate and activate (which waits for an instruction), SIGTERM."""
    stops: list[Stop] = []
    with arm_loop(tmp_path, model_dir, distro, start_state) as loop:
        loop.wait_serving()
        loop.record_sent()
        begin = time.time_ns()
        loop.feed(6.0, instruction_period_s=2.0)
        moving_until = time.time_ns()
        # The camera stops: the last chunk is tracked until its image is max_image_age_ms old, then brakes.
        camera_stop = time.time_ns()
        time.sleep(MAX_AGE_S + brake_s() + 0.3)
        # E-stop while moving; images keep coming and nothing moves until it is lifted.
        camera_back = time.time_ns()
        loop.feed(1.5)
        estop = time.time_ns()
        assert "disabled" in enable(loop, False)
        loop.feed(1.5)
        assert loop.fresh_diag()["_message"].startswith("disabled")
        estop_end = time.time_ns()
        enable(loop, True)
        loop.feed(1.5)
        # Deactivate while moving: a final stop; activate: nothing until a new instruction.
        deactivate = time.time_ns()
        assert lifecycle(loop, Transition.TRANSITION_DEACTIVATE)
        assert lifecycle(loop, Transition.TRANSITION_ACTIVATE)
        loop.feed(1.0)
        quiet_until = time.time_ns()
        loop.instruct()
        loop.feed(1.5)
        term = time.time_ns()
        os.killpg(loop.node.pid, signal.SIGTERM)
        assert loop.node.wait(timeout=20.0) == 0, loop.node_log_tail()
        time.sleep(0.3)
        log = loop.stop_arm()
        sent = loop.sent.messages
    check_motion(log, sent, begin, moving_until)
    check_motion(log, sent, begin)  # the whole run, faults included
    stops = [
        stop_after(log, "camera stops (after max_image_age_ms)", camera_stop, camera_back),
        stop_after(log, "e-stop (~/enable false)", estop, estop_end),
        stop_after(log, "deactivate", deactivate, quiet_until),
        stop_after(log, "SIGTERM", term),
    ]
    check_stop(stops[0], MAX_AGE_S + brake_s() + 0.3, command=False)  # the trajectory it has brakes
    for stop in stops[1:]:
        check_stop(stop, brake_s() + 0.3)
    # While e-stopped, and after activate until the new instruction, the arm stays where it stopped.
    for start, end in ((estop + int(brake_s() * 1e9), estop_end), (deactivate + int(brake_s() * 1e9), quiet_until)):
        window = (log["time_ns"] >= start) & (log["time_ns"] < end)
        assert np.all(log["setpoint_velocities"][window] == 0.0), "moved while it should stand still"


def test_kill_9_of_the_node_the_stream_process_stops_the_arm(model_dir: Path, tmp_path: Path) -> None:
    with arm_loop(tmp_path, model_dir, "humble", "measured", node_may_die=True) as loop:
        loop.wait_serving()
        loop.record_sent()
        begin = time.time_ns()
        loop.feed(2.0)
        stream = stream_pid(loop)
        killed = time.time_ns()
        os.kill(loop.node.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and os.path.exists(f"/proc/{stream}"):
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{stream}"), "the stream process did not exit after stopping the arm"
        log = loop.stop_arm()
        sent = loop.sent.messages
        loop.node.wait(timeout=5.0)
    check_stop(stop_after(log, "kill -9 of the node", killed), brake_s() + 0.3)
    check_motion(log, sent, begin)


def test_kill_9_of_the_stream_process_the_node_stops_the_arm_and_errors(model_dir: Path, tmp_path: Path) -> None:
    with arm_loop(tmp_path, model_dir, "jazzy", "desired") as loop:
        loop.wait_serving()
        loop.record_sent()
        begin = time.time_ns()
        loop.feed(2.0)
        killed = time.time_ns()
        os.kill(stream_pid(loop), signal.SIGKILL)
        assert loop.ros.wait_until(lambda: loop.diag().get("_message", "").startswith("action stream process"), 10.0)
        assert loop.ros.wait_until(lambda: lifecycle_state(loop) == "unconfigured", 10.0), loop.node_log_tail()
        time.sleep(brake_s())
        log = loop.stop_arm()
        sent = loop.sent.messages
    check_stop(stop_after(log, "kill -9 of the stream process", killed), brake_s() + 0.5)
    check_motion(log, sent, begin)


def test_sigint_sends_the_final_stop_before_the_context_goes(model_dir: Path, tmp_path: Path) -> None:
    with arm_loop(tmp_path, model_dir, "humble", "desired") as loop:
        loop.wait_serving()
        loop.record_sent()
        begin = time.time_ns()
        loop.feed(2.0)
        interrupted = time.time_ns()
        os.kill(loop.node.pid, signal.SIGINT)
        assert loop.node.wait(timeout=20.0) == 0, loop.node_log_tail()
        assert "signal: stopping the joints" in loop.node_log_tail()
        log = loop.stop_arm()
        sent = loop.sent.messages
    check_stop(stop_after(log, "SIGINT", interrupted), brake_s() + 0.3)
    check_motion(log, sent, begin)


def test_a_model_that_emits_nan_never_reaches_the_controller(tmp_path: Path) -> None:
    """Once the arm is served, 12 head passes return NaN (a verification re-run is a head pass too):
    those chunks are dropped and counted, the arm brakes after max_consecutive_failures, and serving
    resumes when the model does."""
    trigger = tmp_path / "fail_now"
    head = ModulePart("nan_head:make_head", {"trigger": str(trigger), "nan_count": 12})
    model = make_arm_model(tmp_path / "model", head=head)
    env = {"PYTHONPATH": str(REPO / "test")}
    with arm_loop(tmp_path / "run", model, "jazzy", "desired", node_params={"backend": "torch"}, node_env=env) as loop:
        loop.wait_serving()
        loop.record_sent()
        begin = time.time_ns()
        trigger.touch()

        def failed() -> bool:
            loop.frame()
            time.sleep(1 / 15)
            return int(loop.diag().get("chunks_non_finite", "0")) >= 3

        assert loop.ros.wait_until(failed, 30.0, period=0.0), loop.diag()
        broke = time.time_ns()
        loop.feed(3.0)
        diag = loop.fresh_diag()
        log = loop.stop_arm()
        sent = loop.sent.messages
    assert 3 <= int(diag["chunks_non_finite"]) <= 12 and int(diag["failures_in_row"]) == 0, diag
    assert int(diag["joint_stops"]) >= 1, (diag, loop.node_log_tail())
    assert "NaN or inf" in loop.node_log_tail()
    check_motion(log, sent, begin)
    rest = stop_after(log, "model emits NaN", broke)
    assert rest.to_stop_command_ms is not None
    # It moved again once the model recovered.
    later = log["time_ns"] >= broke + int(2e9)
    assert np.any(log["setpoint_velocities"][later] != 0.0)


FR3_LOWER = np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159])
FR3_UPPER = np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159])
FR3_VELOCITY = np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])


def fr3_urdf(joints: list[str]) -> str:
    import arm_fixture

    return arm_fixture.urdf(tuple(joints), limits=(FR3_LOWER, FR3_UPPER, FR3_VELOCITY))


@pytest.mark.parametrize("order", ["same", "swapped"])
def test_the_7_joint_example_configuration(model_dir: Path, tmp_path: Path, order: str) -> None:
    """config/arm7_example.yaml as shipped: the node's section configures dysl_node (limits from the
    /robot_description topic plus the file's acceleration limits, max_step, the forward controller's
    joint order checked at activate); the JTC's section configures the controller model. Through it,
    every setpoint within the limits. A forward controller with two joints swapped: activate fails."""
    import yaml
    from arm_loop import ARM_SPEC, DT_S
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from std_msgs.msg import String

    from dysl_ros.node.robot import DESCRIPTION_QOS
    from dysl_ros.sim.motion_metrics import JointLimits

    example = yaml.safe_load((REPO / "config" / "arm7_example.yaml").read_text())
    node_params = example["dysl_node"]["ros__parameters"]
    jtc = example["joint_trajectory_controller"]["ros__parameters"]
    joints = list(node_params["command_joint_names"])
    assert jtc["joints"] == joints == example["forward_position_controller"]["ros__parameters"]["joints"]
    assert node_params["state_joint_names"] == joints and len(joints) == len(ARM_SPEC.state_names)
    params_file = tmp_path / "arm7.yaml"
    params_file.write_text(yaml.safe_dump({"/dysl_arm": {"ros__parameters": node_params}}))
    controller_joints = list(joints) if order == "same" else [joints[1], joints[0], *joints[2:]]
    start_rule = "desired" if jtc["interpolate_from_desired_state"] else "measured"
    nonzero_end = str(jtc["allow_nonzero_velocity_at_trajectory_end"]).lower()
    arm_args = ("--cmd-timeout", str(jtc["cmd_timeout"]), "--allow-nonzero-velocity-at-trajectory-end", nonzero_end)
    mapping = "[" + ",".join(ARM_SPEC.action_names) + "]"  # the test model's actions drive the arm's joints
    with arm_loop(tmp_path, model_dir, "jazzy", start_rule, params_file=params_file, joints=tuple(joints),
                  initial_positions=(FR3_LOWER + FR3_UPPER) / 2, arm_args=arm_args,
                  node_params={"action_to_joint": mapping}) as loop:
        description = loop.ros.publisher(String, "/robot_description", DESCRIPTION_QOS)
        description.publish(String(data=fr3_urdf(joints)))  # as robot_state_publisher does
        controller = Node("forward_position_controller", context=loop.ros.node.context,
                          parameter_overrides=[Parameter("joints", value=controller_joints)])
        controller.declare_parameter("joints", controller_joints)
        loop.ros.add_node(controller)  # the session destroys it after its spin thread has stopped
        if order == "swapped":
            assert loop.ros.wait_until(lambda: "would drive the wrong joints" in loop.node_log_tail(), 60.0)
            assert lifecycle_state(loop) == "inactive"
            return
        loop.wait_serving()
        loop.record_sent()
        begin = time.time_ns()
        loop.feed(3.0)
        log = loop.stop_arm()
        sent = loop.sent.messages
    accelerations = [node_params["joint_limits"][j]["max_acceleration"] for j in joints]
    limits = JointLimits.make(len(joints), FR3_LOWER, FR3_UPPER, FR3_VELOCITY, accelerations)
    check_motion(log, sent, begin, limits=limits)
    after = log["time_ns"] >= begin
    step = np.abs(log["setpoint_positions"][after] - log["positions"][after])
    assert np.all(step <= node_params["max_step"] + 0.05)  # max_step around the measured pose (+ the arm's lag)
    assert DT_S == 1.0 / node_params["control_rate_hz"]
