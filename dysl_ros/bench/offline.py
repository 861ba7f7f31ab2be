"""Offline benchmark: DySL on recorded episodes of a LeRobotDataset or a rosbag2, no simulator needed.

    dysl_bench offline --model-dir models/reference --demos data/lerobot --json \\
        --markdown out/bench/offline.md --plot out/bench/offline.png

For a user with a pretrained VLA and recordings of their own robot: does DySL pay on their data?
Each recorded episode is replayed through every variant (see dysl_ros.bench.variants) in time
order, as dysl_node would see it: a tick at frames t = 0, K, 2K, ... (K = --execute-steps), each
with the recorded frames of every camera at t (fitted to the camera's size exactly as the node
fits a sensor_msgs/Image: dysl_ros.inputs.decode_image), the episode's task text and its state at
t. The first K actions of each chunk are what the continuity history records (the node's
re-planning), and each variant starts every episode with a fresh history, so continuity and allow
points are carried along the episode as on the robot. The recorded actions are never fed back:
this is open loop, the arm's path is the recording's whatever the policy says. A rosbag2 recording
(``--demos BAG --mapping bag_mapping.yaml``) is read through ``dysl_ros.training.rosbag_dataset``, the
reader of ``dysl_train to-lerobot --rosbag``: its episodes, frames and what it dropped are the same.

Per tick, in the model's normalised action units (the spec's action normalisation):

- ``dense_error``: mean |chunk - dense chunk| over the whole chunk, the dense model's chunk for the
  same observation (what skipping changed); the dense variant's is 0;
- ``recorded_error``: mean |chunk - recorded actions t..t+H-1| over the recorded steps that exist
  (the last ticks of an episode see fewer than H);
- the same two over the chunk's first K actions only (``*_executed``: what the arm would run);
- executed layers (the path that produced the chunk), layer evaluations (a verified tick's
  discarded skipping pass included) and whether post-skip verification fired.

Reported per variant, over all ticks and per episode: the mean errors, mean and p99 executed
layers, executed fraction (mean / num_layers), verification rate (verified ticks / ticks), ticks.
random_skip, random_drop and random_layers run after dysl, their coins solved for dysl's mean
executed layers of this run (or --random-target-layers); their coins are seeded per episode from
--seed and the episode index. oracle_exit (a bound, not a policy: it runs the dense pass each tick)
needs --oracle-tolerance; left out of the default variants without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from dysl_ros.backends.capability import machine_label
from dysl_ros.bench import common
from dysl_ros.bench.variants import (
    DIAGNOSTIC_VARIANTS,
    RANDOM_VARIANTS,
    VARIANTS,
    VariantLoader,
    VariantPolicy,
    parse_variants,
)
from dysl_ros.core.config import ConfigError

if TYPE_CHECKING:
    from dysl_ros.model.observation_spec import Observation, ObservationSpec
    from dysl_ros.training.lerobot_dataset import RecordedEpisode

DEFAULT_VARIANTS: tuple[str, ...] = ("dense", "dysl", "random_skip", "oracle_exit")
PROG = "dysl_bench offline"

FloatArray = npt.NDArray[np.float64]


class OfflineError(ValueError):
    """A dataset, mapping or argument this benchmark cannot use; the message says which and why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demos", required=True, metavar="DATASET",
        help="a local LeRobotDataset (v3.0, v2.1, v2.0), or a rosbag2 recording (bag directory, .db3, .mcap)",
    )
    parser.add_argument(
        "--mapping", metavar="FILE", default=None,
        help="dataset features -> model inputs (cameras, state, action; default: DATASET/dysl_mapping.yaml); "
        "a bag: its bag mapping of topics (required; dysl_ros.training.rosbag_dataset)",
    )
    parser.add_argument(
        "--variants", default=None,
        help=f"'all' ({', '.join(VARIANTS)}) or a comma list of those and {', '.join(DIAGNOSTIC_VARIANTS)} "
        f"(default: {','.join(DEFAULT_VARIANTS)}; oracle_exit only with --oracle-tolerance)",
    )
    parser.add_argument("--episodes", type=int, default=None, help="the dataset's first N episodes (default: all)")
    parser.add_argument(
        "--execute-steps", type=int, default=4,
        help="actions of each chunk executed before re-planning: the tick spacing in frames and what the "
        "continuity history records (default: 4, as dysl_node's replan point)",
    )
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seeds the random variants' coins (with each episode's index; default: 0)",
    )
    common.add_variant_arguments(parser)
    common.add_output_arguments(
        parser, "write a PNG: each variant's mean dense error and recorded error against its mean executed layers"
    )


