"""Closed-loop Meta-World MT10 benchmark: success rate and executed layers per policy variant.

    dysl_bench closed-loop --model-dir models/reference --episodes 10 --workers 2 --json \\
        --markdown out/bench/closed_loop.md --record-trace out/bench/decisions.json

Every variant (dense, dysl, no_pre_skip, no_post_verify, no_static, one_stage, random_skip,
random_drop, random_layers, router; see dysl_ros.bench.variants) runs the same episodes: episode i
of task k under the eval run seed s has the environment seed SeedSequence([s, k, i]) and instruction
of `dysl_train demos` (the training demonstrations used run seed 1000, so a different seed never
replays a training episode; the benchmark also refuses any episode whose seed is in the model's
training demonstrations when it can find them). Per tick the policy sees the camera image,
instruction and proprio, the first --execute-steps actions of its chunk are executed (as dysl_node
re-plans), then it re-plans. The executed actions come from dysl_node's own action queue
(dysl_ros.action_queue, stepped one period per environment step): --chunk-aggregation latest
runs the newest chunk's actions, weighted averages each step's predictions from the overlapping
chunks (the node's ACT-style temporal ensembling, --aggregation-decay). An episode ends as a
success at the first step with Meta-World's info["success"], as a failure at --max-steps.
random_skip, random_drop and random_layers run after dysl: their coins are solved to match dysl's
mean executed layers of this run (or --random-target-layers).

Reported per variant, per task and overall: success rate, mean and p99 executed layers per tick
(the layers on the path that produced the executed chunk), executed fraction (mean / num_layers),
verification rate (ticks where post-skip verification fired / ticks), ticks; and the mean layer
evaluations per tick (a verified tick's discarded skipping pass included: the compute cost).

A joint-space model (joint positions, deltas or velocities) drives the Sawyer's joints through
position servos (``dysl_ros.mt10.joint_env``; ``dysl_ros.bench.joint_motion``), and each variant
also reports the joints' motion. ``--wiring ee|jtc|forward`` runs the loop over ROS 2 instead
(``dysl_ros.bench.ros_loop``: sim_bridge in that arm mode and dysl_node, dense and dysl).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from dysl_ros.action_queue import AGGREGATIONS, MAX_AGGREGATION_DECAY, ActionQueue
from dysl_ros.backends.capability import machine_label
from dysl_ros.bench import common, joint_motion
from dysl_ros.bench.trace import DecisionTrace, TickDecision
from dysl_ros.bench.variants import (
    DIAGNOSTIC_VARIANTS,
    KNOWN_VARIANTS,
    VARIANTS,
    LoadSettings,
    VariantLoader,
    parse_variants,
    variant_modules_dir,
)
from dysl_ros.core.config import ConfigError
from dysl_ros.mt10.env import goal_marker_radius_arg, model_goal_marker_radius

DEFAULT_EVAL_SEED = 2000
TRAINING_DEMOS_SEED = 1000
MAX_ENVS_PER_WORKER = 2
"""Meta-World environments (model + GL context) a worker keeps; jobs come sorted by task."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default="all", help="'all' or comma-separated MT10 task names (default: all)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and variant (default: 10)")
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_EVAL_SEED,
        help=f"eval run seed; episode seeds derive from it as in `dysl_train demos` (default: {DEFAULT_EVAL_SEED}; "
        f"the training demos used {TRAINING_DEMOS_SEED})",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one torch thread each (default: 2)")
    parser.add_argument(
        "--variants", default="all",
        help=f"'all' or a comma list of {', '.join(VARIANTS)}; also {', '.join(DIAGNOSTIC_VARIANTS)}, run only "
        "when named (default: all)",
    )
    parser.add_argument(
        "--execute-steps", type=int, default=4,
        help="actions of each chunk executed before re-planning (default: 4, as dysl_node's replan point)",
    )
    parser.add_argument(
        "--chunk-aggregation", choices=AGGREGATIONS, default="latest",
        help="as dysl_node's chunk_aggregation: latest runs the newest chunk; weighted averages each step's "
        "predictions from the chunks that overlap it (ACT temporal ensembling; default: latest)",
    )
    parser.add_argument(
        "--aggregation-decay", type=float, default=0.01,
        help="as dysl_node's aggregation_decay: weighted gives prediction i (0 = the oldest chunk's) the weight "
        "exp(-decay * i) (default: 0.01)",
    )
    parser.add_argument("--max-steps", type=int, default=200, help="episode step limit (default: 200, as the demos)")
    common.add_variant_arguments(parser)
    parser.add_argument("--camera", default="corner", help="Meta-World camera (default: corner, as the demos)")
    parser.add_argument(
        "--goal-marker-radius", default="model", metavar="M",
        help="goal marker radius in metres, 'none' for Meta-World's 2 cm (default: model, the radius "
        "its demos were drawn with, from its train_args.json)",
    )
    joint_motion.add_wiring_arguments(parser)
    common.add_output_arguments(
        parser, "write a PNG: each variant's success rate with its 95 %% interval, its executed layers in the label"
    )
    parser.add_argument("--record-trace", metavar="FILE", help="write the dysl variant's decisions (DecisionTrace)")


