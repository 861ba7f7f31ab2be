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
  took the newest ~/joint_states at 100 Hz).

    python experiments/joint_latency.py --tasks pick-place-v3 --episodes 10 --latency 0,2 --replan 4,2
    python experiments/joint_latency.py --latency 2 --replan 2 --state-at-arrival
"""

from __future__ import annotations

import argparse
import itertools
from collections import deque
from typing import Any

import numpy as np


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def run_episode(policy: Any, joint: Any, env: Any, task: str, seed: int, latency: int, replan: int,
                gripper_lag: int, state_at_arrival: bool) -> bool:
    from dysl_ros.model.spec import Observation
    from dysl_ros.mt10.tasks import INSTRUCTIONS

    obs = env.reset(seed)
    policy.reset()
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
        if chunk is None or t - stamp >= len(chunk):
            values = np.append(env.setpoint, grippers[-1])  # nothing to run yet: hold
        else:
            values = chunk[t - stamp].copy()
        grippers.append(float(values[7]))
        values[7] = grippers[0]
        obs, _, done = joint.step(env, values, log)
        t += 1
    return bool(env.succeeded)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/reference_joint")
    p.add_argument("--tasks", default="pick-place-v3", help="comma-separated MT10 tasks")
    p.add_argument("--episodes", type=int, default=10, help="per task and setting")
    p.add_argument("--seed", type=int, default=2000, help="run seed (episode_seed; 2000: validation)")
    p.add_argument("--latency", default="0,2", help="comma-separated: control periods from image to chunk")
    p.add_argument("--replan", default="4,2", help="comma-separated: control periods between images")
    p.add_argument("--gripper-lag", default="0", help="comma-separated: periods the gripper lags the arm")
    p.add_argument("--state-at-arrival", action="store_true",
                   help="joint state and integration base from when the chunk arrives, not the image's moment")
    args = p.parse_args()

    from dysl_ros.bench.joint_motion import JointExecution
    from dysl_ros.mt10.joint_env import JointSpaceTask
    from dysl_ros.mt10.tasks import episode_seed
    from dysl_ros.policy import PolicyOptions, load_policy

    policy = load_policy(args.model_dir, PolicyOptions(backend="onnxruntime", dense=True))
    joint = JointExecution(policy.spec)
    for task in args.tasks.split(","):
        env = JointSpaceTask(task, 0, policy.spec.cameras[0].height, max_steps=200, post_success_steps=0,
                             goal_marker_radius=0.04)
        for latency, replan, lag in itertools.product(ints(args.latency), ints(args.replan), ints(args.gripper_lag)):
            wins = [run_episode(policy, joint, env, task, episode_seed(args.seed, task, e), latency, replan, lag,
                                args.state_at_arrival) for e in range(args.episodes)]
            print(f"{task} latency {latency} replan {replan} gripper-lag {lag} state-at-arrival "
                  f"{args.state_at_arrival}: {sum(wins)}/{len(wins)} {''.join('x' if w else '.' for w in wins)}",
                  flush=True)


if __name__ == "__main__":
    main()
