"""Backends by name: each loader takes a model bundle and the same options and returns the backend
ready to run, with the reason it runs (one line for the log and ``/diagnostics``).

    name          runs                                          engines
    torch         eager torch on cpu / cuda; on cuda every      none (CUDA graphs are captured in
                  segment replayed as a CUDA graph                memory when the policy loads)
    onnxruntime   ONNX Runtime on the CPU, fp32                 <engine_dir>/<model>/onnxruntime/
    tensorrt      TensorRT plans on a CUDA GPU, fp16 or fp32    <engine_dir>/<model>/tensorrt/

``auto`` is not a backend but a choice among them (``auto_backend``): on a GPU only backends
whose parity test has passed on a named GPU (``GPU_PARITY_PASSED``), so TensorRT runs only when
asked for. A backend object's own
``name`` says what really runs: ``torch_cuda_graph`` for replayed graphs, ``torch`` for eager.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from dysl_ros.backends.build import build_engines
from dysl_ros.backends.capability import PRECISIONS, backend_problems, require_backend, torch_problem
from dysl_ros.backends.manifest import engine_path, engine_root, read_manifest
from dysl_ros.core.config import ConfigError
from dysl_ros.core.runner import SegmentBackend

if TYPE_CHECKING:
    from dysl_ros.model.model_dir import PolicyBundle


@dataclass(frozen=True)
class BackendOptions:
    """How to run a model, whatever the backend."""

    device: str = "cpu"
    """torch device: cpu, cuda or cuda:N."""
    precision: str = "fp32"
    """fp32, or fp16 (a CUDA device only)."""
    num_threads: int = 0
    """CPU inference threads (torch and onnxruntime); 0: the library's default."""
    engine_dir: str | None = None
    """Engine cache root; None: ``<model_dir>/engines`` (a variant's: ``<modules_dir>/engines``)."""
    force_engine_update: bool = False
    """Rebuild engines even when a matching manifest exists."""
    cuda_graphs: bool = True
    """torch on a CUDA device: replay every segment as a CUDA graph (False: eager)."""


class Loaded(NamedTuple):
    backend: SegmentBackend[Any]
    reason: str
    """What the loader adds to why this backend runs ("" when it has nothing to add)."""


Loader = Callable[["PolicyBundle", BackendOptions], Loaded]