# --------------------------------------------------------------------------------------------------
# Jobs and the worker side


@dataclass(frozen=True)
class Job:
    variant: str
    task: str
    episode: int
    seed: int
    instruction: str
    coin: float | None = None
    """The random variants' coin (variants.coin_probability); None for the others."""
    record: bool = False
    record_motion: bool = False
    """joint arm: return this episode's joint log (the plotted episode)."""


@dataclass(frozen=True)
class WorkerSettings:
    load: LoadSettings
    camera: str
    max_steps: int
    execute_steps: int
    goal_marker_radius: float | None
    aggregation: str = "latest"
    aggregation_decay: float = 0.01
    arm: str = "ee"
    """``ee``: Meta-World's end-effector control; ``joint``: the Sawyer's joints through position servos
    (``mt10.joint_env``), for a model whose actions are joint positions, deltas or velocities."""


@dataclass
class EpisodeResult:
    variant: str
    task: str
    episode: int
    seed: int
    success: bool
    steps: int
    executed: list[int]
    evaluations: list[int]
    verified: int
    decisions: list[TickDecision] | None
    seconds: float
    motion: dict[str, float] | None = None
    """joint arm: ``joint_log.summary`` of the episode's joint motion."""
    log: dict[str, Any] | None = None
    """joint arm, the recorded episode (``Job.record_motion``): its ``JointLog``."""


@dataclass
class WorkerState:
    settings: WorkerSettings
    loader: VariantLoader
    envs: OrderedDict[str, Any] = field(default_factory=OrderedDict)

    def env(self, task: str, image_size: int) -> Any:
        from dysl_ros.mt10.env import make_env

        if task in self.envs:
            self.envs.move_to_end(task)
            return self.envs[task]
        while len(self.envs) >= MAX_ENVS_PER_WORKER:
            _, old = self.envs.popitem(last=False)
            old.close()
        s = self.settings
        make: Any = make_env
        if s.arm == "joint":
            from dysl_ros.mt10.joint_env import JointSpaceTask

            make = JointSpaceTask
        env = make(
            task, 0, image_size, s.camera, max_steps=s.max_steps, post_success_steps=0,
            goal_marker_radius=s.goal_marker_radius,
        )
        self.envs[task] = env
        return env

    def close(self) -> None:
        while self.envs:
            self.envs.popitem()[1].close()


_STATE: WorkerState | None = None


def _init_worker(settings: WorkerSettings) -> None:
    global _STATE
    # One core per worker: torch's and Mesa's own thread pools would only contend.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)
    _STATE = WorkerState(settings, VariantLoader(settings.load))


