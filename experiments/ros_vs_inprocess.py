#!/usr/bin/env python3
"""Closed loop over ROS 2 against the in-process benchmark, on the same episodes.

1. ``python -m dysl_ros.tools.demo`` (``sim_bridge`` + ``dysl_node`` as separate processes, real DDS,
   real time by default) runs the episodes of run seed ``--seed``;
2. ``dysl_bench closed-loop`` runs the same episodes (same environment seeds and instructions) in one
   process, same backend, re-planning every ``--execute-steps`` actions;
3. prints success per task for both and the difference, writes ``<out>/comparison.md`` and ``.json``.

    .venv/bin/python experiments/ros_vs_inprocess.py --model-dir models/reference --tasks all \\
        --episodes-per-task 5 --out out/ros_vs_inprocess

The two loops are not identical by design: over ROS the sim advances in real time while the node
infers, the camera runs at its own rate and the node re-plans on its threshold; in process every
tick sees the current frame. The difference measures what real-time serving costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def last_json(command: list[str], what: str) -> dict[str, Any]:
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{what} failed with exit status {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/reference")
    p.add_argument("--tasks", default="all")
    p.add_argument("--episodes-per-task", type=int, default=5)
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--dense", action="store_true", help="compare the dense baseline instead of DySL")
    p.add_argument("--mode", choices=("real_time", "lockstep"), default="real_time")
    p.add_argument("--control-rate-hz", type=float, default=20.0)
    p.add_argument("--camera-rate-hz", type=float, default=10.0)
    p.add_argument("--execute-steps", type=int, default=4, help="in-process (and lockstep) re-plan interval")
    p.add_argument("--out", type=Path, default=Path("out/ros_vs_inprocess"))
    args = p.parse_args()

    ros = last_json([
        sys.executable, "-m", "dysl_ros.tools.demo", "--model-dir", args.model_dir, "--tasks", args.tasks,
        "--episodes-per-task", str(args.episodes_per_task), "--seed", str(args.seed), "--mode", args.mode,
        "--control-rate-hz", str(args.control_rate_hz), "--camera-rate-hz", str(args.camera_rate_hz),
        "--execute-steps", str(args.execute_steps), "--backend", "onnxruntime", "--out", str(args.out / "ros"),
        "--gif-episode", "0", "--json", *(["--dense"] if args.dense else []),
    ], "the ROS closed loop")
    variant = "dense" if args.dense else "dysl"
    bench = last_json([
        sys.executable, "-m", "dysl_ros.tools.bench", "closed-loop", "--model-dir", args.model_dir,
        "--tasks", args.tasks, "--episodes", str(args.episodes_per_task), "--seed", str(args.seed),
        "--variants", variant, "--backend", "onnxruntime", "--execute-steps", str(args.execute_steps),
        "--json", "--no-progress",
    ], "the in-process benchmark")
    in_process = bench["variants"][variant]

    from dysl_ros.mt10.tasks import episode_seed

    differing = [r for r in ros["episodes"] if r["seed"] != episode_seed(args.seed, r["task"], r["episode"])]
    if differing:  # the comparison means something only on the same episodes
        sys.exit(f"{len(differing)} ROS episode(s) ran other seeds than the benchmark's, e.g. {differing[0]}")
    tasks = list(bench["tasks"])
    lines = [
        f"{variant}, {args.episodes_per_task} episode(s) per task, run seed {args.seed}; over ROS: {args.mode}, "
        f"control {args.control_rate_hz:g} Hz, camera {args.camera_rate_hz:g} Hz; in process: re-plan every "
        f"{args.execute_steps} actions; backend onnxruntime; model {args.model_dir}.",
        "",
        "| task | over ROS | in process | difference (points) |",
        "|---|---:|---:|---:|",
    ]
    per_task: dict[str, dict[str, float]] = {}
    for task in tasks:
        mine = [r for r in ros["episodes"] if r["task"] == task]
        ros_rate = sum(bool(r["success"]) for r in mine) / len(mine) if mine else float("nan")
        bench_rate = float(in_process["per_task"][task]["success_rate"])
        per_task[task] = {"ros": ros_rate, "in_process": bench_rate}
        lines.append(f"| {task} | {ros_rate:.0%} | {bench_rate:.0%} | {100 * (ros_rate - bench_rate):+.0f} |")
    ros_rate = float(ros["success_rate"])
    bench_rate = float(in_process["success_rate"])
    lines.append(f"| **all** | **{ros_rate:.1%}** | **{bench_rate:.1%}** | **{100 * (ros_rate - bench_rate):+.1f}** |")
    overall = ros["overall"]

    def figure(key: str) -> str:
        value = overall.get(key)
        return "n/a" if value is None else f"{float(value):.2f}"

    lines += [
        "",
        f"Over ROS: {ros['episodes_run']} episodes in {float(ros['wall_time_s']):.0f} s; tick p50/p99 "
        f"{figure('tick_ms_p50')} / {figure('tick_ms_p99')} ms; executed layers {figure('executed_layers_mean')}; "
        f"action period jitter p99 at the launcher's subscriber {figure('jitter_p99_ms')} ms. "
        f"In process: executed layers {in_process['mean_executed_layers']:.2f}.",
    ]
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.md").write_text(table)
    (args.out / "comparison.json").write_text(json.dumps({
        "variant": variant, "seed": args.seed, "episodes_per_task": args.episodes_per_task,
        "ros_success_rate": ros_rate, "in_process_success_rate": bench_rate,
        "difference_points": 100 * (ros_rate - bench_rate), "per_task": per_task,
        "ros": {k: ros[k] for k in ("mode", "control_rate_hz", "camera_rate_hz", "wall_time_s", "overall")},
    }, indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
