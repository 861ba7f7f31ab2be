"""Where a dense policy ends up on the free-goal tasks: final and closest distances to the goal.

Diagnoses why reach, push and pick-place fail: a policy that heads for the goal and stops a few
centimetres off (a perception-precision problem) looks different from one that wanders (it does
not see the goal at all). For reach the distance is hand to goal; for push and pick-place object
to goal, and hand to object (did it get the object?). Meta-World's success radius is 5 cm for
reach and push-v3/pick-place-v3 use 5 cm / 7 cm.

    .venv/bin/python experiments/goal_error.py --model-dir models/reference --episodes 10 --seed 2000

The episodes are those of ``dysl_bench closed-loop`` (same seeds, instructions and goal marker),
re-planned every 4 actions. One process, one thread: about a minute for 30 episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dysl_ros.model.spec import Observation
from dysl_ros.mt10.env import make_env, model_goal_marker_radius
from dysl_ros.mt10.tasks import episode_seed, pick_instruction
from dysl_ros.policy import PolicyOptions, load_policy

TASKS = ("reach-v3", "push-v3", "pick-place-v3")
HAND, OBJECT, GOAL = slice(0, 3), slice(4, 7), slice(36, 39)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/reference"))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--execute-steps", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write every episode's figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(args.model_dir, PolicyOptions(dense=True))
    radius = model_goal_marker_radius(args.model_dir)
    window = slice(0, args.execute_steps)
    rows: list[dict[str, Any]] = []
    for task in TASKS:
        env = make_env(task, 0, policy.config.image_size, max_steps=args.max_steps, post_success_steps=0,
                       goal_marker_radius=radius)
        for episode in range(args.episodes):
            seed = episode_seed(args.seed, task, episode)
            instruction = pick_instruction(task, seed)
            obs = env.reset(seed)
            policy.reset()
            start = obs.copy()
            closest_goal = closest_object = np.inf
            done = False
            while not done:
                out = policy.predict_action_chunk(Observation(env.render(), instruction, env.proprio(obs)), window)
                for action in out.actions[: args.execute_steps]:
                    obs, _success, done = env.step(action)
                    mover = HAND if task == "reach-v3" else OBJECT
                    closest_goal = min(closest_goal, float(np.linalg.norm(obs[mover] - obs[GOAL])))
                    closest_object = min(closest_object, float(np.linalg.norm(obs[HAND] - obs[OBJECT])))
                    if done:
                        break
            mover = HAND if task == "reach-v3" else OBJECT
            error = obs[mover] - obs[GOAL]
            rows.append({
                "task": task, "episode": episode, "success": bool(env.succeeded),
                "start_distance": float(np.linalg.norm(start[mover] - start[GOAL])),
                "final_distance": float(np.linalg.norm(error)), "closest_distance": closest_goal,
                "final_error_xyz": [float(v) for v in error],
                "closest_hand_object": closest_object if task != "reach-v3" else None,
            })
        env.close()
    print(f"model {args.model_dir} (goal marker {radius}), seed {args.seed}, {args.episodes} episodes per task")
    print(f"{'task':<15}{'success':>8}{'start':>8}{'closest':>9}{'final':>8}  mean |error| x/y/z (cm)"
          f"{'':>4}hand-object closest")
    for task in TASKS:
        mine = [r for r in rows if r["task"] == task]
        abs_error = np.mean([np.abs(r["final_error_xyz"]) for r in mine], axis=0) * 100
        grip = [r["closest_hand_object"] for r in mine if r["closest_hand_object"] is not None]
        print(
            f"{task:<15}{np.mean([r['success'] for r in mine]):>8.0%}"
            f"{np.median([r['start_distance'] for r in mine]) * 100:>7.1f}c"
            f"{np.median([r['closest_distance'] for r in mine]) * 100:>8.1f}c"
            f"{np.median([r['final_distance'] for r in mine]) * 100:>7.1f}c"
            f"  {abs_error[0]:5.1f} {abs_error[1]:5.1f} {abs_error[2]:5.1f}"
            + (f"{'':>10}{np.median(grip) * 100:5.1f} cm" if grip else "")
        )
    print("(medians over episodes, distances in cm; x: left-right, y: away from the robot, z: up)")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
