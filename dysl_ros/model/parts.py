"""Built-in embed and head kinds for an imported decoder (``dysl_train import --embed
dysl_ros.model.parts:patch_embed --head dysl_ros.model.parts:query_head``), and the worked example
of what your own factories look like: ``factory(spec, hidden_size, **kwargs) -> nn.Module``.

    tokens = [ camera 1 patches | ... | camera n patches | instruction tokens | state | action queries ]
    actions = linear(action-query tokens)                                          (1, horizon, A)

Any camera size works: each camera gets its own patch projection (kernel = stride = ``patch``) and
positional table; the last partial row or column of patches is dropped.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dysl_ros.model.observation_spec import PAD_TOKEN, ObservationSpec


class PatchEmbed(nn.Module):
    def __init__(self, spec: ObservationSpec, hidden_size: int, patch: int = 16, vocab_size: int = 0) -> None:
        super().__init__()
        self.horizon = spec.horizon
        self.cameras = nn.ModuleList(
            nn.Conv2d(camera.channels, hidden_size, kernel_size=patch, stride=patch) for camera in spec.cameras
        )
        self.camera_pos = nn.ParameterList(
            nn.Parameter(torch.randn((c.height // patch) * (c.width // patch), hidden_size) * 0.02)
            for c in spec.cameras
        )
        vocab = vocab_size or (PAD_TOKEN + 1 if spec.tokenizer.kind == "bytes" else 0)
        if vocab < 1:
            raise ValueError("patch_embed: give vocab_size, the tokenizer's vocabulary size")
        self.text = nn.Embedding(vocab, hidden_size)
        self.state = nn.Linear(spec.state_dim, hidden_size)
        self.queries = nn.Parameter(torch.randn(spec.horizon, hidden_size) * 0.02)

    def forward(self, *inputs: Tensor) -> Tensor:
        *images, instruction, state = inputs
        batch = instruction.shape[0]
        tokens = [
            conv(image).flatten(2).transpose(1, 2) + pos
            for conv, pos, image in zip(self.cameras, self.camera_pos, images, strict=True)
        ]
        tokens += [self.text(instruction), self.state(state).unsqueeze(1)]
        dtype = tokens[0].dtype
        tokens.append(self.queries.unsqueeze(0).expand(batch, -1, -1).to(dtype))
        return torch.cat([t.to(dtype) for t in tokens], dim=1)


class QueryHead(nn.Module):
    """One linear map from each action-query token (the last ``horizon`` tokens) to one action."""

    def __init__(self, spec: ObservationSpec, hidden_size: int) -> None:
        super().__init__()
        self.horizon = spec.horizon
        self.proj = nn.Linear(hidden_size, spec.action_dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.proj(x[:, -self.horizon :])
        return out


def patch_embed(spec: ObservationSpec, hidden_size: int, patch: int = 16, vocab_size: int = 0) -> PatchEmbed:
    return PatchEmbed(spec, hidden_size, patch, vocab_size)


def query_head(spec: ObservationSpec, hidden_size: int) -> QueryHead:
    return QueryHead(spec, hidden_size)
