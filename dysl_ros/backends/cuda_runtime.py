"""CUDA through NVIDIA's own Python bindings (``cuda-python``: ``cuda.bindings.runtime``): the GPU
probe, device memory, streams and copies that the TensorRT backend binds its plans to. No torch, no
pycuda (an sdist that compiles against the CUDA headers at install).

    stream = Stream(0)
    buffer = DeviceBuffer((1, 37, 128), np.float32)      # zeroed device memory, freed by close()
    buffer.upload(array, stream)                        # host -> device on the stream
    out = buffer.download(stream)                       # device -> host, waits for the stream

Every runtime call returns a tuple whose first item is a ``cudaError_t``; ``check`` turns anything
but ``cudaSuccess`` into a ``CudaError`` naming the call and the error. Importing this module needs
the ``cuda-python`` package (``pip install "cuda-python>=12.6,<13"``, CUDA 12 as on JetPack 6);
calls need an NVIDIA driver. The stubs it is type-checked against are ``typings/cuda``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from cuda.bindings import runtime as cudart

from dysl_ros.backends.errors import EngineError

T = TypeVar("T")


class CudaError(EngineError):
    """A CUDA runtime call failed; the message names the call and CUDA's error."""

    def __init__(self, call: str, error: cudart.cudaError_t) -> None:
        self.call = call
        self.error = error
        super().__init__(f"{call} failed: {error_text(error)}")


def error_text(error: cudart.cudaError_t) -> str:
    """``cudaErrorX (CUDA's description)``."""
    _, name = cudart.cudaGetErrorName(error)
    _, text = cudart.cudaGetErrorString(error)
    return f"{name.decode(errors='replace')} ({text.decode(errors='replace')})"


def check(call: str, result: tuple[cudart.cudaError_t, T]) -> T:
    """The value of a runtime call that returns one, or CudaError."""
    if result[0] != cudart.cudaError_t.cudaSuccess:
        raise CudaError(call, result[0])
    return result[1]


def check_status(call: str, result: tuple[cudart.cudaError_t]) -> None:
    """Nothing, for a runtime call that returns only its status, or CudaError."""
    if result[0] != cudart.cudaError_t.cudaSuccess:
        raise CudaError(call, result[0])


def device_index(device: str) -> int:
    """``cuda`` -> 0, ``cuda:N`` -> N (torch's spelling of a device, as the node's parameter)."""
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"device {device!r} is not a CUDA device (cuda or cuda:N)")
    return int(index) if index else 0


def device_count() -> int:
    """CUDA devices this process sees; CudaError when there is no driver (no GPU, or none usable)."""
    return check("cudaGetDeviceCount", cudart.cudaGetDeviceCount())


def device_name(index: int) -> str:
    """The GPU's name and compute capability, e.g. 'NVIDIA H100 80GB HBM3, compute capability 9.0'."""
    props = check("cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(index))
    return f"{props.name.decode(errors='replace').rstrip(chr(0))}, compute capability {props.major}.{props.minor}"


def set_device(index: int) -> None:
    check_status("cudaSetDevice", cudart.cudaSetDevice(index))


def runtime_version() -> str:
    """The CUDA runtime the bindings carry, e.g. '12.9'."""
    version = check("cudaRuntimeGetVersion", cudart.cudaRuntimeGetVersion())
    return f"{version // 1000}.{version % 1000 // 10}"


class Stream:
    """A non-blocking CUDA stream on device ``index`` (made current for the calling thread)."""

    def __init__(self, index: int = 0) -> None:
        set_device(index)
        self.device = index
        self._stream: cudart.cudaStream_t | None = check(
            "cudaStreamCreateWithFlags", cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)
        )

    @property
    def raw(self) -> cudart.cudaStream_t:
        if self._stream is None:
            raise EngineError("the CUDA stream was closed")
        return self._stream

    @property
    def handle(self) -> int:
        """The ``cudaStream_t`` as an integer, as TensorRT's ``execute_async_v3`` takes it."""
        return int(self.raw)

    def synchronize(self) -> None:
        check_status("cudaStreamSynchronize", cudart.cudaStreamSynchronize(self.raw))

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            check_status("cudaStreamDestroy", cudart.cudaStreamDestroy(stream))


class DeviceBuffer:
    """A C-contiguous array of fixed ``shape`` and ``dtype`` in device memory, zeroed on ``stream``
    at allocation. ``ptr`` is its device address (what TensorRT's ``set_tensor_address`` takes)."""

    def __init__(self, shape: tuple[int, ...], dtype: npt.DTypeLike, stream: Stream) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        set_device(stream.device)
        self._ptr: int | None = check("cudaMalloc", cudart.cudaMalloc(max(self.nbytes, 1)))
        check_status("cudaMemsetAsync", cudart.cudaMemsetAsync(self.ptr, 0, self.nbytes, stream.raw))

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise EngineError("the device buffer was freed")
        return self._ptr

    def upload(self, array: npt.ArrayLike, stream: Stream) -> None:
        """Copy ``array`` (cast to the buffer's type; its shape must be the buffer's) to the device on
        ``stream``. The host array may be dropped on return: CUDA stages pageable memory first."""
        host = np.ascontiguousarray(array, dtype=self.dtype)
        if host.shape != self.shape:
            raise EngineError(f"a {list(host.shape)} array cannot fill a device buffer of {list(self.shape)}")
        check_status(
            "cudaMemcpyAsync (host to device)",
            cudart.cudaMemcpyAsync(
                self.ptr, host.ctypes.data, self.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw
            ),
        )

    def download(self, stream: Stream) -> npt.NDArray[Any]:
        """The buffer's contents on the host, once everything queued on ``stream`` before it has run."""
        host = np.empty(self.shape, dtype=self.dtype)
        check_status(
            "cudaMemcpyAsync (device to host)",
            cudart.cudaMemcpyAsync(
                host.ctypes.data, self.ptr, self.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw
            ),
        )
        stream.synchronize()
        return host

    def copy_from(self, source: DeviceBuffer, stream: Stream) -> None:
        """Device-to-device copy of ``source`` (same shape and type) into this buffer on ``stream``."""
        if (source.shape, source.dtype) != (self.shape, self.dtype):
            raise EngineError(
                f"cannot copy a {source.dtype} {list(source.shape)} buffer into a {self.dtype} {list(self.shape)} one"
            )
        check_status(
            "cudaMemcpyAsync (device to device)",
            cudart.cudaMemcpyAsync(
                self.ptr, source.ptr, self.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.raw
            ),
        )

    def close(self) -> None:
        """Free the device memory (idempotent). Work queued on it must have finished."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            check_status("cudaFree", cudart.cudaFree(ptr))
