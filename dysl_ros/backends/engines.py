"""Per-segment engine directories: building them, their manifest, and checking that they still fit.

Layout (``out_root`` defaults to ``<model_dir>/engines`` in the node, ``engines/`` in the CLI):

    <out_root>/<model_name>/<backend>/
        manifest.json
        embed.onnx  layer_00.onnx ... layer_NN.onnx  adapter_XX.onnx  controller_XX.onnx  head.onnx
        (tensorrt: embed.plan ... head.plan, one serialized TensorRT engine per segment)

``manifest.json`` records what the engines were built from and for: the model hash
(``dysl_ros.model.checkpoint.model_hash``), backend + version, device, precision, tensor shapes, the
segment files with their sha256, and the layer plan. Engines that do not match are refused with a
message naming what differs and the command that rebuilds them; nothing is rebuilt silently.

TensorRT plans are built from the same ONNX files, on the GPU that will run them: a plan only runs
with the TensorRT version and the GPU model it was built with, so for ``tensorrt`` the manifest's
``backend_version`` (TensorRT) and ``device`` (GPU name and compute capability) must match this
machine. CUDA graphs (``backend: torch`` on a GPU) are captured in memory when the policy loads:
there is nothing to build for them.
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
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from dysl_ros.backends.export import SegmentSpec

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
BUILDABLE_BACKENDS = ("onnxruntime", "tensorrt")
"""Backends with engine files. torch needs none: its CUDA graphs are captured when the policy loads."""
PRECISIONS = {"onnxruntime": ("fp32",), "tensorrt": ("fp16", "fp32")}
"""Precisions each backend builds; the first is the default."""
SEGMENT_SUFFIX = {"onnxruntime": ".onnx", "tensorrt": ".plan"}
DEVICE_BOUND_BACKENDS: frozenset[str] = frozenset({"tensorrt"})
"""Backends whose engines only run on the device they were built on (TensorRT plans are tied to
the GPU). ONNX files are portable: ONNX Runtime picks CPU kernels when a session is created, so for
onnxruntime the builder's CPU is recorded but a different CPU is not a mismatch."""
MIN_TENSORRT = (8, 6)
"""The oldest TensorRT this package is written against (JetPack 6.0 ships 8.6, 6.1 and later 10.x);
its name-based tensor API (``set_tensor_address`` + ``execute_async_v3``) exists since 8.5."""


class EngineError(RuntimeError):
    """Engines are missing, stale, from another model or damaged; the message says which and how to
    rebuild them."""


class BackendUnavailable(EngineError):
    """This machine cannot build or run a backend's engines (e.g. no TensorRT or no CUDA GPU)."""

    def __init__(self, backend: str, problems: list[str], advice: str = "") -> None:
        self.backend = backend
        self.problems = problems
        if not advice and backend == "tensorrt":
            advice = (
                "TensorRT engines need TensorRT >= 8.6 and a CUDA GPU; elsewhere use backend onnxruntime (CPU) "
                "or torch"
            )
        message = f"backend {backend} is not available on this machine: {'; '.join(problems)}"
        super().__init__(message + (f". {advice}" if advice else ""))


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


