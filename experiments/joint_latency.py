"""Which part of the ROS loop cost the joint-space model its success? In process, one knob at a time.

`models/reference_joint` succeeded far less through sim_bridge's controllers over ROS than in process
(pick-place-v3 0/10 against 4/10 on seed 3000). This replays the in-process loop (`JointSpaceTask`,
the node's joint integration, dense, onnxruntime) with the ROS loop's timing put back one knob at a
time:

- `--latency N`: the chunk arrives N control periods after its image (its first actions, whose time
  passed, are dropped as the node's queue drops them);
- `--replan N`: a new image every N periods (2 at the demo's 10 Hz camera and 20 Hz control);
- `--gripper-lag N`: the gripper's command lags the arm's by N periods;
- `--state-at-arrival`: the model's joint state, and the pose its deltas are integrated from, are
  those when the chunk arrives instead of those of the image's moment (what dysl_node did when it
  took the newest ~/joint_states at 100 Hz);
- `--node-plans`: the servos follow dysl_node's plans (``JointOutput``: within the Sawyer's velocity
  and acceleration limits, continuous from chunk to chunk, each starting two periods after its
  chunk arrives), sampled every physics tick as joint_trajectory_controller samples them, instead
  of the straight ramps from target to target; `--limit-scale S` multiplies the velocity and
  acceleration limits.

    python experiments/joint_latency.py --tasks pick-place-v3 --episodes 10 --latency 0,2 --replan 4,2
    python experiments/joint_latency.py --latency 2 --replan 2 --state-at-arrival
    python experiments/joint_latency.py --tasks button-press-topdown-v3 --latency 2 --replan 2 --node-plans
"""

from __future__ import annotations

import argparse
import itertools
from collections import deque
from typing import Any

import numpy as np


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def node_output(limit_scale: float) -> Any:
    """dysl_node's joint planner with the node's defaults (config/dysl.yaml) and the Sawyer's limits."""
    import dataclasses

    from dysl_ros.mt10.joint_env import ARM_JOINTS, CONTROL_PERIOD_S
    from dysl_ros.node.joint_output import JointConfig, JointOutput
    from dysl_ros.sim.sawyer import planner_limits

    arm = planner_limits()
    limits = dataclasses.replace(arm, max_velocity=arm.max_velocity * limit_scale,
                                 max_acceleration=arm.max_acceleration * limit_scale)
    config = JointConfig(ARM_JOINTS, limits.to_dict(), max_step=0.0, commands_are_velocities=False, command_topic="",
                         trajectory_topic="", chunk_stamp="now", max_age_ns=500_000_000, max_tracking_error=0.2)
    return JointOutput(config, round(CONTROL_PERIOD_S * 1e9))


def follow_plans(env: Any, output: Any, gripper: float, log: Any) -> tuple[Any, bool, bool]:
    """One control period of the servos on ``output``'s plans (held where there is none yet)."""
    from dysl_ros.mt10.joint_env import PHYSICS_DT_S, TICKS_PER_PERIOD

    for _ in range(TICKS_PER_PERIOD):
        t_ns = round((env.time_s + PHYSICS_DT_S) * 1e9)
        state = output.state_at(t_ns)
        setpoint = env.setpoint if state is None else state.p
        if round(env.time_s / PHYSICS_DT_S) % 2 == 1:
            log.add(t_ns, setpoint, np.zeros(7) if state is None else state.v, np.zeros(7),
                    env.joint_positions(), env.joint_velocities())
        env.physics_step(setpoint, gripper)
    result: tuple[Any, bool, bool] = env.end_step()
    return result


