#!/usr/bin/env python3
"""DySL's speed/accuracy frontier on Meta-World MT10: success rate against executed layers, with the
baselines at matched layers.

Every run is ``dysl_bench closed-loop`` on the same episodes (same eval seed). A DySL point is a
model directory (its layer plan: ``dysl_train calibrate``), a modules directory (a distillation:
``dysl_train distill --modules-out``), an eta (allow points) and a skip threshold; each point runs
with the matched coins (``--matched random_skip,random_drop``: the random variants solved for that
point's executed layers in the same run). The baselines that set their own depth run once per
setting: the router (``--router-thresholds``), the DeeR-style exit (``--deer-thresholds``) and the
oracle bound (``--oracle-tolerances``), on the first plan. Writes <out>.md, <out>.json and <out>.png;
each run's report is kept under <out>_runs/, so a sweep that stops resumes where it stopped.

    .venv/bin/python scripts/speed_accuracy.py --model-dir models/reference \\
        --modules models/reference,models/reference/variants/lambda_0.005 --etas 0,0.05,0.1 \\
        --episodes 5 --out out/bench/speed_accuracy
    .venv/bin/python scripts/speed_accuracy.py --plans runs/plans/lowest,runs/plans/maxgap8 \\
        --thresholds 0.2,0.35,0.5 --matched random_skip,random_drop --router-thresholds 0.3,0.34 \\
        --deer-thresholds 0.01 --oracle-tolerances 0.026 --episodes 10 --out out/bench/frontier

``--etas 0`` and ``--thresholds 0`` (the defaults) mean "the modules' own dysl.json value". Wall time:
one closed-loop run per point and setting (on 2 cores, about 40 s per 50 episodes and variant; the
DeeR exit and the oracle run several passes per tick and take about three times that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MATCHABLE = ("random_skip", "random_drop", "random_layers")


@dataclass(frozen=True)
class Run:
    """One closed-loop run: its variants and flags, and how the sweep labels its figures."""

    label: str
    model_dir: str
    variants: str
    flags: tuple[str, ...] = ()

    def key(self, args: argparse.Namespace) -> str:
        """Names the run and the files it reads: a re-distilled directory is run again."""
        files = [Path(self.model_dir) / name for name in ("layer_plan.json", "dysl_modules.safetensors")]
        if "--modules-dir" in self.flags:
            files.append(Path(self.flags[self.flags.index("--modules-dir") + 1]) / "dysl_modules.safetensors")
        stamps = [str(f.stat().st_mtime_ns) if f.is_file() else "-" for f in files]
        what = [self.model_dir, self.variants, *self.flags, args.tasks, str(args.episodes), str(args.seed),
                str(args.max_steps), *stamps]
        return hashlib.sha256("\0".join(what).encode()).hexdigest()[:16]


def closed_loop(run: Run, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """The run's report: from the cache, else from ``dysl_bench closed-loop`` (then cached)."""
    file = cache / f"{run.key(args)}.json"
    if file.is_file():
        cached: dict[str, Any] = json.loads(file.read_text())
        return cached
    command = [
        sys.executable, "-m", "dysl_ros.tools.bench", "closed-loop", "--model-dir", run.model_dir,
        "--tasks", args.tasks, "--episodes", str(args.episodes), "--seed", str(args.seed),
        "--workers", str(args.workers), "--max-steps", str(args.max_steps), "--variants", run.variants, "--json",
        "--no-progress", *run.flags,
    ]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"closed-loop failed ({done.returncode}):\n{done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    cache.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(report) + "\n")
    return report


