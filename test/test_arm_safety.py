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
    make_arm_model,
    motion,
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


def check_motion(log: dict, since_ns: int | None = None, until_ns: int | None = None) -> None:
    """Every setpoint within the limits and finite; no hand-off beyond v_max * control period; the
    controller refused nothing and received nothing non-finite."""
    report = motion(log, since_ns, until_ns)
    for joint in report.joints:
        assert joint.nonfinite == 0
        assert (joint.position_hits, joint.velocity_hits, joint.acceleration_hits) == (0, 0, 0), joint
        assert joint.handoffs_over_bound == 0, joint
    assert report.handoffs > 0
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
    check_motion(log, begin, moving_until)
    check_motion(log)  # the whole run, faults included
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
        loop.feed(2.0)
        stream = stream_pid(loop)
        killed = time.time_ns()
        os.kill(loop.node.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and os.path.exists(f"/proc/{stream}"):
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{stream}"), "the stream process did not exit after stopping the arm"
        log = loop.stop_arm()
        loop.node.wait(timeout=5.0)
    check_stop(stop_after(log, "kill -9 of the node", killed), brake_s() + 0.3)
    check_motion(log)


def test_kill_9_of_the_stream_process_the_node_stops_the_arm_and_errors(model_dir: Path, tmp_path: Path) -> None:
    with arm_loop(tmp_path, model_dir, "jazzy", "desired") as loop:
        loop.wait_serving()
        loop.feed(2.0)
        killed = time.time_ns()
        os.kill(stream_pid(loop), signal.SIGKILL)
        assert loop.ros.wait_until(lambda: loop.diag().get("_message", "").startswith("action stream process"), 10.0)
        assert loop.ros.wait_until(lambda: lifecycle_state(loop) == "unconfigured", 10.0), loop.node_log_tail()
        time.sleep(brake_s())
        log = loop.stop_arm()
    check_stop(stop_after(log, "kill -9 of the stream process", killed), brake_s() + 0.5)
    check_motion(log)


def test_sigint_sends_the_final_stop_before_the_context_goes(model_dir: Path, tmp_path: Path) -> None:
    with arm_loop(tmp_path, model_dir, "humble", "desired") as loop:
        loop.wait_serving()
        loop.feed(2.0)
        interrupted = time.time_ns()
        os.kill(loop.node.pid, signal.SIGINT)
        assert loop.node.wait(timeout=20.0) == 0, loop.node_log_tail()
        assert "signal: stopping the joints" in loop.node_log_tail()
        log = loop.stop_arm()
    check_stop(stop_after(log, "SIGINT", interrupted), brake_s() + 0.3)
    check_motion(log)


def test_a_model_that_emits_nan_never_reaches_the_controller(tmp_path: Path) -> None:
    """Head passes 40 to 47 return NaN: those chunks are dropped and counted, the arm brakes after
    max_consecutive_failures, and serving resumes when the model does."""
    head = ModulePart("nan_head:make_head", {"nan_from": 40, "nan_count": 8})
    model = make_arm_model(tmp_path / "model", head=head)
    env = {"PYTHONPATH": str(REPO / "test")}
    with arm_loop(tmp_path / "run", model, "jazzy", "desired", node_params={"backend": "torch"}, node_env=env) as loop:
        loop.wait_serving()

        def failed() -> bool:
            loop.frame()
            time.sleep(1 / 15)
            return int(loop.diag().get("chunks_non_finite", "0")) >= 3

        assert loop.ros.wait_until(failed, 30.0, period=0.0), loop.diag()
        broke = time.time_ns()
        loop.feed(3.0)
        diag = loop.fresh_diag()
        log = loop.stop_arm()
    assert int(diag["chunks_non_finite"]) == 8 and int(diag["failures_in_row"]) == 0, diag
    assert int(diag["joint_stops"]) >= 1
    assert "NaN or inf" in loop.node_log_tail()
    check_motion(log)
    rest = stop_after(log, "model emits NaN", broke)
    assert rest.to_stop_command_ms is not None
    # It moved again once the model recovered.
    later = log["time_ns"] >= broke + int(2e9)
    assert np.any(log["setpoint_velocities"][later] != 0.0)