def run_episode(policy: Any, joint: Any, env: Any, task: str, seed: int, latency: int, replan: int,
                gripper_lag: int, state_at_arrival: bool, output: Any = None, lead: int = 2) -> tuple[bool, int]:
    from dysl_ros.model.spec import Observation
    from dysl_ros.mt10.tasks import INSTRUCTIONS

    obs = env.reset(seed)
    policy.reset()
    if output is not None:
        output.reset()
    log = joint.recorder()
    pending: deque[tuple[int, int, Any]] = deque()  # (step it arrives, its image's step, what the camera saw)
    grippers: deque[float] = deque([0.0] * (gripper_lag + 1), maxlen=gripper_lag + 1)
    chunk, stamp, t, done = None, 0, 0, False
    while not done:
        if t % replan == 0:
            pending.append((t + latency, t, (env.render(), env.proprio(obs), env.joint_positions())))
        while pending and pending[0][0] <= t:
            _, stamp, (image, state, measured) = pending.popleft()
            if state_at_arrival:
                state, measured = env.proprio(obs), env.joint_positions()
            out = policy.predict_action_chunk(Observation(image, INSTRUCTIONS[task][0], state))
            chunk = joint.executable(out.actions, measured)
            if output is not None:
                dt_ns = output.dt_ns
                plan = output.plan_chunk(stamp * dt_ns, chunk[:, :7], measured, (t + lead) * dt_ns, len(chunk))
                if plan is not None:
                    output.adopt(plan, stamp * dt_ns)
        if chunk is None or t - stamp >= len(chunk):
            values = np.append(env.setpoint, grippers[-1])  # nothing to run yet: hold
        else:
            values = chunk[t - stamp].copy()
        grippers.append(float(values[7]))
        values[7] = grippers[0]
        if output is None:
            obs, _, done = joint.step(env, values, log)
        else:
            obs, _, done = follow_plans(env, output, float(values[7]), log)
        t += 1
    return bool(env.succeeded), int(env.steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/reference_joint")
    p.add_argument("--tasks", default="pick-place-v3", help="comma-separated MT10 tasks, or mt10 for all ten")
    p.add_argument("--episodes", type=int, default=10, help="per task and setting")
    p.add_argument("--seed", type=int, default=2000, help="run seed (episode_seed; 2000: validation)")
    p.add_argument("--latency", default="0,2", help="comma-separated: control periods from image to chunk")
    p.add_argument("--replan", default="4,2", help="comma-separated: control periods between images")
    p.add_argument("--gripper-lag", default="0", help="comma-separated: periods the gripper lags the arm")
    p.add_argument("--state-at-arrival", action="store_true",
                   help="joint state and integration base from when the chunk arrives, not the image's moment")
    p.add_argument("--node-plans", action="store_true",
                   help="the servos follow dysl_node's plans within the arm's limits, not straight ramps")
    p.add_argument("--limit-scale", type=float, default=1.0,
                   help="--node-plans: multiply the velocity and acceleration limits by this")
    p.add_argument("--lead", type=int, default=2,
                   help="--node-plans: a plan starts this many periods after its chunk arrives (dysl_node: the "
                   "first period at least one period and the planning allowance ahead, so 2 on this grid)")
    args = p.parse_args()

    from dysl_ros.bench.joint_motion import JointExecution
    from dysl_ros.mt10.joint_env import JointSpaceTask
    from dysl_ros.mt10.tasks import MT10_TASKS, episode_seed
    from dysl_ros.policy import PolicyOptions, load_policy

    policy = load_policy(args.model_dir, PolicyOptions(backend="onnxruntime", dense=True))
    joint = JointExecution(policy.spec)
    output = node_output(args.limit_scale) if args.node_plans else None
    plans = f"node plans (lead {args.lead}, limits x{args.limit_scale:g})" if output is not None else "straight ramps"
    tasks = list(MT10_TASKS) if args.tasks == "mt10" else args.tasks.split(",")
    envs = {task: JointSpaceTask(task, 0, policy.spec.cameras[0].height, max_steps=200, post_success_steps=0,
                                 goal_marker_radius=0.04) for task in tasks}
    for latency, replan, lag in itertools.product(ints(args.latency), ints(args.replan), ints(args.gripper_lag)):
        setting = (f"latency {latency} replan {replan} gripper-lag {lag} state-at-arrival {args.state_at_arrival} "
                   f"{plans}")
        total = 0
        for task in tasks:
            runs = [run_episode(policy, joint, envs[task], task, episode_seed(args.seed, task, e), latency, replan,
                                lag, args.state_at_arrival, output, args.lead) for e in range(args.episodes)]
            wins = [won for won, _ in runs]
            total += sum(wins)
            marks = "".join("x" if w else "." for w in wins)
            steps = [n for won, n in runs if won]
            median = f", median steps to success {int(np.median(steps))}" if steps else ""
            print(f"{task} {setting}: {sum(wins)}/{len(wins)} {marks}{median}", flush=True)
        if len(tasks) > 1:
            print(f"all {len(tasks)} tasks {setting}: {total}/{len(tasks) * args.episodes} "
                  f"({100 * total / (len(tasks) * args.episodes):.1f} %)", flush=True)

if __name__ == "__main__":
    main()
