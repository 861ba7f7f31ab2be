"""DySLConfig and VLAConfig validation, preprocessing and the byte tokenizer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.model.spec import (
    PAD_TOKEN,
    Observation,
    VLAConfig,
    denormalise_actions,
    normalise_instruction,
    preprocess,
    tokenize,
)

# ---------------------------------------------------------------------------------------------------------
# DySLConfig


def test_defaults_are_valid_and_round_trip_through_dict() -> None:
    config = DySLConfig()
    assert DySLConfig.from_dict(config.to_dict()) == config
    custom = DySLConfig(static_ratio=0.5, k=3, eta=0.1, eta_verify=0.2, skip_threshold=1.0,
                        enable_pre_skip=False, enable_post_verify=False)
    assert DySLConfig.from_dict(custom.to_dict()) == custom
    assert DySLConfig.from_dict({"k": 7}) == DySLConfig(k=7)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eta", 0.0),
        ("eta", -0.01),
        ("eta", math.nan),
        ("eta", math.inf),
        ("eta", "0.02"),
        ("eta", True),
        ("eta_verify", 0.0),
        ("eta_verify", math.nan),
        ("static_ratio", 0.0),
        ("static_ratio", 1.0),
        ("static_ratio", -0.5),
        ("static_ratio", math.nan),
        ("k", 0),
        ("k", -3),
        ("k", 2.5),
        ("k", True),
        ("k", "5"),
        ("skip_threshold", 0.0),
        ("skip_threshold", 1.5),
        ("skip_threshold", math.nan),
        ("enable_pre_skip", "yes"),
        ("enable_pre_skip", 1),
        ("enable_post_verify", "no"),
        ("enable_post_verify", None),
    ],
)
def test_bad_dysl_value_raises_config_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^{field} must"):
        DySLConfig(**{field: value})


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        DySLConfig(eta=0.0)


def test_boundary_values_accepted() -> None:
    assert DySLConfig(skip_threshold=1.0).skip_threshold == 1.0  # (0, 1]: 1 means "only when certain"
    assert DySLConfig(k=1).k == 1
    assert DySLConfig(eta=1e-9).eta == 1e-9
    assert DySLConfig(static_ratio=0.999).static_ratio == 0.999


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown DySL setting\(s\) \['bogus', 'etta'\]"):
        DySLConfig.from_dict({"eta": 0.1, "etta": 0.1, "bogus": 1})


def test_from_dict_validates_values() -> None:
    with pytest.raises(ConfigError, match=r"^k must"):
        DySLConfig.from_dict({"k": 0})


# ---------------------------------------------------------------------------------------------------------
# VLAConfig


def test_vla_config_derived_sizes() -> None:
    config = VLAConfig(image_size=32, patch_size=16, instruction_tokens=8, hidden_size=32, num_heads=2)
    assert config.vision_tokens == 4  # (32 / 16) ** 2
    assert config.text_tokens == 2  # 8 bytes, 4 per token
    assert config.num_tokens == 4 + 2 + 1 + 8  # vision + instruction + proprio + chunk_len
    assert config.head_dim == 16


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_size": 30, "patch_size": 16}, "image_size 30 is not a multiple of patch_size 16"),
        ({"hidden_size": 30, "num_heads": 2}, "hidden_size 30 must split into 2 heads of even size"),  # 15
        ({"hidden_size": 32, "num_heads": 3}, "hidden_size 32 must split into 3 heads"),  # not divisible
        ({"action_names": ("x", "y", "z")}, r"action_names needs 4 entries, got 3"),
        ({"proprio_mean": (0.0,) * 5}, r"proprio_mean needs 4 entries, got 5"),
        ({"action_scale": (1.0,) * 3}, r"action_scale needs 4 entries, got 3"),
        ({"proprio_std": (1.0, 0.0, 1.0, 1.0)}, "proprio_std must be finite and > 0"),
        ({"proprio_std": (1.0, math.inf, 1.0, 1.0)}, "proprio_std must be finite and > 0"),
        ({"num_layers": 0}, r"VLAConfig.num_layers must be a positive integer"),
        ({"chunk_len": 2.0}, r"VLAConfig.chunk_len must be a positive integer"),
        ({"hidden_size": True}, r"VLAConfig.hidden_size must be a positive integer"),
        ({"image_size": 36, "patch_size": 12}, "patch_size must be a multiple of 8"),
        ({"instruction_tokens": 10}, "instruction_tokens 10 is not a multiple of bytes_per_token 4"),
    ],
)
def test_bad_vla_config_raises(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VLAConfig(**values)


def test_vla_config_json_round_trip(tmp_path: Path) -> None:
    config = VLAConfig(image_size=32, action_dim=2, action_names=("a", "b"), action_scale=(2.0, 3.0),
                       action_offset=(0.5, -0.5), proprio_mean=(0.1, 0.2, 0.3, 0.4))
    config.save(tmp_path / "vla.json")
    assert VLAConfig.load(tmp_path / "vla.json") == config  # lists come back as tuples


def test_vla_config_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match=r"unknown VLAConfig field\(s\) \['image_sz'\]"):
        VLAConfig.from_dict({"image_sz": 32})


# ---------------------------------------------------------------------------------------------------------
# Preprocessing


SMALL = VLAConfig(
    image_size=32,
    patch_size=16,
    instruction_tokens=16,
    proprio_mean=(1.0, 2.0, 3.0, 4.0),
    proprio_std=(2.0, 4.0, 0.5, 1.0),
)


def observation(image: np.ndarray | None = None, instruction: str = "pick up the cube",
                proprio: Any = (1.0, 2.0, 3.0, 4.0)) -> Observation:
    if image is None:
        image = np.zeros((32, 32, 3), dtype=np.uint8)
    return Observation(image=image, instruction=instruction, proprio=np.asarray(proprio, dtype=np.float64))


def test_preprocess_shapes_dtypes_and_values() -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[..., 0] = 255  # red channel full
    image[..., 1] = 0  # green empty
    image[5, 7, 2] = 51  # one blue pixel at row 5, column 7
    out = preprocess(SMALL, observation(image=image, proprio=(3.0, 6.0, 2.0, 4.0)))
    assert set(out) == {"image", "instruction", "proprio"}

    img = out["image"]
    assert img.shape == (1, 3, 32, 32)
    assert img.dtype == np.float32
    assert img.flags.c_contiguous
    assert img.min() >= -1.0 and img.max() <= 1.0
    assert np.all(img[0, 0] == 1.0)  # 255 / 127.5 - 1
    assert np.all(img[0, 1] == -1.0)  # 0 / 127.5 - 1
    assert img[0, 2, 5, 7] == pytest.approx(51 / 127.5 - 1.0)  # channels first, (row, column) kept
    assert img[0, 2, 7, 5] == -1.0

    tokens = out["instruction"]
    assert tokens.shape == (1, 16)
    assert tokens.dtype == np.int64

    proprio = out["proprio"]
    assert proprio.shape == (1, 4)
    assert proprio.dtype == np.float32
    # (value - mean) / std = (3-1)/2, (6-2)/4, (2-3)/0.5, (4-4)/1
    np.testing.assert_array_equal(proprio[0], np.array([1.0, 1.0, -2.0, 0.0], dtype=np.float32))


def test_preprocess_accepts_proprio_as_list_or_column() -> None:
    a = preprocess(SMALL, observation(proprio=[1.0, 2.0, 3.0, 4.0]))["proprio"]
    b = preprocess(SMALL, observation(proprio=[[1.0], [2.0], [3.0], [4.0]]))["proprio"]
    np.testing.assert_array_equal(a, np.zeros((1, 4), dtype=np.float32))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((32, 32, 4), dtype=np.uint8),  # RGBA
        np.zeros((3, 32, 32), dtype=np.uint8),  # channels first
        np.zeros((31, 32, 3), dtype=np.uint8),  # not resized
        np.zeros((64, 64, 3), dtype=np.uint8),
        np.zeros((32, 32), dtype=np.uint8),  # grey
        np.zeros((32, 32, 3), dtype=np.float32),  # not uint8
    ],
)
def test_preprocess_rejects_wrong_image(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"image must be \(32, 32, 3\) uint8 RGB"):
        preprocess(SMALL, observation(image=image))


@pytest.mark.parametrize("proprio", [(1.0, 2.0, 3.0), (1.0, 2.0, 3.0, 4.0, 5.0), ()])
def test_preprocess_rejects_wrong_proprio_length(proprio: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match=f"proprio must have 4 values, got {len(proprio)}"):
        preprocess(SMALL, observation(proprio=proprio))


def test_tokenizer_bytes_and_padding() -> None:
    tokens = tokenize("pick", 8)
    assert tokens.dtype == np.int64
    assert tokens.tolist() == [ord("p"), ord("i"), ord("c"), ord("k"), PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN]
    assert PAD_TOKEN == 256  # outside the byte range 0..255
    assert tokenize("", 3).tolist() == [PAD_TOKEN] * 3


def test_tokenizer_normalises_case_and_whitespace() -> None:
    assert normalise_instruction("  Pick\tUP   the\n Cube  ") == "pick up the cube"
    a = tokenize("  Pick\tUP   the\n Cube  ", 24)
    b = tokenize("pick up the cube", 24)
    np.testing.assert_array_equal(a, b)
    assert bytes(a[:16].astype(np.uint8)).decode() == "pick up the cube"
    assert np.all(a[16:] == PAD_TOKEN)


def test_tokenizer_truncates_long_utf8_text_to_length_bytes() -> None:
    text = "Öffne die Tür"  # lower-cased: "öffne die tür"; ö and ü are 2 bytes each in UTF-8
    encoded = "öffne die tür".encode()
    assert len(encoded) == 15
    tokens = tokenize(text, 6)
    assert tokens.shape == (6,)
    assert tokens.tolist() == list(encoded[:6])  # c3 b6 'f' 'f' 'n' 'e'
    assert tokens[0] == 0xC3 and tokens[1] == 0xB6
    assert np.all((tokens >= 0) & (tokens <= 255))  # no padding when the text fills the window
    # A cut inside a multi-byte character keeps the bytes that fit.
    assert tokenize("ü", 1).tolist() == [0xC3]
    # Exactly fitting text: no padding, no truncation.
    assert tokenize("abc", 3).tolist() == [97, 98, 99]


def test_preprocess_tokenizes_instruction() -> None:
    out = preprocess(SMALL, observation(instruction="Open  DRAWER"))
    np.testing.assert_array_equal(out["instruction"][0], tokenize("open drawer", 16))
    assert out["instruction"][0, 10] == ord("r")  # "open drawer" is 11 bytes: indices 0..10
    assert out["instruction"][0, 11] == PAD_TOKEN


def test_denormalise_actions() -> None:
    config = VLAConfig(action_dim=2, action_names=("a", "b"), action_scale=(2.0, 0.5), action_offset=(1.0, -1.0))
    out = denormalise_actions(config, np.array([[1.0, 1.0], [-1.0, 0.0]], dtype=np.float32))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[3.0, -0.5], [-1.0, -1.0]])
