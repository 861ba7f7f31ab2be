"""Calibration (paper Section 3.1): ``dysl_train calibrate``.

The layers whose output differs most from their input (lowest cosine similarity over demonstration
batches) become static, the rest dynamic; the demonstrations' continuity changes set the
thresholds eta and eta_verify. Both go into the model directory (layer_plan.json, dysl.json), with
a plot of the similarities. The backbone is not changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.continuity import continuity_deltas, suggest_etas
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model import checkpoint
from dysl_ros.model.calibration import layer_similarities
from dysl_ros.model.observation_spec import ObservationSpec, as_spec
from dysl_ros.model.spec import VLAConfig
from dysl_ros.params import from_flags
from dysl_ros.training import dataset as data
from dysl_ros.training.bc import resolve_device
from dysl_ros.training.dataset import EpisodeLike
from dysl_ros.training.distill import freeze, load_model_episodes, sample_loader
from dysl_ros.training.settings import CalibrateSettings

PLOT_FILE = "layer_similarity.png"
STALE_AFTER_CALIBRATION = (checkpoint.MODULES_FILE, checkpoint.MODULES_CONFIG_FILE)


def calibrate_model_dir(
    model_dir: str | Path, episodes: Sequence[EpisodeLike], settings: CalibrateSettings
) -> LayerPlan:
    """Layer similarities over demo batches -> layer_plan.json and a plot; continuity changes of the
    demonstrations (executed ``execute_steps`` at a time) -> eta (the ``eta_quantile`` of |dC|) and
    eta_verify. Both go into dysl.json with the static ratio. The static layers: the lowest-similarity
    ones (``static_ratio`` of them), with ``max_gap`` the lowest-similarity set with no gap longer
    than that, or ``static_layers`` as given; layer_plan.json records the rule."""
    s = settings
    static_layers, static_ratio = s.layers(), s.static_ratio
    path = Path(model_dir)
    bundle = checkpoint.load_bundle(path, ignore_stale_modules=True)
    target = resolve_device(s.device)
    freeze(bundle.model, target)
    loader = sample_loader(episodes, bundle.model, s.batch_size, s.seed, target)
    taken = (data.to_device(b, target) for _, b in zip(range(max(1, s.batches)), loader, strict=False))
    similarities = layer_similarities(bundle.model, taken)
    if static_layers is not None:
        plan = LayerPlan.explicit(len(similarities), static_layers, similarities)
    else:
        plan = LayerPlan.from_similarities(similarities, static_ratio, s.max_gap)
    if round(static_ratio * plan.num_layers) != len(plan.static_layers):  # a spread or given plan: its own share
        static_ratio = len(plan.static_layers) / plan.num_layers

    if bundle.plan is not None and bundle.plan.static_layers != plan.static_layers:
        # Modules trained for other static layers no longer fit this plan; drop them, not load errors later.
        for name in STALE_AFTER_CALIBRATION:
            (path / name).unlink(missing_ok=True)
        print(f"static layers changed from {list(bundle.plan.static_layers)}: removed the old DySL modules")
    previous = bundle.dysl_config or DySLConfig()
    deltas = demo_continuity_deltas(episodes, bundle.spec, previous.k, s.execute_steps)
    eta, eta_verify = suggest_etas(deltas, eta_quantile=s.eta_quantile)
    print(f"continuity thresholds from the demonstrations: eta {eta:.4g}, eta_verify {eta_verify:.4g}")
    updated = dataclasses.replace(previous, static_ratio=static_ratio, eta=eta, eta_verify=eta_verify)
    checkpoint.save_dysl(path, plan, dysl_config=updated)
    plot_similarities(plan, path / PLOT_FILE, static_ratio)
    return plan


def demo_continuity_deltas(
    episodes: Sequence[EpisodeLike], spec: ObservationSpec | VLAConfig, k: int, actions_per_inference: int
) -> npt.NDArray[np.floating]:
    """dC_t over the demonstrations' actions in the model's normalised units (those the runner's
    continuity monitor sees), as if executed ``actions_per_inference`` per inference: each window is
    the chunk training labels at its start (``dataset.action_chunk``), what the model learns to emit."""
    normalisation = as_spec(spec).action_normalisation
    trajectories = []
    for e in episodes:
        windows = [data.episode_chunk(e, start, actions_per_inference)
                   for start in range(0, len(e.actions), actions_per_inference)]
        executed = np.concatenate([chunk[mask > 0] for chunk, mask in windows])
        trajectories.append(normalisation.normalise(executed, np.float64))
    return continuity_deltas(trajectories, k, actions_per_inference)


def plot_similarities(plan: LayerPlan, file: Path, static_ratio: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training machines
    import matplotlib.pyplot as plt

    sims = list(plan.similarities or ())
    layers = list(range(plan.num_layers))
    static = set(plan.static_layers)
    colours = ["tab:red" if i in static else "tab:blue" for i in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * plan.num_layers), 3.5))
    ax.bar(layers, sims, color=colours)
    ax.set_xlabel("layer")
    ax.set_ylabel("cos(input, output)")
    ax.set_title(f"Layer similarity; static (red, ratio {static_ratio}): {list(plan.static_layers)}")
    ax.set_xticks(layers)
    if sims:
        low, high = min(sims), max(sims)
        margin = max(1e-3, 0.1 * (high - low))
        ax.set_ylim(low - margin, min(1.0, high + margin) if high <= 1.0 else high + margin)
    fig.tight_layout()
    fig.savefig(file, dpi=100)
    plt.close(fig)


def describe_plan(plan: LayerPlan) -> str:
    lines = [f"layer plan: {plan.num_layers} layers, static {list(plan.static_layers)}"]
    for g, gap in enumerate(plan.gaps):
        lines.append(f"  gap {g}: dynamic {list(gap.dynamic_layers)} -> static {gap.static}")
    if plan.similarities is not None:
        lines.append("  similarity: " + " ".join(f"{i}:{s:.3f}" for i, s in enumerate(plan.similarities)))
    return "\n".join(lines)


def main_calibrate(args: argparse.Namespace) -> int:
    """``dysl_train calibrate --model-dir D --demos DIR --static-ratio 0.2 --batches N``."""
    try:
        settings = from_flags(CalibrateSettings, args)
        plan = calibrate_model_dir(args.model_dir, load_model_episodes(args), settings)
    except (ConfigError, ValueError, OSError, checkpoint.ModelDirError) as exc:
        print(f"dysl_train calibrate: {exc}", file=sys.stderr)
        return 2
    print(describe_plan(plan))
    print(f"wrote {Path(args.model_dir) / checkpoint.PLAN_FILE} and {Path(args.model_dir) / PLOT_FILE}")
    return 0
