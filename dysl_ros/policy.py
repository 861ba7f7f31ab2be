"""The policy as the node, the benchmarks and the simulator bridge see it: observation in, action
chunk out, with DySL telemetry. One small surface over a model directory and a backend."""

from __future__ import annotations

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
) -> DySLPolicy:
    """Load a model directory onto a backend. Without DySL modules only ``dense=True`` is allowed."""
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
    if backend in ("auto", "torch"):
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
        f"backend {backend!r} is not available in this version: per-segment engines (onnxruntime, tensorrt) "
        "are not built yet. Use backend: torch (or auto)."
    )
