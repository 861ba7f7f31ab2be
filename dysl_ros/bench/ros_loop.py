"""``dysl_bench closed-loop --wiring ee|jtc|forward``: the closed loop over ROS 2, per variant.

Each variant (``dense``, ``dysl``) runs the ``make demo`` pair (``dysl_ros.tools.demo``: ``sim_bridge``
in the wiring's arm mode and ``dysl_node``, two processes on a ROS domain of their own, real time,
20 Hz control, 10 Hz camera) over the same episodes as the in-process benchmark (episode seeds
``episode_seed(seed, task, e)``), one variant after the other. Reported per variant: success, executed
layers per tick (the node's ``~/dysl_tick``), and for the joint wirings the joint motion the bridge
measured at its controller (``joint_log``: largest setpoint acceleration and jerk, limit hits against
``sim.sawyer``'s limits, tracking error), with the plot of the first episode's joint setpoints and
positions. Every run's own files (the demo's ``results.json``, logs, the plot) stay under ``--ros-out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dysl_ros.core.config import ConfigError

ROS_VARIANTS = ("dense", "dysl")
ROS_CONTROL_RATE_HZ = 20.0
"""The demo's control rate, which the joint wirings require (``sim.params.JOINT_CONTROL_RATE_HZ``)."""


def run(args: argparse.Namespace) -> int:
    """``dysl_bench closed-loop --wiring ...``: exit 0, or 2 with the message for a usage error."""
    from dysl_ros.bench import common

    return common.exit_status("dysl_bench closed-loop", run_over_ros, args)


@dataclass(frozen=True)
class RosSetup:
    """A checked ``--wiring`` command: the model, whether it drives joints, tasks and variants."""

    model_dir: Path
    joint: bool
    tasks: list[str]
    variants: list[str]


def run_over_ros(args: argparse.Namespace) -> int:
    from dysl_ros.bench import common
    from dysl_ros.bench.closed_loop import markdown_table, plot_variants

    setup = _setup(args)
    root = Path(args.ros_out or f"out/bench/ros_{args.wiring}")
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    plots: dict[str, str] = {}
    for variant in setup.variants:
        figures[variant], plot = _run_variant(args, setup, variant, root / variant)
        if plot:
            plots[variant] = plot
    wall = time.perf_counter() - started
    report = _report(args, setup, figures, plots, root, wall)
    text = markdown_report(report)
    if not setup.joint:
        text += ("\nWith the end effector the joints follow Meta-World's mocap weld: no joint controller, so the "
                 "motion is the joints' own, sampled each 12.5 ms simulated step (the setpoint is the position).\n")
    summary = f"{sum(v['episodes'] for v in figures.values())} episodes over ROS 2 in {wall:.0f} s"
    common.write_outputs(args, report, text, markdown_table(report), summary, plot_variants)
    return 0


def _setup(args: argparse.Namespace) -> RosSetup:
    """Every flag checked against the model, before any process starts."""
    from dysl_ros.bench.closed_loop import training_episode_seeds
    from dysl_ros.bench.variants import parse_variants
    from dysl_ros.joint_wiring import JOINT_SEMANTICS
    from dysl_ros.model.model_dir import load_spec
    from dysl_ros.mt10.tasks import episode_seed, parse_tasks

    model_dir = Path(args.model_dir)
    variants = parse_variants(args.variants) if args.variants != "all" else list(ROS_VARIANTS)
    other = [v for v in variants if v not in ROS_VARIANTS]
    if other:
        raise ConfigError(f"--wiring {args.wiring} runs {', '.join(ROS_VARIANTS)} only (the node's dense and DySL "
                          f"modes), not {', '.join(other)}")
    semantics = load_spec(model_dir).action_semantics
    joint = semantics in JOINT_SEMANTICS
    if joint == (args.wiring == "ee"):
        raise ConfigError(
            f"--wiring {args.wiring} needs a model whose actions are "
            f"{'end-effector deltas' if args.wiring == 'ee' else 'joint positions, deltas or velocities'}; "
            f"{model_dir} has {semantics}"
        )
    if args.episodes < 1 or args.max_steps < 1 or not 0 <= args.seed < 2**32:
        raise ConfigError("--episodes and --max-steps must be >= 1, --seed in [0, 2**32)")
    tasks = parse_tasks(args.tasks)
    training_seeds, demos = training_episode_seeds(model_dir)
    reused = sorted({episode_seed(args.seed, t, e) for t in tasks for e in range(args.episodes)} & training_seeds)
    if reused:
        raise ConfigError(f"--seed {args.seed} replays {len(reused)} training episode(s) of {demos}: choose another")
    return RosSetup(model_dir, joint, tasks, variants)


