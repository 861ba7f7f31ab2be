"""The per-layer router baseline (FlexiDepth-like): ``dysl_train router``.

Every layer but the last gets a router (a DySL controller) and an adapter mapping x_i to an estimate
of x_{i+1}; at run time each layer either runs or is replaced by its adapter, independently of the
others (``dysl_ros.core.router.run_router_path``). Stored as ordinary DySL modules over the
last-layer-only plan, so every backend and engine runs it unchanged. The backbone stays frozen.

Stage 1, adapters only: sum over layers i < L-1 of MSE(adapter_i(x_i), x_{i+1}), dense-pass targets.
Stage 2, routers + adapters, soft routing through the whole stack:
    x_{i+1} = p_i * adapter_i(x_i) + (1 - p_i) * layer_i(x_i),  p_i = router_i(x_i)
    loss = L1(chunk, frozen dense chunk) [+ w * L1(chunk, demo actions)] + lambda * sum_i (1 - p_i).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dysl_ros.core.config import ConfigError
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model import checkpoint
from dysl_ros.model.backbone import VLABackbone, backbone_parameters
from dysl_ros.model.skip_modules import DySLModules, SkipModuleConfig, parameter_report
from dysl_ros.params import from_flags
from dysl_ros.training import dataset as data
from dysl_ros.training.bc import masked_l1, resolve_device
from dysl_ros.training.dataset import Batch, EpisodeLike
from dysl_ros.training.distill import (
    Stage2Terms,
    dense_states,
    freeze,
    load_model_episodes,
    modules_output_dir,
    print_report,
    run_stage,
    sample_loader,
    settings_for,
    skip_config,
    tail_mean,
    write_modules_dir,
)
from dysl_ros.training.settings import RouterSettings

ROUTER_VARIANT = "router"


def router_plan(num_layers: int) -> LayerPlan:
    """Routers and adapters on every layer but the last (which always runs)."""
    return LayerPlan.last_layer_only(num_layers)


def router_stage1_loss(model: VLABackbone, modules: DySLModules, batch: Batch) -> Tensor:
    """Sum over routed layers i of MSE(adapter_i(x_i), x_{i+1}), x from one no-grad dense pass."""
    states = dense_states(model, batch)
    loss = torch.zeros((), device=states[0].device)
    for i in modules.plan.dynamic_layers:
        loss = loss + F.mse_loss(modules.adapter(i)(states[i]).float(), states[i + 1].float())
    return loss


def router_forward(model: VLABackbone, modules: DySLModules, batch: Batch) -> tuple[Tensor, list[Tensor]]:
    """The soft-routed pass: the chunk and each routed layer's p (B,)."""
    x = model.embed(*data.model_inputs(batch, model.spec))
    ps: list[Tensor] = []
    routed = set(modules.plan.dynamic_layers)
    for i, layer in enumerate(model.layers):
        if i in routed:
            p = modules.controller(i)(x)
            weight = p.to(x.dtype)[:, None, None]
            x = weight * modules.adapter(i)(x).to(x.dtype) + (1.0 - weight) * layer(x)
            ps.append(p)
        else:
            x = layer(x)
    return model.head(x), ps


def router_stage2_loss(
    model: VLABackbone, modules: DySLModules, batch: Batch, lam: float, gt_weight: float = 0.0
) -> Stage2Terms:
    """L1 to the frozen dense chunk (+ ground truth) + lambda * sum_i (1 - p_i), batch mean."""
    with torch.no_grad():
        teacher = model.head(dense_states(model, batch)[-1]).float()
    chunk, ps = router_forward(model, modules, batch)
    task = F.l1_loss(chunk.float(), teacher)
    if gt_weight > 0:
        task = task + gt_weight * masked_l1(chunk, batch["actions"], batch["action_mask"])
    penalty = torch.zeros((), device=chunk.device)
    for p in ps:
        penalty = penalty + (1.0 - p.float()).mean()
    mean_p = float(torch.cat([p.detach().float() for p in ps]).mean().item()) if ps else 0.0
    return Stage2Terms(task + lam * penalty, float(task.detach().item()), float(penalty.detach().item()), mean_p)


