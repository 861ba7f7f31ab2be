"""The backbone protocol every VLA in dysl_ros satisfies, and a Hugging Face decoder layer as a block.

A VLA is three kinds of segment: ``embed`` (observation tensors -> hidden states), ``layers`` (an
ordered list of hidden -> hidden blocks) and ``head`` (hidden -> action chunk). DySL schedules the
layers; the engine builder compiles each segment on its own. ``HFLlamaVLA`` puts a Llama decoder
stack between the reference model's encoder and head (the latency benchmark's 7B shape); a model of
your own (your embed and head around a Hugging Face decoder) is ``hf_decoder.DecoderVLA``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from dysl_ros.model.observation_spec import BackboneDims, ObservationSpec
from dysl_ros.model.reference_vla import ActionHead, ConfiguredVLA, ObservationEncoder
from dysl_ros.model.spec import VLAConfig

if TYPE_CHECKING:
    from transformers import LlamaModel


class VLABackbone(Protocol):
    @property
    def spec(self) -> ObservationSpec:
        """What the model takes and returns (cameras, state, tokens, actions)."""
        ...

    @property
    def dims(self) -> BackboneDims:
        """Layers, hidden size and the fixed token count between segments."""
        ...

    @property
    def embed(self) -> nn.Module:
        """Embed inputs, positionally in ``spec.input_names`` order -> (B, T, D)."""
        ...

    @property
    def layers(self) -> nn.ModuleList:
        """Each (B, T, D) -> (B, T, D), self-contained (positions baked in)."""
        ...

    @property
    def head(self) -> nn.Module:
        """(B, T, D) -> (B, chunk_len, action_dim)."""
        ...

    def __call__(self, *inputs: Tensor) -> Tensor: ...


class HFDecoderLayer(nn.Module):
    """A ``transformers`` Llama decoder layer as a plain hidden -> hidden block.

    Rotary tables and the causal mask are precomputed for the fixed token count, so the block exports
    as a fixed-shape segment. The mask is explicit so eager and SDPA attention agree.
    """

    def __init__(self, layer: nn.Module, cos: Tensor, sin: Tensor) -> None:
        super().__init__()
        self.layer: nn.Module = layer
        tokens = cos.shape[-2]
        mask = torch.full((tokens, tokens), float("-inf")).triu(1)[None, None]
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Any = self.layer(
            x,
            attention_mask=self.causal_mask.to(x.dtype),
            position_embeddings=(self.rope_cos.to(x.dtype), self.rope_sin.to(x.dtype)),
        )
        # transformers 4.x returns a tuple, 5.x the tensor.
        return out[0] if isinstance(out, tuple) else out


class HFLlamaVLA(ConfiguredVLA):
    """The reference observation encoder and action head around a Hugging Face ``LlamaModel``'s
    decoder layers (causal attention, as the checkpoint was trained). The decoder's final norm
    becomes the head's norm."""

    def __init__(self, config: VLAConfig, decoder: LlamaModel) -> None:
        super().__init__()
        llama = decoder.config
        if llama.hidden_size != config.hidden_size or llama.num_hidden_layers != config.num_layers:
            raise ValueError(
                f"VLAConfig (hidden {config.hidden_size}, {config.num_layers} layers) does not match the "
                f"Llama decoder (hidden {llama.hidden_size}, {llama.num_hidden_layers} layers)"
            )
        self.config = config
        self.llama_config: dict[str, Any] = llama.to_dict()
        positions = torch.arange(config.num_tokens)[None]
        probe = torch.zeros(1, config.num_tokens, config.hidden_size)
        with torch.no_grad():
            cos, sin = decoder.rotary_emb(probe, positions)
        self.embed = ObservationEncoder(config)
        self.layers = nn.ModuleList(HFDecoderLayer(layer, cos, sin) for layer in decoder.layers)
        self.head = ActionHead(config, norm=decoder.norm)

    @classmethod
    def from_llama(cls, decoder: LlamaModel, **overrides: Any) -> HFLlamaVLA:
        """Build with a VLAConfig whose backbone sizes are read from the decoder."""
        llama = decoder.config
        config = VLAConfig(
            hidden_size=llama.hidden_size,
            num_layers=llama.num_hidden_layers,
            num_heads=llama.num_attention_heads,
            ffn_size=llama.intermediate_size,
            norm_eps=llama.rms_norm_eps,
            **overrides,
        )
        return cls(config, decoder)


def backbone_parameters(model: VLABackbone) -> int:
    return sum(p.numel() for p in model.layers.parameters())