def _run_variant(args: argparse.Namespace, setup: RosSetup, variant: str, out: Path) -> tuple[dict[str, Any], str]:
    """One variant through ``make demo``'s pair: its figures, and its motion plot ('' for none)."""
    from dysl_ros.tools import demo

    argv = [
        "--model-dir", str(setup.model_dir), "--wiring", args.wiring, "--tasks", ",".join(setup.tasks),
        "--episodes-per-task", str(args.episodes), "--seed", str(args.seed), "--max-steps", str(args.max_steps),
        "--control-rate-hz", f"{ROS_CONTROL_RATE_HZ:g}", "--out", str(out), "--gif-episode", "0",
        "--backend", "onnxruntime", "--joint-motion", *(["--dense"] if variant == "dense" else []),
    ]
    print(f"dysl_bench closed-loop --wiring {args.wiring}: {variant}: demo {' '.join(argv)}", file=sys.stderr)
    status = demo.main(argv)
    if status != 0 or not (out / "results.json").is_file():
        raise RuntimeError(f"the {variant} run over ROS failed (exit {status}); its logs: {out / 'logs'}")
    results = json.loads((out / "results.json").read_text())
    return variant_figures(results, setup.tasks), str(results.get("files_motion", {}).get("plot") or "")


def _report(
    args: argparse.Namespace, setup: RosSetup, figures: dict[str, Any], plots: dict[str, str], root: Path,
    wall: float,
) -> dict[str, Any]:
    from dysl_ros.backends.capability import machine_label
    from dysl_ros.bench.joint_motion import MOTION_RATE_HZ
    from dysl_ros.model.checkpoint import model_hash
    from dysl_ros.tools import demo

    layers = demo.num_layers(setup.model_dir)
    for variant in figures.values():
        for row in (variant, *variant["per_task"].values()):
            row["executed_fraction"] = row["mean_executed_layers"] / layers if layers else float("nan")
    report: dict[str, Any] = {
        "seed": args.seed,
        "episodes": args.episodes,
        "variants": figures,
        "tasks": setup.tasks,
        "num_layers": layers,
        "model_dir": str(setup.model_dir),
        "model_hash": model_hash(setup.model_dir),
        "backend": "onnxruntime",
        "machine": machine_label(),
        "wiring": args.wiring,
        "arm": "joint" if setup.joint else "ee",
        "max_steps": args.max_steps,
        "control_rate_hz": ROS_CONTROL_RATE_HZ,
        "motion_rate_hz": MOTION_RATE_HZ,
        "motion_plots": plots,
        "ros_out": str(root),
        "wall_s": wall,
    }
    if args.motion_plot and plots:
        import shutil

        shown = plots.get("dysl") or next(iter(plots.values()))
        Path(args.motion_plot).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shown, args.motion_plot)
        report["motion_plot"] = args.motion_plot
    return report


def variant_figures(results: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The in-process benchmark's figures of a variant from one demo run's ``results.json``."""
    episodes = results.get("episodes", [])
    all_figures = _figures(episodes)
    all_figures["per_task"] = {task: _figures([r for r in episodes if r["task"] == task]) for task in tasks}
    return all_figures


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from dysl_ros.bench.joint_motion import combine

    timed = [r for r in rows if r.get("executed_layers_mean") is not None and r.get("ticks")]
    ticks = sum(int(r["ticks"]) for r in timed)
    layers = sum(float(r["executed_layers_mean"]) * int(r["ticks"]) for r in timed)
    out: dict[str, Any] = {
        "success_rate": sum(bool(r["success"]) for r in rows) / len(rows) if rows else 0.0,
        "successes": sum(bool(r["success"]) for r in rows),
        "episodes": len(rows),
        "mean_executed_layers": layers / ticks if ticks else float("nan"),
        "p99_executed_layers": float("nan"),
        "executed_fraction": float("nan"),
        "verification_rate": sum(int(r.get("verifications") or 0) for r in rows) / ticks if ticks else 0.0,
        "ticks": ticks,
        "mean_episode_steps": sum(int(r["steps"]) for r in rows) / len(rows) if rows else 0.0,
        "late_steps": sum(int(r.get("late_steps") or 0) for r in rows),
        "errors": sum(r.get("error") is not None for r in rows),
    }
    motions = [r["motion"] for r in rows if isinstance(r.get("motion"), dict)]
    if motions:
        out["motion"] = combine([{k: float("nan") if v is None else float(v) for k, v in m.items()} for m in motions])
    return out


def markdown_report(report: dict[str, Any]) -> str:
    from dysl_ros.bench.closed_loop import markdown_table

    notes = (
        f"Meta-World MT10 over ROS 2 (`--wiring {report['wiring']}`: sim_bridge arm mode {report['wiring']} and "
        f"dysl_node, real time, {report['control_rate_hz']:g} Hz control, 10 Hz camera), {report['episodes']} "
        f"episode(s) per task and variant, eval run seed {report['seed']}; model `{report['model_dir']}` "
        f"({report['num_layers']} layers, hash {str(report['model_hash'])[:12]}); backend onnxruntime on "
        f"{report['machine']}; at most {report['max_steps']} steps per episode."
    )
    return "\n\n".join(["### Closed loop over ROS 2", notes, markdown_table(report)]) + "\n"