# --------------------------------------------------------------------------------------------------
# Ticks of one recorded episode


@dataclass(frozen=True)
class Tick:
    """What the policy sees at one tick and what the recording did from there."""

    frame: int
    observation: Observation
    recorded: FloatArray
    """(m, A) normalised recorded actions from ``frame`` on, m <= horizon (fewer at the episode's end)."""


def fit_frame(frame: npt.NDArray[np.uint8], height: int, width: int, fit: str, channels: int) -> npt.NDArray[np.uint8]:
    """A recorded RGB frame as the camera's image, through the node's own decoding of an rgb8
    sensor_msgs/Image, so the model sees here what it sees on the robot."""
    from dysl_ros.inputs import decode_image

    pixels = np.ascontiguousarray(frame, dtype=np.uint8)
    h, w = pixels.shape[:2]
    return decode_image("rgb8", h, w, w * 3, pixels.tobytes(), size=(height, width), fit=fit, channels=channels)


def episode_ticks(episode: RecordedEpisode, spec: ObservationSpec, execute_steps: int) -> list[Tick]:
    """The ticks of ``episode`` at frames 0, K, 2K, ... (K = ``execute_steps``)."""
    from dysl_ros.model.observation_spec import Observation

    steps = episode.steps
    recorded = np.asarray(spec.action_normalisation.normalise(episode.actions, np.float64), dtype=np.float64)
    ticks = []
    for t in range(0, steps, execute_steps):
        images = {
            camera.name: fit_frame(episode.images[camera.name][t], camera.height, camera.width, camera.fit,
                                   camera.channels)
            for camera in spec.cameras
        }
        observation = Observation(images, episode.instruction, np.asarray(episode.state[t], dtype=np.float64))
        ticks.append(Tick(t, observation, recorded[t : t + spec.horizon]))
    return ticks


# --------------------------------------------------------------------------------------------------
# One variant over one episode


@dataclass
class EpisodeResult:
    """One variant on one recorded episode: its errors per tick and the layers it executed."""

    variant: str
    episode: int
    """The dataset's episode index."""
    dense_error: list[float] = field(default_factory=list)
    recorded_error: list[float] = field(default_factory=list)
    dense_error_executed: list[float] = field(default_factory=list)
    recorded_error_executed: list[float] = field(default_factory=list)
    executed: list[int] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)
    verified: int = 0
    seconds: float = 0.0
    """Time inside the variant's steps."""


