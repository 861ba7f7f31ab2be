"""The engine manifest: what a directory of per-segment engines was built from and for, and the
checks that refuse engines that no longer fit.

Layout (``out_root`` is the node's ``engine_dir``, default ``<model_dir>/engines``; ``build_engines --out``):

    <out_root>/<model_name>/<backend>/
        manifest.json
        embed.onnx  layer_00.onnx ... layer_NN.onnx  adapter_XX.onnx  controller_XX.onnx  head.onnx
        (tensorrt: embed.plan ... head.plan, one serialized TensorRT engine per segment)

``manifest.json`` records the model hash (``dysl_ros.model.model_dir.model_hash``), backend +
version, device, precision, tensor shapes, the segment files with their sha256, and the layer plan.
Engines that do not match are refused with a message naming what differs and the command that
rebuilds them; nothing is rebuilt silently. A TensorRT plan only runs with the TensorRT version and
the GPU model it was built with, so for ``tensorrt`` the manifest's ``backend_version`` and
``device`` must match this machine; ONNX files are portable across CPUs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from dysl_ros.backends.capability import backend_version, device_description
from dysl_ros.backends.errors import BackendUnavailable, EngineError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
DEVICE_BOUND_BACKENDS: frozenset[str] = frozenset({"tensorrt"})
"""Backends whose engines only run on the device they were built on (TensorRT plans are tied to
the GPU). ONNX files are portable: ONNX Runtime picks CPU kernels when a session is created, so for
onnxruntime the builder's CPU is recorded but a different CPU is not a mismatch."""


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


def engine_root(model_dir: str | Path, engine_dir: str | None) -> Path:
    """Where engines of ``model_dir`` live: ``engine_dir`` (the node's parameter, build_engines' --out),
    else ``<model_dir>/engines``."""
    return Path(engine_dir) if engine_dir else Path(model_dir) / "engines"


def engine_path(out_root: str | Path, model_dir: str | Path, backend: str) -> Path:
    return Path(out_root) / model_name(model_dir) / backend


def rebuild_command(model_dir: str | Path, engine_dir: str | Path, backend: str, *, force: bool = True) -> str:
    out_root = Path(engine_dir).parent.parent
    command = f"build_engines --model-dir {model_dir} --out {out_root} --backend {backend}"
    return command + (" --force" if force else "")


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
    engine_dir: str | Path,
    model_dir: str | Path,
    backend: str,
    *,
    precision: str | None = None,
    device: str = "cuda",
) -> Manifest:
    """The manifest of ``engine_dir`` if its engines fit ``model_dir`` on this machine's ``backend``
    (``device``: the GPU, for device-bound backends); otherwise an EngineError listing every
    difference and the rebuild command. Segment files are only checked for presence here: their
    sha256 is checked when they are loaded."""
    from dysl_ros.model.model_dir import model_hash

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
    current_version = current_device = None
    if manifest.backend == backend:
        current_version = _current(backend_version, backend)
        if backend in DEVICE_BOUND_BACKENDS:
            current_device = _current(lambda b: device_description(b, device), backend)
    differences = manifest_differences(
        manifest,
        backend=backend,
        model_hash=model_hash(model_dir),
        model_dir=str(model_dir),
        backend_version=current_version,
        device=current_device,
        precision=precision,
    )
    if differences:
        raise EngineError(
            f"engines in {path} do not match:\n  - " + "\n  - ".join(differences) + f"\nRebuild with: {rebuild}"
        )
    missing = [f"{name} ({file})" for name, file in manifest.segments.items() if not (path / file).is_file()]
    if missing:
        raise EngineError(f"engines in {path} lack segment file(s) {missing[:5]}. Rebuild with: {rebuild}")
    return manifest


def _current(describe: Callable[[str], str], backend: str) -> str:
    """What this machine has, or 'none (why)' when it lacks the backend altogether."""
    try:
        return describe(backend)
    except BackendUnavailable as exc:
        return f"none ({'; '.join(exc.problems)})"


def manifest_differences(
    manifest: Manifest,
    *,
    backend: str,
    model_hash: str,
    model_dir: str,
    backend_version: str | None,
    device: str | None,
    precision: str | None,
) -> list[str]:
    """Every way ``manifest`` differs from what is wanted: ``backend``, the model (``model_hash`` of
    ``model_dir``), and this machine's ``backend_version`` and ``device`` (None: not compared; the
    device only matters for device-bound backends), ``precision`` (None: any)."""
    differences = []
    if manifest.backend != backend:
        differences.append(f"backend: engines are for {manifest.backend!r}, {backend!r} was asked for")
    if manifest.model_hash != model_hash:
        differences.append(
            f"model hash: engines were built from another model ({manifest.model_name!r} at {manifest.model_dir}, "
            f"hash {manifest.model_hash[:12]}), {model_dir} hashes to {model_hash[:12]}"
        )
    if backend_version is not None and manifest.backend_version != backend_version:
        differences.append(
            f"backend version: built with {manifest.backend} {manifest.backend_version}, installed is {backend_version}"
        )
    if device is not None and manifest.device != device:
        differences.append(f"device: built on {manifest.device!r}, this machine has {device!r}")
    if precision is not None and manifest.precision != precision:
        differences.append(f"precision: engines are {manifest.precision}, {precision} was asked for")
    return differences


def verify_segment(engine_dir: Path, manifest: Manifest, name: str, model_dir: str | Path | None = None) -> Path:
    """Path of segment ``name`` after checking its sha256 against the manifest. ``model_dir``: the
    model directory being loaded, which a rebuild command must name (the manifest records where the
    model was at build time; it may have moved since)."""
    rebuild = rebuild_command(model_dir or manifest.model_dir, engine_dir, manifest.backend)
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


def segment_sizes(engine_dir: str | Path) -> list[tuple[str, str, int]]:
    """(segment, file, bytes) of every segment in the manifest, in build order."""
    path = Path(engine_dir)
    manifest = read_manifest(path)
    return [(name, file, (path / file).stat().st_size) for name, file in manifest.segments.items()]
