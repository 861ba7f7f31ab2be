"""Per-segment engine directories: building them, their manifest, and checking that they still fit.

Layout (``out_root`` defaults to ``<model_dir>/engines`` in the node, ``engines/`` in the CLI):

    <out_root>/<model_name>/<backend>/
        manifest.json
        embed.onnx  layer_00.onnx ... layer_NN.onnx  adapter_XX.onnx  controller_XX.onnx  head.onnx

``manifest.json`` records what the engines were built from and for: the model hash
(``dysl_ros.model.checkpoint.model_hash``), backend + version, device, precision, tensor shapes, the
segment files with their sha256, and the layer plan. Engines that do not match are refused with a
message naming what differs and the command that rebuilds them; nothing is rebuilt silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dysl_ros.backends.export import SegmentSpec

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
BUILDABLE_BACKENDS = ("onnxruntime",)
"""Backends this version builds engines for; torch (CUDA graphs) and tensorrt come later."""
PRECISIONS = {"onnxruntime": ("fp32",)}
DEVICE_BOUND_BACKENDS: frozenset[str] = frozenset({"tensorrt"})
"""Backends whose engines only run on the device they were built on (TensorRT plans are tied to
the GPU). ONNX files are portable: ONNX Runtime picks CPU kernels when a session is created, so for
onnxruntime the builder's CPU is recorded but a different CPU is not a mismatch."""


class EngineError(RuntimeError):
    """Engines are missing, stale, from another model or damaged; the message says which and how to
    rebuild them."""


