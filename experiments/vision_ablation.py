"""Does a policy read where the goal is? A small, quick BC ablation on reach and push.

Every reach or push episode starts from the same hand pose, so the expert's first action depends on
the image alone (where the goal, or the puck, is). A small reference-shaped VLA (the shipped config
with fewer layers) is trained on the reach and push episodes of the given demonstrations, then its
first action on held-out episodes is compared with the expert's at t = 0 and t = 10: correlation of
dx and dz, and mean |error| of dx, dy, dz. Run it once per setting, e.g.

    .venv/bin/dysl_train demos --out data/heldout_2000 --tasks reach-v3,push-v3 --episodes-per-task 20 \\
        --seed 2000 --goal-marker-radius 0.04
    .venv/bin/python experiments/vision_ablation.py --demos data/demos_g4,data/demos_hard_g4 \\
        --heldout data/heldout_2000 --augment-shift 4 --scene-loss-weight 0.5

About two minutes per setting on one CPU thread (800 steps, batch 32, 4 layers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from dysl_ros.model.spec import Observation, VLAConfig, preprocess
from dysl_ros.training import bc
from dysl_ros.training.demos import load_demo_dirs
from dysl_ros.training.settings import BCSettings

TASKS = ("reach-v3", "push-v3")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", required=True, help="training demonstrations (with states for the scene loss)")
    parser.add_argument("--heldout", required=True, help="held-out demonstrations of reach and push")
    parser.add_argument("--config", type=Path, default=Path("models/reference/vla_config.json"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--augment-shift", type=int, default=0)
    parser.add_argument("--scene-loss-weight", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = VLAConfig.from_dict({**json.loads(args.config.read_text()), "num_layers": args.layers})
    train = [e for e in load_demo_dirs(args.demos).episodes if e.task in TASKS]
    settings = BCSettings(
        steps=args.steps, batch_size=32, lr=1e-3, device="cpu", seed=args.seed, augment_shift=args.augment_shift,
        scene_loss_weight=args.scene_loss_weight, log_every=100,
    )
    model = bc.train_bc(train, config, settings)
    held = load_demo_dirs(args.heldout).episodes
    print(f"augment_shift {args.augment_shift}, scene_loss_weight {args.scene_loss_weight}, {args.layers} layers, "
          f"{args.steps} steps, {len(train)} training episodes")
    for task in TASKS:
        episodes = [e for e in held if e.task == task]
        for t in (0, 10):
            predicted, expert = [], []
            for e in episodes:
                inputs = preprocess(model.config, Observation(e.images[t], e.instruction, e.proprio[t]))
                with torch.no_grad():
                    chunk = model(*(torch.from_numpy(inputs[k]) for k in ("image", "instruction", "proprio")))
                predicted.append(chunk[0, 0, :3].numpy())
                expert.append(e.actions[t, :3])
            p, x = np.asarray(predicted), np.asarray(expert)
            corr = [float(np.corrcoef(p[:, i], x[:, i])[0, 1]) for i in (0, 2)]
            error = np.abs(p - x).mean(axis=0)
            print(f"  {task:<9} t={t:<3} corr dx {corr[0]:5.2f}  dz {corr[1]:5.2f}   "
                  f"|error| dx/dy/dz {error[0]:.2f} {error[1]:.2f} {error[2]:.2f}   ({len(episodes)} episodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