def train_router(
    model: VLABackbone,
    episodes: Sequence[EpisodeLike],
    settings: RouterSettings,
    *,
    history: list[dict[str, Any]] | None = None,
) -> DySLModules:
    """Train per-layer routers + adapters on a frozen ``model``; returns them in eval mode."""
    s = settings
    if model.dims.num_layers < 2:
        raise ConfigError("the router needs at least two layers (the last one always runs)")
    target = resolve_device(s.device)
    torch.manual_seed(s.seed)
    freeze(model, target)
    modules = DySLModules(model.dims.hidden_size, router_plan(model.dims.num_layers), skip_config(s))
    modules.to(target).train()
    batches = data.endless(sample_loader(episodes, model, s.batch_size, s.seed, target))
    records = history if history is not None else []

    def adapters_only(batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        return router_stage1_loss(model, modules, batch), {}

    def routed(batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        terms = router_stage2_loss(model, modules, batch, s.lam, s.gt_weight)
        return terms.loss, {"task_loss": terms.task, "penalty": terms.penalty, "mean_p": terms.mean_p}

    adapter_params = [(f"adapters.{n}", p) for n, p in modules.adapters.named_parameters()]
    run_stage("router stage 1", 1, s.stage1_steps, adapter_params, adapters_only, modules, batches, target, s.lr,
              records)
    run_stage("router stage 2", 2, s.stage2_steps, list(modules.named_parameters()), routed, modules, batches, target,
              s.lr, records)
    modules.eval()
    return modules


def router_model_dir(
    model_dir: str | Path, episodes: Sequence[EpisodeLike], settings: RouterSettings
) -> tuple[Path, dict[str, Any]]:
    """Train the router for the model dir's backbone into ``settings.modules_out`` (default
    ``<model_dir>/variants/router``; never the model dir itself, whose modules are DySL's)."""
    s = settings
    source = Path(model_dir)
    bundle = checkpoint.load_bundle(source)
    default = source / checkpoint.VARIANTS_DIR / ROUTER_VARIANT
    out = modules_output_dir(source, s.modules_out if s.modules_out else default)
    if out.resolve() == source.resolve():
        raise ConfigError(
            f"--modules-out {out} is the model directory: router modules would replace DySL's; use {default}"
        )
    plan = router_plan(bundle.dims.num_layers)
    shapes = skip_config(s) or SkipModuleConfig()
    budget = parameter_report(backbone_parameters(bundle.model), DySLModules(bundle.dims.hidden_size, plan, shapes))
    history: list[dict[str, Any]] = []
    modules = train_router(bundle.model, episodes, s, history=history)
    report: dict[str, Any] = {
        "kind": "router", "lambda": s.lam, "stage1_steps": s.stage1_steps, "stage2_steps": s.stage2_steps,
        "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed, "gt_weight": s.gt_weight,
        "skip_modules": {"adapter_bottleneck": shapes.adapter_bottleneck,
                         "controller_hidden": shapes.controller_hidden},
        "parameters": budget, "routed_layers": list(plan.dynamic_layers), "source_model_dir": str(source),
        "argv": sys.argv, "final_task_loss": tail_mean(history, 2, "task_loss"),
        "final_mean_p": tail_mean(history, 2, "mean_p"),
    }
    write_modules_dir(out, plan, modules, settings_for(bundle, plan), history, report)
    return out, report


def main_router(args: argparse.Namespace) -> int:
    """``dysl_train router --model-dir D --demos DIR --lambda L --stage1-steps N --stage2-steps M
    [--modules-out DIR] --device --seed --batch-size``."""
    try:
        settings = from_flags(RouterSettings, args)
        out, report = router_model_dir(args.model_dir, load_model_episodes(args), settings)
    except (ConfigError, ValueError, OSError, checkpoint.ModelDirError) as exc:
        print(f"dysl_train router: {exc}", file=sys.stderr)
        return 2
    print_report("router modules", "route-around", report, out)
    return 0
