"""Skip-aware two-stage distillation (paper Section 3.4): ``dysl_train distill``.

The backbone stays frozen; only the DySL modules (one adapter and one controller per dynamic layer)
learn. With g a gap of dynamic layers in front of static layer s_g, and x_i the input of layer i:

Stage 1 (Eq. 4), adapters only: adapter_i(x_i) should equal x_{s_g}, the static layer's input in the
    dense pass. Loss = sum over dynamic layers of MSE(adapter_i(x_i), x_{s_g}).
Stage 2 (Eq. 5-6), adapters + controllers: each step, one dynamic layer i per gap, drawn with
    harmonic-decay probability (gap position j has weight 1/(j+1)); layers before i run (forced
    prefix), and x_{s_g} = p * adapter_i(x_i) + (1 - p) * L_{s_g-1}(...L_i(x_i)), p = controller_i(x_i).
    Loss = L1(chunk, dense chunk) [+ w * L1(chunk, demo actions)] + lambda * sum_g (1 - p)(s_g - i).
One-stage (ablation): no stage 1; stage 2's loss from scratch for the same number of steps in total.
``--adapter-init random`` starts the adapters from random weights instead of the identity (the paper's
"randomly initialised" adapters; an experiment on why one-stage training does or does not skip).
No static layers (ablation, ``--plan last-layer-only``): the same two stages over one gap spanning the
whole stack. Ablations go to ``--modules-out <model dir>/variants/<name>`` (DySL files only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.exit_error import exit_error
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model import checkpoint
from dysl_ros.model.backbone import VLABackbone, backbone_parameters
from dysl_ros.model.skip_modules import DySLModules, SkipModuleConfig, parameter_report
from dysl_ros.params import from_flags
from dysl_ros.training import dataset as data
from dysl_ros.training.bc import adamw, autocast, masked_l1, resolve_device, warmup_cosine
from dysl_ros.training.dataset import Batch, ChunkDataset, EpisodeLike
from dysl_ros.training.settings import PLAN_CHOICES, STAGE3_WEIGHTINGS, DistillSettings, RouterSettings

DISTILL_LOG_FILE = "distill_log.jsonl"
DISTILL_REPORT_FILE = "distill.json"


# --------------------------------------------------------------------------------------------------
# Pieces of the two stages


def backbone_modules(model: VLABackbone) -> tuple[nn.Module, nn.Module, nn.Module]:
    return model.embed, model.layers, model.head


def freeze(model: VLABackbone, device: torch.device) -> None:
    """Frozen teacher and student body: no gradients into it, eval behaviour, on ``device``."""
    for part in backbone_modules(model):
        part.to(device).eval()
        for param in part.parameters():
            param.requires_grad_(False)


def harmonic_weights(size: int) -> npt.NDArray[np.float64]:
    """Selection probabilities of a gap's positions 0..size-1: proportional to 1/(j+1), so early
    layers, whose adapters must stand in for the most layers, are trained most often."""
    weights = 1.0 / np.arange(1, size + 1, dtype=np.float64)
    return weights / weights.sum()


def sample_skip_layers(plan: LayerPlan, rng: np.random.Generator) -> list[int | None]:
    """One dynamic layer per gap (None for an empty gap), harmonic-decay over gap positions."""
    chosen: list[int | None] = []
    for gap in plan.gaps:
        if len(gap) == 0:
            chosen.append(None)
        else:
            chosen.append(gap.start + int(rng.choice(len(gap), p=harmonic_weights(len(gap)))))
    return chosen


@torch.no_grad()
def dense_states(model: VLABackbone, batch: Batch) -> list[Tensor]:
    """Inputs of every layer in the dense pass, then the last layer's output (L + 1 tensors)."""
    x = model.embed(*data.model_inputs(batch, model.spec))
    states = [x]
    for layer in model.layers:
        x = layer(x)
        states.append(x)
    return states


