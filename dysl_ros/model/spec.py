"""The reference VLA's configuration, without torch: shapes, token layout, normalisation.

What any model takes and returns (cameras, state, tokens, actions) is its ``ObservationSpec``
(``observation_spec.py``); ``VLAConfig.observation_spec`` derives the reference model's.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from dysl_ros.core.config import ConfigError
from dysl_ros.model.observation_spec import (  # re-exported: the reference model's names
    ACTION_SEMANTICS,
    PAD_TOKEN,
    BackboneDims,
    CameraSpec,
    Normalisation,
    Observation,
    ObservationSpec,
    TokenizerSpec,
    denormalise_actions,
    normalise_instruction,
    preprocess,
    tokenize,
)

__all__ = [
    "PAD_TOKEN",
    "Observation",
    "VLAConfig",
    "denormalise_actions",
    "normalise_instruction",
    "preprocess",
    "tokenize",
]


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
    # What the state and actions are (observation spec): the proprio's names (empty: proprio_0, ...),
    # what an action means to the robot, and the actions' range in robot units (empty: [-1, 1], as
    # Meta-World's end-effector actions).
    state_names: tuple[str, ...] = ()
    action_semantics: str = "ee_deltas"
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()

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
        if self.state_names and len(self.state_names) != self.proprio_dim:
            raise ConfigError(f"VLAConfig.state_names needs {self.proprio_dim} entries, got {len(self.state_names)}")
        if self.action_semantics not in ACTION_SEMANTICS:
            raise ConfigError(
                f"VLAConfig.action_semantics must be one of {ACTION_SEMANTICS}, got {self.action_semantics!r}"
            )
        if bool(self.action_low) != bool(self.action_high) or any(
            len(bound) not in (0, self.action_dim) for bound in (self.action_low, self.action_high)
        ):
            raise ConfigError(f"VLAConfig.action_low and action_high: both empty or {self.action_dim} values each")

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

    def dims(self) -> BackboneDims:
        return BackboneDims(self.num_layers, self.hidden_size, self.num_tokens)

    def observation_spec(self) -> ObservationSpec:
        """The reference model's contract: one square RGB camera named ``image``, byte tokens, the
        proprio and action normalisation fitted on its demonstrations."""
        return _reference_spec(self)


@functools.lru_cache(maxsize=16)
def _reference_spec(config: VLAConfig) -> ObservationSpec:
    # Cached: preprocessing asks for it every sample and tick.
    return ObservationSpec(
        cameras=(CameraSpec("image", config.image_size, config.image_size, 3, "letterbox"),),
        state_names=config.state_names or tuple(f"proprio_{i}" for i in range(config.proprio_dim)),
        action_names=config.action_names,
        horizon=config.chunk_len,
        state_normalisation=Normalisation("mean_std", config.proprio_mean, config.proprio_std),
        action_normalisation=Normalisation("mean_std", config.action_offset, config.action_scale),
        action_semantics=config.action_semantics,
        # Meta-World clips every end-effector action to [-1, 1]: the range the model was trained on.
        action_range=(config.action_low, config.action_high) if config.action_low
        else ((-1.0,) * len(config.action_names), (1.0,) * len(config.action_names)),
        tokenizer=TokenizerSpec("bytes", config.instruction_tokens),
    )
