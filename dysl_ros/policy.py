"""The policy as the node, the benchmarks and the simulator bridge see it: observation in, action
chunk out, with DySL telemetry. One small surface over a model directory and a backend.

    policy = load_policy("models/reference", PolicyOptions(backend="onnxruntime"))
    out = policy.predict_action_chunk(observation)   # out.actions: (chunk_len, action_dim)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import numpy.typing as npt

from dysl_ros.backends.registry import BackendOptions, load_backend
from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner, TickResult
from dysl_ros.model.model_dir import PolicyBundle, open_bundle
from dysl_ros.model.observation_spec import BackboneDims, Observation, ObservationSpec, denormalise_actions, preprocess

if TYPE_CHECKING:
    from dysl_ros.model.backbone import VLABackbone
    from dysl_ros.model.skip_modules import DySLModules


@dataclass(frozen=True)
class PolicyOptions(BackendOptions):
    """Everything ``load_policy`` takes besides the model directory."""

    backend: str = "torch"
    """auto | torch | onnxruntime | tensorrt (``dysl_ros.backends.registry``)."""
    dense: bool = False
    """Run every layer (the dense baseline); the only choice for a model without DySL modules."""
    dysl: DySLConfig | None = None
    """DySL settings; None: the modules' dysl.json (calibrated thresholds), else the defaults."""
    dysl_overrides: Mapping[str, Any] | None = None
    """Single DySL fields replacing those of ``dysl`` (the node's parameters)."""
    modules_dir: str | Path | None = None
    """Run the DySL modules (layer plan, controllers, adapters, settings) of that directory instead
    of the model directory's own, e.g. an ablation in ``<model_dir>/variants/<name>``. Its
    onnxruntime engines are built from and kept under it, never mixed with the main modules'."""


@dataclass(frozen=True)
class PolicyOutput:
    actions: npt.NDArray[np.float64]
    """(chunk_len, action_dim), de-normalised (robot units), not yet clamped."""
    tick: TickResult


class DySLPolicy:
    def __init__(self, bundle: PolicyBundle, runner: DySLRunner[Any], backend_reason: str = "") -> None:
        self.bundle = bundle
        self.runner = runner
        self.backend_reason = backend_reason
        """Why this backend runs (for ``backend: auto``, why it was picked): one line for the log."""

    @property
    def backend_name(self) -> str:
        """What really runs: ``onnxruntime``, ``torch`` (eager), ``torch_cuda_graph`` or ``tensorrt``."""
        return str(self.runner.backend.name)

    @property
    def spec(self) -> ObservationSpec:
        """What the model takes and returns: cameras, state, tokens, actions."""
        return self.bundle.spec

    @property
    def plan(self) -> LayerPlan:
        return self.runner.plan

    def reset(self) -> None:
        self.runner.reset()

    def predict_action_chunk(self, obs: Observation, execute: slice | None = None) -> PolicyOutput:
        """One inference: the whole action chunk for ``obs``. ``execute``: the chunk's actions the
        robot will run, which the continuity history records (default: the runner's)."""
        tick = self.runner.step(preprocess(self.spec, obs), execute)
        return PolicyOutput(denormalise_actions(self.spec, tick.chunk), tick)

    def withdraw_last(self) -> None:
        """The last chunk will not be executed: take it out of the continuity history (and undo the
        allow-point move it caused)."""
        self.runner.withdraw_last()


def load_policy(model_dir: str | Path, options: PolicyOptions | None = None) -> DySLPolicy:
    """Load a model directory onto a backend. Without DySL modules only ``dense=True`` is allowed.

    ``torch`` runs torch segments on ``device``: on a CUDA device replayed as CUDA graphs
    (``cuda_graphs=False``: eager), on the CPU eager. ``onnxruntime`` (CPU, fp32) and ``tensorrt``
    (CUDA device, fp16 or fp32) run per-segment engines under ``engine_dir`` (default
    ``<model_dir>/engines``, layout ``<engine_dir>/<model name>/<backend>/``): they are built when
    missing, used when their manifest matches the model and this machine (for TensorRT: the same
    TensorRT version and GPU), and refused (EngineError naming what differs) when it does not, unless
    ``force_engine_update``, which always rebuilds. ``auto`` follows ``device``: on a CUDA device
    ``torch`` (CUDA graphs, the GPU backend whose parity test has passed; TensorRT only by name); on
    the CPU ``onnxruntime`` in fp32 when engines exist or the engine directory is writable (built on
    first use), else ``torch``. The returned policy's ``backend_reason`` says why its backend runs.
    """
    options = options or PolicyOptions()
    # Weights are read on first use: engine backends never use them, so serving from engines needs no torch.
    bundle = open_bundle(model_dir, options.modules_dir, load_model=_read_backbone, load_modules=_read_modules)
    if not options.dense and not bundle.has_dysl:
        raise ConfigError(
            f"{model_dir} has no layer plan and DySL modules (run `dysl_train calibrate` and `dysl_train distill`), "
            "so it can only run dense (dense: true)"
        )
    config = dataclasses.replace(
        options.dysl or bundle.dysl_config or DySLConfig(), **(options.dysl_overrides or {})
    )
    plan = bundle.plan or LayerPlan.dense(bundle.dims.num_layers)
    if not options.dense and round(config.static_ratio * plan.num_layers) != len(plan.static_layers):
        raise ConfigError(
            f"static_ratio {config.static_ratio} asks for {round(config.static_ratio * plan.num_layers)} static "
            f"layers but the model's layer plan has {len(plan.static_layers)} ({list(plan.static_layers)}). Static "
            "layers are fixed when the modules are trained: re-run `dysl_train calibrate` and `distill` to change them."
        )
    backend, reason = load_backend(options.backend, bundle, options)
    return DySLPolicy(bundle, DySLRunner(backend, plan, config, dense=options.dense), reason)


def _read_backbone(path: Path) -> VLABackbone:
    from dysl_ros.model.checkpoint import load_backbone  # torch: backend torch and building engines only

    return load_backbone(path)


def _read_modules(path: Path, dims: BackboneDims) -> DySLModules:
    from dysl_ros.model.checkpoint import load_modules  # torch, as above

    return load_modules(path, dims)
