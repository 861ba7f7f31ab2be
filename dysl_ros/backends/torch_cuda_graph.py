"""PyTorch segments replayed as CUDA graphs: the torch backend on a GPU without the launch overhead.

Eager execution of a small VLA on a GPU is bound by kernel launches (a 24-layer, 512-wide
stack took 17.4 ms eager and 2.5 ms as one graph on an H100). Here every segment (embed, each
layer, each adapter, each controller, head) is captured once, when the backend is built, as a
``torch.cuda.CUDAGraph`` over static buffers, and each call replays one or more graphs.

Buffers: hidden states live in ``num_layers + 1`` boundary buffers. ``h[i]`` is layer i's input
(``h[0]`` is embed's output, ``h[L]`` the head's input); layer i's graph reads ``h[i]`` and writes
``h[i+1]``; the adapter of dynamic layer i reads ``h[i]`` and writes ``h[s]`` (s: its gap's static
layer); controller i reads ``h[i]`` and writes one float. So whichever sequence the runner picks, a
segment's input is already where its graph reads it: no copies between segments.

Runs of layers: ``run_layers(start, stop)`` replays the per-layer graphs ``start .. stop-1``. That
costs one graph launch per layer (a few microseconds each) instead of one per run, but a run can
start and stop anywhere the allow points put it, and per-run graphs would multiply capture time and
memory by the gap length, or, captured lazily on first use, stall the tick that first needs one.

Each graph keeps its own memory pool (the default): graphs are replayed in whatever order the
runner picks, and only separate pools are documented to be safe for that.

Returned hidden states are these buffers: valid until a later call writes the same boundary (the
runner only hands them back to the backend). A tensor that is not the expected buffer is copied in
first, so any caller gets correct results. Graphs replay on the caller's current CUDA stream;
controller outputs come back to the host as floats (one sync per controller) and the head's chunk
as a numpy array. Results equal the eager ``TorchBackend``'s with the same device and dtype.
"""

from __future__ import annotations

from typing import Callable, NoReturn

import numpy as np
import torch
from torch import Tensor, nn

from dysl_ros.backends.capability import require_backend
from dysl_ros.backends.segments import ACTIONS_OUTPUT, HIDDEN_INPUT, SKIP_OUTPUT, segment_shapes
from dysl_ros.core.runner import FloatArray, ModelInputs
from dysl_ros.model.backbone import VLABackbone
from dysl_ros.model.skip_modules import DySLModules

BACKEND = "torch_cuda_graph"
WARMUP_RUNS = 3
"""Eager runs of each segment on a side stream before its capture (cuBLAS/cuDNN initialise lazily,
and a capture must not see that)."""


def require_cuda(device: str | torch.device) -> torch.device:
    """``device`` with its index made explicit, or BackendUnavailable saying why CUDA graphs cannot run."""
    require_backend(BACKEND, "cuda")  # a CUDA GPU at all
    resolved = torch.device(device)
    if resolved.type != "cuda":
        raise ValueError(f"CUDA graphs run on a CUDA device, not {str(resolved)!r}")
    require_backend(BACKEND, str(resolved))  # that GPU
    return torch.device("cuda", torch.cuda.current_device() if resolved.index is None else resolved.index)