def _run_job(job: Job) -> EpisodeResult:
    if _STATE is None:
        raise RuntimeError("worker not initialised")
    try:
        return run_episode(_STATE, job)
    except Exception as exc:
        # Re-raised in the parent, where the worker's traceback is not shown: say which episode.
        raise RuntimeError(f"{job.variant} {job.task} episode {job.episode} (seed {job.seed}): "
                           f"{type(exc).__name__}: {exc}") from exc


def run_episode(state: WorkerState, job: Job) -> EpisodeResult:
    """One episode of one variant: re-plan every ``execute_steps`` actions until success or the limit."""
    from dysl_ros.model.spec import Observation

    started = time.perf_counter()
    policy = state.loader.get(job.variant, job.coin)
    spec = policy.policy.spec  # type: ignore[attr-defined]
    env = state.env(job.task, spec.cameras[0].height)
    joint = joint_motion.JointExecution(spec) if state.settings.arm == "joint" else None
    execute = state.settings.execute_steps
    window = slice(0, execute)
    obs = env.reset(job.seed)
    policy.reset(job.seed)
    # The node's queue on a clock of environment steps (dt 1, nothing ever stale): a chunk is
    # stamped with the step whose image it saw, so its first action is that step's.
    queue = ActionQueue(
        dt_ns=1, max_age_ns=2**62, on_stale="hold", action_dim=spec.action_dim,
        aggregation=state.settings.aggregation, decay=state.settings.aggregation_decay,
    )
    clock = 0
    executed: list[int] = []
    evaluations: list[int] = []
    verified = 0
    decisions: list[TickDecision] | None = [] if job.record else None
    recorder = joint.recorder() if joint is not None else None
    done = False
    while not done:
        # Rendered only when the policy looks: 3 of 4 frames would be thrown away otherwise.
        step = policy.step(Observation(env.render(), job.instruction, env.proprio(obs)), window)
        executed.append(step.executed_layers)
        evaluations.append(step.layer_evaluations)
        verified += int(step.verified)
        if decisions is not None and step.tick is not None:
            decisions.append(TickDecision.from_tick(step.tick))
        # A joint-space chunk becomes what the arm is sent (targets + gripper) from the joints measured
        # with the observation, as dysl_node's joint output does.
        chunk = joint.executable(step.actions, env.joint_positions()) if joint is not None else step.actions
        queue.push(len(executed), clock, chunk)
        for _ in range(execute):
            action = queue.next_action(clock, clock, clock)
            assert action is not None and action.fresh  # a chunk was pushed at this step
            if joint is not None:
                obs, _success, done = joint.step(env, action.values, recorder)
            else:
                obs, _success, done = env.step(action.values.astype(step.actions.dtype))
            clock += 1
            if done:
                break
    motion, log = joint_motion.episode_motion(recorder) if recorder is not None else (None, None)
    return EpisodeResult(
        job.variant, job.task, job.episode, job.seed, bool(env.succeeded), int(env.steps), executed, evaluations,
        verified, decisions, time.perf_counter() - started, motion, log if job.record_motion else None,
    )


# --------------------------------------------------------------------------------------------------
# Running jobs


