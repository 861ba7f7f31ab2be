"""Synthetic backbones for latency-only figures: the shape of a real VLA, random weights.

``llama2-7b``: a ``transformers`` ``LlamaModel`` with Llama-2-7B's decoder shape (hidden 4096, 32
layers, 32 heads, MLP 11008, random weights), between the reference observation encoder and action
head (``HFLlamaVLA``), with an OpenVLA-like token count: a 256x256 image in 16-pixel patches (256
vision tokens), 20 instruction tokens, 1 proprio token, 8 action queries = 285 tokens. The layer
plan keeps 20 % of the layers static, evenly spaced and ending with the last layer; the DySL
controllers and adapters are untrained (random). Nothing it outputs means anything: only its latency.
``tiny``: the same construction at test size (runs anywhere in a second).

Weights are created directly on the target device in the target dtype (7B in fp16 is 13.5 GB; in
fp32 on the CPU, 27 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.backbone import HFLlamaVLA
from dysl_ros.model.skip_modules import DySLModules

LABEL = "latency-only, random weights"


@dataclass(frozen=True)
class SyntheticShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    image_size: int
    patch_size: int
    instruction_tokens: int
    heavy: bool
    """Too slow for the CPU without an explicit opt-in."""


SHAPES: dict[str, SyntheticShape] = {
    "llama2-7b": SyntheticShape(4096, 32, 32, 11008, image_size=256, patch_size=16, instruction_tokens=80, heavy=True),
    "tiny": SyntheticShape(32, 10, 2, 64, image_size=32, patch_size=16, instruction_tokens=16, heavy=False),
}


@dataclass
class SyntheticModel:
    name: str
    model: HFLlamaVLA
    plan: LayerPlan
    modules: DySLModules


def synthetic_plan(num_layers: int, static_ratio: float = 0.2) -> LayerPlan:
    """``round(static_ratio * L)`` static layers, evenly spaced, the last layer among them
    (32 layers: 4, 10, 15, 20, 26, 31)."""
    count = max(1, round(static_ratio * num_layers))
    static = sorted({round((i + 1) * num_layers / count) - 1 for i in range(count)})
    return LayerPlan(num_layers, tuple(static))


def build_synthetic(
    name: str, device: str | torch.device, dtype: torch.dtype, *, seed: int = 0, static_ratio: float = 0.2
) -> SyntheticModel:
    """The named synthetic VLA, its plan and random DySL modules, on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaModel

    if name not in SHAPES:
        raise ValueError(f"unknown synthetic model {name!r}; known: {sorted(SHAPES)}")
    shape = SHAPES[name]
    llama = LlamaConfig(
        hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers, intermediate_size=shape.intermediate_size,
        num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_heads, rms_norm_eps=1e-5,
        vocab_size=16,  # the decoder's token embedding is unused (the VLA embeds observations itself)
        max_position_embeddings=4096,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            decoder = LlamaModel(llama)
            model = HFLlamaVLA.from_llama(
                decoder,
                image_size=shape.image_size,
                patch_size=shape.patch_size,
                instruction_tokens=shape.instruction_tokens,
            )
            plan = synthetic_plan(shape.num_layers, static_ratio)
            modules = DySLModules(shape.hidden_size, plan)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    modules.eval()
    return SyntheticModel(name, model, plan, modules)
