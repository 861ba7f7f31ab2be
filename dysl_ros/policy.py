"""The policy as the node, the benchmarks and the simulator bridge see it: observation in, action
chunk out, with DySL telemetry. One small surface over a model directory and a backend."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner, TickResult
from dysl_ros.model.checkpoint import PolicyBundle, load_bundle, resolve_dirs
from dysl_ros.model.spec import Observation, VLAConfig, denormalise_actions, preprocess


@dataclass(frozen=True)
class PolicyOutput:
    actions: npt.NDArray[np.float64]
    """(chunk_len, action_dim), de-normalised (robot units), not yet clamped."""
    tick: TickResult


class DySLPolicy:
    def __init__(
        self, bundle: PolicyBundle, runner: DySLRunner[Any], backend_name: str, backend_reason: str = ""
    ) -> None:
        self.bundle = bundle
        self.runner = runner
        self.backend_name = backend_name
        """``onnxruntime``, ``torch`` or ``tensorrt`` (``runner.backend.name`` tells eager torch from
        ``torch_cuda_graph``)."""
        self.backend_reason = backend_reason
        """Why this backend runs (for ``backend: auto``, why it was picked): one line for the log."""

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

    def withdraw_last(self) -> None:
        """The last ``select_action``'s chunk will not be executed: take it out of the continuity
        history (and undo the allow-point move it caused)."""
        self.runner.withdraw_last()


def load_policy(
    model_dir: str | Path,
    *,
    backend: str = "torch",
    device: str = "cpu",
    precision: str = "fp32",
    dysl: DySLConfig | None = None,
    dysl_overrides: Mapping[str, Any] | None = None,
    dense: bool = False,
    num_threads: int = 0,
    engine_dir: str | None = None,
    force_engine_update: bool = False,
    modules_dir: str | Path | None = None,
    cuda_graphs: bool = True,
) -> DySLPolicy:
    """Load a model directory onto a backend. Without DySL modules only ``dense=True`` is allowed.

    ``backend``: ``torch`` runs torch segments on ``device``: on a CUDA device replayed as CUDA graphs
    (``cuda_graphs=False``: eager), on the CPU eager. ``onnxruntime`` (CPU, fp32) and ``tensorrt``
    (CUDA device, fp16 or fp32) run per-segment engines under ``engine_dir`` (default
    ``<model_dir>/engines``, layout ``<engine_dir>/<model name>/<backend>/``): they are built when
    missing, used when their manifest matches the model and this machine (for TensorRT: the same
    TensorRT version and GPU), and refused (EngineError naming what differs) when it does not, unless
    ``force_engine_update``, which always rebuilds. ``auto`` follows ``device``: on a CUDA device
    ``tensorrt`` when TensorRT is installed, else ``torch`` (CUDA graphs); on the CPU ``onnxruntime``
    in fp32 when engines exist or the engine directory is writable (built on first use), else
    ``torch``. The returned policy's ``backend_reason`` says why its backend runs.

    DySL settings: ``dysl`` when given, else the modules' dysl.json (calibrated thresholds), else the
    DySLConfig defaults; ``dysl_overrides`` then replaces single fields (the node's parameters).

    ``modules_dir``: run the DySL modules (layer plan, controllers, adapters, settings) of that directory
    instead of the model directory's own, e.g. an ablation in ``<model_dir>/variants/<name>``. Its
    onnxruntime engines are built from and kept under that directory (``<modules_dir>/engines`` unless
    ``engine_dir``), so they never collide with the main modules' engines.
    """
    bundle = load_bundle(model_dir, modules_dir)
    if not dense and not bundle.has_dysl:
        raise ConfigError(
            f"{model_dir} has no layer plan and DySL modules (run `dysl_train calibrate` and `dysl_train distill`), "
            "so it can only run dense (dense: true)"
        )
    config = dataclasses.replace(dysl or bundle.dysl_config or DySLConfig(), **(dysl_overrides or {}))
    plan = bundle.plan or LayerPlan.dense(bundle.config.num_layers)
    if not dense and round(config.static_ratio * plan.num_layers) != len(plan.static_layers):
        raise ConfigError(
            f"static_ratio {config.static_ratio} asks for {round(config.static_ratio * plan.num_layers)} static "
            f"layers but the model's layer plan has {len(plan.static_layers)} ({list(plan.static_layers)}). Static "
            "layers are fixed when the modules are trained: re-run `dysl_train calibrate` and `distill` to change them."
        )
    reason = f"backend {backend} requested"
    if backend == "auto":
        engine_source = bundle.modules_dir if bundle.modules_dir is not None else model_dir
        backend, reason = _auto_backend(engine_source, device, precision, engine_dir, force_engine_update)
        logging.getLogger(__name__).info("backend auto: %s", reason)
    if backend == "onnxruntime":
        policy = _load_onnxruntime(
            bundle, plan, config, dense, num_threads, engine_dir, force_engine_update, device, precision
        )
        policy.backend_reason = reason
        return policy
    if backend == "tensorrt":
        return _load_tensorrt(bundle, plan, config, dense, engine_dir, force_engine_update, device, precision, reason)
    if backend == "torch":
        return _load_torch(bundle, plan, config, dense, num_threads, device, precision, cuda_graphs, reason)
    raise ConfigError(f"backend {backend!r} does not exist: use auto, tensorrt, torch or onnxruntime")


def _load_torch(
    bundle: PolicyBundle,
    plan: LayerPlan,
    config: DySLConfig,
    dense: bool,
    num_threads: int,
    device: str,
    precision: str,
    cuda_graphs: bool,
    reason: str,
) -> DySLPolicy:
    import torch

    from dysl_ros.backends.torch_backend import TorchBackend

    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA device")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if dtype == torch.float16 and not device.startswith("cuda"):
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 on the CPU")
    backend: Any
    if device.startswith("cuda") and cuda_graphs:
        from dysl_ros.backends.torch_cuda_graph import TorchCudaGraphBackend

        backend = TorchCudaGraphBackend(bundle.model, bundle.modules, device, dtype)
        reason += f"; {device}: every segment captured as a CUDA graph (cuda_graphs=False for eager)"
    else:
        backend = TorchBackend(bundle.model, bundle.modules, device, dtype)
        reason += f"; {device}: eager segments" + (" (cuda_graphs=False)" if device.startswith("cuda") else "")
    runner: DySLRunner[Any] = DySLRunner(backend, plan, config, dense=dense)
    return DySLPolicy(bundle, runner, "torch", reason)


def _load_tensorrt(
    bundle: PolicyBundle,
    plan: LayerPlan,
    config: DySLConfig,
    dense: bool,
    engine_dir: str | None,
    force_engine_update: bool,
    device: str,
    precision: str,
    reason: str,
) -> DySLPolicy:
    from dysl_ros.backends.engines import PRECISIONS, build_engines, read_manifest, require_backend

    if not device.startswith("cuda"):
        raise ConfigError(
            f"backend tensorrt runs on a CUDA device; device {device!r} needs backend onnxruntime or torch"
        )
    if precision not in PRECISIONS["tensorrt"]:
        raise ConfigError(f"backend tensorrt builds {' or '.join(PRECISIONS['tensorrt'])}, not {precision!r}")
    if bundle.modules_dir is not None:
        raise ConfigError(
            f"backend tensorrt does not build engines for modules_dir {bundle.modules_dir} (variants) yet; "
            "use backend torch or onnxruntime for it"
        )
    require_backend("tensorrt", device)  # names what is missing (TensorRT, a GPU) before any work
    from dysl_ros.backends.tensorrt_backend import TensorRTBackend

    model_dir = bundle.model_dir
    # As for onnxruntime: built when missing or forced, else checked (model, TensorRT version, GPU,
    # precision) and refused with an EngineError on a mismatch.
    target = build_engines(
        model_dir,
        _engine_root(model_dir, engine_dir),
        "tensorrt",
        precision,
        force=force_engine_update,
        progress=False,
        device=device,
    )
    manifest = read_manifest(target)
    backend = TensorRTBackend(target, device, manifest=manifest)
    runner: DySLRunner[Any] = DySLRunner(backend, plan, config, dense=dense)
    reason += f"; {manifest.precision} plans from {target} (TensorRT {manifest.backend_version}, {manifest.device})"
    return DySLPolicy(bundle, runner, "tensorrt", reason)


def _engine_root(model_dir: str | Path, engine_dir: str | None) -> Path:
    return Path(engine_dir) if engine_dir else Path(model_dir) / "engines"


def _auto_backend(
    model_dir: str | Path, device: str, precision: str, engine_dir: str | None, force_engine_update: bool
) -> tuple[str, str]:
    """The backend ``auto`` stands for on this machine, and why (one line for the log)."""
    from dysl_ros.backends.engines import backend_problems, engine_path

    if device.startswith("cuda"):
        problems = backend_problems("tensorrt", device)
        if not problems:
            return "tensorrt", f"auto on {device}: TensorRT and the GPU are there, so TensorRT {precision} plans"
        return "torch", f"auto on {device}: no TensorRT ({'; '.join(problems)}), so torch CUDA graphs"
    if precision != "fp32":
        return "torch", f"auto on {device} in {precision}: onnxruntime runs fp32 only, so torch"
    target = engine_path(_engine_root(model_dir, engine_dir), model_dir, "onnxruntime")
    gpu_note = " (GPU backends need device: cuda)"
    if target.exists() and not force_engine_update:
        return "onnxruntime", f"auto on the CPU: onnxruntime engines (fp32) exist at {target}{gpu_note}"
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK | os.X_OK):
        return "onnxruntime", f"auto on the CPU: onnxruntime engines (fp32), built into {target}{gpu_note}"
    return "torch", (
        f"auto on the CPU: no onnxruntime engines at {target} and {existing} is not writable, so eager torch "
        "(set engine_dir to a writable directory for onnxruntime)"
    )


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
    if bundle.modules_dir is not None:
        # A variant's engines: built from the variant directory (its backbone two levels up, see
        # dysl_ros.model.checkpoint) and kept under it, never mixed with the main modules' engines.
        backbone_dir, variant = resolve_dirs(bundle.modules_dir)
        if variant is None or backbone_dir.resolve() != bundle.model_dir.resolve():
            raise ConfigError(
                f"onnxruntime engines for modules_dir {bundle.modules_dir} need it inside the model directory, "
                f"as {bundle.model_dir / 'variants' / '<name>'}; use backend torch for modules elsewhere"
            )
        model_dir = bundle.modules_dir
    # Builds when missing or forced; otherwise checks the manifest against the model and this machine
    # and raises EngineError on a mismatch. Either way the manifest fits: reading it suffices.
    target = build_engines(
        model_dir, _engine_root(model_dir, engine_dir), "onnxruntime", "fp32", force=force_engine_update, progress=False
    )
    manifest = read_manifest(target)
    backend = OnnxRuntimeBackend(target, num_threads, manifest=manifest)
    runner: DySLRunner[Any] = DySLRunner(backend, plan, config, dense=dense)
    return DySLPolicy(bundle, runner, "onnxruntime")
