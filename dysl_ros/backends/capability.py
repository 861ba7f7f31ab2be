"""What this machine can run: the one probe of torch, CUDA and TensorRT every backend asks, and the
descriptions of the CPU or GPU that engines are bound to.

torch, tensorrt and cuda-python are imported inside the functions: asking costs nothing until a
backend that needs them is wanted, and a missing package is an answer, not an ImportError. TensorRT
sees the GPU through CUDA's own bindings (``cuda_runtime.py``), torch's CUDA graphs through torch: a
robot serving TensorRT plans needs no torch.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

from dysl_ros.backends.errors import BackendUnavailable, EngineError

ENGINE_BACKENDS = ("onnxruntime", "tensorrt")
"""Backends with engine files. torch needs none: its CUDA graphs are captured when the policy loads."""

PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("fp32",),
    "tensorrt": ("fp16", "fp32"),
    "torch": ("fp32", "fp16"),
}
"""Precisions each backend runs; the first is the default (for engines: what ``build_engines`` builds)."""
ALL_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
MIN_TENSORRT = (8, 6)
"""The oldest TensorRT this package is written against (JetPack 6.0 ships 8.6, 6.1 and later 10.x);
its name-based tensor API (``set_tensor_address`` + ``execute_async_v3``) exists since 8.5."""
ADVICE = {
    "tensorrt": (
        "TensorRT engines need TensorRT >= 8.6, cuda-python and a CUDA GPU; elsewhere use backend onnxruntime "
        "(CPU) or torch"
    ),
    "torch_cuda_graph": "CUDA graphs need a CUDA GPU; on the CPU use backend onnxruntime or eager torch",
    "torch": (
        "a robot install without torch serves engines: backend onnxruntime (CPU) or tensorrt (GPU), with the "
        "engines built by build_engines on a machine with torch (requirements.txt)"
    ),
}
TORCH_MISSING = "torch is not installed (the robot's runtime install, requirements-runtime.txt, has none)"


def tensorrt_version() -> tuple[str | None, str]:
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


def torch_problem() -> str:
    """Why torch cannot be used here ("" when it can), without importing it (0.8 s, 300 MB)."""
    return TORCH_MISSING if importlib.util.find_spec("torch") is None else ""


def torch_cuda_problem(device: str) -> str:
    """Why torch cannot use CUDA ``device``, or "" when it can."""
    if problem := torch_problem():
        return problem
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


def cuda_runtime_problem(device: str) -> str:
    """Why CUDA's own bindings (cuda-python) cannot use ``device``, or "" when they can."""
    try:
        from dysl_ros.backends import cuda_runtime
    except ImportError as exc:
        return f'cuda-python is not installed (import cuda.bindings: {exc}; pip install "cuda-python>=12.6,<13")'
    try:
        index = cuda_runtime.device_index(device)
        count = cuda_runtime.device_count()
    except ValueError as exc:
        return str(exc)
    except cuda_runtime.CudaError as exc:
        return f"CUDA sees no GPU ({exc})"
    if index >= count:
        return f"{device} does not exist (CUDA sees {count} GPU(s))"
    return ""


def backend_problems(backend: str, device: str = "cuda") -> list[str]:
    """What this machine lacks to build or run ``backend`` on ``device`` (empty: nothing).

    ``tensorrt`` needs TensorRT, cuda-python and a CUDA GPU; ``torch_cuda_graph`` torch and a CUDA GPU;
    ``torch`` torch; ``onnxruntime`` runs anywhere."""
    if backend == "tensorrt":
        return [problem for problem in (tensorrt_version()[1], cuda_runtime_problem(device)) if problem]
    if backend == "torch_cuda_graph":
        return [problem for problem in (torch_cuda_problem(device),) if problem]
    if backend == "torch":
        return [problem for problem in (torch_problem(),) if problem]
    return []


def require_backend(backend: str, device: str = "cuda") -> None:
    """Raise BackendUnavailable naming everything ``backend`` lacks on this machine."""
    problems = backend_problems(backend, device)
    if problems:
        raise BackendUnavailable(backend, problems, ADVICE.get(backend, ""))


def backend_version(backend: str) -> str:
    """The installed version of an engine backend (onnxruntime's, or TensorRT's)."""
    if backend == "onnxruntime":
        import onnxruntime

        return str(onnxruntime.__version__)
    if backend == "tensorrt":
        version, problem = tensorrt_version()
        if version is None:
            raise BackendUnavailable(backend, [problem], ADVICE[backend])
        return version
    raise EngineError(f"backend {backend!r} has no engine files (engine backends: {list(ENGINE_BACKENDS)})")


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


def machine_label() -> str:
    """The CPU and its core count, as the benchmarks' reports name the machine they ran on."""
    return f"{cpu_name()}, {os.cpu_count()} cores"


def gpu_name(device: str = "cuda") -> str:
    """The GPU's name and compute capability, e.g. 'NVIDIA H100 80GB HBM3, compute capability 9.0',
    as CUDA's own bindings report it (what TensorRT plans are bound to)."""
    problem = cuda_runtime_problem(device)
    if problem:
        raise BackendUnavailable("tensorrt", [problem], ADVICE["tensorrt"])
    from dysl_ros.backends import cuda_runtime

    return cuda_runtime.device_name(cuda_runtime.device_index(device))


def device_description(backend: str, device: str = "cuda") -> str:
    """What engines of ``backend`` are bound to: the CPU (recorded only) or the GPU ``device``."""
    if backend == "onnxruntime":
        return cpu_name()
    if backend == "tensorrt":
        return gpu_name(device)
    raise EngineError(f"backend {backend!r} has no engine files (engine backends: {list(ENGINE_BACKENDS)})")