def _tensorrt() -> tuple[str | None, str]:
    """(TensorRT version, "") when a usable TensorRT is installed, else (None, what is wrong)."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the bindings are there but libnvinfer is not
        return None, f"TensorRT is not installed (import tensorrt: {exc})"
    version = getattr(tensorrt, "__version__", None)
    if not isinstance(version, str) or not hasattr(tensorrt, "Builder"):
        # e.g. only the `tensorrt-stubs` type stubs, which make `tensorrt` an empty namespace package
        return None, (
            "TensorRT is not installed (`import tensorrt` finds no TensorRT runtime, only type stubs or an empty "
            "package; JetPack ships it, elsewhere `pip install tensorrt`)"
        )
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < MIN_TENSORRT:
        wanted = ".".join(map(str, MIN_TENSORRT))
        return None, f"TensorRT {version} is too old (the name-based execute_async_v3 API needs >= {wanted})"
    return version, ""


def _cuda_problem(device: str) -> str:
    """Why torch cannot use CUDA ``device``, or "" when it can."""
    import torch

    if torch.device(device).type != "cuda":
        return f"device {device!r} is not a CUDA device"
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built with CUDA {torch.version.cuda}"
        return f"torch {torch.__version__} ({build}) sees no CUDA GPU"
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        return f"{device} does not exist (torch sees {torch.cuda.device_count()} CUDA GPU(s))"
    return ""


def backend_problems(backend: str, device: str = "cuda") -> list[str]:
    """What this machine lacks to build or run ``backend`` engines on ``device`` (empty: nothing)."""
    if backend != "tensorrt":
        return []
    problems = [problem for problem in (_tensorrt()[1], _cuda_problem(device)) if problem]
    return problems


def require_backend(backend: str, device: str = "cuda") -> None:
    """Raise BackendUnavailable naming everything ``backend`` lacks on this machine."""
    problems = backend_problems(backend, device)
    if problems:
        raise BackendUnavailable(backend, problems)


def backend_version(backend: str) -> str:
    if backend == "onnxruntime":
        import onnxruntime

        return str(onnxruntime.__version__)
    if backend == "tensorrt":
        version, problem = _tensorrt()
        if version is None:
            raise BackendUnavailable(backend, [problem])
        return version
    raise EngineError(f"backend {backend!r} has no engine files (engine backends: {list(BUILDABLE_BACKENDS)})")


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


def gpu_name(device: str = "cuda") -> str:
    """The GPU's name and compute capability, e.g. 'NVIDIA H100 80GB HBM3, compute capability 9.0'."""
    import torch

    problem = _cuda_problem(device)
    if problem:
        raise BackendUnavailable("tensorrt", [problem])
    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)}, compute capability {major}.{minor}"


def device_description(backend: str, device: str = "cuda") -> str:
    """What engines of ``backend`` are bound to: the CPU (recorded only) or the GPU ``device``."""
    if backend == "onnxruntime":
        return cpu_name()
    if backend == "tensorrt":
        return gpu_name(device)
    raise EngineError(f"backend {backend!r} has no engine files (engine backends: {list(BUILDABLE_BACKENDS)})")


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
    if backend not in BUILDABLE_BACKENDS:
        raise EngineError(
            f"backend {backend!r} has no engine files to build (engine backends: {list(BUILDABLE_BACKENDS)}; "
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
        import torch

        exporter = f"torch {torch.__version__} torch.onnx TorchScript exporter, opset {OPSET}"
        if backend == "tensorrt":
            onnx_dir = staging / "onnx"
            onnx_dir.mkdir()
            onnx_files = _export_all(specs, onnx_dir, progress)
            segments, hashes = _build_tensorrt(onnx_files, staging, precision, device, progress)
            shutil.rmtree(onnx_dir)  # only the plans are loaded; the ONNX files are rebuilt in seconds
            exporter += f", TensorRT {backend_version(backend)} ONNX parser"
        else:
            onnx_files = _export_all(specs, staging, progress)
            segments = {name: file.name for name, file in onnx_files.items()}
            hashes = {name: file_sha256(file) for name, file in onnx_files.items()}

        num_layers = bundle.config.num_layers
        static = list(bundle.plan.static_layers) if bundle.plan is not None else list(range(num_layers))
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


def _export_all(specs: list[SegmentSpec], out_dir: Path, progress: bool) -> dict[str, Path]:
    """Segment name -> its ONNX file in ``out_dir``, in build order."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from dysl_ros.backends.export import export_segment

    files: dict[str, Path] = {}
    for spec in tqdm(specs, desc="segments", unit="seg", disable=not progress):
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


def segment_sizes(engine_dir: str | Path) -> list[tuple[str, str, int]]:
    """(segment, file, bytes) of every segment in the manifest, in build order."""
    path = Path(engine_dir)
    manifest = read_manifest(path)
    return [(name, file, (path / file).stat().st_size) for name, file in manifest.segments.items()]
