#!/usr/bin/env python3
"""DySL's speed/accuracy curve on Meta-World MT10: success rate against executed layers.

Runs ``dysl_bench closed-loop`` once for the dense baseline and once per DySL point, every run on the
same episodes (same eval seed), and writes a markdown table, a JSON file and a PNG plot. A point is a
modules directory (a distillation at some lambda: ``dysl_train distill --modules-out``) and,
optionally, an eta overriding its dysl.json (the allow points' threshold).

    .venv/bin/python scripts/speed_accuracy.py --model-dir models/reference \\
        --modules models/reference,models/reference/variants/lambda_0.005 --etas 0,0.05,0.1 \\
        --episodes 5 --out out/bench/speed_accuracy

``--etas 0`` (or leaving it out) means "the modules' own eta". Wall time: one closed-loop run per
point (on 2 cores, about 40 s per 50 episodes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def closed_loop(args: argparse.Namespace, variants: str, extra: list[str]) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "dysl_ros.tools.bench", "closed-loop", "--model-dir", args.model_dir,
        "--tasks", args.tasks, "--episodes", str(args.episodes), "--seed", str(args.seed),
        "--workers", str(args.workers), "--variants", variants, "--json", "--no-progress", *extra,
    ]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"closed-loop failed ({done.returncode}):\n{done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def distill_lambda(modules_dir: str) -> float | None:
    file = Path(modules_dir) / "distill.json"
    if not file.is_file():
        return None
    value = json.loads(file.read_text()).get("lambda")
    return None if value is None else float(value)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/reference")
    p.add_argument("--modules", required=True, help="comma list of DySL modules directories (the points)")
    p.add_argument("--etas", default="0", help="comma list of eta overrides; 0 = the modules' own (default 0)")
    p.add_argument("--tasks", default="all")
    p.add_argument("--episodes", type=int, default=5, help="episodes per task (default 5)")
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="out/bench/speed_accuracy", help="writes <out>.md, <out>.json, <out>.png")
    args = p.parse_args()
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    etas = [float(e) for e in args.etas.split(",") if e.strip()]
    missing = [m for m in modules if not (Path(m) / "dysl_modules.safetensors").is_file()]
    if missing:
        sys.exit(f"no DySL modules in {missing} (dysl_train distill --modules-out DIR)")

    dense_report = closed_loop(args, "dense", [])
    dense, num_layers = dense_report["variants"]["dense"], int(dense_report["num_layers"])
    points: list[dict[str, Any]] = []
    for modules_dir in modules:
        for eta in etas:
            extra = ["--modules-dir", modules_dir] + (["--eta", str(eta)] if eta > 0 else [])
            report = closed_loop(args, "dysl", extra)
            figures = report["variants"]["dysl"]
            own_eta = json.loads((Path(modules_dir) / "dysl.json").read_text())["eta"]
            points.append({
                "modules_dir": modules_dir, "lambda": distill_lambda(modules_dir), "eta": eta if eta > 0 else own_eta,
                "success_rate": figures["success_rate"], "mean_executed_layers": figures["mean_executed_layers"],
                "executed_fraction": figures["executed_fraction"], "verification_rate": figures["verification_rate"],
                "ticks": figures["ticks"],
            })
            print(f"  lambda {points[-1]['lambda']}, eta {points[-1]['eta']:.4g}: success "
                  f"{figures['success_rate']:.1%} at {figures['mean_executed_layers']:.2f} layers", flush=True)

    result = {"model_dir": args.model_dir, "num_layers": num_layers, "seed": args.seed,
              "episodes": args.episodes, "tasks": args.tasks,
              "dense": {"success_rate": dense["success_rate"], "mean_executed_layers": dense["mean_executed_layers"]},
              "points": points}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Dense: {dense['success_rate']:.1%} success at {dense['mean_executed_layers']:.0f} layers; "
        f"{args.episodes} episode(s) per task, tasks {args.tasks}, eval seed {args.seed}.",
        "",
        "| lambda | eta | success | vs dense (points) | executed layers | executed fraction | verification rate |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pt in sorted(points, key=lambda q: q["mean_executed_layers"]):
        lines.append(
            f"| {pt['lambda']} | {pt['eta']:.4g} | {pt['success_rate']:.1%} | "
            f"{100 * (pt['success_rate'] - dense['success_rate']):+.0f} | {pt['mean_executed_layers']:.2f} | "
            f"{pt['executed_fraction']:.1%} | {pt['verification_rate']:.1%} |"
        )
    table = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(table)
    print(table)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")
    return 0


def plot(result: dict[str, Any], file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    dense = result["dense"]
    layers = result["num_layers"]
    ax.axhline(100 * dense["success_rate"], color="black", linestyle="--", label=f"dense ({layers} layers)")
    for lam in sorted({pt["lambda"] for pt in result["points"]}, key=lambda v: (v is None, v)):
        pts = sorted((pt for pt in result["points"] if pt["lambda"] == lam), key=lambda q: q["mean_executed_layers"])
        ax.plot([pt["mean_executed_layers"] for pt in pts], [100 * pt["success_rate"] for pt in pts], "o-",
                label=f"DySL, lambda {lam}")
        for pt in pts:
            ax.annotate(f"eta {pt['eta']:.3g}", (pt["mean_executed_layers"], 100 * pt["success_rate"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(0.4 * layers, color="grey", linestyle=":", label="40 % of the layers")
    ax.set_xlabel(f"mean executed layers per tick (of {layers})")
    ax.set_ylabel("MT10 success rate (%)")
    ax.set_title("DySL speed/accuracy, Meta-World MT10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
