"""The policy as the node, the benchmarks and the simulator bridge see it: observation in, action
chunk out, with DySL telemetry. One small surface over a model directory and a backend."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner, TickResult
from dysl_ros.model.checkpoint import PolicyBundle, load_bundle
from dysl_ros.model.spec import Observation, VLAConfig, denormalise_actions, preprocess


@dataclass(frozen=True)
class PolicyOutput:
    actions: npt.NDArray[np.float64]
    """(chunk_len, action_dim), de-normalised (robot units), not yet clamped."""
    tick: TickResult


class DySLPolicy:
    def __init__(self, bundle: PolicyBundle, runner: DySLRunner[Any], backend_name: str) -> None:
        self.bundle = bundle
        self.runner = runner
        self.backend_name = backend_name

    @property
    def config(self) -> VLAConfig:
        return self.bundle.config

    @property
    def plan(self) -> LayerPlan:
        return self.runner.plan

    def reset(self) -> None:
        self.runner.reset()

    def select_action(self, obs: Observation, execute: slice | None = None) -> PolicyOutput:
        tick = self.runner.step(preprocess(self.config, obs), execute)
        return PolicyOutput(denormalise_actions(self.config, tick.chunk), tick)


def load_policy(
    model_dir: str | Path,
    *,
    backend: str = "torch",
    device: str = "cpu",
    precision: str = "fp32",
    dysl: DySLConfig | None = None,
    dense: bool = False,
    num_threads: int = 0,
    engine_dir: str | None = None,
    force_engine_update: bool = False,
) -> DySLPolicy:
    """Load a model directory onto a backend. Without DySL modules only ``dense=True`` is allowed.

    ``backend``: ``torch`` runs eager segments on ``device``. ``onnxruntime`` (CPU, fp32) runs the
    per-segment engines under ``engine_dir`` (default ``<model_dir>/engines``, layout
    ``<engine_dir>/<model name>/onnxruntime/``): they are built when missing, used when their manifest
    matches the model and this machine, and refused (EngineError naming what differs) when it does not,
    unless ``force_engine_update``, which always rebuilds. ``auto`` is ``onnxruntime`` on the CPU in
    fp32 when engines exist or the engine directory is writable (built on first use), otherwise
    ``torch`` (a CUDA device, fp16, or an unwritable engine directory without engines).
    """
    bundle = load_bundle(model_dir)
    if not dense and not bundle.has_dysl:
        raise ConfigError(
            f"{model_dir} has no layer plan and DySL modules (run `dysl_train calibrate` and `dysl_train distill`), "
            "so it can only run dense (dense: true)"
        )
    config = dysl or bundle.dysl_config or DySLConfig()
    plan = bundle.plan or LayerPlan.dense(bundle.config.num_layers)
    if not dense and round(config.static_ratio * plan.num_layers) != len(plan.static_layers):
        raise ConfigError(
            f"static_ratio {config.static_ratio} asks for {round(config.static_ratio * plan.num_layers)} static "
            f"layers but the model's layer plan has {len(plan.static_layers)} ({list(plan.static_layers)}). Static "
            "layers are fixed when the modules are trained: re-run `dysl_train calibrate` and `distill` to change them."
        )
    if backend == "auto":
        backend = _auto_backend(model_dir, device, precision, engine_dir, force_engine_update)
    if backend == "onnxruntime":
        return _load_onnxruntime(
            bundle, plan, config, dense, num_threads, engine_dir, force_engine_update, device, precision
        )
    if backend == "torch":
        import torch

        from dysl_ros.backends.torch_backend import TorchBackend

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but torch sees no CUDA device")
        dtype = torch.float16 if precision == "fp16" else torch.float32
        if dtype == torch.float16 and not device.startswith("cuda"):
            raise ConfigError("precision fp16 needs a CUDA device; use fp32 on the CPU")
        runner: DySLRunner[Any] = DySLRunner(
            TorchBackend(bundle.model, bundle.modules, device, dtype), plan, config, dense=dense
        )
        return DySLPolicy(bundle, runner, "torch")
    raise ConfigError(
        f"backend {backend!r} is not available in this version: tensorrt engines are not built yet. "
        "Use backend: onnxruntime, torch or auto."
    )


def _engine_root(model_dir: str | Path, engine_dir: str | None) -> Path:
    return Path(engine_dir) if engine_dir else Path(model_dir) / "engines"


def _auto_backend(
    model_dir: str | Path, device: str, precision: str, engine_dir: str | None, force_engine_update: bool
) -> str:
    from dysl_ros.backends.engines import engine_path

    if device != "cpu" or precision != "fp32":
        return "torch"  # the onnxruntime backend is CPU fp32 only
    target = engine_path(_engine_root(model_dir, engine_dir), model_dir, "onnxruntime")
    if target.exists() and not force_engine_update:
        return "onnxruntime"
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return "onnxruntime" if os.access(existing, os.W_OK | os.X_OK) else "torch"


def _load_onnxruntime(
    bundle: PolicyBundle,
    plan: LayerPlan,
    config: DySLConfig,
    dense: bool,
    num_threads: int,
    engine_dir: str | None,
    force_engine_update: bool,
    device: str,
    precision: str,
) -> DySLPolicy:
    from dysl_ros.backends.engines import build_engines, read_manifest
    from dysl_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    if device != "cpu":
        raise ConfigError(f"backend onnxruntime runs on the CPU; device {device!r} needs backend torch")
    if precision != "fp32":
        raise ConfigError(f"backend onnxruntime runs fp32; precision {precision!r} needs backend torch on CUDA")
    model_dir = bundle.model_dir
    # Builds when missing or forced; otherwise checks the manifest against the model and this machine
    # and raises EngineError on a mismatch. Either way the manifest fits: reading it suffices.
    target = build_engines(
        model_dir, _engine_root(model_dir, engine_dir), "onnxruntime", "fp32", force=force_engine_update, progress=False
    )
    manifest = read_manifest(target)
    backend = OnnxRuntimeBackend(target, num_threads, manifest=manifest)
    runner: DySLRunner[Any] = DySLRunner(backend, plan, config, dense=dense)
    return DySLPolicy(bundle, runner, "onnxruntime")