def episode_seed(seed: int, episode: int) -> int:
    """The random variants' coin seed for one episode: the same for every variant and run."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def run_episode(
    policy: VariantPolicy, spec: ObservationSpec, variant: str, episode: int, ticks: Sequence[Tick],
    dense: Sequence[FloatArray] | None, execute_steps: int, seed: int,
) -> tuple[EpisodeResult, list[FloatArray]]:
    """One variant over one episode from a fresh state. ``dense``: the dense chunks (normalised) of
    the same ticks; None: this is the dense pass, compared with itself. Returns the figures and the
    normalised chunks."""
    policy.reset(episode_seed(seed, episode))
    window = slice(0, execute_steps)
    result = EpisodeResult(variant, episode)
    chunks: list[FloatArray] = []
    for tick in ticks:
        started = time.perf_counter()
        step = policy.step(tick.observation, window)
        result.seconds += time.perf_counter() - started
        chunk = np.asarray(spec.action_normalisation.normalise(step.actions, np.float64), dtype=np.float64)
        chunks.append(chunk)
        reference = chunk if dense is None else dense[len(chunks) - 1]
        recorded = tick.recorded
        result.dense_error.append(float(np.abs(chunk - reference).mean()))
        result.dense_error_executed.append(float(np.abs(chunk[window] - reference[window]).mean()))
        result.recorded_error.append(float(np.abs(chunk[: len(recorded)] - recorded).mean()))
        executed = min(execute_steps, len(recorded))
        result.recorded_error_executed.append(float(np.abs(chunk[:executed] - recorded[:executed]).mean()))
        result.executed.append(int(step.executed_layers))
        result.evaluations.append(int(step.layer_evaluations))
        result.verified += int(step.verified)
    return result, chunks


# --------------------------------------------------------------------------------------------------
# Figures


def summarise(results: Sequence[EpisodeResult], num_layers: int) -> dict[str, Any]:
    """Figures of a set of episodes of one variant: every tick weighs the same."""

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(values)) if len(values) else 0.0

    executed = [n for r in results for n in r.executed]
    ticks = len(executed)
    layers = mean(executed)
    return {
        "mean_dense_error": mean([e for r in results for e in r.dense_error]),
        "mean_recorded_error": mean([e for r in results for e in r.recorded_error]),
        "mean_dense_error_executed": mean([e for r in results for e in r.dense_error_executed]),
        "mean_recorded_error_executed": mean([e for r in results for e in r.recorded_error_executed]),
        "mean_executed_layers": layers,
        "p99_executed_layers": float(np.percentile(executed, 99, method="higher")) if ticks else 0.0,
        "executed_fraction": layers / num_layers,
        "verification_rate": sum(r.verified for r in results) / ticks if ticks else 0.0,
        "mean_layer_evaluations": mean([n for r in results for n in r.evaluations]),
        "mean_step_ms": 1000.0 * sum(r.seconds for r in results) / ticks if ticks else 0.0,
        "ticks": ticks,
        "episodes": len(results),
    }


def variant_figures(results: Sequence[EpisodeResult], num_layers: int) -> dict[str, Any]:
    figures = summarise(results, num_layers)
    figures["per_episode"] = {str(r.episode): summarise([r], num_layers) for r in results}
    return figures


def markdown_table(report: Mapping[str, Any]) -> str:
    lines = [
        "| variant | dense error | recorded error | dense error, executed | recorded error, executed | "
        "executed layers, mean | p99 | executed fraction | verification rate | ticks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in report["variants"].items():
        lines.append(
            f"| `{name}` | {v['mean_dense_error']:.4f} | {v['mean_recorded_error']:.4f} | "
            f"{v['mean_dense_error_executed']:.4f} | {v['mean_recorded_error_executed']:.4f} | "
            + common.layer_cells(v)
        )
    return "\n".join(lines)


def markdown_report(report: Mapping[str, Any]) -> str:
    notes = [
        f"Recorded episodes of `{report['dataset']}` ({report['episodes']} episode(s), {report['ticks']} ticks "
        f"per variant), replayed open loop; {common.model_note(report)}; a tick every {report['execute_steps']} "
        f"frames, the chunk's first {report['execute_steps']} actions recorded as executed.",
        f"Errors: mean absolute difference in the model's normalised action units, over the whole chunk of "
        f"{report['horizon']} actions (executed: its first {report['execute_steps']}); dense error against the "
        "dense model's chunk for the same observation, recorded error against the recorded actions (the steps "
        "that exist at an episode's end).",
    ]
    notes += common.coin_and_oracle_notes(report)
    return "\n\n".join(["### Offline (recorded episodes)", *notes, markdown_table(report)]) + "\n"


def plot_variants(report: Mapping[str, Any], file: Path) -> None:
    """Two panels, x = mean executed layers: y = mean dense error, y = mean recorded error; one
    labelled point per variant. Where a variant sits against dense (right, at zero dense error) and
    how much of its error the recording would notice read at a glance."""
    import matplotlib

    matplotlib.use("Agg")  # files only: benchmark machines have no display
    import matplotlib.pyplot as plt

    layers = int(report["num_layers"])
    variants: Mapping[str, Any] = report["variants"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("mean_dense_error", "mean |chunk - dense chunk|"), ("mean_recorded_error", "mean |chunk - recorded|"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        top = 1.15 * max((v[key] for v in variants.values()), default=0.0) or 1.0
        for name, v in variants.items():
            x, y = v["mean_executed_layers"], v[key]
            colour = "black" if name == "dense" else ("tab:red" if name == "dysl" else "tab:blue")
            ax.plot(x, y, "o", color=colour)
            # Above the point, unless a close neighbour sits just above it: then below (legible pairs).
            crowded = any(
                other != name and abs(w["mean_executed_layers"] - x) < 1 and 0 <= w[key] - y < 0.06 * top
                for other, w in variants.items()
            )
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, -10 if crowded else 4), fontsize=8)
        if "dense" in variants:
            ax.axhline(variants["dense"][key], color="black", linestyle="--", linewidth=0.6)
        ax.axvline(layers, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlim(0, layers + 1)
        ax.set_ylim(0, top)
        ax.set_xlabel(f"executed layers per tick, mean (of {layers})")
        ax.set_ylabel(f"{label} (normalised actions)")
    fig.suptitle(f"Offline: {report['episodes']} recorded episode(s), a tick every {report['execute_steps']} frames",
                 fontsize=10)
    common.save_figure(fig, file)


# --------------------------------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace) -> int:
    return common.exit_status(PROG, _run, args)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.execute_steps < 1:
        raise ConfigError(f"--execute-steps must be >= 1, got {args.execute_steps}")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be in [0, 2**32), got {args.seed}")


def select_variants(spec: str | None, oracle_tolerance: float | None) -> tuple[list[str], list[str]]:
    """``--variants`` (None: the default list) -> (variants to run, variants left out). The default
    list's oracle_exit is left out without a tolerance (a named one is an error, as in closed-loop)."""
    if spec is None:
        chosen = list(DEFAULT_VARIANTS)
        if oracle_tolerance is None:
            return [v for v in chosen if v != "oracle_exit"], ["oracle_exit"]
        return chosen, []
    return parse_variants(spec), []


