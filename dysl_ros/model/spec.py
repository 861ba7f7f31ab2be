"""What a VLA takes and returns, without torch: its config, observations and preprocessing.

Every backend (torch, ONNX Runtime, TensorRT) and the node share this, so the tensors fed to an
engine are exactly those the model was trained on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError

PAD_TOKEN = 256
"""Instructions are UTF-8 bytes (ids 0-255) padded with this id: no vocabulary file to ship."""


@dataclass(frozen=True)
class VLAConfig:
    """Shape of a VLA: observation sizes, token layout, backbone size, action chunk, normalisation.

    Token order: vision tokens (one per ``patch_size`` square of the image, from a small conv stem),
    instruction tokens (``bytes_per_token`` UTF-8 bytes each), one proprio token, ``chunk_len``
    action queries. The defaults give 16 + 12 + 1 + 8 = 37 tokens: small enough to train on a CPU.
    """

    image_size: int = 128
    patch_size: int = 32
    instruction_tokens: int = 48
    """Instruction length in UTF-8 bytes (longer instructions are cut)."""
    bytes_per_token: int = 4
    proprio_dim: int = 4
    action_dim: int = 4
    chunk_len: int = 8
    hidden_size: int = 128
    num_layers: int = 24
    num_heads: int = 4
    ffn_size: int = 384
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    action_names: tuple[str, ...] = ("hand_dx", "hand_dy", "hand_dz", "gripper")
    # Normalisation fitted on the training data: proprio_in = (proprio - mean) / std,
    # action_out = action_normalised * action_scale + action_offset.
    proprio_mean: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    proprio_std: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    action_scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    action_offset: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "instruction_tokens",
            "bytes_per_token",
            "proprio_dim",
            "action_dim",
            "chunk_len",
            "hidden_size",
            "num_layers",
            "num_heads",
            "ffn_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"VLAConfig.{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.patch_size % 8:
            raise ConfigError(f"patch_size must be a multiple of 8 (the conv stem's stride), got {self.patch_size}")
        if self.instruction_tokens % self.bytes_per_token:
            raise ConfigError(
                f"instruction_tokens {self.instruction_tokens} is not a multiple of bytes_per_token "
                f"{self.bytes_per_token}"
            )
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ConfigError(
                f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of even size (RoPE)"
            )
        for name, size in (
            ("action_names", self.action_dim),
            ("proprio_mean", self.proprio_dim),
            ("proprio_std", self.proprio_dim),
            ("action_scale", self.action_dim),
            ("action_offset", self.action_dim),
        ):
            if len(getattr(self, name)) != size:
                raise ConfigError(f"VLAConfig.{name} needs {size} entries, got {len(getattr(self, name))}")
        if any(not math.isfinite(s) or s <= 0 for s in self.proprio_std):
            raise ConfigError(f"proprio_std must be finite and > 0, got {self.proprio_std}")

    @property
    def vision_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def text_tokens(self) -> int:
        return self.instruction_tokens // self.bytes_per_token

    @property
    def num_tokens(self) -> int:
        return self.vision_tokens + self.text_tokens + 1 + self.chunk_len

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLAConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown VLAConfig field(s) {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)  # type: ignore[arg-type]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> VLAConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class Observation:
    image: npt.NDArray[np.uint8]
    """RGB, (image_size, image_size, 3) uint8: resizing and colour conversion happen before this."""
    instruction: str
    proprio: npt.NDArray[np.floating]
    """(proprio_dim,) raw proprio (not normalised)."""


def normalise_instruction(text: str) -> str:
    """Lower-case, single spaces, no surrounding whitespace: phrasing, not formatting, matters."""
    return re.sub(r"\s+", " ", text).strip().lower()


def tokenize(text: str, length: int) -> npt.NDArray[np.int64]:
    data = normalise_instruction(text).encode("utf-8")[:length]
    tokens = np.full(length, PAD_TOKEN, dtype=np.int64)
    tokens[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return tokens


def preprocess(config: VLAConfig, obs: Observation) -> dict[str, npt.NDArray[np.generic]]:
    """Observation -> the embed segment's inputs (batch 1): image (1,3,S,S) float32 in [-1, 1],
    instruction (1,T) int64, proprio (1,P) float32 normalised."""
    size = config.image_size
    if obs.image.shape != (size, size, 3) or obs.image.dtype != np.uint8:
        raise ValueError(f"image must be ({size}, {size}, 3) uint8 RGB, got {obs.image.shape} {obs.image.dtype}")
    proprio = np.asarray(obs.proprio, dtype=np.float32).reshape(-1)
    if proprio.shape != (config.proprio_dim,):
        raise ValueError(f"proprio must have {config.proprio_dim} values, got {proprio.shape[0]}")
    image = obs.image.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
    mean = np.asarray(config.proprio_mean, dtype=np.float32)
    std = np.asarray(config.proprio_std, dtype=np.float32)
    return {
        "image": np.ascontiguousarray(image, dtype=np.float32),
        "instruction": tokenize(obs.instruction, config.instruction_tokens)[None],
        "proprio": ((proprio - mean) / std)[None].astype(np.float32),
    }


def denormalise_actions(config: VLAConfig, chunk: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    scale = np.asarray(config.action_scale, dtype=np.float64)
    offset = np.asarray(config.action_offset, dtype=np.float64)
    return np.asarray(chunk, dtype=np.float64) * scale + offset
