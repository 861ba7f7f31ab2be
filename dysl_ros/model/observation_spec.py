"""What a VLA takes and returns, for any model: cameras, state, instruction tokens, actions.

A model directory's ``observation_spec.yaml`` states it (the reference model's is derived from its
``vla_config.json``). Everything between the robot and the embed segment reads it: the node (which
camera topics, how an image of another size is fitted, which joints), training (dataset keys to
model inputs) and ``preprocess``. No torch here.

    cameras:                     # one embed input each, named after the camera
      - {name: wrist, height: 96, width: 128, channels: 3, fit: letterbox}
    state:
      names: [j1, j2, ..., gripper]          # the proprio vector, in this order
      normalisation: {kind: mean_std, mean: [...], std: [...]}
    actions:
      names: [dj1, ..., gripper]
      horizon: 10                            # actions per chunk
      normalisation: {kind: min_max, min: [...], max: [...]}   # the head's output -> robot units
      semantics: joint_position_deltas       # what an action means to the robot
      range: {min: [...], max: [...]}        # optional: the actions' range in robot units (min_max: its bounds)
    tokenizer: {kind: bytes, length: 48}     # or {kind: huggingface, path: tokenizer, length: 32}

Embed inputs (batch 1): each camera ``(1, C, H, W)`` float32 in [-1, 1]; ``instruction`` ``(1, L)``
int64 token ids; ``proprio`` ``(1, S)`` float32, normalised. The head returns normalised actions
``(1, horizon, A)``; ``denormalise_actions`` maps them to robot units.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError

SPEC_FILE = "observation_spec.yaml"
PAD_TOKEN = 256
"""Byte tokens: UTF-8 bytes (ids 0-255) padded with this id: no vocabulary file to ship."""
FITS = ("letterbox", "center_crop")
"""How an image of another size becomes the camera's: scaled to fit inside and padded with black,
or scaled to cover and cropped at the centre. Never squashed: that would change the geometry the
model learned."""
NORMALISATIONS = ("identity", "mean_std", "min_max")
ACTION_SEMANTICS = ("ee_deltas", "joint_positions", "joint_position_deltas", "joint_velocities", "other")
TOKENIZERS = ("bytes", "huggingface")
INSTRUCTION = "instruction"
STATE = "proprio"
"""Embed input names besides the cameras'."""

def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


Images: TypeAlias = "npt.NDArray[np.uint8] | Mapping[str, npt.NDArray[np.uint8]]"


@dataclass(frozen=True)
class Observation:
    image: Images
    """RGB (H, W, 3) uint8 of the model's camera size (fitting happens before this): one array for a
    one-camera model, else camera name -> array."""
    instruction: str
    proprio: npt.NDArray[np.floating]
    """(S,) raw state in the spec's order (not normalised)."""


@dataclass(frozen=True)
class BackboneDims:
    """The fixed shapes between segments: hidden states are (1, num_tokens, hidden_size)."""

    num_layers: int
    hidden_size: int
    num_tokens: int