def load_torch(bundle: PolicyBundle, options: BackendOptions) -> Loaded:
    require_backend("torch")  # a robot install without torch: say so, and what serves there instead
    import torch

    from dysl_ros.backends.torch_backend import TorchBackend

    device = options.device
    if options.num_threads > 0:
        torch.set_num_threads(options.num_threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA device")
    if options.precision not in PRECISIONS["torch"]:
        raise ConfigError(f"backend torch runs {' or '.join(PRECISIONS['torch'])}, not {options.precision!r}")
    dtype = torch.float16 if options.precision == "fp16" else torch.float32
    if dtype == torch.float16 and not device.startswith("cuda"):
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 on the CPU")
    if device.startswith("cuda") and options.cuda_graphs:
        from dysl_ros.backends.torch_cuda_graph import TorchCudaGraphBackend

        graphs = TorchCudaGraphBackend(bundle.model, bundle.modules, device, dtype)
        return Loaded(graphs, f"; {device}: every segment captured as a CUDA graph (cuda_graphs=False for eager)")
    eager = TorchBackend(bundle.model, bundle.modules, device, dtype)
    return Loaded(eager, f"; {device}: eager segments" + (" (cuda_graphs=False)" if device.startswith("cuda") else ""))


def load_onnxruntime(bundle: PolicyBundle, options: BackendOptions) -> Loaded:
    from dysl_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from dysl_ros.model.model_dir import resolve_dirs

    if options.device != "cpu":
        raise ConfigError(f"backend onnxruntime runs on the CPU; device {options.device!r} needs backend torch")
    if options.precision not in PRECISIONS["onnxruntime"]:
        raise ConfigError(
            f"backend onnxruntime runs fp32; precision {options.precision!r} needs backend torch on CUDA"
        )
    source = bundle.model_dir
    if bundle.modules_dir is not None:
        # A variant's engines: built from the variant directory (its backbone two levels up, see
        # dysl_ros.model.checkpoint) and kept under it, never mixed with the main modules' engines.
        backbone_dir, variant = resolve_dirs(bundle.modules_dir)
        if variant is None or backbone_dir.resolve() != bundle.model_dir.resolve():
            raise ConfigError(
                f"onnxruntime engines for modules_dir {bundle.modules_dir} need it inside the model directory, "
                f"as {bundle.model_dir / 'variants' / '<name>'}; use backend torch for modules elsewhere"
            )
        source = bundle.modules_dir
    # Builds when missing or forced; otherwise checks the manifest against the model and this machine
    # and raises EngineError on a mismatch. Either way the manifest fits: reading it suffices.
    target = build_engines(
        source,
        engine_root(source, options.engine_dir),
        "onnxruntime",
        "fp32",
        force=options.force_engine_update,
        progress=False,
    )
    backend = OnnxRuntimeBackend(target, options.num_threads, manifest=read_manifest(target), model_dir=source)
    return Loaded(backend, "")


def load_tensorrt(bundle: PolicyBundle, options: BackendOptions) -> Loaded:
    device, precision = options.device, options.precision
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

    # As for onnxruntime: built when missing or forced, else checked (model, TensorRT version, GPU,
    # precision) and refused with an EngineError on a mismatch.
    model_dir = bundle.model_dir
    target = build_engines(
        model_dir,
        engine_root(model_dir, options.engine_dir),
        "tensorrt",
        precision,
        force=options.force_engine_update,
        progress=False,
        device=device,
    )
    manifest = read_manifest(target)
    backend = TensorRTBackend(target, device, manifest=manifest, model_dir=model_dir)
    return Loaded(
        backend, f"; {manifest.precision} plans from {target} (TensorRT {manifest.backend_version}, {manifest.device})"
    )


GPU_PARITY_PASSED = {"torch_cuda_graph": "an NVIDIA H200, 2026-12-04 (scripts/gpu_check.sh)"}
"""GPU backends whose parity test (test/test_backends_gpu.py) has passed, and where: ``auto`` picks
only these."""
TENSORRT_UNTESTED = "no TensorRT plan has ever been built or run"

LOADERS: dict[str, Loader] = {"torch": load_torch, "onnxruntime": load_onnxruntime, "tensorrt": load_tensorrt}
BACKEND_CHOICES = ("auto", *LOADERS)
"""What the node's ``backend`` parameter and ``load_policy`` accept."""


def load_backend(name: str, bundle: PolicyBundle, options: BackendOptions) -> Loaded:
    """The backend ``name`` (or the one ``auto`` picks) loaded for ``bundle``, and why it runs."""
    reason = f"backend {name} requested"
    if name == "auto":
        source = bundle.modules_dir if bundle.modules_dir is not None else bundle.model_dir
        name, reason = auto_backend(source, options)
        logging.getLogger(__name__).info("backend auto: %s", reason)
    loader = LOADERS.get(name)
    if loader is None:
        raise ConfigError(f"backend {name!r} does not exist: use {', '.join(BACKEND_CHOICES)}")
    backend, detail = loader(bundle, options)
    return Loaded(backend, reason + detail)


def auto_backend(model_dir: str | Path, options: BackendOptions) -> tuple[str, str]:
    """The backend ``auto`` stands for on this machine, and why (one line for the log)."""
    device, precision = options.device, options.precision
    if device.startswith("cuda"):
        # Only a backend whose GPU parity test has passed on a named device is chosen for you.
        problems = backend_problems("torch_cuda_graph", device)
        where = f" (CUDA graphs passed GPU parity on {GPU_PARITY_PASSED['torch_cuda_graph']})"
        if problems:
            where += f"; this machine: {'; '.join(problems)}"
        untested = f"TensorRT only as backend: tensorrt ({TENSORRT_UNTESTED})"
        return "torch", f"auto on {device}: torch CUDA graphs{where}; {untested}"
    if precision != "fp32":
        return "torch", f"auto on {device} in {precision}: onnxruntime runs fp32 only, so torch"
    target = engine_path(engine_root(model_dir, options.engine_dir), model_dir, "onnxruntime")
    gpu_note = " (GPU backends need device: cuda)"
    if target.exists() and not options.force_engine_update:
        return "onnxruntime", f"auto on the CPU: onnxruntime engines (fp32) exist at {target}{gpu_note}"
    if torch_problem():  # neither eager torch nor building engines: onnxruntime's refusal says what to do
        return "onnxruntime", f"auto on the CPU: onnxruntime, the one CPU backend without torch ({torch_problem()})"
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK | os.X_OK):
        return "onnxruntime", f"auto on the CPU: onnxruntime engines (fp32), built into {target}{gpu_note}"
    return "torch", (
        f"auto on the CPU: no onnxruntime engines at {target} and {existing} is not writable, so eager torch "
        "(set engine_dir to a writable directory for onnxruntime)"
    )
