"""The reference VLA: image + instruction + proprio -> Llama-style decoder blocks -> action chunk.

    tokens  = [ vision (conv stem) | instruction byte groups | proprio | action queries ]   (B, T, D)
    x       = embed(observation)
    x       = layers[i](x)  for i in 0..L-1        pre-norm blocks: RMSNorm, RoPE attention, SwiGLU
    actions = head(x)[action-query tokens]                                          (B, chunk, A)

The three parts (``embed``, ``layers``, ``head``) are exactly the segments DySL schedules and the
engines compile. Attention is bidirectional: the action queries read every observation token and
each other. Shapes are fixed (batch x T tokens), so each segment exports to a fixed-shape engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysl_ros.model.observation_spec import BackboneDims, ObservationSpec
from dysl_ros.model.spec import PAD_TOKEN, VLAConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 so fp16 engines match the fp32 model closely.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight


def rope_tables(num_tokens: int, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(num_tokens, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim), rotate-half layout as in Llama
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(batch, tokens, dim))


class SwiGLU(nn.Module):
    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.hidden_size, config.ffn_size, bias=False)
        self.up = nn.Linear(config.hidden_size, config.ffn_size, bias=False)
        self.down = nn.Linear(config.ffn_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """One pre-norm decoder block; owns its RoPE tables so it exports as a stand-alone segment."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = SwiGLU(config)
        cos, sin = rope_tables(config.num_tokens, config.head_dim, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), self.rope_cos.to(x.dtype), self.rope_sin.to(x.dtype))
        return x + self.mlp(self.mlp_norm(x))


class ObservationEncoder(nn.Module):
    """Inputs of ``dysl_ros.model.spec.preprocess`` -> token embeddings (B, T, D)."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        # A conv stem (stride 4, 2, patch/8) instead of one linear patch projection: the locality
        # prior lets a small model learn where objects are from a few thousand demonstrations.
        last = config.patch_size // 8
        self.patch = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=4, stride=4), nn.SiLU(),
            nn.Conv2d(32, 64, kernel_size=2, stride=2), nn.SiLU(),
            nn.Conv2d(64, dim, kernel_size=last, stride=last),
        )
        self.vision_pos = nn.Parameter(torch.zeros(config.vision_tokens, dim))
        # Instruction bytes are embedded one by one, then each group of bytes_per_token becomes one token.
        self.bytes_per_token = config.bytes_per_token
        self.byte_embed = nn.Embedding(PAD_TOKEN + 1, dim)
        self.byte_group = nn.Linear(config.bytes_per_token * dim, dim)
        self.proprio = nn.Sequential(nn.Linear(config.proprio_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.action_queries = nn.Parameter(torch.zeros(config.chunk_len, dim))
        nn.init.normal_(self.vision_pos, std=0.02)
        nn.init.normal_(self.action_queries, std=0.02)

    def forward(self, image: Tensor, instruction: Tensor, proprio: Tensor) -> Tensor:
        batch = image.shape[0]
        vision = self.patch(image).flatten(2).transpose(1, 2) + self.vision_pos
        text = self.byte_embed(instruction)
        text = self.byte_group(text.reshape(batch, -1, self.bytes_per_token * text.shape[-1]))
        state = self.proprio(proprio).unsqueeze(1)
        queries = self.action_queries.unsqueeze(0).expand(batch, -1, -1)
        return torch.cat([vision, text, state, queries.to(vision.dtype)], dim=1)


class ActionHead(nn.Module):
    """Final norm, then a linear map of each action-query token to one action of the chunk."""

    def __init__(self, config: VLAConfig, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.chunk_len = config.chunk_len
        self.norm = norm if norm is not None else RMSNorm(config.hidden_size, config.norm_eps)
        self.proj = nn.Linear(config.hidden_size, config.action_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.norm(x[:, -self.chunk_len :]))


class ConfiguredVLA(nn.Module):
    """A VLA whose shape a ``VLAConfig`` states: ``embed`` -> ``layers`` -> ``head``, its observation
    spec and dimensions read from that config. Subclasses build the three parts."""

    config: VLAConfig
    embed: nn.Module
    layers: nn.ModuleList
    head: nn.Module

    @property
    def spec(self) -> ObservationSpec:
        return self.config.observation_spec()

    @property
    def dims(self) -> BackboneDims:
        return self.config.dims()

    def forward(self, image: Tensor, instruction: Tensor, proprio: Tensor) -> Tensor:
        x = self.embed(image, instruction, proprio)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class ReferenceVLA(ConfiguredVLA):
    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = ObservationEncoder(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.head = ActionHead(config)
        self.apply(_init_weights)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