@dataclass(frozen=True)
class Manifest:
    format: int
    model_name: str
    model_dir: str
    """Where the model was when the engines were built (for the rebuild command in messages)."""
    model_hash: str
    backend: str
    backend_version: str
    device: str
    precision: str
    exporter: str
    shapes: dict[str, list[int]]
    segments: dict[str, str]
    """Segment name -> file name inside the engine directory."""
    sha256: dict[str, str]
    """Segment name -> sha256 of its file, checked when the segment is loaded."""
    layer_plan: dict[str, Any]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise EngineError(f"manifest lacks field(s) {missing}")
        return cls(**{n: data[n] for n in names})

    def save(self, engine_dir: Path) -> None:
        (engine_dir / MANIFEST_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def model_name(model_dir: str | Path) -> str:
    return Path(model_dir).resolve().name


def engine_path(out_root: str | Path, model_dir: str | Path, backend: str) -> Path:
    return Path(out_root) / model_name(model_dir) / backend


def rebuild_command(model_dir: str | Path, engine_dir: str | Path, backend: str, *, force: bool = True) -> str:
    out_root = Path(engine_dir).parent.parent
    command = f"build_engines --model-dir {model_dir} --out {out_root} --backend {backend}"
    return command + (" --force" if force else "")


def backend_version(backend: str) -> str:
    if backend == "onnxruntime":
        import onnxruntime

        return str(onnxruntime.__version__)
    raise EngineError(f"backend {backend!r}: engines are not available yet in this version (only onnxruntime)")


def cpu_name() -> str:
    """The CPU's marketing name where Linux tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                return f"{value.strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_description(backend: str) -> str:
    if backend == "onnxruntime":
        return cpu_name()
    raise EngineError(f"backend {backend!r}: engines are not available yet in this version (only onnxruntime)")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(engine_dir: str | Path) -> Manifest:
    path = Path(engine_dir)
    file = path / MANIFEST_FILE
    if not path.is_dir():
        raise EngineError(f"engine directory {path} does not exist")
    if not file.is_file():
        raise EngineError(f"{path} has no {MANIFEST_FILE}: an interrupted or foreign build")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"cannot read {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise EngineError(f"{file} is not a JSON object")
    if data.get("format") != MANIFEST_FORMAT:
        raise EngineError(f"{file} has format {data.get('format')!r}, this version reads format {MANIFEST_FORMAT}")
    return Manifest.from_dict(data)


def check_manifest(
    engine_dir: str | Path, model_dir: str | Path, backend: str, *, precision: str | None = None
) -> Manifest:
    """The manifest of ``engine_dir`` if its engines fit ``model_dir`` on this machine's ``backend``;
    otherwise an EngineError listing every difference and the rebuild command. Segment files are
    only checked for presence here: their sha256 is checked when they are loaded."""
    from dysl_ros.model.checkpoint import model_hash  # imports torch: only when checking against a model

    path = Path(engine_dir)
    if not path.is_dir():
        raise EngineError(
            f"no {backend} engines at {path} (engine directory missing). Build them with: "
            f"{rebuild_command(model_dir, path, backend, force=False)}"
        )
    rebuild = rebuild_command(model_dir, path, backend) + " (dysl_node: force_engine_update: true)"
    try:
        manifest = read_manifest(path)
    except EngineError as exc:
        raise EngineError(f"{exc}. Rebuild with: {rebuild}") from exc
    differences = []
    if manifest.backend != backend:
        differences.append(f"backend: engines are for {manifest.backend!r}, {backend!r} was asked for")
    expected_hash = model_hash(model_dir)
    if manifest.model_hash != expected_hash:
        differences.append(
            f"model hash: engines were built from another model ({manifest.model_name!r} at {manifest.model_dir}, "
            f"hash {manifest.model_hash[:12]}), {model_dir} hashes to {expected_hash[:12]}"
        )
    if manifest.backend == backend:
        current = backend_version(backend)
        if manifest.backend_version != current:
            differences.append(
                f"backend version: built with {backend} {manifest.backend_version}, installed is {current}"
            )
        if backend in DEVICE_BOUND_BACKENDS:
            device = device_description(backend)
            if manifest.device != device:
                differences.append(f"device: built on {manifest.device!r}, this machine has {device!r}")
    if precision is not None and manifest.precision != precision:
        differences.append(f"precision: engines are {manifest.precision}, {precision} was asked for")
    if differences:
        raise EngineError(
            f"engines in {path} do not match:\n  - " + "\n  - ".join(differences) + f"\nRebuild with: {rebuild}"
        )
    missing = [f"{name} ({file})" for name, file in manifest.segments.items() if not (path / file).is_file()]
    if missing:
        raise EngineError(f"engines in {path} lack segment file(s) {missing[:5]}. Rebuild with: {rebuild}")
    return manifest


def verify_segment(engine_dir: Path, manifest: Manifest, name: str) -> Path:
    """Path of segment ``name`` after checking its sha256 against the manifest."""
    rebuild = rebuild_command(manifest.model_dir, engine_dir, manifest.backend)
    if name not in manifest.segments:
        raise EngineError(f"engines in {engine_dir} have no segment {name!r}. Rebuild with: {rebuild}")
    file = engine_dir / manifest.segments[name]
    if not file.is_file():
        raise EngineError(f"segment {name} is missing: {file}. Rebuild with: {rebuild}")
    actual = file_sha256(file)
    if actual != manifest.sha256.get(name):
        raise EngineError(
            f"segment {name} is corrupted: sha256 of {file} is {actual[:12]}, the manifest records "
            f"{str(manifest.sha256.get(name))[:12]}. Rebuild with: {rebuild}"
        )
    return file


def build_engines(
    model_dir: str | Path,
    out_root: str | Path,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build (or find up to date) the engines of ``model_dir`` under ``out_root``; returns the engine
    directory. Without ``force``, existing engines are checked and kept, and refused (EngineError)
    when they do not match; ``force`` rebuilds them whatever they are."""
    if backend not in BUILDABLE_BACKENDS:
        raise EngineError(
            f"backend {backend!r}: engines are not available yet in this version "
            f"(buildable: {list(BUILDABLE_BACKENDS)})"
        )
    if precision not in PRECISIONS[backend]:
        raise EngineError(f"precision {precision!r} is not available for {backend} engines (use {PRECISIONS[backend]})")
    target = engine_path(out_root, model_dir, backend)
    if target.exists() and not force:
        check_manifest(target, model_dir, backend, precision=precision)
        return target

    # Heavy imports only when something is exported: loading engines needs neither.
    from dysl_ros.backends.export import OPSET, segment_specs
    from dysl_ros.backends.segments import segment_shapes
    from dysl_ros.model.checkpoint import load_bundle, model_hash

    bundle = load_bundle(model_dir)
    digest = model_hash(model_dir)
    specs = segment_specs(bundle.model, bundle.modules)
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
        segments, hashes = _export_all(specs, staging, progress)
        import torch

        num_layers = bundle.config.num_layers
        static = list(bundle.plan.static_layers) if bundle.plan is not None else list(range(num_layers))
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            model_name=model_name(model_dir),
            model_dir=str(Path(model_dir).resolve()),
            model_hash=digest,
            backend=backend,
            backend_version=backend_version(backend),
            device=device_description(backend),
            precision=precision,
            exporter=f"torch {torch.__version__} torch.onnx TorchScript exporter, opset {OPSET}",
            shapes=segment_shapes(bundle.config),
            segments=segments,
            sha256=hashes,
            layer_plan={
                "num_layers": num_layers,
                "static_layers": static,
                "has_dysl_modules": bundle.modules is not None,
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


def _export_all(specs: list[SegmentSpec], staging: Path, progress: bool) -> tuple[dict[str, str], dict[str, str]]:
    from tqdm import tqdm  # type: ignore[import-untyped]

    from dysl_ros.backends.export import export_segment

    segments: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for spec in tqdm(specs, desc="segments", unit="seg", disable=not progress):
        file = staging / f"{spec.name}.onnx"
        try:
            export_segment(spec, file)
        except Exception as exc:  # the exporter and onnx.checker raise many unrelated types
            raise EngineError(f"exporting segment {spec.name} failed: {type(exc).__name__}: {exc}") from exc
        segments[spec.name] = file.name
        hashes[spec.name] = file_sha256(file)
    return segments, hashes


def segment_sizes(engine_dir: str | Path) -> list[tuple[str, str, int]]:
    """(segment, file, bytes) of every segment in the manifest, in build order."""
    path = Path(engine_dir)
    manifest = read_manifest(path)
    return [(name, file, (path / file).stat().st_size) for name, file in manifest.segments.items()]