def stage1_loss(model: VLABackbone, modules: DySLModules, plan: LayerPlan, batch: Batch) -> Tensor:
    """Eq. 4: sum over dynamic layers i of MSE(adapter_i(x_i), x_{s_g}).

    In the dense pass, running the frozen layers i..s_g-1 from x_i gives exactly x_{s_g}, so one
    no-grad pass supplies every target."""
    states = dense_states(model, batch)
    loss = torch.zeros((), device=states[0].device)
    for gap in plan.gaps:
        target = states[gap.static].float()
        for i in gap.dynamic_layers:
            loss = loss + F.mse_loss(modules.adapter(i)(states[i]).float(), target)
    return loss


def mixed_forward(
    model: VLABackbone, modules: DySLModules, plan: LayerPlan, batch: Batch, chosen: Sequence[int | None]
) -> tuple[Tensor, list[tuple[int, int, Tensor]]]:
    """Eq. 5 through the whole network. Returns the chunk and, per non-empty gap, (static layer,
    chosen layer, p of shape (B,))."""
    x = model.embed(*data.model_inputs(batch, model.spec))
    decisions: list[tuple[int, int, Tensor]] = []
    layers = model.layers
    for gap, i in zip(plan.gaps, chosen, strict=True):
        if i is not None:
            for layer in layers[gap.start : i]:  # forced prefix
                x = layer(x)
            p = modules.controller(i)(x)
            skipped = modules.adapter(i)(x)
            for layer in layers[i : gap.static]:
                x = layer(x)
            weight = p.to(x.dtype)[:, None, None]
            x = weight * skipped.to(x.dtype) + (1.0 - weight) * x
            decisions.append((gap.static, i, p))
        x = layers[gap.static](x)
    return model.head(x), decisions


@dataclasses.dataclass(frozen=True)
class Stage2Terms:
    loss: Tensor
    task: float
    penalty: float
    mean_p: float


def stage2_loss(
    model: VLABackbone,
    modules: DySLModules,
    plan: LayerPlan,
    batch: Batch,
    chosen: Sequence[int | None],
    lam: float,
    gt_weight: float = 0.0,
) -> Stage2Terms:
    """Eq. 6: L1 to the frozen dense model's chunk (+ ground truth) + lambda * sum_g (1-p)(s_g - i)."""
    with torch.no_grad():
        teacher = model.head(dense_states(model, batch)[-1]).float()
    chunk, decisions = mixed_forward(model, modules, plan, batch, chosen)
    task = F.l1_loss(chunk.float(), teacher)
    if gt_weight > 0:
        task = task + gt_weight * masked_l1(chunk, batch["actions"], batch["action_mask"])
    penalty = torch.zeros((), device=chunk.device)
    ps = []
    for static, i, p in decisions:
        penalty = penalty + ((1.0 - p.float()) * (static - i)).mean()  # batch mean of the per-sample sum
        ps.append(p.detach().float())
    mean_p = float(torch.cat(ps).mean().item()) if ps else 0.0
    return Stage2Terms(task + lam * penalty, float(task.detach().item()), float(penalty.detach().item()), mean_p)


@torch.no_grad()
def exit_errors(
    model: VLABackbone, modules: DySLModules, plan: LayerPlan, states: Sequence[Tensor], teacher: Tensor,
    measure: str = "absolute",
) -> dict[int, Tensor]:
    """Per dynamic layer i, per sample (B,): how far the chunk lands from the dense chunk
    (dysl_ros.core.exit_error, ``measure``) when the pass jumps from layer i through its adapter to
    the gap's static layer and runs densely from there on. The measure of ``dysl_bench closed-loop
    --variants oracle_exit`` (dysl_ros.bench.variants.OracleExitBackend)."""
    errors: dict[int, Tensor] = {}
    for gap in plan.gaps:
        for i in gap.dynamic_layers:
            x = modules.adapter(i)(states[i])
            for layer in model.layers[gap.static :]:
                x = layer(x)
            errors[i] = exit_error(model.head(x).float(), teacher, measure)
    return errors


