"""CUDA through cuda-python (``dysl_ros.backends.cuda_runtime``), what the TensorRT backend's buffers
and stream are made of.

Everywhere: the stubs mypy checks the code against (``typings/cuda``) name what the installed
``cuda.bindings.runtime`` has, with its parameters; without a GPU the probe says why, in CUDA's words.
On a CUDA GPU (skipped elsewhere; ``scripts/gpu_check.sh`` runs it): device buffers round-trip host
arrays of every type the backend binds, copy device to device on the stream, start zeroed, refuse
what does not fit, and name the GPU as torch does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")

from dysl_ros.backends import cuda_runtime  # noqa: E402  (after the skip: it imports cuda.bindings)
from dysl_ros.backends.capability import backend_problems, cuda_runtime_problem  # noqa: E402
from dysl_ros.backends.errors import EngineError  # noqa: E402

STUBS = Path(__file__).resolve().parents[1] / "typings" / "cuda" / "bindings" / "runtime.pyi"
GPU_PROBLEM = cuda_runtime_problem("cuda")
needs_gpu = pytest.mark.skipif(bool(GPU_PROBLEM), reason=f"needs a CUDA GPU: {GPU_PROBLEM}")


def stub_declarations() -> ast.Module:
    return ast.parse(STUBS.read_text())


def test_the_stubs_declare_what_cuda_python_has() -> None:
    tree = stub_declarations()
    checked = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            real = getattr(cudart, node.name)
            # Cython keeps the signature as the docstring's first line: "cudaMalloc(size_t size)".
            signature = (real.__doc__ or "").splitlines()[0]
            assert signature.startswith(f"{node.name}("), signature
            # Each parameter: "devPtr", "size_t count", "unsigned int flags", "kind: cudaMemcpyKind".
            params = signature[len(node.name) + 1 : signature.rindex(")")].split(",")
            names = [param.split(":")[0].split()[-1] for param in params if param.strip()]
            assert [arg.arg for arg in node.args.args] == names, (node.name, signature)
        elif isinstance(node, ast.ClassDef):
            real = getattr(cudart, node.name)
            for item in node.body:
                if isinstance(item, ast.Assign):  # enum members, with their values
                    member = item.targets[0].id  # type: ignore[attr-defined]
                    assert int(getattr(real, member)) == ast.literal_eval(item.value), (node.name, member)
                elif isinstance(item, ast.AnnAssign):  # attributes of a struct
                    assert hasattr(real(), item.target.id), (node.name, item.target.id)  # type: ignore[attr-defined]
                elif isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    assert callable(getattr(real, item.name)), (node.name, item.name)
        elif isinstance(node, ast.AnnAssign):  # module constants
            assert isinstance(getattr(cudart, node.target.id), int)  # type: ignore[attr-defined]
        else:
            assert isinstance(node, ast.ImportFrom), ast.dump(node)  # nothing declared goes unchecked
            continue
        checked += 1
    assert checked >= 19


def test_every_call_the_code_makes_is_in_the_stubs() -> None:
    source = (Path(cuda_runtime.__file__)).read_text()
    called = set(re.findall(r"cudart\.(\w+)", source))
    declared = {node.name for node in stub_declarations().body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    declared |= {node.target.id for node in stub_declarations().body if isinstance(node, ast.AnnAssign)}  # type: ignore[attr-defined]
    assert called and called <= declared, called - declared


def test_devices_are_named_as_torch_names_them() -> None:
    assert cuda_runtime.device_index("cuda") == 0
    assert cuda_runtime.device_index("cuda:3") == 3
    for bad in ("cpu", "cuda:x", "gpu:0"):
        with pytest.raises(ValueError, match="is not a CUDA device"):
            cuda_runtime.device_index(bad)
    assert cuda_runtime_problem("cpu") == "device 'cpu' is not a CUDA device (cuda or cuda:N)"


@pytest.mark.skipif(not GPU_PROBLEM, reason="checks the probe without a GPU; this machine has one")
def test_without_a_gpu_the_probe_says_why_in_cudas_words() -> None:
    assert GPU_PROBLEM.startswith("CUDA sees no GPU (cudaGetDeviceCount failed: cudaError")
    assert any(GPU_PROBLEM in problem for problem in backend_problems("tensorrt"))
    with pytest.raises(cuda_runtime.CudaError, match="cudaMalloc failed: cudaError") as info:
        cuda_runtime.check("cudaMalloc", cudart.cudaMalloc(16))
    assert isinstance(info.value, EngineError)


# ------------------------------------------------------------------------------------- on a GPU


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32, np.int64, np.bool_])
def test_buffers_round_trip_every_bound_type(dtype: type[np.generic]) -> None:
    stream = cuda_runtime.Stream(0)
    buffer = cuda_runtime.DeviceBuffer((1, 37, 128), dtype, stream)
    try:
        assert not buffer.download(stream).any()  # zeroed at allocation
        data = (np.random.default_rng(0).normal(size=(1, 37, 128)) * 100).astype(dtype)
        buffer.upload(data, stream)
        assert np.array_equal(buffer.download(stream), data)
        with pytest.raises(EngineError, match=r"a \[1, 36, 128\] array cannot fill a device buffer of \[1, 37, 128\]"):
            buffer.upload(data[:, :36], stream)
    finally:
        buffer.close()
        stream.close()


@needs_gpu
def test_device_to_device_copies_run_in_stream_order() -> None:
    stream = cuda_runtime.Stream(0)
    first, second = (cuda_runtime.DeviceBuffer((4, 1024), np.float32, stream) for _ in range(2))
    try:
        data = np.arange(4 * 1024, dtype=np.float32).reshape(4, 1024)
        first.upload(data, stream)
        second.copy_from(first, stream)  # queued behind the upload, no sync in between
        first.upload(np.zeros_like(data), stream)
        assert np.array_equal(second.download(stream), data)
        assert not first.download(stream).any()
        with pytest.raises(EngineError, match="cannot copy"):
            second.copy_from(cuda_runtime.DeviceBuffer((2,), np.float32, stream), stream)
    finally:
        first.close()
        second.close()
        stream.close()
    with pytest.raises(EngineError, match="was freed"):
        first.upload(np.zeros((4, 1024), np.float32), stream)


@needs_gpu
def test_a_failed_call_names_itself_and_cudas_error() -> None:
    stream = cuda_runtime.Stream(0)
    try:
        with pytest.raises(cuda_runtime.CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
            cuda_runtime.DeviceBuffer((1 << 50,), np.float32, stream)  # 4 PiB
    finally:
        stream.close()


@needs_gpu
def test_the_gpu_is_named_as_torch_names_it() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch here has no CUDA")
    major, minor = torch.cuda.get_device_capability(0)
    expected = f"{torch.cuda.get_device_name(0)}, compute capability {major}.{minor}"
    assert cuda_runtime.device_name(0) == expected
    assert cuda_runtime.device_count() == torch.cuda.device_count()