def _run(args: argparse.Namespace) -> int:
    variants, left_out = select_variants(args.variants, args.oracle_tolerance)
    _check_arguments(args)
    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"--model-dir {model_dir} is not a directory")
    load = common.load_settings(args)
    coins = common.plan_variants(args, variants, model_dir, load)
    for name in left_out:
        print(f"{PROG}: {name} left out: give --oracle-tolerance to run it", file=sys.stderr)

    import torch

    threads = torch.get_num_threads()  # the loader runs one thread (as closed-loop's workers): restored after
    try:
        return _bench(args, VariantLoader(load), variants, left_out, coins)
    finally:
        torch.set_num_threads(threads)


def _bench(
    args: argparse.Namespace, loader: VariantLoader, variants: list[str], left_out: list[str], coins: common.Coins
) -> int:
    from dysl_ros.training.rosbag_format import is_bag

    base = loader.base_policy(None)
    spec: ObservationSpec = base.spec
    common.check_chunk_arguments(args, spec.horizon)
    root = Path(args.demos)
    dataset, mapping_file = _open_dataset(root, args.mapping, spec, progress=not args.no_progress)
    indices: list[int] = list(dataset.episode_indices)[: args.episodes]
    if not indices:
        raise OfflineError(f"{root} holds no episodes")
    for variant in variants:  # load (and for onnxruntime build) everything before the clock starts
        if variant not in RANDOM_VARIANTS:
            loader.get(variant)
    started = time.perf_counter()
    results = _replay(args, loader, dataset, indices, spec, variants, coins)
    wall = time.perf_counter() - started
    source = {
        "dataset": str(root), "mapping": str(mapping_file), **({"bag": dataset.summary()} if is_bag(root) else {}),
        "dataset_version": dataset.version, "fps": dataset.fps, "episodes": len(indices), "episode_indices": indices,
    }
    report = _report(args, loader, source, variants, left_out, coins, results, wall)
    summary = f"{len(indices)} episode(s), {len(variants)} variant(s) in {wall:.1f} s"
    common.write_outputs(args, report, markdown_report(report), markdown_table(report), summary, plot_variants)
    return 0