def stage3_loss(
    model: VLABackbone, modules: DySLModules, plan: LayerPlan, batch: Batch, tolerance: float | Tensor,
    weighting: str = "none", measure: str = "absolute",
) -> tuple[Tensor, float, float]:
    """Controllers fitted to the exit error: for every dynamic layer i, binary cross-entropy of its
    controller on x_i against "the jump from i lands within ``tolerance`` of the dense chunk" (by
    ``measure``: dysl_ros.core.exit_error). ``tolerance``: one for every frame, or (B,) per frame
    (``task_tolerances``; inf labels every exit of that frame "skip").
    ``weighting="margin"`` weighs each frame by |e_i - tolerance| / tolerance, so a wrong "skip" where
    the jump lands far off costs more than one at the border (Eq. 6 weighs its decisions alike).
    Returns (loss, share of positive labels, mean p)."""
    if weighting not in STAGE3_WEIGHTINGS:
        raise ConfigError(f"stage-3 weighting must be one of {STAGE3_WEIGHTINGS}, got {weighting!r}")
    if weighting == "margin" and not bool(torch.isfinite(torch.as_tensor(tolerance)).all()):
        raise ConfigError("the margin weighting needs finite exit tolerances")
    with torch.no_grad():
        states = dense_states(model, batch)
        teacher = model.head(states[-1]).float()
        errors = exit_errors(model, modules, plan, states, teacher, measure)
    losses, labels, ps = [], [], []
    for i, error in errors.items():
        label = (error <= tolerance).float()
        logits = modules.controller(i).logits(states[i])
        weight = (error - tolerance).abs() / tolerance if weighting == "margin" else None
        losses.append(F.binary_cross_entropy_with_logits(logits, label, weight=weight))
        labels.append(label)
        ps.append(torch.sigmoid(logits.detach()))
    if not losses:
        raise ConfigError("the layer plan has no dynamic layers: there is no controller to fit")
    loss = torch.stack(losses).mean()
    return loss, float(torch.cat(labels).mean().item()), float(torch.cat(ps).mean().item())


def episode_tolerances(
    episodes: Sequence[EpisodeLike], tolerance: float | None, task_tolerances: Mapping[str, float]
) -> Tensor:
    """Stage 3's tolerance for each episode: its task's in ``task_tolerances``, else ``tolerance``."""
    tasks = [getattr(episode, "task", None) for episode in episodes]
    unknown = sorted(set(task_tolerances) - set(tasks))
    if unknown:
        raise ConfigError(f"task tolerances name tasks the demonstrations lack: {unknown} "
                          f"(they hold {sorted({t for t in tasks if t is not None})})")
    values = [task_tolerances.get(task, tolerance) if task is not None else tolerance for task in tasks]
    if any(v is None or not v > 0 for v in values):
        raise ConfigError(f"exit tolerances must be > 0 (inf: always skip), got {dict(task_tolerances)} "
                          f"and {tolerance}")
    return torch.tensor(values, dtype=torch.float32)


def sample_loader(episodes: Sequence[EpisodeLike], model: VLABackbone, batch_size: int, seed: int,
                       device: torch.device) -> DataLoader[Batch]:
    dataset = ChunkDataset(episodes, model.spec)
    generator = torch.Generator().manual_seed(seed)
    workers = 4 if device.type == "cuda" else 0  # on a GPU, keep image preprocessing off the training loop
    return DataLoader(
        dataset, batch_size=batch_size, sampler=RandomSampler(dataset, generator=generator),
        drop_last=len(dataset) >= batch_size, pin_memory=device.type == "cuda", num_workers=workers,
    )


# --------------------------------------------------------------------------------------------------
# Distillation


