"""ONNX export of a VLA's segments: one fixed-shape file per segment DySL can schedule.

Segments (batch 1, ``N`` tokens, ``D = hidden_size``: the model's ``BackboneDims``):

    embed            each camera (1,C,H,W) f32, instruction (1,L) i64, proprio (1,S) f32 -> hidden (1,N,D)
    layer_XX         hidden (1,N,D) -> hidden (1,N,D)                      one per backbone layer
    adapter_XX       hidden (1,N,D) -> hidden (1,N,D)                      one per dynamic layer
    controller_XX    hidden (1,N,D) -> skip_probability (1,)               one per dynamic layer
    head             hidden (1,N,D) -> actions (1,chunk_len,action_dim)

Exporter choice (measured with torch 2.13, onnx 1.23, onnxruntime 1.32 on this package's models):
both ``torch.onnx.export(dynamo=False)`` (TorchScript tracing) and the dynamo exporter produce
byte-identical files run to run and match eager torch to ~1e-7 for the reference blocks
(``scaled_dot_product_attention`` becomes MatMul/Softmax) and for ``transformers`` Llama layers. The
TorchScript exporter is used because it needs no extra dependency (the dynamo exporter needs
``onnxscript``, not in requirements.txt), exports a segment in ~0.1 s instead of 2-5 s (a 24-layer
model has ~65 segments, built on a 2-core machine at node configure), and emits opset 17 directly
(the dynamo exporter emits 18 and failed to down-convert these graphs). Its tracer warnings are about
shape-dependent Python branches (e.g. transformers' ``q_length > 1``), which are constant here
because every shape is fixed. If a later torch drops the TorchScript exporter, the dynamo exporter
(opset 18) is the measured fallback.
"""

from __future__ import annotations

import ctypes
import gc
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn
from torch.jit._trace import TracerWarning  # torch.jit re-exports it without __all__

from dysl_ros.backends import segments as seg
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.backbone import VLABackbone
from dysl_ros.model.observation_spec import PAD_TOKEN, STATE, BackboneDims, ObservationSpec
from dysl_ros.model.skip_modules import DySLModules

OPSET = 17
LOW_MEMORY_EXPORT_BYTES = 16 * 2**20
"""A segment with more weights than this is traced without them and gets them added afterwards."""


@dataclass(frozen=True)
class SegmentSpec:
    name: str
    build: Callable[[], nn.Module]
    """Makes the segment's module when it is exported: a large model never holds every segment in
    fp32 at once."""
    inputs: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


class _Embed(nn.Module):
    """Positional-argument wrapper: the exporter binds example inputs by position."""

    def __init__(self, embed: nn.Module) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, *inputs: Tensor) -> Tensor:
        out: Tensor = self.embed(*inputs)
        return out


def example_inputs(spec: ObservationSpec, seed: int = 0) -> dict[str, Tensor]:
    """Random inputs of the embed segment's shapes (tracing records ops, not values)."""
    generator = torch.Generator().manual_seed(seed)
    inputs: dict[str, Tensor] = {}
    for name, (shape, dtype) in spec.input_shapes().items():
        if dtype == "int64":
            # Byte tokens span the byte vocabulary; other tokenizers' ids stay small (any vocabulary).
            high = PAD_TOKEN + 1 if spec.tokenizer.kind == "bytes" else 2
            inputs[name] = torch.randint(0, high, tuple(shape), generator=generator)
        elif name == STATE:
            inputs[name] = torch.randn(*shape, generator=generator)
        else:
            inputs[name] = torch.rand(*shape, generator=generator) * 2 - 1
    return inputs


@dataclass
class ExportSource:
    """What ``build_engines`` exports: the model's contract and shapes, its DySL files, and its
    segments (each built when its turn comes)."""

    spec: ObservationSpec
    dims: BackboneDims
    plan: LayerPlan | None
    modules: DySLModules | None
    embed: Callable[[], nn.Module]
    layer: Callable[[int], nn.Module]
    head: Callable[[], nn.Module]

    def segments(self) -> Iterator[SegmentSpec]:
        """Every segment, in build order: embed, layers, adapters + controllers, head."""
        spec, dims, modules = self.spec, self.dims, self.modules
        inputs = example_inputs(spec)
        hidden = torch.randn(1, dims.num_tokens, dims.hidden_size, generator=torch.Generator().manual_seed(1))
        embed, num_layers = self.embed, dims.num_layers
        into, out, skip = (seg.HIDDEN_INPUT,), (seg.HIDDEN_OUTPUT,), (seg.SKIP_OUTPUT,)
        yield SegmentSpec(seg.EMBED, lambda: _Embed(embed()), tuple(inputs.values()), spec.input_names, into)
        for i in range(num_layers):
            yield SegmentSpec(seg.layer_segment(i, num_layers), partial(self.layer, i), (hidden,), into, out)
        if modules is not None:
            for i in modules.plan.dynamic_layers:
                yield SegmentSpec(seg.adapter_segment(i, num_layers), partial(modules.adapter, i), (hidden,), into, out)
                yield SegmentSpec(
                    seg.controller_segment(i, num_layers), partial(modules.controller, i), (hidden,), into, skip
                )
        yield SegmentSpec(seg.HEAD, self.head, (hidden,), into, (seg.ACTIONS_OUTPUT,))


