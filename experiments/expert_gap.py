"""A dense policy's closed-loop rollout next to the scripted expert: what it does and what the expert
would do in the very state it reached.

    .venv/bin/python experiments/expert_gap.py --model-dir models/reference --task peg-insert-side-v3 --episodes 2

Every --every steps it prints the hand position, the policy's action and the expert's action for the
same state (Meta-World's experts read the state vector, so they can be asked anywhere). The episodes
are those of ``dysl_bench closed-loop`` (same seeds, instructions and goal marker), re-planned every 4
actions. This is how the mean-action failure (the first action ignoring the goal) and peg-insert's
"keeps pressing down where the expert lifts" were found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dysl_ros.model.spec import Observation
from dysl_ros.mt10.env import make_env, model_goal_marker_radius
from dysl_ros.mt10.tasks import episode_seed, pick_instruction
from dysl_ros.policy import PolicyOptions, load_policy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/reference"))
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--execute-steps", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=120)
    parser.add_argument("--every", type=int, default=8, help="print every this many steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(args.model_dir, PolicyOptions(dense=True))
    env = make_env(args.task, 0, policy.config.image_size, max_steps=args.max_steps, post_success_steps=0,
                   goal_marker_radius=model_goal_marker_radius(args.model_dir))
    np.set_printoptions(precision=2, suppress=True)
    for episode in range(args.episodes):
        seed = episode_seed(args.seed, args.task, episode)
        instruction = pick_instruction(args.task, seed)
        obs = env.reset(seed)
        policy.reset()
        print(f"episode {episode} (seed {seed}, {instruction!r}): hand {obs[:3]}, object {obs[4:7]}, goal {obs[36:39]}")
        step, done = 0, False
        while not done:
            chunk = policy.predict_action_chunk(Observation(env.render(), instruction, env.proprio(obs)),
                                         slice(0, args.execute_steps)).actions
            for action in chunk[: args.execute_steps]:
                if step % args.every == 0:
                    expert = env.expert_action(obs)
                    print(f"  t {step:3d}  hand {obs[:3]}  policy {np.asarray(action)}  expert {expert}")
                obs, _success, done = env.step(action)
                step += 1
                if done:
                    break
        print(f"  success: {env.succeeded}")
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
