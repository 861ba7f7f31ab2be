#!/usr/bin/env python3
"""The bring-your-own-model path end to end on a ~100M-parameter random Qwen2-shaped VLA, with the
wall time and peak memory of every step.

    .venv/bin/python scripts/byom_pipeline.py --out out/byom [--layers 16 --hidden 640] [--json]

Steps, each its own process (its peak RSS from wait4): write a random fp16 Qwen2 checkpoint, a
two-camera LeRobot v3.0 dataset of random episodes (8-D state, 7-D actions), ``dysl_train import``
(built-in patch_embed / query_head, fp16), ``dysl_train calibrate`` and ``distill`` (a handful of
steps: the point is the path and its memory, not the modules' quality), ``build_engines``
(onnxruntime) and ``dysl_bench offline``. The export's peak RSS is compared with an idle process
that has imported torch and with the model's fp16 size (the bound: 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CAMERAS = {"front": (96, 128), "wrist": (64, 80)}
STATE_DIM, ACTION_DIM, HORIZON = 8, 7, 10


def run(name: str, command: list[str], log_dir: Path) -> dict[str, Any]:
    """Run ``command``; its wall time and peak RSS (MiB), from the kernel's accounting of that child."""
    log = log_dir / f"{name}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=os.environ.copy())
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    row = {"step": name, "wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit": code}
    print(f"{name:<12} {row['wall_s']:>7.1f} s  {row['peak_rss_mib']:>8.1f} MiB  exit {code}", file=sys.stderr)
    if code != 0:
        sys.stderr.write(log.read_text()[-3000:])
        raise SystemExit(f"step {name} failed (exit {code}); log: {log}")
    return row


def python(code: str) -> list[str]:
    return [str(BIN / "python"), "-c", textwrap.dedent(code)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/byom"), help="working directory (default out/byom)")
    parser.add_argument("--layers", type=int, default=16, help="decoder layers (default 16)")
    parser.add_argument("--hidden", type=int, default=640, help="hidden size (default 640)")
    parser.add_argument("--episodes", type=int, default=4, help="dataset episodes (default 4)")
    parser.add_argument("--frames", type=int, default=40, help="frames per episode (default 40)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, dataset, model = out / "checkpoint", out / "dataset", out / "model"
    engines = model / "engines"  # where the node and dysl_bench look for them
    rows = [run("idle_torch", python("import torch"), out)]

    rows.append(run("checkpoint", python(f"""
        import torch
        from transformers import Qwen2Config, Qwen2Model
        torch.manual_seed(0)
        config = Qwen2Config(hidden_size={args.hidden}, intermediate_size={4 * args.hidden},
                             num_hidden_layers={args.layers}, num_attention_heads={args.hidden // 64},
                             num_key_value_heads=2, vocab_size=1024, max_position_embeddings=512)
        model = Qwen2Model(config).to(torch.float16)
        model.save_pretrained("{checkpoint}", safe_serialization=True)
        print(sum(p.numel() for p in model.layers.parameters()), "decoder-layer parameters")
    """), out))

    rows.append(run("dataset", python(f"""
        import numpy as np
        from dysl_ros.training.lerobot_dataset import RecordedEpisode
        from dysl_ros.training.lerobot_writer import write_lerobot_dataset
        rng = np.random.default_rng(0)
        cameras = {CAMERAS!r}
        episodes = []
        for index in range({args.episodes}):
            t = np.linspace(0, 1, {args.frames}, dtype=np.float32)[:, None]
            images = {{name: rng.integers(0, 256, ({args.frames}, h, w, 3), dtype=np.uint8)
                      for name, (h, w) in cameras.items()}}
            state = np.sin(t * np.arange(1, {STATE_DIM + 1}, dtype=np.float32) + index).astype(np.float32)
            actions = (0.1 * np.cos(t * np.arange(1, {ACTION_DIM + 1}, dtype=np.float32))).astype(np.float32)
            episodes.append(RecordedEpisode(index, "put the block in the bowl", images, state, actions, 10.0))
        write_lerobot_dataset("{dataset}", episodes, fps=10.0, codec="h264")
    """), out))

    spec = out / "observation_spec.yaml"
    cameras = "\n".join(
        f"  - {{name: {n}, height: {h}, width: {w}, channels: 3, fit: letterbox}}" for n, (h, w) in CAMERAS.items()
    )
    spec.write_text(
        f"cameras:\n{cameras}\n"
        f"state:\n  names: [{', '.join(f's{i}' for i in range(STATE_DIM))}]\n"
        f"actions:\n  names: [{', '.join(f'a{i}' for i in range(ACTION_DIM))}]\n  horizon: {HORIZON}\n"
        "  normalisation: {kind: min_max, min: [" + ", ".join(["-0.2"] * ACTION_DIM) + "], max: ["
        + ", ".join(["0.2"] * ACTION_DIM) + "]}\n  semantics: joint_position_deltas\n"
        "tokenizer: {kind: bytes, length: 32}\n"
    )
    rows.append(run("import", [
        str(BIN / "dysl_train"), "import", "--decoder", str(checkpoint), "--spec", str(spec), "--out", str(model),
        "--embed", "dysl_ros.model.parts:patch_embed", "--embed-kwargs", '{"patch": 16}',
        "--head", "dysl_ros.model.parts:query_head", "--dtype", "float16",
    ], out))
    rows.append(run("calibrate", [
        str(BIN / "dysl_train"), "calibrate", "--model-dir", str(model), "--demos", str(dataset),
        "--batches", "2", "--batch-size", "4",
    ], out))
    rows.append(run("distill", [
        str(BIN / "dysl_train"), "distill", "--model-dir", str(model), "--demos", str(dataset),
        "--stage1-steps", "3", "--stage2-steps", "3", "--batch-size", "4",
    ], out))
    rows.append(run("build_engines", [
        str(BIN / "build_engines"), "--model-dir", str(model), "--out", str(engines), "--force",
    ], out))
    rows.append(run("bench_offline", [
        str(BIN / "dysl_bench"), "offline", "--model-dir", str(model), "--demos", str(dataset),
        "--backend", "onnxruntime", "--episodes", "2", "--oracle-tolerance", "0.05",
        "--variants", "dense,dysl,random_skip,oracle_exit", "--json", "--no-progress",
    ], out))

    weights = [*model.glob("*.safetensors"), *(model / "decoder").glob("*.safetensors")]
    fp16_mib = sum(f.stat().st_size for f in weights) / 2**20  # stored in fp16: the model's fp16 size
    steps = {row["step"]: row for row in rows}
    export_above_idle = steps["build_engines"]["peak_rss_mib"] - steps["idle_torch"]["peak_rss_mib"]
    summary = {
        "layers": args.layers,
        "hidden": args.hidden,
        "model_fp16_mib": round(fp16_mib, 1),
        "export_peak_above_idle_mib": round(export_above_idle, 1),
        "export_ratio_to_fp16": round(export_above_idle / fp16_mib, 2),
        "bound": 1.5,
        "steps": rows,
    }
    print(
        f"model fp16 {fp16_mib:.1f} MiB; export peak {export_above_idle:.1f} MiB above an idle torch process "
        f"= {export_above_idle / fp16_mib:.2f}x (bound 1.5x)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