def distill(
    model: VLABackbone,
    plan: LayerPlan,
    episodes: Sequence[EpisodeLike],
    settings: DistillSettings,
    *,
    history: list[dict[str, Any]] | None = None,
    modules: DySLModules | None = None,
) -> DySLModules:
    """Train DySL modules for ``plan`` on a frozen ``model`` (moved to ``settings.device``); returns
    them in eval mode. ``one_stage`` runs stage 2's loss for ``stage1_steps + stage2_steps`` steps
    (same number of optimiser steps as two-stage, so only the schedule differs). ``history``, when
    given, receives one record per step. ``modules`` continues from existing modules instead of fresh
    ones; fresh adapters start as the identity, or from random weights with ``adapter_init="random"``.
    ``stage3_steps`` > 0 then refits the controllers alone (``stage3_loss``, adapters frozen) to
    "the jump from here lands within ``exit_tolerance`` of the dense chunk" (by ``exit_measure``);
    ``task_exit_tolerance`` replaces that tolerance for the frames of the tasks it names (inf: always
    skip there)."""
    s = settings
    if plan.num_layers != len(model.layers):
        raise ConfigError(f"layer plan has {plan.num_layers} layers, the model {len(model.layers)}")
    if s.stage3_steps > 0 and not (s.exit_tolerance is not None and s.exit_tolerance > 0):
        raise ConfigError(f"stage 3 fits the controllers to an exit tolerance > 0, got {s.exit_tolerance}")
    task_tolerances = s.task_tolerances()
    frame_tolerance = episode_tolerances(episodes, s.exit_tolerance, task_tolerances) if task_tolerances else None
    target = resolve_device(s.device)
    torch.manual_seed(s.seed)
    freeze(model, target)
    trained = modules if modules is not None else DySLModules(model.dims.hidden_size, plan, skip_config(s))
    if modules is None and s.adapter_init == "random":
        for layer in plan.dynamic_layers:
            trained.adapter(layer).up.reset_parameters()  # nn.Linear's own init, not the zero projection
    trained.to(target).train()
    batches = data.endless(sample_loader(episodes, model, s.batch_size, s.seed, target))
    records = history if history is not None else []
    stages = _Stages(model, trained, plan, s, np.random.default_rng(s.seed), frame_tolerance, target)
    first = 0 if s.one_stage else s.stage1_steps
    second = s.stage1_steps + s.stage2_steps if s.one_stage else s.stage2_steps
    adapter_params = [(f"adapters.{n}", p) for n, p in trained.adapters.named_parameters()]
    run_stage("distill stage 1", 1, first, adapter_params, stages.adapters_only, trained, batches, target, s.lr,
              records)
    desc = "distill one-stage" if s.one_stage else "distill stage 2"
    run_stage(desc, 2, second, list(trained.named_parameters()), stages.mixed, trained, batches, target, s.lr,
              records)
    controller_params = [(f"controllers.{n}", p) for n, p in trained.controllers.named_parameters()]
    run_stage("distill stage 3", 3, s.stage3_steps, controller_params, stages.controllers_to_exit_error, trained,
              batches, target, s.lr, records)
    trained.eval()
    return trained


