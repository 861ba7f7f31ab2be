"""sim_bridge: Meta-World as a ROS 2 robot, run as its own process and talked to over DDS.

(a) lockstep: sim_bridge + dysl_node (tiny random model) close the loop and report the episode;
(b) real_time: the bridge steps at its control rate and applies the latest ~/action;
(c) bad parameters are clear startup errors. Plus the episode plan and the demo's report helpers.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from model_fixture import make_model_dir
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import PYTHON, REPO, ros_env, ros_process, ros_session, unique_domain_id
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dysl_ros.mt10.tasks import episode_seed, pick_instruction
from dysl_ros.sim.params import BridgeConfigError, BridgeParams
from dysl_ros.wiring import DEFAULT_TOPICS as TOPICS  # the launcher's wiring: the same topic names
from dysl_ros.wiring import remap_arguments

pytestmark = pytest.mark.ros

RESULT_TOPIC = "/sim_bridge/episode_result"
DEEP_BEST_EFFORT = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
DEEP_RELIABLE = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
RESULTS_QOS = QoSProfile(
    depth=100,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def ros_args(params: dict[str, Any]) -> list[str]:
    args = []
    for key, value in params.items():
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, list):
            text = "[" + ",".join(map(str, value)) + "]"
        else:
            text = str(value)
        args += ["-p", f"{key}:={text}"]
    return args


def bridge_command(**params: Any) -> list[str]:
    return [PYTHON, "-m", "dysl_ros.tools.sim_bridge", "--ros-args", *ros_args(params), *remap_arguments()]


def stamp_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# ---------------------------------------------------------------------------------- no ROS


def test_episode_plan_uses_the_demos_seed_derivation() -> None:
    from dysl_ros.sim.bridge import episode_plan

    params = BridgeParams.from_values({"tasks": ["push-v3", "reach-v3"], "episodes_per_task": 2, "seed": 2000})
    plan = episode_plan(params)
    assert [(e.task, e.episode) for e in plan] == [("reach-v3", 0), ("reach-v3", 1), ("push-v3", 0), ("push-v3", 1)]
    for e in plan:
        assert e.seed == episode_seed(2000, e.task, e.episode)
        assert e.instruction == pick_instruction(e.task, e.seed)
    assert len({e.seed for e in plan}) == 4


def test_parameter_validation_names_every_problem() -> None:
    with pytest.raises(BridgeConfigError) as info:
        BridgeParams.from_values(
            {"mode": "fast", "tasks": ["reach-v3", "fly-v3"], "seed": 2**32, "camera_rate_hz": 60.0,
             "control_rate_hz": 50, "execute_steps": 0, "wait_for_policy": "yes", "goal_marker_radius": -0.04}
        )
    text = str(info.value)
    for expected in ("mode must be one of", "unknown task(s) ['fly-v3']", "seed must be an integer",
                     "camera_rate_hz (60.0) must not exceed control_rate_hz (50)", "execute_steps must be an integer",
                     "wait_for_policy must be true or false", "goal_marker_radius must be in [0, 0.2] metres"):
        assert expected in text
    params = BridgeParams.from_values({"tasks": ["all"], "control_rate_hz": 20, "camera_rate_hz": 10})
    assert params.control_rate_hz == 20.0 and len(params.tasks) == 10
    assert params.goal_marker_radius is None  # 0 in the parameter: Meta-World's own marker
    assert BridgeParams.from_values({"goal_marker_radius": 0.04}).goal_marker_radius == 0.04


def test_params_file_documents_exactly_the_declared_parameters() -> None:
    import yaml

    from dysl_ros.sim.params import PARAMETERS

    text = (REPO / "config" / "sim_bridge.yaml").read_text()
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert set(values) == {spec.name for spec in PARAMETERS}
    # The file's values are the declared defaults, so running with or without it is the same.
    assert BridgeParams.from_values(values) == BridgeParams.from_values({})


def test_report_writes_gif_and_plot(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from dysl_ros.sim.report import Tick, episode_figures, write_gif, write_plot

    result = {"task": "reach-v3", "seed": 1, "success": True, "steps": 3, "start_stamp": 100.0,
              "first_step_stamp": 100.05, "end_stamp": 100.3}
    ticks = [
        Tick.from_values({"image_stamp": f"{100.0 + 0.1 * i:.9f}", "tick_ms": str(5 + i), "executed_layers": str(6 + i),
                          "layer_evaluations": str(6 + i), "continuity": str(-0.1 * i), "delta": "0",
                          "allow_points": "1,5", "verified": "false", "reran": "false"})
        for i in range(3)
    ]
    assert ticks[1].allow_points == (1, 5) and ticks[2].executed_layers == 8.0
    frames = [(100.0 + 0.1 * i, np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(3)]
    assert write_gif(tmp_path / "e.gif", frames, ticks, result, 10, 10.0) == 3
    with PILImage.open(tmp_path / "e.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (48, 48)
    write_plot(tmp_path / "p.png", ticks, [result], 10, "test")
    assert (tmp_path / "p.png").stat().st_size > 1000
    # Actions every 50 ms with one 80 ms gap: p99 of the periods minus the nominal 50 ms.
    times = [100.05 + 0.05 * i for i in range(5)] + [100.31]
    times[3] += 0.03
    fig = episode_figures(ticks, times, result, 20.0)
    assert fig.ticks == 3 and fig.tick_ms_p50 == 6.0
    assert fig.actions_received == 5  # the one after end_stamp is not this episode's
    assert fig.jitter_p99_ms == pytest.approx(np.percentile([50, 50, 80, 20], 99) - 50.0, abs=1e-6)


# ---------------------------------------------------------------------------------- over ROS


def test_bad_parameters_are_a_clear_startup_error(tmp_path: Path) -> None:
    command = bridge_command(mode="sideways", control_rate_hz=-1.0, tasks=["nope-v3"], episodes_per_task=0,
                             min_image_subscribers=0)
    done = subprocess.run(command, env=ros_env(unique_domain_id()), capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    output = done.stdout + done.stderr
    (tmp_path / "bad.log").write_text(output)
    assert done.returncode == 1, output
    for expected in ("invalid sim_bridge parameters", "mode must be one of ('real_time', 'lockstep'), got 'sideways'",
                     "control_rate_hz must lie in (0, 1000], got -1", "unknown task(s) ['nope-v3']",
                     "episodes_per_task must be an integer >= 1, got 0",
                     "min_image_subscribers must be an integer in [1, 64], got 0"):
        assert expected in output
    assert "episode" not in output.split("invalid sim_bridge parameters")[0]  # nothing ran before the error


def test_lockstep_episode_with_dysl_node(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "tiny")
    domain = unique_domain_id()
    node = [PYTHON, "-m", "dysl_ros.node.dysl_node", "--ros-args",
            *ros_args({"model_dir": str(model_dir), "backend": "torch", "autostart": True, "warmup_ticks": 1}),
            *remap_arguments()]
    max_steps, execute = 22, 4
    bridge = bridge_command(mode="lockstep", tasks=["reach-v3"], episodes_per_task=1, seed=2000,
                            max_steps=max_steps, execute_steps=execute, policy_timeout_s=60.0,
                            min_image_subscribers=2)  # the node and this probe, which must see the first image
    with ros_session(domain, "lockstep_probe") as ros:
        images = ros.subscribe(Image, TOPICS["image"], DEEP_BEST_EFFORT, lambda m: stamp_ns(m.header.stamp))
        states = ros.subscribe(JointState, TOPICS["joint_states"], DEEP_BEST_EFFORT,
                               lambda m: (stamp_ns(m.header.stamp), list(m.position), list(m.name)))
        chunks = ros.subscribe(JointTrajectory, TOPICS["action_chunk"], DEEP_RELIABLE,
                               lambda m: stamp_ns(m.header.stamp))
        results = ros.subscribe(String, RESULT_TOPIC, RESULTS_QOS, lambda m: json.loads(m.data))
        instructions = ros.subscribe(String, TOPICS["instruction"], RESULTS_QOS, lambda m: m.data)
        with ros_process(node, domain, tmp_path / "node.log"):
            # The bridge waits for the probe's image subscription, not for the probe to be matched with
            # the node's chunk publisher: a lockstep episode of 22 steps can be over before that match
            # on a loaded CPU, and the probe would count none of its chunks (seen in CI).
            assert ros.wait_until(lambda: chunks.subscription.get_publisher_count() >= 1, timeout=60.0), (
                (tmp_path / "node.log").read_text()[-3000:]
            )
            with ros_process(bridge, domain, tmp_path / "bridge.log") as bridge_proc:
                assert results.wait_for(1, timeout=90.0), (tmp_path / "bridge.log").read_text()[-3000:]
                bridge_proc.wait(timeout=20.0)
                assert bridge_proc.returncode == 0  # on_finish: exit
    result = results.messages[0]
    seed = episode_seed(2000, "reach-v3", 0)
    assert (result["task"], result["seed"], result["mode"], result["error"]) == ("reach-v3", seed, "lockstep", None)
    assert result["instruction"] == pick_instruction("reach-v3", seed) == instructions.messages[-1]
    assert 0 < result["steps"] <= max_steps
    if not result["success"]:
        assert result["steps"] == max_steps
    # One chunk per image, each executed for `execute` steps (the last maybe fewer).
    assert result["chunks_executed"] == math.ceil(result["steps"] / execute)
    assert result["chunks_received"] >= result["chunks_executed"]
    published = set(images.messages)
    answered = [s for s in chunks.messages if s in published]
    assert set(chunks.messages) <= published, "a chunk carried a stamp of no published image"
    assert len(set(answered)) >= result["chunks_executed"], (
        f"the probe saw {len(published)} images and {len(chunks)} chunks for {result['chunks_executed']} executed"
    )
    assert result["start_stamp"] * 1e9 == pytest.approx(min(published), abs=1e3)
    # Each image went out with the joint state of the same simulated state (same stamp), hand xyz + gripper.
    state_stamps = {s for s, _, _ in states.messages}
    assert published <= state_stamps
    _, first_position, names = min(states.messages)
    assert names == ["hand_x", "hand_y", "hand_z", "gripper"]
    assert len(first_position) == 4 and 0.3 < first_position[1] < 1.0  # Sawyer's hand starts in front of it


def test_real_time_steps_at_control_rate_and_applies_latest_action(tmp_path: Path) -> None:
    rate, steps = 20.0, 40
    domain = unique_domain_id()
    bridge = bridge_command(mode="real_time", tasks=["reach-v3"], episodes_per_task=1, control_rate_hz=rate,
                            camera_rate_hz=10.0, max_steps=steps, post_success_steps=steps,
                            on_missing_action="hold", policy_timeout_s=60.0)
    # A constant-action controller at twice the control rate, in a process of its own (action_streamer.py
    # says why); each line written to it replaces the action.
    times_file = tmp_path / "publish_times.txt"
    streamer = [PYTHON, str(REPO / "test" / "action_streamer.py"), "--topic", TOPICS["action"],
                "--rate", str(2 * rate), "--times", str(times_file)]
    up, left = [0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]
    with ros_session(domain, "real_time_probe") as ros:
        images = ros.subscribe(Image, TOPICS["image"], DEEP_BEST_EFFORT, lambda m: m.header.stamp)
        states = ros.subscribe(JointState, TOPICS["joint_states"], DEEP_BEST_EFFORT,
                               lambda m: (stamp_ns(m.header.stamp), list(m.position)))
        results = ros.subscribe(String, RESULT_TOPIC, RESULTS_QOS, lambda m: json.loads(m.data))
        chunk_pub = ros.publisher(JointTrajectory, TOPICS["action_chunk"], DEEP_RELIABLE)
        with ros_process(bridge, domain, tmp_path / "bridge.log"), \
                ros_process(streamer, domain, tmp_path / "streamer.log", stdin=subprocess.PIPE) as controller:
            assert controller.stdin is not None
            assert images.wait_for(1, timeout=60.0), (tmp_path / "bridge.log").read_text()[-3000:]
            # Image and joint states are separate best-effort topics: have one of each before looking.
            assert states.wait_for(1, timeout=10.0), (tmp_path / "bridge.log").read_text()[-3000:]
            still = [p for _, p in states.messages]
            controller.stdin.write(json.dumps(up).encode() + b"\n")
            controller.stdin.flush()
            time.sleep(0.5)
            # wait_for_policy: actions alone do not start the episode, a chunk for its image does.
            assert all(np.allclose(p, still[0]) for _, p in states.messages), "stepped before the policy answered"
            chunk = JointTrajectory(joint_names=["hand_dx", "hand_dy", "hand_dz", "gripper"])
            chunk.header.stamp = images.messages[-1]
            chunk.points = [JointTrajectoryPoint(positions=up)]
            chunk_pub.publish(chunk)
            assert ros.wait_until(lambda: len(moving(states.messages, still[0])) >= 16, timeout=30.0)
            controller.stdin.write(json.dumps(left).encode() + b"\n")
            controller.stdin.flush()
            switch = len(states.messages)
            assert results.wait_for(1, timeout=30.0), (tmp_path / "bridge.log").read_text()[-3000:]
    result = results.messages[0]
    assert result["error"] is None and result["steps"] == steps
    assert result["actions_applied"] + result["actions_missing"] == steps
    # The control rate: step stamps come one period apart (the bridge's clock, not DDS delivery); a
    # step the loaded machine made late by more than a period is counted, not made up by a burst.
    step_states = moving(states.messages, still[0])
    stamps = np.asarray([s for s, _ in step_states], dtype=np.float64) * 1e-9
    assert (stamps[-1] - stamps[0]) == pytest.approx((len(stamps) - 1 + result["late_steps"]) / rate, rel=0.25)
    # The latest action is applied: a step counts as applied when an action arrived since the one
    # before. Relative to what the controller process really sent: the steps whose period saw a publish
    # at least 10 ms (DDS delivery) before the step.
    sent = np.asarray([float(t) for t in times_file.read_text().split()])
    served = sum(bool(np.any((sent > a) & (sent <= b - 0.010))) for a, b in itertools.pairwise(stamps))
    assert served >= 0.5 * steps, f"the controller process itself sent in only {served} of {steps} periods"
    assert result["actions_applied"] >= 0.9 * served, (result, served)
    # Direction: +z while "up" was streamed (x, y barely move), then -x once "left" was.
    start = np.asarray(still[0])
    at_switch = np.asarray(states.messages[switch - 1][1])
    end = np.asarray(states.messages[-1][1])
    assert at_switch[2] - start[2] > 0.05, (start, at_switch)
    assert abs(at_switch[0] - start[0]) < 0.02 and abs(at_switch[1] - start[1]) < 0.02
    assert end[0] - at_switch[0] < -0.05, (at_switch, end)


def moving(states: list[tuple[int, list[float]]], first: list[float]) -> list[tuple[int, list[float]]]:
    """The joint states from the first one that differs from the still pose on: one per step."""
    for i, (_, position) in enumerate(states):
        if not np.allclose(position, first):
            return states[i:]
    return []
