"""controller_probe.py on the states DySL itself meets in closed loop, not the expert's.

Runs DySL (the model dir's modules: controllers, thresholds, allow points and verification as served)
in Meta-World, --episodes per task on --seed. At every controller consult it records, for the
consulted dynamic layer i and its input x_i:
- p_i of the served controller (the one that decides, so the states are DySL's own);
- p_i of the controllers of each --compare modules dir (same plan), on the same x_i;
- e_i, the exit error from layer i (the oracle_exit measure: adapter, the dense rest, head, mean
  |chunk - this tick's dense chunk|, normalised actions), and x_i mean-pooled over tokens.

Per layer it reports the consults, the share the oracle would skip (e_i <= tolerance), each
controller's AUC for that label, and a logistic probe's AUC on the pooled x_i (fitted on the even
episodes, scored on the odd). Success and executed layers come out as in `dysl_bench closed-loop`
for the same episodes (recording changes no decision).

    python experiments/controller_probe_closed_loop.py --model-dir models/reference --seed 2000 \
        --episodes 10 --tolerance 0.026 --compare runs/exp_stage3_full --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from controller_probe import auc, probe_auc

from dysl_ros.bench.closed_loop import Job, WorkerSettings, WorkerState, make_jobs, run_episode
from dysl_ros.bench.variants import LoadSettings, OracleExitBackend, RunnerVariant, VariantLoader, VariantPolicy
from dysl_ros.core.config import DySLConfig
from dysl_ros.core.runner import DySLRunner, FloatArray, ModelInputs
from dysl_ros.model.checkpoint import load_bundle
from dysl_ros.model.skip_modules import DySLModules
from dysl_ros.mt10.env import model_goal_marker_radius
from dysl_ros.mt10.tasks import MT10_TASKS


class ScoringBackend:
    """The served backend, passed through; each controller consult also records the oracle's exit
    error and the compared controllers' probabilities on the same input."""

    def __init__(self, oracle: OracleExitBackend[torch.Tensor], compare: dict[str, DySLModules]) -> None:
        self.oracle = oracle
        self.inner = oracle.inner
        self.name = f"{self.inner.name}+scoring"
        self.compare = compare
        self.rows: list[dict[str, Any]] = []

    def embed(self, inputs: ModelInputs) -> torch.Tensor:
        return self.oracle.embed(inputs)  # also runs the dense pass: the exit errors' reference

    def run_layers(self, start: int, stop: int, x: torch.Tensor) -> torch.Tensor:
        return self.inner.run_layers(start, stop, x)

    def adapt(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.inner.adapt(layer, x)

    @torch.inference_mode()
    def skip_probability(self, layer: int, x: torch.Tensor) -> float:
        p = self.inner.skip_probability(layer, x)
        row = {
            "layer": layer,
            "p": p,
            "error": self.oracle.exit_error(layer, x),
            "pooled": x.float().mean(dim=1)[0].numpy(),
            "compare": {name: float(m.controller(layer)(x)[0].item()) for name, m in self.compare.items()},
        }
        self.rows.append(row)
        return p

    def head(self, x: torch.Tensor) -> FloatArray:
        return self.inner.head(x)


class ScoringLoader(VariantLoader):
    """'dysl' over a ScoringBackend."""

    def __init__(self, settings: LoadSettings, compare: list[str]) -> None:
        super().__init__(settings)
        self.compare_dirs = compare
        self.scoring: ScoringBackend | None = None

    def get(self, variant: str, coin: float | None = None) -> VariantPolicy:
        if variant not in self._variants:
            policy = self.base_policy(None)
            config: DySLConfig = policy.bundle.dysl_config or DySLConfig()
            oracle = OracleExitBackend(policy.runner.backend, policy.plan, self.settings.oracle_tolerance or 0.0)
            compare = {}
            for directory in self.compare_dirs:
                bundle = load_bundle(self.settings.model_dir, directory)
                if bundle.plan != policy.plan or bundle.modules is None:
                    raise SystemExit(f"{directory}: not DySL modules of the served plan {policy.plan}")
                compare[Path(directory).name] = bundle.modules.float().eval()
            self.scoring = ScoringBackend(oracle, compare)
            self._variants[variant] = RunnerVariant(variant, policy, DySLRunner(self.scoring, policy.plan, config))
        return self._variants[variant]


_STATE: WorkerState | None = None


def _init(settings: WorkerSettings, compare: list[str]) -> None:
    global _STATE
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    _STATE = WorkerState(settings, ScoringLoader(settings.load, compare))


def _job(job: Job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    assert _STATE is not None
    loader = _STATE.loader
    assert isinstance(loader, ScoringLoader)
    result = run_episode(_STATE, job)
    assert loader.scoring is not None
    rows, loader.scoring.rows = loader.scoring.rows, []
    for row in rows:
        row["episode"], row["task"] = job.episode, job.task
    summary = {"task": job.task, "success": result.success, "executed": result.executed}
    return summary, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="models/reference")
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=10, help="per task")
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--tolerance", type=float, default=0.026)
    parser.add_argument("--compare", action="append", default=[], help="another modules dir (repeatable)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows-out", help="also save every consult (layer, p, error, compared p) to this .npz")
    parser.add_argument("--thresholds", default="0.35,0.5,0.7", help="cuts for the skip/false-skip table")
    parser.add_argument("--json", action="store_true", help="last line: the per-layer table as JSON")
    args = parser.parse_args()

    tasks = list(MT10_TASKS) if args.tasks == "all" else args.tasks.split(",")
    load = LoadSettings(args.model_dir, oracle_tolerance=args.tolerance)
    settings = WorkerSettings(load, "corner", 200, 4, model_goal_marker_radius(Path(args.model_dir)))
    jobs = make_jobs(["dysl"], tasks, args.episodes, args.seed)
    context = multiprocessing.get_context("spawn")
    summaries, rows = [], []
    with context.Pool(args.workers, _init, (settings, args.compare)) as pool:
        for done, (summary, episode_rows) in enumerate(pool.imap(_job, jobs), 1):
            summaries.append(summary)
            rows.extend(episode_rows)
            print(f"\r{done}/{len(jobs)} episodes", end="", file=sys.stderr)
    print(file=sys.stderr)

    success = np.mean([s["success"] for s in summaries])
    layers = np.mean([n for s in summaries for n in s["executed"]])
    print(f"DySL on seed {args.seed}, {len(summaries)} episodes: success {100 * success:.1f} %, "
          f"{layers:.2f} layers; {len(rows)} controller consults; tolerance {args.tolerance}")
    names = ["served", *(Path(d).name for d in args.compare)]
    header = "| layer | consults | oracle skips | " + " | ".join(f"AUC {n}" for n in names) + " | AUC probe |"
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))
    table = []
    for layer in sorted({r["layer"] for r in rows}):
        mine = [r for r in rows if r["layer"] == layer]
        label = np.array([r["error"] <= args.tolerance for r in mine])
        scores = {"served": np.array([r["p"] for r in mine])}
        scores.update({n: np.array([r["compare"][n] for r in mine]) for n in names[1:]})
        aucs = {n: auc(s, label) for n, s in scores.items()}
        x = np.stack([r["pooled"] for r in mine]).astype(np.float64)
        train = np.array([r["episode"] % 2 == 0 for r in mine])
        probe = probe_auc(x, label, train)  # nan where the odd episodes lack a class too (auc's rule)
        table.append({"layer": layer, "consults": len(mine), "oracle_skips": float(label.mean()), "auc": aucs,
                      "probe_auc": probe})
        cells = " | ".join(f"{aucs[n]:.2f}" for n in names)
        print(f"| {layer} | {len(mine)} | {100 * label.mean():.0f} % | {cells} | {probe:.2f} |")
    all_label = np.array([r["error"] <= args.tolerance for r in rows])
    for n in names:
        pooled = np.array([r["p"] if n == "served" else r["compare"][n] for r in rows])
        print(f"all consults, {n}: AUC {auc(pooled, all_label):.2f}")
    # What a cut does: per layer, the share of consults each controller skips at threshold t, and the
    # share it skips although the exit lands beyond the tolerance (a false skip: it ends the pass there).
    errors = np.array([r["error"] for r in rows])
    layer_of = np.array([r["layer"] for r in rows])
    shallow = sorted({r["layer"] for r in rows})[:6]
    print("\nskips / false skips per consult (e > tolerance), by controller and threshold")
    print("| controller | t | " + " | ".join(f"layer {i}" for i in shallow) + " |")
    print("|---|---:|" + "---:|" * len(shallow))
    for n in names:
        p_all = np.array([r["p"] if n == "served" else r["compare"][n] for r in rows])
        for t in [float(v) for v in args.thresholds.split(",")]:
            shares: list[str] = []
            for i in shallow:
                at = layer_of == i
                skip = p_all[at] >= t
                shares.append(f"{100 * skip.mean():.0f} / {100 * (skip & (errors[at] > args.tolerance)).mean():.0f} %")
            print(f"| {n} | {t:g} | " + " | ".join(shares) + " |")
    if args.rows_out:
        arrays: dict[str, Any] = {
            "layer": layer_of, "error": errors, "episode": np.array([r["episode"] for r in rows]),
            "task": np.array([r["task"] for r in rows]),
        }
        for n in names:
            arrays[f"p_{n}"] = np.array([r["p"] if n == "served" else r["compare"][n] for r in rows])
        np.savez(args.rows_out, **arrays)
    if args.json:
        print(json.dumps({"seed": args.seed, "episodes": len(summaries), "success_rate": float(success),
                          "mean_executed_layers": float(layers), "tolerance": args.tolerance, "layers": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
