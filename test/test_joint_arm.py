"""The Sawyer driven through its joints: the simulator (dysl_ros.mt10.joint_env), its URDF and limits,
the joint-space demonstrations, the in-process closed loop of a joint-space model, and sim_bridge's ``jtc``
and ``forward`` arm modes with dysl_node over DDS (a tiny random joint-space model, one short episode)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import PYTHON, ros_process, ros_session, unique_domain_id
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from dysl_ros.mt10.joint_env import (
    ACTION_NAMES,
    ARM_JOINTS,
    CONTROL_PERIOD_S,
    STATE_NAMES,
    JointSpaceTask,
    arm_limits,
)
from dysl_ros.sim import sawyer
from dysl_ros.wiring import CONTROLLER_TOPICS, DEFAULT_TOPICS, remap_arguments

RESULTS_QOS = QoSProfile(
    depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
DEEP_BEST_EFFORT = QoSProfile(depth=500, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


# ---------------------------------------------------------------------------------- the arm, no ROS


def test_urdf_is_the_mjcf_chain_with_the_stated_limits() -> None:
    from dysl_ros.joint_limits import resolve

    assert sawyer.read_urdf() == sawyer.urdf(), "config/sawyer_arm.urdf is stale: python -m dysl_ros.sim.sawyer --write"
    mjcf = arm_limits()
    np.testing.assert_allclose(mjcf.lower, sawyer.LOWER, atol=1e-4)
    np.testing.assert_allclose(mjcf.upper, sawyer.UPPER, atol=1e-4)
    # What dysl_node makes of the URDF and the acceleration parameters (its own parser and rules).
    parameters = {f"joint_limits.{joint}.{key}": value
                  for joint, fields in sawyer.joint_limit_parameters().items() for key, value in fields.items()}
    limits = resolve(ARM_JOINTS, sawyer.read_urdf(), parameters)
    np.testing.assert_allclose(limits.min_position, sawyer.LOWER)
    np.testing.assert_allclose(limits.max_position, sawyer.UPPER)
    np.testing.assert_allclose(limits.max_velocity, sawyer.VELOCITY)
    np.testing.assert_allclose(limits.max_acceleration, sawyer.ACCELERATION)
    # The chain's kinematics: the URDF's origins put the hand where MuJoCo does at the start pose.
    with JointSpaceTask("reach-v3", 0) as env:
        env.reset(1)
        hand = np.asarray(env._data.xpos[env._hand])
        q = env.joint_positions()
    np.testing.assert_allclose(urdf_forward_kinematics(sawyer.read_urdf(), q), hand, atol=1e-3)


def urdf_forward_kinematics(text: str, q: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The position of the URDF's ``hand`` link for arm joint positions ``q`` (base at the origin)."""
    import xml.etree.ElementTree as ET

    def rotation(axis: np.ndarray[Any, Any], angle: float) -> np.ndarray[Any, Any]:
        x, y, z = axis / np.linalg.norm(axis)
        c, s = math.cos(angle), math.sin(angle)
        return np.array([[c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
                         [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
                         [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)]])

    def rpy(r: float, p: float, y: float) -> np.ndarray[Any, Any]:
        return rotation(np.array([0.0, 0.0, 1.0]), y) @ rotation(np.array([0.0, 1.0, 0.0]), p) @ rotation(
            np.array([1.0, 0.0, 0.0]), r)

    position, orientation = np.zeros(3), np.eye(3)
    for joint in ET.fromstring(text).findall("joint"):
        origin = joint.find("origin")
        assert origin is not None
        offset = np.array([float(v) for v in origin.get("xyz", "0 0 0").split()])
        position = position + orientation @ offset
        orientation = orientation @ rpy(*(float(v) for v in origin.get("rpy", "0 0 0").split()))
        name = joint.get("name", "")
        if name in ARM_JOINTS:
            axis_element = joint.find("axis")
            assert axis_element is not None
            axis = np.array([float(v) for v in axis_element.get("xyz", "").split()])
            orientation = orientation @ rotation(axis, float(q[ARM_JOINTS.index(name)]))
        child = joint.find("child")
        if child is not None and child.get("link") == "hand":
            return position
    raise AssertionError("no hand link in the URDF")


def test_servos_track_a_moving_target_and_the_expert_succeeds() -> None:
    with JointSpaceTask("reach-v3", 0, max_steps=120) as env:
        obs = env.reset(7)
        start = env.joint_positions()
        assert np.all(start >= sawyer.LOWER) and np.all(start <= sawyer.UPPER)
        # A ramp of 0.01 rad per period (0.2 rad/s) on every joint: position servos lag a moving setpoint
        # (by about 2.6 % of its speed in rad per rad/s on the stiffest-damped joint), then settle on it.
        for k in range(1, 6):
            obs, _success, _done = env.step(start + 0.01 * k, -1.0)
        lag = np.abs(env.joint_positions() - (start + 0.05))
        assert np.max(lag) < 0.2 * 0.03 and np.max(lag) > 1e-4
        for _ in range(2):
            env.step(start + 0.05, -1.0)
        assert np.max(np.abs(env.joint_positions() - (start + 0.05))) < 5e-4
        assert env.steps == 7
        np.testing.assert_allclose(env.time_s, 7 * CONTROL_PERIOD_S)
        # A non-finite target is not followed: that joint keeps its last target.
        before = env.setpoint
        target = before.copy()
        target[2] = math.nan
        env.step(target, -1.0)
        assert env.setpoint[2] == before[2]
        # The scripted expert, through damped least squares, reaches the goal.
        obs = env.reset(7)
        done = False
        while not done:
            targets, gripper, executed = env.expert(obs)
            np.testing.assert_array_equal(targets, executed)  # no noise: what is labelled is what runs
            assert np.all(targets >= sawyer.LOWER) and np.all(targets <= sawyer.UPPER)
            obs, _success, done = env.step(executed, gripper)
        assert env.succeeded and env.steps < 120
        assert env.proprio().shape == (len(STATE_NAMES),)


def test_joint_demonstrations_record_joint_states_and_target_deltas(tmp_path: Path) -> None:
    from dysl_ros.training.demos import generate_demos, load_demos
    from dysl_ros.training.settings import DemosSettings

    settings = DemosSettings(tasks="reach-v3", episodes_per_task=1, seed=1000, workers=1, arm="joint",
                             action_noise=0.1, within_limits=True)
    summary = generate_demos(tmp_path / "demos", settings, progress=False)
    assert summary["reach-v3"]["kept"] == 1
    demos = load_demos(tmp_path / "demos")
    assert demos.arm == "joint"
    index = json.loads((tmp_path / "demos" / "index.json").read_text())
    assert index["state_names"] == list(STATE_NAMES) and index["action_names"] == list(ACTION_NAMES)
    assert index["within_limits"] is True
    episode = demos.episodes[0]
    assert episode.proprio.shape[1] == 9 and episode.actions.shape[1] == 8
    # The first row: the start pose, and a target close to it (one period of the expert's motion).
    with JointSpaceTask("reach-v3", 0) as env:
        env.reset(episode.seed)
        np.testing.assert_allclose(episode.proprio[0], env.proprio(), atol=1e-6)
    assert 0 < np.max(np.abs(episode.actions[:, :7])) < 0.5
    assert set(np.unique(episode.actions[:, 7])) <= {-1.0, 0.0, 0.6, 1.0}  # reach's grab effort
    # Training adds a chunk's arm deltas up from its first row's pose; the gripper is absolute.
    assert episode.relative_actions == tuple(range(7))


def test_in_process_closed_loop_of_a_joint_model(tmp_path: Path) -> None:
    import argparse

    from dysl_ros.bench import closed_loop
    from dysl_ros.tools.demo import make_random_model

    model = make_random_model(tmp_path / "joint_model", joint=True, num_layers=4)
    parser = argparse.ArgumentParser()
    closed_loop.add_arguments(parser)
    args = parser.parse_args(["--model-dir", str(model), "--tasks", "reach-v3", "--episodes", "1", "--workers", "1",
                              "--variants", "dense,dysl", "--max-steps", "12", "--json", "--no-progress",
                              "--motion-plot", str(tmp_path / "motion.png"), "--markdown", str(tmp_path / "r.md")])
    assert closed_loop.run(args) == 0
    text = (tmp_path / "r.md").read_text()
    assert "Joint motion at the arm" in text and "| inprocess | `dysl` |" in text
    assert (tmp_path / "motion.png").stat().st_size > 5000


# ---------------------------------------------------------------------------------- over DDS


def node_command(model_dir: Path, params_file: Path, **extra: Any) -> list[str]:
    params = {
        "model_dir": str(model_dir), "backend": "torch", "autostart": True, "warmup_ticks": 1,
        "control_rate_hz": 20.0, "stream_priority": 0, "max_image_age_ms": 1000.0,
        "state_joint_names": "[" + ",".join(STATE_NAMES) + "]",
        "command_joint_names": "[" + ",".join(ARM_JOINTS) + "]", **extra,
    }
    command = [PYTHON, "-m", "dysl_ros.node.dysl_node", "--ros-args", "--params-file", str(params_file)]
    for key, value in params.items():
        command += ["-p", f"{key}:={str(value).lower() if isinstance(value, bool) else value}"]
    return command + remap_arguments(DEFAULT_TOPICS) + remap_arguments(CONTROLLER_TOPICS)


def bridge_command(arm: str, log: Path, max_steps: int, episodes: int) -> list[str]:
    params = {"arm": arm, "tasks": "[reach-v3]", "episodes_per_task": episodes, "seed": 2000,
              "control_rate_hz": 20.0, "camera_rate_hz": 10.0, "max_steps": max_steps, "policy_timeout_s": 60.0,
              "policy_node": "/dysl_node", "motion_log": str(log), "motion_log_episode": episodes}
    command = [PYTHON, "-m", "dysl_ros.tools.sim_bridge", "--ros-args"]
    for key, value in params.items():
        command += ["-p", f"{key}:={value}"]
    return command + remap_arguments(DEFAULT_TOPICS) + remap_arguments(CONTROLLER_TOPICS)


def run_arm(tmp_path: Path, arm: str, max_steps: int, episodes: int) -> tuple[list[dict[str, Any]], Any, list[Any]]:
    from dysl_ros.tools.demo import arm_params_file, make_random_model

    model = make_random_model(tmp_path / "joint_model", joint=True, num_layers=4)
    params = arm_params_file(tmp_path / "arm.yaml")
    domain = unique_domain_id()
    with ros_session(domain, f"{arm}_probe") as ros:
        results = ros.subscribe(String, "/sim_bridge/episode_result", RESULTS_QOS, lambda m: json.loads(m.data))
        states = ros.subscribe(JointState, DEFAULT_TOPICS["joint_states"], DEEP_BEST_EFFORT,
                               lambda m: (list(m.name), list(m.position), list(m.velocity)))
        with ros_process(node_command(model, params), domain, tmp_path / "node.log"), \
                ros_process(bridge_command(arm, tmp_path / "motion.npz", max_steps, episodes), domain,
                            tmp_path / "bridge.log") as bridge:
            assert results.wait_for(episodes, timeout=90.0), (tmp_path / "bridge.log").read_text()[-3000:]
            bridge.wait(timeout=20.0)
            assert bridge.returncode == 0, (tmp_path / "bridge.log").read_text()[-3000:]
    with np.load(tmp_path / "motion.npz") as data:
        log = {key: data[key] for key in data.files}
    return results.messages, log, states.messages


@pytest.mark.ros
def test_jtc_closed_loop_over_dds(tmp_path: Path) -> None:
    """Two short episodes of reach through the joint trajectory controller: the node's trajectories are
    accepted and followed at 500 Hz within the arm's limits, across the episode boundary (deactivate,
    reset, activate), and the joint states carry names, positions and velocities."""
    max_steps = 30
    results, log, states = run_arm(tmp_path, "jtc", max_steps, episodes=2)
    for result in results:
        assert result["arm"] == "jtc" and result["error"] is None
        assert result["steps"] == max_steps or result["success"]
        assert result["trajectories_rejected"] == 0 and result["nonfinite_commands"] == 0
        motion = result["motion"]
        assert motion["position_hits"] == motion["velocity_hits"] == motion["nonfinite"] == 0, motion
        assert motion["tracking_error_max"] < 0.05, motion
    # The second episode's log: the controller followed several trajectories, every setpoint within
    # the position and velocity limits, and no hand-off jumped more than v_max times a control period.
    from dysl_ros.sim.joint_log import report

    assert log["handoff_indices"].size >= 3
    assert np.ptp(log["setpoint_positions"], axis=0).max() > 1e-3  # the arm moved
    period_s = np.median(np.diff(log["time_ns"])) * 1e-9
    assert period_s == pytest.approx(1 / 500)
    motion = report(log, sawyer.motion_limits(), handoff_period_s=CONTROL_PERIOD_S)
    for joint in motion.joints:
        assert joint.handoffs_over_bound == 0 and joint.position_hits == 0 and joint.velocity_hits == 0, joint
    names, positions, velocities = states[-1]
    assert names == list(STATE_NAMES) and len(positions) == len(velocities) == len(STATE_NAMES)


@pytest.mark.ros
def test_forward_closed_loop_over_dds(tmp_path: Path) -> None:
    """One short episode through the forward position controller: ~/commands reach the servos."""
    results, log, _states = run_arm(tmp_path, "forward", 30, episodes=1)
    (result,) = results
    assert result["arm"] == "forward" and result["error"] is None and result["commands_rejected"] == 0
    assert result["motion"]["position_hits"] == 0 and result["motion"]["nonfinite"] == 0
    assert log["handoff_indices"].size >= 5  # commands arrived (one each control period)
    assert np.ptp(log["setpoint_positions"], axis=0).max() > 1e-3


def test_demonstrations_within_limits_move_as_the_arm_can() -> None:
    """The expert's inverse kinematics drives button-press-topdown's press at several times the
    Sawyer's joint speeds; recorded within the limits, the labelled targets move within the velocity
    and acceleration limits (finite differences at the control period) and the expert still succeeds."""
    from dysl_ros.training.demos import record_joint_episode, sawyer_limiter

    velocity, acceleration = np.asarray(sawyer.VELOCITY), np.asarray(sawyer.ACCELERATION)
    task = "button-press-topdown-v3"
    with JointSpaceTask(task, 0, 32, max_steps=200, post_success_steps=0) as env:
        free = record_joint_episode(env, 1000, "press the button")
        limited = record_joint_episode(env, 1000, "press the button", limiter=sawyer_limiter())
    for episode in (free, limited):
        assert episode.succeeded
    speeds = []
    for episode in (free, limited):
        targets = episode.proprio[:, :7].astype(np.float64) + episode.actions[:, :7]
        v = np.diff(targets, axis=0) / CONTROL_PERIOD_S
        speeds.append(np.max(np.abs(v) / velocity))
        if episode is limited:
            assert np.all(np.abs(v) <= velocity * (1 + 1e-4))
            assert np.all(np.abs(np.diff(v, axis=0)) / CONTROL_PERIOD_S <= acceleration * (1 + 1e-4))
    assert speeds[0] > 1.5  # what the unlimited expert asks of some joint, in multiples of its limit