def _open_dataset(root: Path, mapping: str | None, spec: ObservationSpec, progress: bool) -> tuple[Any, Path | None]:
    """A LeRobot dataset or a rosbag2 recording as the model's episodes, and the mapping that reads it."""
    from dysl_ros.training.lerobot_dataset import MAPPING_FILE
    from dysl_ros.training.lerobot_reader import open_for_model
    from dysl_ros.training.rosbag_dataset import open_bag
    from dysl_ros.training.rosbag_format import is_bag

    if is_bag(root):  # a rosbag2 recording, through its bag mapping (no default: a bag has none)
        mapping_file = Path(mapping) if mapping else None
        dataset = open_bag(root, mapping_file, spec, progress=progress)
        for line in dataset.summary_lines():
            print(line, file=sys.stderr)
        return dataset, mapping_file
    mapping_file = Path(mapping) if mapping else root / MAPPING_FILE
    return open_for_model(root, mapping_file, spec), mapping_file


def _replay(
    args: argparse.Namespace, loader: VariantLoader, dataset: Any, indices: Sequence[int], spec: ObservationSpec,
    variants: Sequence[str], coins: common.Coins,
) -> list[EpisodeResult]:
    """Every variant over every chosen episode: dense first (every tick's reference), then the first
    phase's variants, then the random variants whose coins it sets."""
    from tqdm import tqdm

    results: list[EpisodeResult] = []
    dense_chunks: dict[int, list[FloatArray]] = {}
    first = [v for v in coins.first if v != "dense"]
    total = len(indices) * (len(first) + len(coins.later) + 1)
    bar = tqdm(total=total, desc="offline", unit="ep", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True)
    dense_policy = loader.get("dense")  # the reference of every tick, run whether or not dense is reported
    try:
        for index, ticks in _episodes(dataset, indices, spec, args.execute_steps):
            result, chunks = run_episode(dense_policy, spec, "dense", index, ticks, None, args.execute_steps, args.seed)
            dense_chunks[index] = chunks
            if "dense" in variants:
                results.append(result)
            bar.update(1)
            for variant in first:
                policy = loader.get(variant, coins.coins.get(variant))
                results.append(run_episode(policy, spec, variant, index, ticks, chunks, args.execute_steps,
                                           args.seed)[0])
                bar.update(1)
        if coins.later:
            solved = coins.solve_later([n for r in results if r.variant == "dysl" for n in r.executed])
            # Frames decoded again rather than kept: a real dataset's fitted frames need not fit in memory.
            for index, ticks in _episodes(dataset, indices, spec, args.execute_steps):
                for variant in coins.later:
                    policy = loader.get(variant, solved[variant])
                    results.append(run_episode(policy, spec, variant, index, ticks, dense_chunks[index],
                                               args.execute_steps, args.seed)[0])
                    bar.update(1)
    finally:
        bar.close()
    return results


def _report(
    args: argparse.Namespace, loader: VariantLoader, source: Mapping[str, Any], variants: Sequence[str],
    left_out: list[str], coins: common.Coins, results: Sequence[EpisodeResult], wall: float,
) -> dict[str, Any]:
    from dysl_ros.model.checkpoint import ModelDirError, model_hash

    load = loader.settings
    base = loader.base_policy(None)
    spec: ObservationSpec = base.spec
    num_layers = int(base.plan.num_layers)
    try:
        digest = model_hash(load.model_dir)
    except ModelDirError:
        digest = ""
    figures = {v: variant_figures([r for r in results if r.variant == v], num_layers) for v in variants}
    report: dict[str, Any] = {
        **source,
        "ticks": figures[variants[0]]["ticks"] if variants else 0,
        "variants": figures,
        "left_out": left_out,
        "num_layers": num_layers,
        "horizon": spec.horizon,
        "action_dim": spec.action_dim,
        "cameras": [c.name for c in spec.cameras],
        "model_dir": str(load.model_dir),
        "model_hash": digest,
        "backend": args.backend,
        "machine": machine_label(),
        "execute_steps": args.execute_steps,
        "seed": args.seed,
        "modules_dir": load.modules_dir,
        "dysl_overrides": load.dysl_overrides(),
        "wall_s": wall,
    }
    common.variant_settings(report, args, variants, coins)
    return report


def _episodes(
    dataset: Any, indices: Sequence[int], spec: ObservationSpec, execute_steps: int
) -> Iterator[tuple[int, list[Tick]]]:
    """Each chosen episode's index and ticks, decoded one episode at a time."""
    for index in indices:
        yield index, episode_ticks(dataset.episode(index), spec, execute_steps)