class TorchCudaGraphBackend:
    name = BACKEND

    def __init__(
        self, model: VLABackbone, modules: DySLModules | None, device: str | torch.device = "cuda",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Move ``model`` and ``modules`` to ``device`` in ``dtype`` (in place, as TorchBackend does)
        and capture every segment. Raises BackendUnavailable without a CUDA GPU."""
        self.device = require_cuda(device)
        self.dtype = dtype
        self.model = model
        self.modules = modules
        spec = model.spec
        self.num_layers = model.dims.num_layers
        shapes = segment_shapes(spec, model.dims)
        with torch.cuda.device(self.device), torch.no_grad():
            for part in (model.embed, model.layers, model.head, *([modules] if modules is not None else [])):
                part.to(self.device, dtype).eval()
            self._warmup_stream = torch.cuda.Stream(self.device)
            self._capture_stream = torch.cuda.Stream(self.device)
            # One static buffer per embed input (cameras, instruction ids, state), in argument order.
            self._inputs = {
                name: self._zeros(shape, torch.long if kind == "int64" else dtype)
                for name, (shape, kind) in spec.input_shapes().items()
            }
            self._hidden = [self._zeros(shapes[HIDDEN_INPUT], dtype) for _ in range(self.num_layers + 1)]
            self._actions = self._zeros(shapes[ACTIONS_OUTPUT], torch.float32)
            embed_args = list(self._inputs.values())
            self._embed = self._capture(lambda: self._hidden[0].copy_(model.embed(*embed_args)))
            hidden = self._hidden
            self._layers = [self._capture(_into(hidden[i + 1], b, hidden[i])) for i, b in enumerate(model.layers)]
            self._adapters: dict[int, tuple[torch.cuda.CUDAGraph, int]] = {}
            self._controllers: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
            if modules is not None:
                for i in modules.plan.dynamic_layers:
                    static = modules.plan.gap_of(i).static
                    adapter = _into(self._hidden[static], modules.adapter(i), self._hidden[i])
                    self._adapters[i] = (self._capture(adapter), static)
                    skip = self._zeros(shapes[SKIP_OUTPUT], torch.float32)
                    self._controllers[i] = (self._capture(_into(skip, modules.controller(i), self._hidden[i])), skip)
            self._head = self._capture(_into(self._actions, model.head, self._hidden[-1]))
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ capture

    def _zeros(self, shape: list[int], dtype: torch.dtype) -> Tensor:
        return torch.zeros(shape, dtype=dtype, device=self.device)

    def _capture(self, run: Callable[[], object]) -> torch.cuda.CUDAGraph:
        """Warm ``run`` up on a side stream, then capture it (torch.cuda.graphs' documented recipe)."""
        self._warmup_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._warmup_stream):
            for _ in range(WARMUP_RUNS):
                run()
        torch.cuda.current_stream(self.device).wait_stream(self._warmup_stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._capture_stream):
            run()
        return graph

    # ------------------------------------------------------------------ replay

    def _load(self, index: int, x: Tensor) -> None:
        buffer = self._hidden[index]
        if x is not buffer:
            buffer.copy_(x)

    def _replay_module(self, graph: torch.cuda.CUDAGraph, layer: int, x: Tensor) -> None:
        """An adapter or controller reads the hidden state at ``layer``: load it, replay its graph."""
        with torch.cuda.device(self.device):
            self._load(layer, x)
            graph.replay()

    @torch.no_grad()
    def embed(self, inputs: ModelInputs) -> Tensor:
        with torch.cuda.device(self.device):
            for name, buffer in self._inputs.items():
                buffer.copy_(torch.as_tensor(np.ascontiguousarray(inputs[name])))
            self._embed.replay()
        return self._hidden[0]

    @torch.no_grad()
    def run_layers(self, start: int, stop: int, x: Tensor) -> Tensor:
        if start == stop:
            return x
        with torch.cuda.device(self.device):
            self._load(start, x)
            for graph in self._layers[start:stop]:
                graph.replay()
        return self._hidden[stop]

    @torch.no_grad()
    def adapt(self, layer: int, x: Tensor) -> Tensor:
        graph, static = self._adapters.get(layer) or self._no_modules()
        self._replay_module(graph, layer, x)
        return self._hidden[static]

    @torch.no_grad()
    def skip_probability(self, layer: int, x: Tensor) -> float:
        graph, skip = self._controllers.get(layer) or self._no_modules()
        self._replay_module(graph, layer, x)
        return float(skip[0].item())  # waits for the replay: the one sync a controller needs

    @torch.no_grad()
    def head(self, x: Tensor) -> FloatArray:
        with torch.cuda.device(self.device):
            self._load(self.num_layers, x)
            self._head.replay()
            return np.asarray(self._actions[0].cpu().numpy(), dtype=np.float32)

    @staticmethod
    def _no_modules() -> NoReturn:
        raise RuntimeError("this model has no DySL modules (controllers/adapters): run it dense")


def _into(out: Tensor, module: nn.Module, x: Tensor) -> Callable[[], Tensor]:
    """A segment writing ``module(x)`` into ``out`` (its static output buffer)."""
    return lambda: out.copy_(module(x))