@dataclasses.dataclass
class _Stages:
    """Each stage's loss on a batch, with the record fields it adds."""

    model: VLABackbone
    modules: DySLModules
    plan: LayerPlan
    settings: DistillSettings
    rng: np.random.Generator
    """Stage 2's draws of one dynamic layer per gap."""
    frame_tolerance: Tensor | None
    """Stage 3's tolerance per episode (``task_exit_tolerance``), or None: ``exit_tolerance`` for all."""
    device: torch.device

    def adapters_only(self, batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        return stage1_loss(self.model, self.modules, self.plan, batch), {}

    def mixed(self, batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        chosen = sample_skip_layers(self.plan, self.rng)
        s = self.settings
        terms = stage2_loss(self.model, self.modules, self.plan, batch, chosen, s.lam, s.gt_weight)
        return terms.loss, {"task_loss": terms.task, "penalty": terms.penalty, "mean_p": terms.mean_p, "layers": chosen}

    def controllers_to_exit_error(self, batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        s = self.settings
        assert s.exit_tolerance is not None
        tolerance = (s.exit_tolerance if self.frame_tolerance is None
                     else self.frame_tolerance.to(self.device)[batch["episode"]])
        loss, label_rate, mean_p = stage3_loss(self.model, self.modules, self.plan, batch, tolerance,
                                               s.stage3_weighting, s.exit_measure)
        return loss, {"label_rate": label_rate, "mean_p": mean_p}


def skip_config(settings: DistillSettings | RouterSettings) -> SkipModuleConfig | None:
    """The module shapes the flags ask for (the other one at its default), or None where neither is given."""
    if settings.adapter_bottleneck is None and settings.controller_hidden is None:
        return None
    default = SkipModuleConfig()
    return SkipModuleConfig(
        adapter_bottleneck=settings.adapter_bottleneck or default.adapter_bottleneck,
        controller_hidden=settings.controller_hidden or default.controller_hidden,
    )


def run_stage(
    desc: str,
    stage: int,
    steps: int,
    params: list[tuple[str, nn.Parameter]],
    loss_fn: Callable[[Batch], tuple[Tensor, dict[str, Any]]],
    modules: nn.Module,
    batches: Iterator[Batch],
    target: torch.device,
    lr: float,
    records: list[dict[str, Any]],
) -> None:
    """``steps`` AdamW steps (warmup + cosine) of ``params`` on ``loss_fn(batch) -> (loss, extra
    record fields)``; one record per step into ``records``. Shared by distillation and the router."""
    if steps <= 0:
        return
    optimizer = adamw(params, lr, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, steps, max(1, steps // 20))
    with tqdm(range(1, steps + 1), desc=desc, dynamic_ncols=True) as progress:
        for step in progress:
            batch = data.to_device(next(batches), target)
            with autocast(target):
                loss, extra = loss_fn(batch)
            _step(optimizer, schedule, loss, modules)
            records.append({"stage": stage, "step": step, "loss": float(loss.item()), **extra})
            postfix = {"loss": f"{records[-1]['loss']:.4g}"}
            if "mean_p" in extra:
                postfix["mean_p"] = f"{extra['mean_p']:.3f}"
            progress.set_postfix(postfix)


def _step(optimizer: torch.optim.Optimizer, schedule: Any, loss: Tensor, modules: nn.Module) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
    optimizer.step()
    schedule.step()


@torch.no_grad()
def mean_skip_probability(
    model: VLABackbone, modules: DySLModules, plan: LayerPlan, batches: Iterator[Batch] | Sequence[Batch],
) -> float:
    """Mean controller p over every dynamic layer, each fed its dense-pass input."""
    values: list[float] = []
    for batch in batches:
        states = dense_states(model, batch)
        values.extend(float(modules.controller(i)(states[i]).mean().item()) for i in plan.dynamic_layers)
    return float(np.mean(values)) if values else 0.0


# --------------------------------------------------------------------------------------------------
# Model directories and the CLI


def load_model_episodes(args: argparse.Namespace) -> list[EpisodeLike]:
    """``--demos`` (our demonstrations, or a LeRobot dataset with ``--mapping``), checked against
    ``--model-dir``'s observation spec."""
    return data.load_episodes(args.demos, checkpoint.load_spec(args.model_dir), getattr(args, "mapping", None))


def choose_plan(bundle: checkpoint.PolicyBundle, plan: str) -> LayerPlan:
    """The layer plan modules are trained for: the model's calibrated plan or last-layer-only."""
    if plan == "last-layer-only":
        # Keeps the calibration similarities (for the record) when there are any.
        sims = bundle.plan.similarities if bundle.plan is not None else None
        num_layers = bundle.dims.num_layers
        return LayerPlan.explicit(num_layers, (num_layers - 1,), sims)
    if plan != "calibrated":
        raise ConfigError(f"--plan must be one of {list(PLAN_CHOICES)}, got {plan!r}")
    if bundle.plan is None:
        raise ConfigError(f"{bundle.model_dir} has no {checkpoint.PLAN_FILE}: run `dysl_train calibrate` first")
    return bundle.plan


def modules_output_dir(model_dir: Path, modules_out: str | Path | None) -> Path:
    """Where trained modules go: ``modules_out``, default the model directory itself. Never a
    directory holding another model's backbone (that would mix two models' files)."""
    if modules_out is None or str(modules_out) == "":
        return model_dir
    out = Path(modules_out)
    if out.resolve() != model_dir.resolve() and (out / checkpoint.WEIGHTS_FILE).exists():
        raise ConfigError(
            f"--modules-out {out} holds a model ({checkpoint.WEIGHTS_FILE}): a modules directory holds only "
            f"DySL files; use e.g. {model_dir / checkpoint.VARIANTS_DIR / '<name>'}"
        )
    return out


def settings_for(bundle: checkpoint.PolicyBundle, plan: LayerPlan) -> DySLConfig:
    """The model's DySL settings with a static_ratio that reproduces ``plan``'s static-layer count
    (what load_policy checks)."""
    previous = bundle.dysl_config or DySLConfig()
    ratio = previous.static_ratio
    if round(ratio * plan.num_layers) != len(plan.static_layers):
        ratio = len(plan.static_layers) / plan.num_layers
    return dataclasses.replace(previous, static_ratio=ratio)


def write_modules_dir(
    out: Path,
    plan: LayerPlan,
    modules: DySLModules,
    dysl_config: DySLConfig,
    history: Sequence[dict[str, Any]],
    report: dict[str, Any],
) -> None:
    """Plan + modules + dysl.json + the training log and report into ``out`` (a model directory or a
    modules directory such as ``<model>/variants/<name>``); never the backbone."""
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save_dysl(out, plan, modules.cpu(), dysl_config)
    with (out / DISTILL_LOG_FILE).open("w") as log:
        for record in history:
            log.write(json.dumps(record) + "\n")
    (out / DISTILL_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")


def tail_mean(history: Sequence[dict[str, Any]], stage: int, key: str) -> float | None:
    """Mean of ``key`` over the last tenth of a stage's records (the converged value)."""
    records = [r for r in history if r["stage"] == stage]
    tail = records[-max(1, len(records) // 10) :]
    return float(np.mean([r[key] for r in tail])) if tail else None


def distill_model_dir(
    model_dir: str | Path, episodes: Sequence[EpisodeLike], settings: DistillSettings
) -> tuple[Path, dict[str, Any]]:
    """Distil DySL modules for the model dir's backbone into ``settings.modules_out`` (default: the
    model dir itself); returns that directory and its report. ``skip_threshold`` goes into the
    written dysl.json (default: the model dir's). ``modules_from`` (a modules or model directory for
    this backbone) continues from its plan and modules instead of fresh ones."""
    s = settings
    source = Path(model_dir)
    # Modules trained for another plan (the plan was re-calibrated or edited) are replaced here, not an error.
    bundle = checkpoint.load_bundle(source, s.modules_from, ignore_stale_modules=s.modules_from is None)
    start: DySLModules | None = None
    shapes = skip_config(s)
    if s.modules_from is not None:
        if bundle.modules is None or bundle.plan is None:
            raise ConfigError(f"{s.modules_from} holds no DySL modules to continue from")
        start = bundle.modules.float()
        if s.plan != "calibrated" or s.adapter_init != "identity" or shapes not in (None, start.config):
            raise ConfigError("--modules-from continues with the plan and module shapes of its modules: drop "
                              "--plan, --adapter-init, --adapter-bottleneck and --controller-hidden")
        shapes = start.config
    layer_plan = choose_plan(bundle, s.plan) if start is None else bundle.plan
    assert layer_plan is not None
    dysl_settings = settings_for(bundle, layer_plan)
    if s.skip_threshold is not None:
        dysl_settings = dataclasses.replace(dysl_settings, skip_threshold=float(s.skip_threshold))
    out = modules_output_dir(source, s.modules_out)
    shapes = shapes or SkipModuleConfig()
    budget = parameter_report(
        backbone_parameters(bundle.model), DySLModules(bundle.dims.hidden_size, layer_plan, shapes)
    )  # raises before any training when over the 2 % budget

    history: list[dict[str, Any]] = []
    modules = distill(bundle.model, layer_plan, episodes, dataclasses.replace(
        s, adapter_bottleneck=shapes.adapter_bottleneck, controller_hidden=shapes.controller_hidden,
    ), history=history, modules=start)
    task_tolerances = s.task_tolerances()
    report: dict[str, Any] = {
        "lambda": s.lam, "stage1_steps": s.stage1_steps, "stage2_steps": s.stage2_steps, "one_stage": s.one_stage,
        "plan": s.plan, "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed, "gt_weight": s.gt_weight,
        "adapter_init": s.adapter_init, "modules_from": None if s.modules_from is None else str(s.modules_from),
        "stage3_steps": s.stage3_steps, "exit_tolerance": s.exit_tolerance, "stage3_weighting": s.stage3_weighting,
        "exit_measure": s.exit_measure,
        "task_tolerances": None if not task_tolerances else {k: str(v) for k, v in task_tolerances.items()},
        "final_stage3_loss": tail_mean(history, 3, "loss"), "final_label_rate": tail_mean(history, 3, "label_rate"),
        "skip_modules": dataclasses.asdict(shapes), "parameters": budget,
        "static_layers": list(layer_plan.static_layers), "source_model_dir": str(source), "argv": sys.argv,
        "final_task_loss": tail_mean(history, 2, "task_loss"),
        "final_mean_p": tail_mean(history, 3 if s.stage3_steps else 2, "mean_p"),
    }
    write_modules_dir(out, layer_plan, modules, dysl_settings, history, report)
    return out, report


def main_distill(args: argparse.Namespace) -> int:
    """``dysl_train distill --model-dir D --demos DIR --lambda L --stage1-steps N --stage2-steps M
    [--one-stage] [--plan calibrated|last-layer-only] [--modules-out DIR] --device --seed --batch-size``."""
    try:
        settings = from_flags(DistillSettings, args)
        episodes = load_model_episodes(args)
        out, report = distill_model_dir(args.model_dir, episodes, settings)
    except (ConfigError, ValueError, OSError, checkpoint.ModelDirError) as exc:
        print(f"dysl_train distill: {exc}", file=sys.stderr)
        return 2
    print_report("DySL modules", "skip", report, out)
    return 0


def print_report(what: str, decision: str, report: dict[str, Any], out: Path) -> None:
    """The end of a distillation run: parameter budget, final loss and decision probability, output."""
    params = report["parameters"]
    print(
        f"{what}: {params['dysl_parameters']:,} parameters = {params['ratio']:.2%} of the backbone's "
        f"{params['backbone_parameters']:,} (budget 2 %)"
    )
    finals = [("stage-2 task loss", report.get("final_task_loss")), ("stage-3 loss", report.get("final_stage3_loss")),
              ("stage-3 'skip' label rate", report.get("final_label_rate")),
              (f"mean {decision} probability", report.get("final_mean_p"))]
    # A stage that did not run (e.g. --stage2-steps 0) has no final figure: leave it out.
    print("final " + ", ".join(f"{name} {value:.4f}" for name, value in finals if value is not None))
    print(f"wrote {out}")