class _Runner:
    """A process pool (``workers`` > 1) or this process, kept for every phase (workers keep their
    loaded policies and environments)."""

    def __init__(self, settings: WorkerSettings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.pool: Any = None
        self._threads: int | None = None
        if workers > 1:
            # Spawned, not forked: a worker starts with no inherited OpenGL or thread state.
            context = multiprocessing.get_context("spawn")
            self.pool = context.Pool(workers, initializer=_init_worker, initargs=(settings,))
        else:
            import torch

            self._threads = torch.get_num_threads()
            _init_worker(settings)

    def run(self, jobs: Sequence[Job]) -> Iterator[EpisodeResult]:
        if self.pool is not None:
            yield from self.pool.imap_unordered(_run_job, jobs)
        else:
            for job in jobs:
                yield _run_job(job)

    def close(self) -> None:
        global _STATE
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
        else:
            import torch

            if _STATE is not None:
                _STATE.close()
                _STATE = None
            if self._threads is not None:
                torch.set_num_threads(self._threads)

    def terminate(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        self.close()


def make_jobs(
    variants: Sequence[str], tasks: Sequence[str], episodes: int, seed: int, *,
    coins: Mapping[str, float] | None = None, record: bool = False,
) -> list[Job]:
    """Jobs sorted by task, then episode, then variant: paired episodes run close together and a
    worker meets each task's environment in one stretch."""
    from dysl_ros.mt10.tasks import episode_seed, pick_instruction

    jobs = []
    for task in tasks:
        for i in range(episodes):
            env_seed = episode_seed(seed, task, i)
            instruction = pick_instruction(task, env_seed)
            for variant in variants:
                jobs.append(Job(
                    variant, task, i, env_seed, instruction,
                    (coins or {}).get(variant), record and variant == "dysl",
                    record_motion=task == tasks[0] and i == 0,
                ))
    return jobs


# --------------------------------------------------------------------------------------------------
# Figures


def summarise(results: Iterable[EpisodeResult], num_layers: int) -> dict[str, Any]:
    """Figures of a set of episodes (one variant, one task or all tasks)."""
    results = list(results)
    executed = np.asarray([n for r in results for n in r.executed], dtype=np.float64)
    evaluations = np.asarray([n for r in results for n in r.evaluations], dtype=np.float64)
    ticks = int(executed.size)
    mean = float(executed.mean()) if ticks else 0.0
    return {
        "success_rate": sum(r.success for r in results) / len(results) if results else 0.0,
        "mean_executed_layers": mean,
        "p99_executed_layers": float(np.percentile(executed, 99, method="higher")) if ticks else 0.0,
        "executed_fraction": mean / num_layers,
        "verification_rate": sum(r.verified for r in results) / ticks if ticks else 0.0,
        "ticks": ticks,
        "episodes": len(results),
        "successes": sum(r.success for r in results),
        "mean_layer_evaluations": float(evaluations.mean()) if ticks else 0.0,
        "mean_episode_steps": float(np.mean([r.steps for r in results])) if results else 0.0,
        **({"motion": joint_motion.combine([r.motion for r in results if r.motion is not None])}
           if any(r.motion is not None for r in results) else {}),
    }


def variant_figures(results: Sequence[EpisodeResult], tasks: Sequence[str], num_layers: int) -> dict[str, Any]:
    figures = summarise(results, num_layers)
    figures["per_task"] = {task: summarise([r for r in results if r.task == task], num_layers) for task in tasks}
    return figures


def markdown_table(report: Mapping[str, Any]) -> str:
    variants: Mapping[str, Any] = report["variants"]
    lines = [
        "| variant | success | executed layers, mean | p99 | executed fraction | verification rate | ticks |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in variants.items():
        lines.append(
            f"| `{name}` | {v['success_rate']:.1%} ({v['successes']}/{v['episodes']}) | " + common.layer_cells(v)
        )
    if any("motion" in v for v in variants.values()):
        lines += ["", joint_motion.motion_table(report), ""]
    tasks = list(report["tasks"])
    lines += ["", "Success rate per task:", "", "| task | " + " | ".join(f"`{n}`" for n in variants) + " |",
              "|---|" + "---:|" * len(variants)]
    for task in tasks:
        cells = [f"{variants[n]['per_task'][task]['success_rate']:.0%}" for n in variants]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: Mapping[str, Any]) -> str:
    notes = [
        f"Meta-World MT10, {report['episodes']} episode(s) per task and variant (the same episodes for every "
        f"variant), eval run seed {report['seed']}; {common.model_note(report)}; re-plan every "
        f"{report['execute_steps']} actions, at most {report['max_steps']} steps per episode.",
    ]
    if report.get("chunk_aggregation", "latest") == "weighted":
        notes.append(f"Executed actions: each step's predictions from the overlapping chunks averaged with weights "
                     f"exp(-{report['aggregation_decay']}·i), i = 0 the oldest (dysl_node's weighted aggregation).")
    notes += common.coin_and_oracle_notes(report)
    return "\n\n".join(["### Closed loop", *notes, markdown_table(report)]) + "\n"


def wilson_interval(successes: int, episodes: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate: how far a mean of this many episodes can move."""
    if episodes <= 0:
        return 0.0, 1.0
    p = successes / episodes
    centre = (p + z * z / (2 * episodes)) / (1 + z * z / episodes)
    half = z * np.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes * episodes)) / (1 + z * z / episodes)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def plot_variants(report: Mapping[str, Any], file: Path) -> None:
    """One row per variant: its success rate with the 95 % interval, its mean executed layers in the
    label, dense and the dense - 1 point target as vertical lines. The ordering and how far apart
    the rows really are (a gap of a few episodes is noise) read at a glance."""
    import matplotlib

    matplotlib.use("Agg")  # files only: benchmark machines have no display
    import matplotlib.pyplot as plt

    layers = int(report["num_layers"])
    variants: Mapping[str, Any] = report["variants"]
    names = list(variants)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.4))
    for row, name in enumerate(names):
        v = variants[name]
        low, high = wilson_interval(int(v["successes"]), int(v["episodes"]))
        rate = 100 * v["success_rate"]
        colour = "black" if name == "dense" else ("tab:red" if name == "dysl" else "tab:blue")
        ax.errorbar(rate, row, xerr=[[rate - 100 * low], [100 * high - rate]], fmt="o", capsize=3, color=colour)
        left = rate >= 50  # the figure beside the interval, on the side away from the axis
        ax.annotate(f"{rate:.1f} %", (100 * (low if left else high), row), textcoords="offset points",
                    xytext=(-5 if left else 5, -3), ha="right" if left else "left", fontsize=8)
    if "dense" in variants:
        dense = 100 * variants["dense"]["success_rate"]
        ax.axvline(dense, color="black", linestyle="--", linewidth=0.8, label="dense")
        ax.axvline(dense - 1, color="tab:red", linestyle=":", linewidth=0.8, label="dense - 1 point")
        ax.legend(fontsize=8, loc="upper left")  # dense leads and sits on the right: that corner is free
    ax.set_yticks(range(len(names)))
    labels = [f"{n} ({variants[n]['mean_executed_layers']:.2f} of {layers} layers)" for n in names]
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("MT10 success rate (%), 95 % interval")
    ax.set_title(f"Closed loop, seed {report['seed']}, {report['episodes']} episodes per task and variant", fontsize=10)
    common.save_figure(fig, file)


# --------------------------------------------------------------------------------------------------
# The command


def training_episode_seeds(model_dir: Path) -> tuple[set[int], str | None]:
    """Environment seeds of the model's training demonstrations, when its train_args.json points at
    a demos directory that is here; else an empty set."""
    try:
        provenance = json.loads((model_dir / "train_args.json").read_text())
        demos = provenance.get("demos")
        argv = [str(a) for a in provenance.get("argv", [])]
        for i, arg in enumerate(argv):
            if arg == "--demos" and i + 1 < len(argv):
                demos = argv[i + 1]
            elif arg.startswith("--demos="):
                demos = arg.split("=", 1)[1]
        if demos is None:
            return set(), None
        seeds: set[int] = set()
        for directory in str(demos).split(","):  # `--demos A,B`: several directories
            index = json.loads((Path(directory.strip()) / "index.json").read_text())
            seeds |= {int(e["seed"]) for e in index["episodes"]}
        return seeds, str(demos)
    except (OSError, AttributeError, KeyError, TypeError, ValueError):
        return set(), None


def _radius_flag(text: str) -> float | None:
    try:
        return goal_marker_radius_arg(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"--goal-marker-radius: {exc}") from None


def run(args: argparse.Namespace) -> int:
    return common.exit_status("dysl_bench closed-loop", _run, args)


@dataclass(frozen=True)
class Setup:
    """A checked command: what runs (variants, tasks, jobs of the first phase) and how."""

    model_dir: Path
    num_layers: int
    tasks: list[str]
    variants: list[str]
    coins: common.Coins
    """The random variants' coins, and the layer plan they (and the decision trace) follow."""
    settings: WorkerSettings
    record: bool


def _run(args: argparse.Namespace) -> int:
    from dysl_ros.mt10.tasks import MT10_TASKS

    setup = _setup(args)
    if args.backend == "onnxruntime":
        # Built (or checked) once here: workers building the same engines at once would race.
        loader = VariantLoader(setup.settings.load)
        for variant in setup.variants:
            loader.base_policy(variant_modules_dir(setup.model_dir, variant, setup.settings.load.modules_dir))
        del loader
    started = time.perf_counter()
    results = _episodes(args, setup)
    wall = time.perf_counter() - started
    order = {task: k for k, task in enumerate(MT10_TASKS)}
    results.sort(key=lambda r: (order[r.task], r.episode, KNOWN_VARIANTS.index(r.variant)))
    report = _report(args, setup, results, wall)
    if args.motion_plot and joint_motion.plot_motion(results, args.motion_plot, setup.model_dir.name):
        report["motion_plot"] = args.motion_plot
    if setup.record:
        plan = setup.coins.plan
        assert plan is not None, "dysl ran: the model has a layer plan"
        trace = DecisionTrace(report["model_hash"], setup.num_layers, plan.static_layers)
        for r in results:
            if r.variant == "dysl" and r.decisions is not None:
                trace.ticks.extend(r.decisions)
        trace.save(args.record_trace)
    workers = min(args.workers, _total(args, setup))
    summary = f"{len(results)} episodes in {wall:.1f} s with {workers} worker(s)"
    common.write_outputs(args, report, markdown_report(report), markdown_table(report), summary, plot_variants)
    return 0


def _setup(args: argparse.Namespace) -> Setup:
    """Every flag checked against the model, before any episode runs."""
    from dysl_ros.model.checkpoint import CONFIG_FILE
    from dysl_ros.model.spec import VLAConfig
    from dysl_ros.mt10.tasks import parse_tasks

    if args.wiring != "inprocess":
        raise ConfigError(f"--wiring {args.wiring} runs over ROS 2: dysl_ros.bench.ros_loop.run (dysl_bench does)")
    model_dir = Path(args.model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{model_dir} is not a model directory (no {CONFIG_FILE})")
    if args.episodes < 1 or args.workers < 1 or args.execute_steps < 1 or args.max_steps < 1:
        raise ConfigError("--episodes, --workers, --execute-steps and --max-steps must be >= 1")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be in [0, 2**32), got {args.seed}")
    config = VLAConfig.load(model_dir / CONFIG_FILE)
    common.check_chunk_arguments(args, config.chunk_len)
    if not (np.isfinite(args.aggregation_decay) and abs(args.aggregation_decay) <= MAX_AGGREGATION_DECAY):
        raise ConfigError(f"--aggregation-decay must be a finite number in [-{MAX_AGGREGATION_DECAY:g}, "
                          f"{MAX_AGGREGATION_DECAY:g}], got {args.aggregation_decay}")
    tasks = parse_tasks(args.tasks)
    variants = parse_variants(args.variants)
    load = common.load_settings(args)
    coins = common.plan_variants(args, variants, model_dir, load)
    _refuse_training_seeds(model_dir, tasks, args.episodes, args.seed)
    if args.record_trace is not None and "dysl" not in variants:
        raise ConfigError("--record-trace records the dysl variant: add it to --variants")
    settings = WorkerSettings(
        load, args.camera, args.max_steps, args.execute_steps, _goal_marker_radius(model_dir, args),
        args.chunk_aggregation, args.aggregation_decay, joint_motion.model_arm(config.action_semantics),
    )
    return Setup(model_dir, config.num_layers, tasks, variants, coins, settings,
                 args.record_trace is not None)


def _refuse_training_seeds(model_dir: Path, tasks: Sequence[str], episodes: int, seed: int) -> None:
    training_seeds, demos = training_episode_seeds(model_dir)
    reused = sorted({job.seed for job in make_jobs(["dysl"], tasks, episodes, seed)} & training_seeds)
    if reused:
        raise ConfigError(
            f"--seed {seed} replays {len(reused)} training episode(s) of {demos}: choose another eval seed"
        )


def _goal_marker_radius(model_dir: Path, args: argparse.Namespace) -> float | None:
    trained_radius = model_goal_marker_radius(model_dir)
    radius = trained_radius if args.goal_marker_radius == "model" else _radius_flag(args.goal_marker_radius)
    if radius != trained_radius:
        print(f"dysl_bench closed-loop: warning: goal marker radius {radius} m, the model's demos had "
              f"{trained_radius} (None: Meta-World's)", file=sys.stderr)
    return radius


def _total(args: argparse.Namespace, setup: Setup) -> int:
    phases = len(setup.coins.first) + len(setup.coins.later)
    return len(setup.tasks) * args.episodes * phases


def _episodes(args: argparse.Namespace, setup: Setup) -> list[EpisodeResult]:
    """Every episode of every variant: the first phase, then the random variants whose coins it sets."""
    from tqdm import tqdm

    coins, total = setup.coins, _total(args, setup)
    results: list[EpisodeResult] = []
    runner = _Runner(setup.settings, min(args.workers, total))
    bar = tqdm(total=total, desc="closed-loop", unit="ep", file=sys.stderr, disable=args.no_progress,
               dynamic_ncols=True)
    try:
        first = make_jobs(coins.first, setup.tasks, args.episodes, args.seed, coins=coins.coins, record=setup.record)
        _collect(runner.run(first), results, bar)
        if coins.later:
            solved = coins.solve_later([n for r in results if r.variant == "dysl" for n in r.executed])
            _collect(runner.run(make_jobs(coins.later, setup.tasks, args.episodes, args.seed, coins=solved)),
                     results, bar)
    except BaseException:
        bar.close()
        runner.terminate()
        raise
    bar.close()
    runner.close()
    return results


def _report(args: argparse.Namespace, setup: Setup, results: list[EpisodeResult], wall: float) -> dict[str, Any]:
    from dysl_ros.model.checkpoint import ModelDirError, model_hash

    try:
        digest = model_hash(setup.model_dir)
    except ModelDirError:
        digest = ""
    variants, num_layers = setup.variants, setup.num_layers
    report: dict[str, Any] = {
        "seed": args.seed,
        "episodes": args.episodes,
        "variants": {
            v: variant_figures([r for r in results if r.variant == v], setup.tasks, num_layers) for v in variants
        },
        "tasks": setup.tasks,
        "num_layers": num_layers,
        "model_dir": str(setup.model_dir),
        "model_hash": digest,
        "backend": args.backend,
        "machine": machine_label(),
        "workers": args.workers,
        "execute_steps": args.execute_steps,
        "chunk_aggregation": args.chunk_aggregation,
        "aggregation_decay": args.aggregation_decay,
        "max_steps": args.max_steps,
        "camera": args.camera,
        "goal_marker_radius": setup.settings.goal_marker_radius,
        "modules_dir": setup.settings.load.modules_dir,
        "dysl_overrides": setup.settings.load.dysl_overrides(),
        "wall_s": wall,
        "wiring": "inprocess",
        "arm": setup.settings.arm,
        **({"motion_rate_hz": joint_motion.MOTION_RATE_HZ} if setup.settings.arm == "joint" else {}),
    }
    common.variant_settings(report, args, variants, setup.coins)
    return report


def _collect(stream: Iterable[EpisodeResult], results: list[EpisodeResult], bar: Any) -> None:
    for result in stream:
        results.append(result)
        bar.update(1)
        done = [r for r in results if r.variant == result.variant]
        bar.set_postfix_str(f"{result.variant} {sum(r.success for r in done)}/{len(done)}", refresh=False)
