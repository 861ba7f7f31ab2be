"""Building per-segment engines: export every segment to ONNX, and for TensorRT parse each ONNX
file into a plan on the GPU that will run it. The manifest (``manifest.py``) records the result.

CUDA graphs (``backend: torch`` on a GPU) are captured in memory when the policy loads: there is
nothing to build for them.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from dysl_ros.backends.capability import (
    ENGINE_BACKENDS,
    PRECISIONS,
    backend_version,
    device_description,
    require_backend,
)
from dysl_ros.backends.errors import EngineError
from dysl_ros.backends.manifest import (
    MANIFEST_FORMAT,
    Manifest,
    check_manifest,
    engine_path,
    file_sha256,
    model_name,
)

if TYPE_CHECKING:
    from dysl_ros.backends.export import SegmentSpec

SEGMENT_SUFFIX = {"onnxruntime": ".onnx", "tensorrt": ".plan"}


def build_engines(
    model_dir: str | Path,
    out_root: str | Path,
    backend: str = "onnxruntime",
    precision: str | None = None,
    force: bool = False,
    progress: bool = True,
    device: str = "cuda",
) -> Path:
    """Build (or find up to date) the engines of ``model_dir`` under ``out_root``; returns the engine
    directory. Without ``force``, existing engines are checked and kept, and refused (EngineError)
    when they do not match; ``force`` rebuilds them whatever they are. ``precision`` defaults to the
    backend's first (onnxruntime fp32, tensorrt fp16); ``device`` is the GPU TensorRT builds on.
    Raises BackendUnavailable when this machine cannot build ``backend`` engines."""
    if backend not in ENGINE_BACKENDS:
        raise EngineError(
            f"backend {backend!r} has no engine files to build (engine backends: {list(ENGINE_BACKENDS)}; "
            "torch captures its CUDA graphs when the policy loads)"
        )
    precision = precision or PRECISIONS[backend][0]
    if precision not in PRECISIONS[backend]:
        raise EngineError(f"precision {precision!r} is not available for {backend} engines (use {PRECISIONS[backend]})")
    require_backend(backend, device)
    target = engine_path(out_root, model_dir, backend)
    if target.exists() and not force:
        check_manifest(target, model_dir, backend, precision=precision, device=device)
        return target

    # Heavy imports only when something is exported: loading engines needs neither.
    from dysl_ros.backends.export import OPSET, export_source
    from dysl_ros.backends.segments import segment_shapes
    from dysl_ros.model.checkpoint import model_hash

    source = export_source(model_dir)
    digest = model_hash(model_dir)
    specs = source.segments()
    dynamic = len(source.modules.plan.dynamic_layers) if source.modules is not None else 0
    total = 2 + source.dims.num_layers + 2 * dynamic
    # Build next to the target and rename at the end: a crash never leaves a directory with a
    # manifest over half the segments, and a concurrent reader never sees one.
    staging = target.parent / f".{backend}.building-{os.getpid()}"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    except OSError as exc:
        raise EngineError(
            f"cannot write engines under {target.parent}: {exc}. Point engine_dir (node) or --out (build_engines) "
            "at a writable directory"
        ) from exc
    try:
        import torch

        exporter = f"torch {torch.__version__} torch.onnx TorchScript exporter, opset {OPSET}"
        if backend == "tensorrt":
            onnx_dir = staging / "onnx"
            onnx_dir.mkdir()
            onnx_files = _export_all(specs, total, onnx_dir, progress)
            segments, hashes = _build_tensorrt(onnx_files, staging, precision, device, progress)
            shutil.rmtree(onnx_dir)  # only the plans are loaded; the ONNX files are rebuilt in seconds
            exporter += f", TensorRT {backend_version(backend)} ONNX parser"
        else:
            onnx_files = _export_all(specs, total, staging, progress)
            segments = {name: file.name for name, file in onnx_files.items()}
            hashes = {name: file_sha256(file) for name, file in onnx_files.items()}

        num_layers = source.dims.num_layers
        static = list(source.plan.static_layers) if source.plan is not None else list(range(num_layers))
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            model_name=model_name(model_dir),
            model_dir=str(Path(model_dir).resolve()),
            model_hash=digest,
            backend=backend,
            backend_version=backend_version(backend),
            device=device_description(backend, device),
            precision=precision,
            exporter=exporter,
            shapes=segment_shapes(source.spec, source.dims),
            segments=segments,
            sha256=hashes,
            layer_plan={
                "num_layers": num_layers,
                "static_layers": static,
                "has_dysl_modules": source.modules is not None,
            },
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        manifest.save(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _export_all(specs: Iterator[SegmentSpec], total: int, out_dir: Path, progress: bool) -> dict[str, Path]:
    """Segment name -> its ONNX file in ``out_dir``, in build order (one segment in memory at a time)."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from dysl_ros.backends.export import export_segment

    files: dict[str, Path] = {}
    for spec in tqdm(specs, total=total, desc="segments", unit="seg", disable=not progress):
        file = out_dir / f"{spec.name}{SEGMENT_SUFFIX['onnxruntime']}"
        try:
            export_segment(spec, file)
        except Exception as exc:  # the exporter and onnx.checker raise many unrelated types
            raise EngineError(f"exporting segment {spec.name} failed: {type(exc).__name__}: {exc}") from exc
        files[spec.name] = file
    return files


def _build_tensorrt(
    onnx_files: dict[str, Path], staging: Path, precision: str, device: str, progress: bool
) -> tuple[dict[str, str], dict[str, str]]:
    from tqdm import tqdm  # type: ignore[import-untyped]

    from dysl_ros.backends.tensorrt_backend import build_plan  # imports tensorrt: only once it is known to work

    segments: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for name, onnx_file in tqdm(onnx_files.items(), desc="tensorrt plans", unit="seg", disable=not progress):
        file = staging / f"{name}{SEGMENT_SUFFIX['tensorrt']}"
        build_plan(onnx_file, file, precision, device)
        segments[name] = file.name
        hashes[name] = file_sha256(file)
    return segments, hashes
