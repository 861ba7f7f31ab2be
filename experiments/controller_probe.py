"""Can a controller tell, from what it reads, whether leaving the stack at its layer is safe?

For every frame of some demonstrations and every dynamic layer i of the model's layer plan:
- e_i, the exit error: mean |chunk - dense chunk| (normalised actions) when the pass jumps from layer
  i through its adapter to the gap's static layer and runs densely from there (what
  `dysl_bench closed-loop --variants oracle_exit` thresholds);
- p_i, the trained controller's skip probability on x_i (the input of layer i);
- x_i mean-pooled over tokens: what the controller reads.

With the oracle's label y_i = [e_i <= tolerance], it reports per layer the share of frames the oracle
skips, the trained controller's AUC for that label, and the AUC of a logistic probe on the same pooled
x_i fitted on half of the episodes and scored on the other half. A probe far above the controller
says the information is there and the training did not find it; a probe near 0.5 says what the
controller reads does not carry it. It also reports the Spearman correlation of p_i with -e_i.

    python experiments/controller_probe.py --model-dir models/reference --demos data/probe_demos \
        --tolerance 0.026 --max-frames 4000 [--by-task]

``--context`` adds two probes on what a controller could read besides the pooled hidden state (issue 30):
the motion context of the frame, as the served policy would have it at that tick (C_t and dC_t of
Eq. 1 over the executed actions before the frame, k from dysl.json and one tick = 4 actions earlier;
the state; the last 4 executed actions), alone and appended to x_i. A probe on x_i + context far
above the one on x_i says the controllers should read the motion; near it, they have what they need.

``--by-task`` adds, per task, the dense chunk's size and the exit errors measured both ways
(``absolute`` and ``relative``, dysl_ros.core.exit_error): where a task's chunks are small, an
absolute tolerance labels nearly every exit "skip".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Subset

from dysl_ros.core.exit_error import relative_scale
from dysl_ros.model.checkpoint import load_bundle
from dysl_ros.training.dataset import ChunkDataset
from dysl_ros.training.demos import load_demo_dirs
from dysl_ros.training.distill import dense_states, exit_errors, freeze

Array = npt.NDArray[np.float64]


def auc(scores: Array, labels: npt.NDArray[np.bool_]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan when one class is absent."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(sorted_scores[np.r_[False, np.diff(sorted_scores) == 0]]):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def spearman(a: Array, b: Array) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def fit_logistic(features: Array, labels: npt.NDArray[np.bool_], steps: int = 300) -> torch.nn.Linear:
    """L2-regularised logistic regression on standardised features (full-batch L-BFGS)."""
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    probe = torch.nn.Linear(x.shape[1], 1)
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(x).squeeze(-1), y)
        loss = loss + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return probe


def probe_auc(features: Array, labels: npt.NDArray[np.bool_], train: npt.NDArray[np.bool_]) -> float:
    """AUC on the rows not in ``train`` of a logistic probe fitted on the ``train`` rows (features
    standardised by the train rows); nan when either side lacks a class."""
    if not 0 < labels[train].sum() < train.sum():
        return float("nan")
    mean, std = features[train].mean(0), features[train].std(0) + 1e-6
    probe = fit_logistic((features[train] - mean) / std, labels[train])
    with torch.no_grad():
        scores = probe(torch.as_tensor((features[~train] - mean) / std, dtype=torch.float32)).squeeze(-1).numpy()
    return auc(scores.astype(np.float64), labels[~train])


@torch.no_grad()
def measure(
    model_dir: str, modules_dir: str | None, demos: str, max_frames: int, batch_size: int, seed: int
) -> dict[str, Array]:
    bundle = load_bundle(model_dir, modules_dir)
    if bundle.plan is None or bundle.modules is None:
        raise SystemExit(f"{model_dir} has no DySL modules: run dysl_train distill first")
    model, modules, plan = bundle.model, bundle.modules.float().eval(), bundle.plan
    freeze(model, torch.device("cpu"))
    episodes = load_demo_dirs(demos).episodes
    dataset = ChunkDataset(episodes, bundle.spec)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(dataset), size=min(max_frames, len(dataset)), replace=False))
    loader = DataLoader(Subset(dataset, picked.tolist()), batch_size=batch_size, shuffle=False)
    dynamic = list(plan.dynamic_layers)
    errors, relative, probabilities, pooled, sizes = [], [], [], [], []
    for batch in loader:
        states = dense_states(model, batch)
        dense = model.head(states[-1]).float()
        exits = exit_errors(model, modules, plan, states, dense)
        e_row = [exits[i] for i in dynamic]
        # The relative errors from the absolute ones: the same exits, not a second pass through them.
        relative.append(torch.stack(e_row, 1) / relative_scale(dense)[:, None])
        sizes.append(dense.abs().mean(dim=(1, 2)))
        p_row = [modules.controller(i)(states[i]) for i in dynamic]
        x_row = [states[i].float().mean(dim=1) for i in dynamic]
        errors.append(torch.stack(e_row, 1))
        probabilities.append(torch.stack(p_row, 1))
        pooled.append(torch.stack(x_row, 1))
        print(f"\r{sum(len(e) for e in errors)}/{len(picked)} frames", end="", file=sys.stderr)
    print(file=sys.stderr)
    frame_episode, frame_t = dataset.index[picked, 0], dataset.index[picked, 1]
    k = int(json.loads((Path(modules_dir or model_dir) / "dysl.json").read_text())["k"])
    context = np.stack([
        motion_context(np.asarray(episodes[int(e)].actions, np.float64), np.asarray(episodes[int(e)].proprio,
                       np.float64), int(t), k)
        for e, t in zip(frame_episode, frame_t, strict=True)
    ])
    return {
        "context": context,
        "layers": np.asarray(dynamic),
        "errors": torch.cat(errors).numpy().astype(np.float64),
        "relative_errors": torch.cat(relative).numpy().astype(np.float64),
        "dense_size": torch.cat(sizes).numpy().astype(np.float64),
        "task": np.asarray([episodes[int(e)].task for e in frame_episode]),
        "probabilities": torch.cat(probabilities).numpy().astype(np.float64),
        "pooled": torch.cat(pooled).numpy().astype(np.float64),
        "episode": frame_episode.astype(np.int64),
    }


def continuity(actions: Array, k: int) -> float:
    """C_t of Eq. 1 over the last k differences of ``actions`` (fewer at the start; 0 with none)."""
    window = actions[-(k + 1):]
    if len(window) < 2:
        return 0.0
    return float(-np.linalg.norm(np.diff(window, axis=0), axis=1).mean())


def motion_context(actions: Array, state: Array, t: int, k: int, tick: int = 4) -> Array:
    """What the policy knows of the motion at frame ``t`` of an episode: C_t and dC_t over the
    actions executed before t (the previous tick's reading ``tick`` actions earlier), the state at t,
    and the last ``tick`` executed actions (zeros before the episode's start)."""
    now, before = continuity(actions[:t], k), continuity(actions[: max(t - tick, 0)], k)
    previous = np.zeros((tick, actions.shape[1]))
    recent = actions[max(t - tick, 0) : t]
    if len(recent):
        previous[-len(recent):] = recent
    return np.concatenate([[now, now - before], state[t], previous.reshape(-1)])


def report(data: dict[str, Array], tolerance: float, threshold: float) -> list[dict[str, float]]:
    train = data["episode"] % 2 == 0
    rows = []
    for column, layer in enumerate(data["layers"]):
        e, p, x = data["errors"][:, column], data["probabilities"][:, column], data["pooled"][:, column]
        label = e <= tolerance
        rows.append({
            "layer": int(layer),
            "oracle_skips": float(label.mean()),
            "controller_skips": float((p >= threshold).mean()),
            "error_median": float(np.median(e)),
            "controller_auc": auc(p[~train], label[~train]),
            "probe_auc": probe_auc(x, label, train),
            "spearman_p_vs_minus_error": spearman(p, -e),
        })
        if "context" in data:
            rows[-1]["probe_auc_context_only"] = probe_auc(data["context"], label, train)
            rows[-1]["probe_auc_with_context"] = probe_auc(np.concatenate([x, data["context"]], 1), label, train)
    return rows


def by_task(data: dict[str, Array], tolerance: float, relative_tolerance: float) -> list[dict[str, float | str]]:
    """Per task: the dense chunk's size (mean |action|), the median exit error at the first dynamic
    layer and at the middle one, absolute and relative (dysl_ros.core.exit_error), and the share of
    exits each measure labels "skip" at its tolerance."""
    first, middle = 0, len(data["layers"]) // 4
    rows: list[dict[str, float | str]] = []
    for task in sorted(set(data["task"].tolist())):
        m = data["task"] == task
        e, r = data["errors"][m], data["relative_errors"][m]
        rows.append({
            "task": task, "frames": int(m.sum()), "dense_size": float(np.median(data["dense_size"][m])),
            f"abs_error_layer{data['layers'][first]}": float(np.median(e[:, first])),
            f"abs_error_layer{data['layers'][middle]}": float(np.median(e[:, middle])),
            f"rel_error_layer{data['layers'][first]}": float(np.median(r[:, first])),
            f"rel_error_layer{data['layers'][middle]}": float(np.median(r[:, middle])),
            "abs_skip_labels": float((e <= tolerance).mean()),
            "rel_skip_labels": float((r <= relative_tolerance).mean()),
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="models/reference")
    parser.add_argument("--modules-dir", default=None, help="DySL modules (default: the model dir's)")
    parser.add_argument("--demos", required=True, help="demonstration dir(s), A,B")
    parser.add_argument("--tolerance", type=float, default=0.026, help="the oracle's tolerance (default 0.026)")
    parser.add_argument("--skip-threshold", type=float, default=None,
                        help="the controllers' threshold (default: the model dir's dysl.json)")
    parser.add_argument("--max-frames", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    parser.add_argument(
        "--by-task", action="store_true",
        help="also a table per task: dense chunk size, absolute and relative exit errors, and the share of "
        "exits each labels 'skip' (the relative tolerance: the one that labels as many exits as --tolerance)",
    )
    parser.add_argument("--context", action="store_true",
                        help="also probe the motion context (C_t, dC_t, state, last executed actions): alone and "
                        "with x_i")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    threshold = args.skip_threshold
    if threshold is None:
        settings = json.loads((Path(args.modules_dir or args.model_dir) / "dysl.json").read_text())
        threshold = float(settings["skip_threshold"])
    data = measure(args.model_dir, args.modules_dir, args.demos, args.max_frames, args.batch_size, args.seed)
    if not args.context:
        data.pop("context")
    rows = report(data, args.tolerance, threshold)
    print(f"{len(data['errors'])} frames; oracle tolerance {args.tolerance}; controller threshold {threshold}; "
          "AUCs on the held-out half of the episodes")
    extra = " probe AUC, context only | probe AUC, x + context |" if args.context else ""
    print("| layer | oracle skips | controller skips | median exit error | controller AUC | probe AUC | "
          "Spearman(p, -e) |" + extra)
    print("|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.context else ""))
    for row in rows:
        cells = (f" {row['probe_auc_context_only']:.3f} | {row['probe_auc_with_context']:.3f} |"
                 if args.context else "")
        print(f"| {row['layer']} | {row['oracle_skips']:.2f} | {row['controller_skips']:.2f} | "
              f"{row['error_median']:.4f} | {row['controller_auc']:.3f} | {row['probe_auc']:.3f} | "
              f"{row['spearman_p_vs_minus_error']:.3f} |" + cells)
    if args.by_task:
        share = float((data["errors"] <= args.tolerance).mean())
        relative_tolerance = float(np.quantile(data["relative_errors"], share))
        print(f"\nper task; relative tolerance {relative_tolerance:.4f} (labels {share:.0%} of exits 'skip', as "
              f"{args.tolerance} does)")
        task_rows = by_task(data, args.tolerance, relative_tolerance)
        print("| " + " | ".join(task_rows[0]) + " |")
        print("|---" + "|---:" * (len(task_rows[0]) - 1) + "|")
        for task_row in task_rows:
            print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in task_row.values()) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