@dataclass(frozen=True)
class CameraSpec:
    name: str
    height: int
    width: int
    channels: int = 3
    fit: str = "letterbox"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.name) or self.name in (INSTRUCTION, STATE):
            raise ConfigError(
                f"camera name {self.name!r} must be a ROS name part (letters, digits, _) other than "
                f"{INSTRUCTION!r} and {STATE!r}"
            )
        for key in ("height", "width"):
            if not _positive_int(getattr(self, key)):
                raise ConfigError(f"camera {self.name}: {key} must be a positive integer, got {getattr(self, key)!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"camera {self.name}: channels must be 1 (mono) or 3 (RGB), got {self.channels!r}")
        if self.fit not in FITS:
            raise ConfigError(f"camera {self.name}: fit must be one of {FITS}, got {self.fit!r}")


@dataclass(frozen=True)
class Normalisation:
    """``normalise``: robot units -> model units; ``denormalise`` the way back. ``mean_std``:
    (x - mean) / std; ``min_max``: to [-1, 1] over [min, max]; ``identity``."""

    kind: str = "identity"
    low: tuple[float, ...] = ()
    """mean (mean_std) or min (min_max)."""
    high: tuple[float, ...] = ()
    """std (mean_std) or max (min_max)."""

    def check(self, dim: int, what: str) -> None:
        if self.kind not in NORMALISATIONS:
            raise ConfigError(f"{what} normalisation kind must be one of {NORMALISATIONS}, got {self.kind!r}")
        if self.kind == "identity":
            return
        if len(self.low) != dim or len(self.high) != dim:
            raise ConfigError(
                f"{what} normalisation needs {dim} values per statistic, got {len(self.low)}/{len(self.high)}"
            )
        values = (*self.low, *self.high)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ConfigError(f"{what} normalisation statistics must be finite numbers")
        if self.kind == "mean_std" and any(s <= 0 for s in self.high):
            raise ConfigError(f"{what} normalisation: std must be > 0, got {self.high}")
        if self.kind == "min_max" and any(hi <= lo for lo, hi in zip(self.low, self.high, strict=True)):
            raise ConfigError(f"{what} normalisation: max must exceed min in every dimension")

    def normalise(self, x: npt.NDArray[np.floating], dtype: type[np.floating[Any]] = np.float32) -> npt.NDArray[Any]:
        values = np.asarray(x, dtype=dtype)
        if self.kind == "identity":
            return values
        low, high = np.asarray(self.low, dtype=dtype), np.asarray(self.high, dtype=dtype)
        if self.kind == "mean_std":
            return (values - low) / high
        return ((values - low) / (high - low) * 2.0 - 1.0).astype(dtype)

    def denormalise(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        values = np.asarray(x, dtype=np.float64)
        if self.kind == "identity":
            return values
        low, high = np.asarray(self.low, dtype=np.float64), np.asarray(self.high, dtype=np.float64)
        if self.kind == "mean_std":
            return values * high + low
        return (values + 1.0) / 2.0 * (high - low) + low

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "identity":
            return {"kind": "identity"}
        keys = ("mean", "std") if self.kind == "mean_std" else ("min", "max")
        return {"kind": self.kind, keys[0]: list(self.low), keys[1]: list(self.high)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, what: str) -> Normalisation:
        data = dict(data or {"kind": "identity"})
        kind = data.pop("kind", None)
        keys = {"identity": (), "mean_std": ("mean", "std"), "min_max": ("min", "max")}.get(str(kind))
        if keys is None:
            raise ConfigError(f"{what} normalisation kind must be one of {NORMALISATIONS}, got {kind!r}")
        if sorted(data) != sorted(keys):
            raise ConfigError(f"{what} normalisation {kind} takes {list(keys)}, got {sorted(data)}")
        if not keys:
            return cls()
        return cls(str(kind), tuple(float(v) for v in data[keys[0]]), tuple(float(v) for v in data[keys[1]]))


def _range(data: Any, where: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if data is None:
        return None
    if not isinstance(data, Mapping) or sorted(data) != ["max", "min"]:
        raise ConfigError(f"{where}: actions range takes {{min: [...], max: [...]}}, got {data!r}")
    return tuple(float(v) for v in data["min"]), tuple(float(v) for v in data["max"])


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str = "bytes"
    length: int = 48
    """Token ids per instruction (padded or cut)."""
    path: str = ""
    """huggingface: a tokenizer directory, relative to the model directory (or absolute)."""

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZERS:
            raise ConfigError(f"tokenizer kind must be one of {TOKENIZERS}, got {self.kind!r}")
        if not _positive_int(self.length):
            raise ConfigError(f"tokenizer length must be a positive integer, got {self.length!r}")
        if self.kind == "huggingface" and not self.path:
            raise ConfigError("a huggingface tokenizer needs path: its directory (tokenizer.json, ...)")


@dataclass(frozen=True)
class ObservationSpec:
    cameras: tuple[CameraSpec, ...]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    horizon: int
    state_normalisation: Normalisation = Normalisation()
    action_normalisation: Normalisation = Normalisation()
    action_semantics: str = "other"
    action_range: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    """(min, max) per action in robot units, when the spec states it (``actions.range``)."""
    tokenizer: TokenizerSpec = TokenizerSpec()
    model_dir: Path | None = field(default=None, compare=False)
    """Where the spec was read from (huggingface tokenizer paths are relative to it)."""

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ConfigError("observation spec: at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ConfigError(f"observation spec: camera names repeat: {names}")
        for what, items in (("state", self.state_names), ("action", self.action_names)):
            if not items or not all(isinstance(n, str) and n for n in items) or len(set(items)) != len(items):
                raise ConfigError(f"observation spec: {what} names must be distinct non-empty strings, got {items}")
        if not _positive_int(self.horizon):
            raise ConfigError(f"observation spec: actions horizon must be a positive integer, got {self.horizon!r}")
        if self.action_semantics not in ACTION_SEMANTICS:
            raise ConfigError(f"observation spec: action semantics must be one of {ACTION_SEMANTICS}")
        self.state_normalisation.check(self.state_dim, "state")
        self.action_normalisation.check(self.action_dim, "action")
        if self.action_range is not None:
            low, high = self.action_range
            if len(low) != self.action_dim or len(high) != self.action_dim:
                raise ConfigError(f"observation spec: actions range needs {self.action_dim} values per bound")
            if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in zip(low, high, strict=True)):
                raise ConfigError("observation spec: actions range: finite, min below max in every dimension")

    def action_bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The model's own action range: the stated ``range``, else a min_max normalisation's bounds,
        else None (unknown)."""
        if self.action_range is not None:
            return self.action_range
        if self.action_normalisation.kind == "min_max":
            return self.action_normalisation.low, self.action_normalisation.high
        return None

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The embed segment's inputs, in its argument order."""
        return (*(c.name for c in self.cameras), INSTRUCTION, STATE)

    def input_shapes(self) -> dict[str, tuple[list[int], str]]:
        """Embed input name -> (shape, numpy dtype name), batch 1."""
        shapes = {c.name: ([1, c.channels, c.height, c.width], "float32") for c in self.cameras}
        shapes[INSTRUCTION] = ([1, self.tokenizer.length], "int64")
        shapes[STATE] = ([1, self.state_dim], "float32")
        return shapes

    def camera(self, name: str) -> CameraSpec:
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise KeyError(f"no camera {name!r} (cameras: {[c.name for c in self.cameras]})")

    @cached_property
    def tokenize(self) -> Tokenizer:
        return Tokenizer(self.tokenizer, self.model_dir)

    def to_dict(self) -> dict[str, Any]:
        tokenizer: dict[str, Any] = {"kind": self.tokenizer.kind, "length": self.tokenizer.length}
        if self.tokenizer.path:
            tokenizer["path"] = self.tokenizer.path
        return {
            "cameras": [
                {"name": c.name, "height": c.height, "width": c.width, "channels": c.channels, "fit": c.fit}
                for c in self.cameras
            ],
            "state": {"names": list(self.state_names), "normalisation": self.state_normalisation.to_dict()},
            "actions": {
                "names": list(self.action_names),
                "horizon": self.horizon,
                "normalisation": self.action_normalisation.to_dict(),
                "semantics": self.action_semantics,
                **(
                    {"range": {"min": list(self.action_range[0]), "max": list(self.action_range[1])}}
                    if self.action_range is not None else {}
                ),
            },
            "tokenizer": tokenizer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], model_dir: Path | None = None) -> ObservationSpec:
        where = f"{model_dir / SPEC_FILE}" if model_dir is not None else "observation spec"
        try:
            _only(data, {"cameras", "state", "actions", "tokenizer"}, where)
            state, actions = dict(data["state"]), dict(data["actions"])
            _only(state, {"names", "normalisation"}, f"{where}: state")
            _only(actions, {"names", "horizon", "normalisation", "semantics", "range"}, f"{where}: actions")
            cameras = []
            for camera in data["cameras"]:
                _only(camera, {"name", "height", "width", "channels", "fit"}, f"{where}: camera")
                cameras.append(CameraSpec(**camera))
            tokenizer = dict(data.get("tokenizer") or {})
            _only(tokenizer, {"kind", "length", "path"}, f"{where}: tokenizer")
            return cls(
                cameras=tuple(cameras),
                state_names=tuple(str(n) for n in state["names"]),
                action_names=tuple(str(n) for n in actions["names"]),
                horizon=actions["horizon"],
                state_normalisation=Normalisation.from_dict(state.get("normalisation"), "state"),
                action_normalisation=Normalisation.from_dict(actions.get("normalisation"), "action"),
                action_semantics=str(actions.get("semantics", "other")),
                action_range=_range(actions.get("range"), where),
                tokenizer=TokenizerSpec(**tokenizer),
                model_dir=model_dir,
            )
        except KeyError as exc:
            raise ConfigError(f"{where}: missing {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def save(self, model_dir: str | Path) -> Path:
        import yaml

        path = Path(model_dir) / SPEC_FILE
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> ObservationSpec:
        import yaml

        path = Path(model_dir) / SPEC_FILE
        if not path.is_file():
            raise ConfigError(
                f"{Path(model_dir)} has no {SPEC_FILE}: the observation spec (cameras, state, actions, tokenizer) "
                "that says what the model takes and returns; write one (docs/bring_your_model.md)"
            )
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping (cameras, state, actions, tokenizer)")
        return cls.from_dict(data, Path(model_dir))


class Tokenizer:
    """Instruction text -> ``length`` token ids (int64). ``bytes``: the text's UTF-8 bytes after
    ``normalise_instruction``, padded with ``PAD_TOKEN``. ``huggingface``: the model's own fast
    tokenizer, read from its local directory with the ``tokenizers`` package (no transformers):
    ``tokenizer.json`` (its post-processor adds the special tokens, as transformers' fast tokenizers
    do), padded with the pad token of ``tokenizer_config.json`` (or ``special_tokens_map.json``) on
    its ``padding_side`` and cut on its ``truncation_side`` (both default right) to ``length``."""

    def __init__(self, spec: TokenizerSpec, model_dir: Path | None) -> None:
        self.spec = spec
        self._hf: Any = None
        if spec.kind == "huggingface":
            path = Path(spec.path)
            if not path.is_absolute() and model_dir is not None:
                path = model_dir / path
            self._hf = load_hf_tokenizer(path, spec.length)

    def __call__(self, text: str) -> npt.NDArray[np.int64]:
        if self._hf is None:
            return tokenize(text, self.spec.length)
        return np.asarray(self._hf.encode(text).ids, dtype=np.int64)


HF_TOKENIZER_FILE = "tokenizer.json"


def load_hf_tokenizer(path: Path, length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from the Hugging Face tokenizer directory ``path``, padding and
    cutting every text to ``length`` ids as ``AutoTokenizer(text, padding="max_length",
    truncation=True, max_length=length)`` does."""
    import json

    from tokenizers import Tokenizer as FastTokenizer

    if not path.is_dir():
        raise ConfigError(f"tokenizer directory {path} does not exist")
    file = path / HF_TOKENIZER_FILE
    if not file.is_file():
        raise ConfigError(
            f"tokenizer directory {path} has no {HF_TOKENIZER_FILE}: save the tokenizer as a fast tokenizer "
            "(transformers' save_pretrained of a *TokenizerFast writes it)"
        )
    settings: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins, as in transformers
        if (path / name).is_file():
            data = json.loads((path / name).read_text())
            if isinstance(data, dict):
                settings.update({k: v for k, v in data.items() if v is not None})
    pad = settings.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    tokenizer = FastTokenizer.from_file(str(file))
    pad_id = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
    if pad_id is None:
        raise ConfigError(f"the tokenizer in {path} has no pad token: set one before importing the model")
    sides = {key: settings.get(key, "right") for key in ("padding_side", "truncation_side")}
    if not set(sides.values()) <= {"left", "right"}:
        raise ConfigError(f"{path}: padding_side and truncation_side must be left or right, got {sides}")
    tokenizer.enable_truncation(max_length=length, direction=sides["truncation_side"])
    tokenizer.enable_padding(direction=sides["padding_side"], pad_id=pad_id, pad_token=pad, length=length)
    return tokenizer


def normalise_instruction(text: str) -> str:
    """Lower-case, single spaces, no surrounding whitespace: phrasing, not formatting, matters."""
    return re.sub(r"\s+", " ", text).strip().lower()


def tokenize(text: str, length: int) -> npt.NDArray[np.int64]:
    """Byte tokens (the reference model's tokenizer)."""
    data = normalise_instruction(text).encode("utf-8")[:length]
    tokens = np.full(length, PAD_TOKEN, dtype=np.int64)
    tokens[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return tokens


def camera_images(spec: ObservationSpec, images: Images) -> dict[str, npt.NDArray[np.uint8]]:
    """Camera name -> image, from an observation's ``image`` (one array only for a one-camera model)."""
    if isinstance(images, np.ndarray):
        if len(spec.cameras) != 1:
            raise ValueError(f"the model has {len(spec.cameras)} cameras: give the observation one image per camera")
        return {spec.cameras[0].name: images}
    missing = [c.name for c in spec.cameras if c.name not in images]
    if missing:
        raise ValueError(f"observation lacks camera(s) {missing}")
    return {c.name: images[c.name] for c in spec.cameras}


class HasSpec(Protocol):
    def observation_spec(self) -> ObservationSpec: ...


def as_spec(source: ObservationSpec | HasSpec) -> ObservationSpec:
    return source if isinstance(source, ObservationSpec) else source.observation_spec()


def preprocess(source: ObservationSpec | HasSpec, obs: Observation) -> dict[str, npt.NDArray[np.generic]]:
    """Observation -> the embed segment's inputs, in ``spec.input_names`` order."""
    spec = as_spec(source)
    inputs: dict[str, npt.NDArray[np.generic]] = {}
    for name, image in camera_images(spec, obs.image).items():
        camera = spec.camera(name)
        shape = (camera.height, camera.width, camera.channels)
        if image.ndim == 2 and camera.channels == 1:
            image = image[..., None]
        if image.shape != shape or image.dtype != np.uint8:
            kind = "RGB" if camera.channels == 3 else "mono"
            raise ValueError(f"camera {name}: image must be {shape} uint8 {kind}, got {image.shape} {image.dtype}")
        pixels = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)  # one copy, then in place
        pixels /= 127.5
        pixels -= 1.0
        inputs[name] = pixels
    inputs[INSTRUCTION] = spec.tokenize(obs.instruction)[None]
    state = np.asarray(obs.proprio, dtype=np.float32).reshape(-1)
    if state.shape != (spec.state_dim,):
        raise ValueError(f"proprio must have {spec.state_dim} values, got {state.shape[0]}")
    inputs[STATE] = np.asarray(spec.state_normalisation.normalise(state)[None], dtype=np.float32)
    return inputs


def denormalise_actions(source: ObservationSpec | HasSpec, chunk: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    return as_spec(source).action_normalisation.denormalise(chunk)