def numbers(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def own_setting(modules_dir: str, name: str) -> float:
    return float(json.loads((Path(modules_dir) / "dysl.json").read_text())[name])


def distill_lambda(modules_dir: str) -> float | None:
    file = Path(modules_dir) / "distill.json"
    value = json.loads(file.read_text()).get("lambda") if file.is_file() else None
    return None if value is None else float(value)


def plan_label(model_dir: str) -> str:
    file = Path(model_dir) / "layer_plan.json"
    static = json.loads(file.read_text()).get("static_layers") if file.is_file() else None
    return f"{Path(model_dir).name} {static}" if static is not None else Path(model_dir).name


def figures(report: dict[str, Any], variant: str) -> dict[str, Any]:
    v = report["variants"][variant]
    return {
        "success_rate": v["success_rate"], "successes": v["successes"], "episodes": v["episodes"],
        "mean_executed_layers": v["mean_executed_layers"], "executed_fraction": v["executed_fraction"],
        "verification_rate": v["verification_rate"], "ticks": v["ticks"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/reference", help="the plan when --plans is not given")
    p.add_argument("--plans", default="", help="comma list of model directories, one layer plan each "
                   "(default: --model-dir)")
    p.add_argument("--modules", default="", help="comma list of DySL modules directories, swept on every plan "
                   "(default: each plan's own)")
    p.add_argument("--etas", default="0", help="comma list of eta overrides; 0 = the modules' own (default 0)")
    p.add_argument("--thresholds", default="0",
                   help="comma list of skip thresholds; 0 = the modules' own (default 0)")
    p.add_argument("--matched", default="", help=f"comma list of {', '.join(MATCHABLE)} run with every DySL point "
                   "at its executed layers (default: none)")
    p.add_argument("--router-thresholds", default="", help="comma list: the router at each, on --router-dir")
    p.add_argument("--router-dir", default="models/reference",
                   help="the model directory whose variants/router runs (default: models/reference)")
    p.add_argument("--deer-thresholds", default="", help="comma list: deer_exit at each, on the first plan")
    p.add_argument("--oracle-tolerances", default="", help="comma list: oracle_exit at each, on the first plan")
    p.add_argument("--tasks", default="all")
    p.add_argument("--episodes", type=int, default=5, help="episodes per task (default 5)")
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=200, help="episode step limit (default: 200, as closed-loop)")
    p.add_argument("--out", default="out/bench/speed_accuracy", help="writes <out>.md, <out>.json, <out>.png")
    args = p.parse_args()
    plans = names(args.plans) or [args.model_dir]
    modules = names(args.modules)
    etas, thresholds = numbers(args.etas) or [0.0], numbers(args.thresholds) or [0.0]
    matched = names(args.matched)
    unknown = [m for m in matched if m not in MATCHABLE]
    if unknown:
        sys.exit(f"--matched takes {', '.join(MATCHABLE)}, not {unknown}")
    for directory in [*plans, *modules]:
        if not (Path(directory) / "dysl_modules.safetensors").is_file():
            sys.exit(f"no DySL modules in {directory} (dysl_train calibrate + distill, or distill --modules-out DIR)")
    out = Path(args.out)
    cache = out.parent / f"{out.name}_runs"

    dense_report = closed_loop(Run("dense", plans[0], "dense"), args, cache)
    num_layers = int(dense_report["num_layers"])
    points: list[dict[str, Any]] = []
    for plan in plans:
        for modules_dir in modules or [plan]:
            for eta in etas:
                for threshold in thresholds:
                    flags = ["--modules-dir", modules_dir] if modules else []
                    flags += ["--eta", str(eta)] if eta > 0 else []
                    flags += ["--skip-threshold", str(threshold)] if threshold > 0 else []
                    run = Run("dysl", plan, ",".join(["dysl", *matched]), tuple(flags))
                    report = closed_loop(run, args, cache)
                    setting = {
                        "plan": plan_label(plan), "modules_dir": modules_dir, "own_modules": not modules,
                        "lambda": distill_lambda(modules_dir),
                        "eta": eta if eta > 0 else own_setting(modules_dir, "eta"),
                        "threshold": threshold if threshold > 0 else own_setting(modules_dir, "skip_threshold"),
                    }
                    for variant in ["dysl", *matched]:
                        points.append({"variant": variant, **setting, **figures(report, variant)})
                    row = ", ".join(f"{pt['variant']} {pt['success_rate']:.1%} at {pt['mean_executed_layers']:.2f}"
                                    for pt in points[-1 - len(matched):])
                    print(f"  {setting['plan']}, eta {setting['eta']:.4g}, threshold {setting['threshold']:g}: {row}",
                          flush=True)
    baselines = [("router", args.router_dir, "--router-threshold", v) for v in numbers(args.router_thresholds)]
    baselines += [("deer_exit", plans[0], "--deer-threshold", v) for v in numbers(args.deer_thresholds)]
    baselines += [("oracle_exit", plans[0], "--oracle-tolerance", v) for v in numbers(args.oracle_tolerances)]
    for variant, directory, flag, value in baselines:
        report = closed_loop(Run(variant, directory, variant, (flag, str(value))), args, cache)
        points.append({"variant": variant, "plan": plan_label(directory), "setting": f"{flag[2:]} {value:g}",
                       **figures(report, variant)})
        print(f"  {variant} {flag[2:]} {value:g}: {points[-1]['success_rate']:.1%} at "
              f"{points[-1]['mean_executed_layers']:.2f}", flush=True)

    dense = figures(dense_report, "dense")
    result = {"num_layers": num_layers, "seed": args.seed, "episodes": args.episodes, "tasks": args.tasks,
              "machine": dense_report.get("machine"), "dense": dense, "points": points}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")
    return 0


def markdown(result: dict[str, Any]) -> str:
    dense = result["dense"]
    lines = [
        f"Dense: {dense['success_rate']:.1%} success at {result['num_layers']} layers; {result['episodes']} "
        f"episode(s) per task and variant, tasks {result['tasks']}, eval seed {result['seed']} "
        f"({result['machine']}). Matched variants ran in the same run as the DySL point above them, solved for "
        "its executed layers.",
        "",
        "| plan | variant | setting | success | vs dense (points) | executed layers | executed fraction | "
        "verification rate |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for pt in result["points"]:
        setting = pt.get("setting") or (
            f"λ {pt['lambda']}, η {pt['eta']:.3g}, threshold {pt['threshold']:g}" if pt["variant"] == "dysl"
            else "matched"
        )
        lines.append(
            f"| {pt['plan']} | {pt['variant']} | {setting} | {pt['success_rate']:.1%} | "
            f"{100 * (pt['success_rate'] - dense['success_rate']):+.1f} | {pt['mean_executed_layers']:.2f} | "
            f"{pt['executed_fraction']:.1%} | {pt['verification_rate']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], file: Path) -> None:
    """Success against executed layers: a line per plan (and modules) for DySL, the same colour dashed
    for each matched coin variant, markers for the baselines; dense, dense - 1 point and 40 % of the
    layers as guides. Error bars: the 95 % Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dysl_ros.bench.closed_loop import wilson_interval

    fig, ax = plt.subplots(figsize=(10.5, 4.8))
    dense, layers = result["dense"], result["num_layers"]
    ax.axhline(100 * dense["success_rate"], color="black", linestyle="--", linewidth=0.8, label=f"dense ({layers})")
    ax.axhline(100 * dense["success_rate"] - 1, color="tab:red", linestyle=":", linewidth=0.8, label="dense - 1 point")
    ax.axvline(0.4 * layers, color="grey", linestyle=":", linewidth=0.8, label="40 % of the layers")

    def draw(pts: list[dict[str, Any]], style: str, colour: Any, label: str) -> None:
        pts = sorted(pts, key=lambda q: q["mean_executed_layers"])
        x = [q["mean_executed_layers"] for q in pts]
        y = [100 * q["success_rate"] for q in pts]
        bounds = [wilson_interval(q["successes"], q["episodes"]) for q in pts]
        low = [v - 100 * lo for v, (lo, _) in zip(y, bounds, strict=True)]
        high = [100 * hi - v for v, (_, hi) in zip(y, bounds, strict=True)]
        err = [low, high]
        ax.errorbar(x, y, yerr=err, fmt=style, color=colour, capsize=2, linewidth=1, markersize=4, label=label,
                    alpha=0.9)

    colours = iter(plt.get_cmap("tab10")(range(10)))
    groups: dict[tuple[str, str], Any] = {}
    for pt in result["points"]:
        if "threshold" in pt and (pt["plan"], pt["modules_dir"]) not in groups:
            groups[(pt["plan"], pt["modules_dir"])] = next(colours)
    styles = {"dysl": "o-", "random_skip": "s--", "random_drop": "^:", "random_layers": "v:"}
    for (plan, modules_dir), colour in groups.items():
        mine = [pt for pt in result["points"] if pt.get("plan") == plan and pt.get("modules_dir") == modules_dir]
        named = "" if mine[0].get("own_modules", True) else f" ({Path(modules_dir).name})"
        suffix = "" if len(groups) == 1 else f" {plan}{named}"
        for variant in styles:
            pts = [pt for pt in mine if pt["variant"] == variant]
            if pts:
                draw(pts, styles[variant], colour, f"{variant}{suffix}")
    markers = {"router": ("P-", "tab:olive"), "deer_exit": ("D-", "tab:brown"), "oracle_exit": ("*-", "black")}
    for variant, (style, colour) in markers.items():
        pts = [pt for pt in result["points"] if pt["variant"] == variant]
        if pts:
            draw(pts, style, colour, variant)
    ax.set_xlabel(f"mean executed layers per tick (of {layers})")
    ax.set_ylabel("MT10 success rate (%)")
    ax.set_title(f"Speed/accuracy, seed {result['seed']}, {result['episodes']} episodes per task and variant",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a point
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