def loaded_source(model: VLABackbone, modules: DySLModules | None, plan: LayerPlan | None = None) -> ExportSource:
    """A model already in memory; ``plan``: the directory's (default: the modules')."""
    plan = plan if plan is not None else modules.plan if modules is not None else None
    return ExportSource(
        model.spec, model.dims, plan, modules, lambda: model.embed, lambda i: model.layers[i], lambda: model.head
    )


def export_source(model_dir: str | Path) -> ExportSource:
    """The segments of a model directory. An imported model (``hf_decoder``) is read segment by
    segment from its files; the reference kinds are small and load whole."""
    from dysl_ros.model import checkpoint, hf_decoder

    path, variant = checkpoint.resolve_dirs(model_dir)
    description = checkpoint.read_backbone_description(path)
    if description.get("kind") != checkpoint.HF_DECODER:
        bundle = checkpoint.load_bundle(model_dir)
        return loaded_source(bundle.model, bundle.modules, bundle.plan)
    parts = hf_decoder.DecoderParts(path, description, ObservationSpec.load(path))
    plan, modules, _ = checkpoint.load_dysl_files(variant if variant is not None else path, parts.dims)
    return ExportSource(parts.spec, parts.dims, plan, modules, parts.embed, parts.layer, parts.head)


def segment_specs(model: VLABackbone, modules: DySLModules | None) -> list[SegmentSpec]:
    """Every segment of a model in memory, in build order."""
    return list(loaded_source(model, modules).segments())


def export_segment(spec: SegmentSpec, path: str | Path, opset: int = OPSET) -> None:
    """Export one segment in fp32 on the CPU with fixed shapes, then run onnx.checker on the file."""
    module = spec.build()
    module.to("cpu", torch.float32).eval()
    weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    if weight_bytes <= LOW_MEMORY_EXPORT_BYTES:
        _trace(module, spec, path, opset, with_weights=True)
    else:
        # Traced without its weights, which are then written as initializers under their names: the
        # exporter holds several copies of the weights at its peak, this path about one.
        _trace(module, spec, path, opset, with_weights=False)
        _attach_weights(path, module)
    del module
    onnx.checker.check_model(str(path), full_check=True)
    if weight_bytes > LOW_MEMORY_EXPORT_BYTES:
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Give what a large segment's export freed back to the system (glibc keeps freed heap pages
    otherwise), so a large model's export peaks at one segment, not at the fragments of all."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def _trace(module: nn.Module, spec: SegmentSpec, path: str | Path, opset: int, *, with_weights: bool) -> None:
    with warnings.catch_warnings():
        # Shapes are fixed, so the tracer's warnings about shape-dependent Python values do not apply;
        # the deprecation notice of the TorchScript exporter is answered in the module docstring.
        warnings.simplefilter("ignore", TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        with torch.no_grad():
            torch.onnx.export(
                module,
                spec.inputs,
                str(path),
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                opset_version=opset,
                do_constant_folding=with_weights,  # nothing to fold without weights: ONNX Runtime folds at load
                export_params=with_weights,
                dynamo=False,
            )


def _attach_weights(path: str | Path, module: nn.Module) -> None:
    """The graph's weight inputs (named after the module's parameters and buffers) become
    initializers, written one tensor at a time: the file is the protobuf encoding of the graph
    without them followed by each encoded initializer (a repeated field may be appended), so no
    second copy of all the weights is ever built in memory."""
    model = onnx.load(str(path))
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    weights = [graph_input for graph_input in model.graph.input if graph_input.name in tensors]
    for graph_input in weights:
        model.graph.input.remove(graph_input)
    names = [graph_input.name for graph_input in weights]

    def encoded(name: str) -> bytes:
        return bytes(numpy_helper.from_array(tensors[name].detach().numpy(), name).SerializeToString())

    sizes = [len(encoded(name)) for name in names]
    graph = model.graph.SerializeToString()
    model.ClearField("graph")
    with open(path, "wb") as out:
        out.write(model.SerializeToString())
        out.write(_GRAPH_TAG + _varint(len(graph) + sum(len(_INITIALIZER_TAG) + len(_varint(n)) + n for n in sizes)))
        out.write(graph)
        for name, size in zip(names, sizes, strict=True):
            out.write(_INITIALIZER_TAG + _varint(size))
            out.write(encoded(name))


_GRAPH_TAG = bytes([7 << 3 | 2])
"""ModelProto.graph: field 7, length-delimited."""
_INITIALIZER_TAG = bytes([5 << 3 | 2])
"""GraphProto.initializer: field 5, length-delimited, repeated."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
