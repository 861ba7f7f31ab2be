"""ONNX export of a VLA's segments: one fixed-shape file per segment DySL can schedule.

Segments (batch 1, ``N = VLAConfig.num_tokens`` tokens, ``D = hidden_size``):

    embed            image (1,3,S,S) f32, instruction (1,T) i64, proprio (1,P) f32 -> hidden (1,N,D)
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

import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn
from torch.jit._trace import TracerWarning  # torch.jit re-exports it without __all__

from dysl_ros.backends.segments import (
    ACTIONS_OUTPUT,
    EMBED,
    EMBED_INPUTS,
    HEAD,
    HIDDEN_INPUT,
    HIDDEN_OUTPUT,
    SKIP_OUTPUT,
    adapter_segment,
    controller_segment,
    layer_segment,
)
from dysl_ros.model.backbone import VLABackbone
from dysl_ros.model.skip_modules import DySLModules
from dysl_ros.model.spec import PAD_TOKEN, VLAConfig

OPSET = 17


@dataclass(frozen=True)
class SegmentSpec:
    name: str
    module: nn.Module
    inputs: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


class _Embed(nn.Module):
    """Positional-argument wrapper: the exporter binds example inputs by position."""

    def __init__(self, embed: nn.Module) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, image: Tensor, instruction: Tensor, proprio: Tensor) -> Tensor:
        return self.embed(image, instruction, proprio)


def example_inputs(config: VLAConfig, seed: int = 0) -> dict[str, Tensor]:
    """Random inputs of the embed segment's shapes (tracing records ops, not values)."""
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    return {
        "image": torch.rand(1, 3, size, size, generator=generator) * 2 - 1,
        "instruction": torch.randint(0, PAD_TOKEN + 1, (1, config.instruction_tokens), generator=generator),
        "proprio": torch.randn(1, config.proprio_dim, generator=generator),
    }


def segment_specs(model: VLABackbone, modules: DySLModules | None) -> list[SegmentSpec]:
    """Every segment of a model, in build order: embed, layers, adapters + controllers, head."""
    config = model.config
    inputs = example_inputs(config)
    hidden = torch.randn(1, config.num_tokens, config.hidden_size, generator=torch.Generator().manual_seed(1))
    specs = [SegmentSpec(EMBED, _Embed(model.embed), tuple(inputs.values()), EMBED_INPUTS, (HIDDEN_INPUT,))]
    for i, layer in enumerate(model.layers):
        specs.append(
            SegmentSpec(layer_segment(i, config.num_layers), layer, (hidden,), (HIDDEN_INPUT,), (HIDDEN_OUTPUT,))
        )
    if modules is not None:
        for i in modules.plan.dynamic_layers:
            specs.append(
                SegmentSpec(
                    adapter_segment(i, config.num_layers),
                    modules.adapter(i),
                    (hidden,),
                    (HIDDEN_INPUT,),
                    (HIDDEN_OUTPUT,),
                )
            )
            specs.append(
                SegmentSpec(
                    controller_segment(i, config.num_layers),
                    modules.controller(i),
                    (hidden,),
                    (HIDDEN_INPUT,),
                    (SKIP_OUTPUT,),
                )
            )
    specs.append(SegmentSpec(HEAD, model.head, (hidden,), (HIDDEN_INPUT,), (ACTIONS_OUTPUT,)))
    return specs


def export_segment(spec: SegmentSpec, path: str | Path, opset: int = OPSET) -> None:
    """Export one segment in fp32 on the CPU with fixed shapes, then run onnx.checker on the file."""
    module = spec.module
    module.to("cpu", torch.float32).eval()
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
                do_constant_folding=True,
                dynamo=False,
            )
    onnx.checker.check_model(str(path), full_check=True)
