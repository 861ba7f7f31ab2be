"""TensorRT segments on a CUDA GPU: ONNX -> one serialized plan per segment, and a backend that runs them.

The TensorRT backend is written and type-checked against `tensorrt-stubs`, but no TensorRT plan has
ever been built or run: TensorRT's libraries could not be installed on any machine this project had.

Building (``build_plan``, called by ``build.build_engines`` for ``tensorrt``): the ONNX file of
a segment (``export.py``, or an onnxruntime engine set of the same model) is parsed into a network,
built with FP16 kernels allowed (``fp16``) or in strict fp32 (TF32 off, so the plans match torch
fp32 within 1e-4), and serialized to ``<segment>.plan``. Plans only run with the TensorRT version
and GPU they were built with: the manifest records both and ``manifest.check_manifest`` refuses others.

Running (``TensorRTBackend``), with the TensorRT >= 8.6 name-based API and CUDA's own Python bindings
for device memory and the stream (``cuda_runtime.py``: cuda-python; neither torch nor pycuda): every
tensor a segment reads or writes is a ``DeviceBuffer`` bound once, at load, with
``set_tensor_address``; a segment runs with ``execute_async_v3`` on the backend's stream. Hidden
states live in ``num_layers + 1`` boundary buffers: ``h[i]`` is layer i's input (``h[0]`` embed's
output, ``h[L]`` the head's input). Layer i reads ``h[i]`` and writes ``h[i+1]``; the adapter of
dynamic layer i reads ``h[i]`` and writes ``h[s]`` (s: its gap's static layer); controller i reads
``h[i]``. Whatever sequence the runner picks, a segment's input is already where it reads it: no
copies, no re-binding, one launch per segment. Segment I/O stays in the ONNX types (fp32 hidden
states); with ``fp16`` the computation inside each plan is half precision.

Returned hidden states are these buffers, written on ``backend.stream``: valid until a later call
writes the same boundary. The runner only hands them back to the backend; one that is not the
expected buffer is copied in first (device to device, on the stream). Controller outputs come back
to the host as floats (one stream sync per controller) and the head's chunk as a numpy array.

Importing this module needs the ``tensorrt`` and ``cuda-python`` packages;
``capability.require_backend("tensorrt")`` says whether they (and a GPU) are usable before anything
here is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorrt as trt

from dysl_ros.backends.capability import backend_version, require_backend
from dysl_ros.backends.cuda_runtime import DeviceBuffer, Stream, device_index, set_device
from dysl_ros.backends.errors import EngineError
from dysl_ros.backends.manifest import Manifest, read_manifest, rebuild_command, verify_segment
from dysl_ros.backends.segments import (
    ACTIONS_OUTPUT,
    EMBED,
    HEAD,
    HIDDEN_INPUT,
    HIDDEN_OUTPUT,
    SKIP_OUTPUT,
    adapter_segment,
    controller_segment,
    layer_segment,
)
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import FloatArray, ModelInputs

WORKSPACE_BYTES = 1 << 30
"""Builder scratch memory per segment (TensorRT may use less); segments are small."""

_DTYPES: tuple[tuple[str, type[np.generic]], ...] = (
    ("FLOAT", np.float32),
    ("HALF", np.float16),
    ("INT32", np.int32),
    ("INT64", np.int64),  # TensorRT >= 10; 8.6's parser turns int64 inputs into int32
    ("BOOL", np.bool_),
)


def _logger() -> trt.Logger:
    return trt.Logger(trt.Logger.WARNING)


def _network_flags() -> int:
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated there); 8.x needs it.
    if int(backend_version("tensorrt").split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def build_plan(onnx_file: Path, plan_file: Path, precision: str, device: str = "cuda") -> None:
    """Parse ``onnx_file`` and write its serialized TensorRT engine to ``plan_file``, built on ``device``."""
    require_backend("tensorrt", device)
    set_device(device_index(device))
    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_file.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 plans must match torch fp32
    else:
        raise EngineError(f"precision {precision!r}: TensorRT plans are built in fp16 or fp32")
    plan: trt.IHostMemory | None = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT could not build a plan for {onnx_file.name} (its log above says why)")
    plan_file.write_bytes(memoryview(plan))


def _numpy_dtype(dtype: trt.DataType) -> np.dtype[Any]:
    for name, numpy_dtype in _DTYPES:
        if getattr(trt.DataType, name, None) == dtype:
            return np.dtype(numpy_dtype)
    raise EngineError(f"TensorRT tensor type {dtype} has no buffer type here")


def _shape(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


@dataclass(frozen=True)
class _Segment:
    name: str
    engine: trt.ICudaEngine
    context: trt.IExecutionContext


class TensorRTBackend:
    name = "tensorrt"

    def __init__(
        self, engine_dir: str | Path, device: str = "cuda", manifest: Manifest | None = None,
        model_dir: str | Path | None = None,
    ) -> None:
        """Load every plan of ``engine_dir`` onto ``device``, each file's sha256 checked against the
        manifest first. ``model_dir``: the model being served, named in rebuild commands (default:
        where the manifest says it was built from). The manifest's fit to a model, TensorRT version
        and GPU is ``manifest.check_manifest``'s job."""
        self.engine_dir = Path(engine_dir)
        self.model_dir = model_dir
        self.manifest = manifest if manifest is not None else read_manifest(self.engine_dir)
        if self.manifest.backend != self.name:
            raise EngineError(f"{self.engine_dir} holds {self.manifest.backend!r} engines, not tensorrt ones")
        files = {
            name: verify_segment(self.engine_dir, self.manifest, name, model_dir) for name in self.manifest.segments
        }
        require_backend(self.name, device)
        self.device = device_index(device)
        self.num_layers = int(self.manifest.layer_plan["num_layers"])
        plan = LayerPlan(self.num_layers, tuple(int(i) for i in self.manifest.layer_plan["static_layers"]))
        self._logger = _logger()
        self._runtime = trt.Runtime(self._logger)
        self.stream = Stream(self.device)  # buffers are zeroed on it
        self._buffers: list[DeviceBuffer] = []
        engines = {name: self._deserialize(name, file) for name, file in files.items()}
        embed = self._engine(engines, EMBED)
        # Buffers take the engines' I/O types (e.g. int32 instructions from TensorRT 8.6's parser).
        names = [embed.get_tensor_name(i) for i in range(embed.num_io_tensors)]
        self._inputs = {name: self._empty(embed, name) for name in names if name != HIDDEN_INPUT}
        self._hidden = [self._empty(embed, HIDDEN_INPUT) for _ in range(self.num_layers + 1)]
        self._embed = self._bind(EMBED, engines, {**self._inputs, HIDDEN_INPUT: self._hidden[0]})
        self._layers = [
            self._bind(
                layer_segment(i, self.num_layers),
                engines,
                {HIDDEN_INPUT: self._hidden[i], HIDDEN_OUTPUT: self._hidden[i + 1]},
            )
            for i in range(self.num_layers)
        ]
        self._adapters: dict[int, tuple[_Segment, int]] = {}
        self._controllers: dict[int, tuple[_Segment, DeviceBuffer]] = {}
        for i in plan.dynamic_layers:
            adapter, controller = adapter_segment(i, self.num_layers), controller_segment(i, self.num_layers)
            if adapter not in engines or controller not in engines:
                continue  # a model without DySL modules: dense only
            static = plan.gap_of(i).static
            self._adapters[i] = (
                self._bind(adapter, engines, {HIDDEN_INPUT: self._hidden[i], HIDDEN_OUTPUT: self._hidden[static]}),
                static,
            )
            skip = self._empty(engines[controller], SKIP_OUTPUT)
            self._controllers[i] = (
                self._bind(controller, engines, {HIDDEN_INPUT: self._hidden[i], SKIP_OUTPUT: skip}),
                skip,
            )
        head = self._engine(engines, HEAD)
        self._actions = self._empty(head, ACTIONS_OUTPUT)
        self._head = self._bind(HEAD, engines, {HIDDEN_INPUT: self._hidden[-1], ACTIONS_OUTPUT: self._actions})
        self.stream.synchronize()  # the zeroing is done before anything reads the buffers

    # ------------------------------------------------------------------ loading

    def _rebuild(self) -> str:
        return rebuild_command(self.model_dir or self.manifest.model_dir, self.engine_dir, self.name)

    def _deserialize(self, name: str, file: Path) -> trt.ICudaEngine:
        engine: trt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(file.read_bytes())
        if engine is None:
            raise EngineError(
                f"TensorRT cannot deserialize segment {name} ({file}); a plan only runs with the TensorRT version "
                f"and GPU it was built with. Rebuild with: {self._rebuild()}"
            )
        return engine

    def _empty(self, engine: trt.ICudaEngine, tensor: str) -> DeviceBuffer:
        shape = _shape(engine.get_tensor_shape(tensor))
        buffer = DeviceBuffer(shape, _numpy_dtype(engine.get_tensor_dtype(tensor)), self.stream)
        self._buffers.append(buffer)
        return buffer

    def _engine(self, engines: dict[str, trt.ICudaEngine], name: str) -> trt.ICudaEngine:
        engine = engines.get(name)
        if engine is None:
            raise EngineError(f"engines in {self.engine_dir} have no segment {name}. Rebuild with: {self._rebuild()}")
        return engine

    def _bind(self, name: str, engines: dict[str, trt.ICudaEngine], buffers: dict[str, DeviceBuffer]) -> _Segment:
        """An execution context of segment ``name`` with each I/O tensor bound to its buffer, after
        checking that the plan's tensors are exactly these, with the buffers' shapes and types."""
        engine = self._engine(engines, name)
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        if names != set(buffers):
            raise EngineError(f"segment {name}: plan tensors {sorted(names)}, expected {sorted(buffers)}")
        context: trt.IExecutionContext | None = engine.create_execution_context()
        if context is None:
            raise EngineError(f"segment {name}: TensorRT could not create an execution context (out of GPU memory?)")
        for tensor, buffer in buffers.items():
            shape, dtype = _shape(engine.get_tensor_shape(tensor)), _numpy_dtype(engine.get_tensor_dtype(tensor))
            if shape != buffer.shape or dtype != buffer.dtype:
                raise EngineError(
                    f"segment {name}: tensor {tensor} is {dtype} {list(shape)} in the plan, the backend's buffer "
                    f"is {buffer.dtype} {list(buffer.shape)}. Rebuild with: {self._rebuild()}"
                )
            if not context.set_tensor_address(tensor, buffer.ptr):
                raise EngineError(f"segment {name}: TensorRT refused the address of tensor {tensor}")
        return _Segment(name, engine, context)

    def close(self) -> None:
        """Free the device buffers and the stream once queued work has finished (idempotent)."""
        self.stream.synchronize()
        for buffer in self._buffers:
            buffer.close()
        self.stream.close()

    # ------------------------------------------------------------------ running

    def _execute(self, segment: _Segment) -> None:
        if not segment.context.execute_async_v3(self.stream.handle):
            raise EngineError(f"TensorRT failed to run segment {segment.name} (its log above says why)")

    def _load(self, index: int, x: DeviceBuffer) -> None:
        buffer = self._hidden[index]
        if x is not buffer:
            buffer.copy_from(x, self.stream)

    def embed(self, inputs: ModelInputs) -> DeviceBuffer:
        for name, buffer in self._inputs.items():
            buffer.upload(inputs[name], self.stream)
        self._execute(self._embed)
        return self._hidden[0]

    def run_layers(self, start: int, stop: int, x: DeviceBuffer) -> DeviceBuffer:
        if start == stop:
            return x
        self._load(start, x)
        for segment in self._layers[start:stop]:
            self._execute(segment)
        return self._hidden[stop]

    def adapt(self, layer: int, x: DeviceBuffer) -> DeviceBuffer:
        entry = self._adapters.get(layer)
        if entry is None:
            raise EngineError(f"engines in {self.engine_dir} have no adapter for layer {layer}: run this model dense")
        adapter, static = entry
        self._load(layer, x)
        self._execute(adapter)
        return self._hidden[static]

    def skip_probability(self, layer: int, x: DeviceBuffer) -> float:
        entry = self._controllers.get(layer)
        if entry is None:
            raise EngineError(
                f"engines in {self.engine_dir} have no controller for layer {layer}: run this model dense"
            )
        controller, skip = entry
        self._load(layer, x)
        self._execute(controller)
        return float(skip.download(self.stream).reshape(-1)[0])  # waits for the stream

    def head(self, x: DeviceBuffer) -> FloatArray:
        self._load(self.num_layers, x)
        self._execute(self._head)
        return np.asarray(self._actions.download(self.stream)[0], dtype=np.float32)
