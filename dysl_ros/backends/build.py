"""Building per-segment engines: export every segment to ONNX, and for TensorRT parse each ONNX
file into a plan on the GPU that will run it. The manifest (``manifest.py``) records the result.

Exporting needs torch (and the model's weights); nothing else here does. A TensorRT build takes its
ONNX files from onnxruntime engines of the same model when there are some (under the output root or
``<model_dir>/engines``, checked against the model hash), so a robot without torch builds its plans
from ONNX files exported elsewhere. Where engines must be exported and torch is missing,
``TorchNeeded`` says to run ``build_engines`` on a machine with torch.

CUDA graphs (``backend: torch`` on a GPU) are captured in memory when the policy loads: there is
nothing to build for them.
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from dysl_ros.backends.capability import (
    ENGINE_BACKENDS,
    PRECISIONS,
    backend_version,
    device_description,
    require_backend,
    torch_problem,
)
from dysl_ros.backends.errors import EngineError, TorchNeeded
from dysl_ros.backends.manifest import (
    MANIFEST_FORMAT,
    Manifest,
    check_manifest,
    engine_path,
    engine_root,
    file_sha256,
    manifest_differences,
    model_name,
    read_manifest,
    verify_segment,
)
from dysl_ros.model.model_dir import model_hash

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

    digest = model_hash(model_dir)
    onnx_source = _onnx_engines(model_dir, out_root, digest) if backend == "tensorrt" else None
    if onnx_source is None and torch_problem():
        raise _torch_needed(model_dir, out_root, target, backend)
    # Build next to the target and rename at the end: a crash never leaves a directory with a
    # manifest over half the segments, and a concurrent reader never sees one.
    staging = _staging(target, backend)
    try:
        if onnx_source is not None:
            onnx_dir, onnx_manifest = onnx_source
            onnx_files = {name: onnx_dir / file for name, file in onnx_manifest.segments.items()}
            exporter = f"{onnx_manifest.exporter} (the onnxruntime engines in {onnx_dir})"
            shapes, layer_plan = onnx_manifest.shapes, onnx_manifest.layer_plan
        else:
            onnx_files = _export(model_dir, staging / "onnx" if backend == "tensorrt" else staging, progress)
            exporter, shapes, layer_plan = _export_record(model_dir)
        if backend == "tensorrt":
            segments, hashes = _build_tensorrt(onnx_files, staging, precision, device, progress)
            shutil.rmtree(staging / "onnx", ignore_errors=True)  # only the plans are loaded
            exporter += f", TensorRT {backend_version(backend)} ONNX parser"
        else:
            segments = {name: file.name for name, file in onnx_files.items()}
            hashes = {name: file_sha256(file) for name, file in onnx_files.items()}
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
            shapes=shapes,
            segments=segments,
            sha256=hashes,
            layer_plan=layer_plan,
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


def _staging(target: Path, backend: str) -> Path:
    """An empty directory beside ``target`` that the build fills and then renames to it."""
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
    return staging


def _torch_needed(model_dir: str | Path, out_root: str | Path, target: Path, backend: str) -> TorchNeeded:
    name = model_name(model_dir)
    if backend == "tensorrt":
        places = [str(engine_path(root, model_dir, "onnxruntime")) for root in _onnx_roots(model_dir, out_root)]
        what = (
            f"TensorRT plans are built here from the ONNX files of onnxruntime engines of the same model, and there "
            f"are none at {' or '.join(places)}. Build those on a machine with torch (pip install -r "
            f"requirements.txt): `build_engines --model-dir {model_dir}`, and copy "
            f"<model_dir>/engines/{name}/onnxruntime to one of these places"
        )
    else:
        what = (
            f"Build them on a machine with torch (pip install -r requirements.txt): `build_engines --model-dir "
            f"{model_dir} --out <dir>`, and copy <dir>/{name}/onnxruntime to {target}"
        )
    return TorchNeeded(
        backend,
        f"no {backend} engines at {target}, and exporting the model to ONNX needs torch, which is not installed "
        f"here (the robot's runtime install, requirements-runtime.txt). {what}",
    )


def _onnx_roots(model_dir: str | Path, out_root: str | Path) -> list[Path]:
    return list(dict.fromkeys([Path(out_root), engine_root(model_dir, None)]))


def _onnx_engines(model_dir: str | Path, out_root: str | Path, digest: str) -> tuple[Path, Manifest] | None:
    """ONNX files this model's TensorRT plans can be built from: onnxruntime engines of the same model
    (hash) under ``out_root`` or ``<model_dir>/engines``, every file's sha256 checked; None when none fit."""
    for root in _onnx_roots(model_dir, out_root):
        candidate = engine_path(root, model_dir, "onnxruntime")
        try:
            manifest = read_manifest(candidate)
        except EngineError:
            continue
        differences = manifest_differences(
            manifest, backend="onnxruntime", model_hash=digest, model_dir=str(model_dir),
            backend_version=None, device=None, precision="fp32",
        )
        if differences:
            continue
        try:
            for name in manifest.segments:
                verify_segment(candidate, manifest, name)
        except EngineError:
            continue
        return candidate, manifest
    return None


def _export(model_dir: str | Path, out_dir: Path, progress: bool) -> dict[str, Path]:
    """Every segment of ``model_dir`` as an ONNX file in ``out_dir`` (torch)."""
    from dysl_ros.backends.export import export_source  # torch: only when something is exported

    source = export_source(model_dir)
    dynamic = len(source.modules.plan.dynamic_layers) if source.modules is not None else 0
    total = 2 + source.dims.num_layers + 2 * dynamic
    out_dir.mkdir(parents=True, exist_ok=True)
    return _export_all(source.segments(), total, out_dir, progress)


def _export_record(model_dir: str | Path) -> tuple[str, dict[str, list[int]], dict[str, Any]]:
    """What the manifest records of an export: the exporter, every tensor's shape, the layer plan."""
    import torch

    from dysl_ros.backends.export import OPSET
    from dysl_ros.backends.segments import segment_shapes
    from dysl_ros.model.model_dir import open_bundle

    bundle = open_bundle(model_dir)
    num_layers = bundle.dims.num_layers
    static = list(bundle.plan.static_layers) if bundle.plan is not None else list(range(num_layers))
    layer_plan = {"num_layers": num_layers, "static_layers": static, "has_dysl_modules": bundle.has_dysl}
    exporter = f"torch {torch.__version__} torch.onnx TorchScript exporter, opset {OPSET}"
    return exporter, segment_shapes(bundle.spec, bundle.dims), layer_plan


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
    from dysl_ros.backends.tensorrt_backend import build_plan  # imports tensorrt: only once it is known to work

    segments: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for count, (name, onnx_file) in enumerate(onnx_files.items(), 1):
        file = staging / f"{name}{SEGMENT_SUFFIX['tensorrt']}"
        if progress:  # no tqdm: a robot's runtime install builds plans too
            print(f"tensorrt plan {count}/{len(onnx_files)}: {name}", file=sys.stderr, flush=True)
        build_plan(onnx_file, file, precision, device)
        segments[name] = file.name
        hashes[name] = file_sha256(file)
    return segments, hashes
