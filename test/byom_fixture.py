"""Tiny models of your own, for tests: random Hugging Face decoder checkpoints of each tested family,
an observation spec with two cameras of different non-square sizes, 8-D state, 7-D actions and a
horizon of 10, and the built-in embed and head around them; optionally a Hugging Face tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dysl_ros.core.config import DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.checkpoint import save_dysl
from dysl_ros.model.hf_decoder import ModulePart, import_model
from dysl_ros.model.observation_spec import CameraSpec, Normalisation, ObservationSpec, TokenizerSpec
from dysl_ros.model.skip_modules import DySLModules

FAMILIES = ("llama", "qwen2", "gemma", "mistral")
HIDDEN = 32
LAYERS = 6
STATE_NAMES = (*(f"joint_{i}" for i in range(7)), "gripper")
ACTION_NAMES = (*(f"joint_{i}_delta" for i in range(6)), "gripper")
SPEC = ObservationSpec(
    cameras=(CameraSpec("front", 24, 32, 3, "letterbox"), CameraSpec("wrist", 16, 40, 3, "center_crop")),
    state_names=STATE_NAMES,
    action_names=ACTION_NAMES,
    horizon=10,
    state_normalisation=Normalisation("mean_std", (0.0,) * 8, (0.5,) * 8),
    action_normalisation=Normalisation("min_max", (-0.2,) * 7, (0.2,) * 7),
    action_semantics="joint_position_deltas",
    tokenizer=TokenizerSpec("bytes", 12),
)
JOINTS = (*(f"joint_{i}" for i in range(6)), "gripper")
POSITION_SPEC = dataclasses.replace(
    SPEC,
    action_names=JOINTS,
    action_normalisation=Normalisation("min_max", (-1.5,) * 7, (1.5,) * 7),
    action_semantics="joint_positions",
)
"""Absolute joint positions, named after the joints they drive (wired by name)."""
EMBED = ModulePart("dysl_ros.model.parts:patch_embed", {"patch": 8})
HEAD = ModulePart("dysl_ros.model.parts:query_head")
WORDS = tuple("put the red block in bowl open drawer close push button press reach pick place a mug".split())
TOKENIZER_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
TOKENIZED_SPEC = dataclasses.replace(SPEC, tokenizer=TokenizerSpec("huggingface", 12, "tokenizer"))
"""SPEC with a Hugging Face tokenizer (``write_tokenizer``) in the model directory's tokenizer/."""
TOKENIZED_EMBED = ModulePart("dysl_ros.model.parts:patch_embed", {"patch": 8, "vocab_size": len(TOKENIZER_VOCAB)})


def write_tokenizer(path: Path, padding_side: str = "right") -> Path:
    """A small Hugging Face fast tokenizer saved as transformers does: word level, lower-cased, <s> and
    </s> added by its post-processor, a pad token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(TOKENIZER_VOCAB, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side=padding_side, truncation_side=padding_side,
    )
    fast.save_pretrained(str(path))
    return path


def decoder_config(family: str) -> Any:
    """A 6-layer, 32-wide random config of ``family`` (grouped-query attention throughout)."""
    from transformers import GemmaConfig, LlamaConfig, MistralConfig, Qwen2Config

    common: dict[str, Any] = dict(
        hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64, max_position_embeddings=128,
    )
    if family == "llama":  # Llama 3's rotary scaling
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        return LlamaConfig(**common, rope_scaling=rope)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "gemma":
        return GemmaConfig(**common, head_dim=8)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=64)
    raise ValueError(family)


def write_decoder(path: Path, family: str, seed: int = 0) -> Path:
    """A random checkpoint; Llama's as a *ForCausalLM (keys under ``model.``), as real checkpoints are."""
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = decoder_config(family)
    model = AutoModelForCausalLM.from_config(config) if family == "llama" else AutoModel.from_config(config)
    model.save_pretrained(str(path), safe_serialization=True)
    return path


def make_imported_model(
    root: Path, family: str, seed: int = 0, static_ratio: float = 0.34, spec: ObservationSpec = SPEC,
    tokenizer: bool = False, head: ModulePart = HEAD,
) -> Path:
    """Import a random checkpoint of ``family`` with the built-in embed and head, then give it a
    random layer plan and DySL modules (non-trivial adapters, so skipping changes the chunk).
    ``tokenizer``: with a Hugging Face tokenizer (``write_tokenizer``; ``spec``'s tokenizer becomes
    ``TOKENIZED_SPEC``'s)."""
    decoder = write_decoder(root / f"{family}_checkpoint", family, seed)
    extra: dict[str, Any] = {}
    if tokenizer:
        spec = dataclasses.replace(spec, tokenizer=TOKENIZED_SPEC.tokenizer)
        extra = {"embed": TOKENIZED_EMBED, "tokenizer_dir": write_tokenizer(root / f"{family}_tokenizer")}
    model_dir = import_model(root / family, decoder_dir=decoder, spec=spec, **{"embed": EMBED, "head": head, **extra})
    torch.manual_seed(seed + 1)
    similarities = np.random.default_rng(seed).uniform(0.5, 1.0, LAYERS)
    plan = LayerPlan.from_similarities(similarities.tolist(), static_ratio)
    modules = DySLModules(HIDDEN, plan)
    with torch.no_grad():
        for adapter in modules.adapters.values():
            torch.nn.init.normal_(adapter.up.weight, std=0.5)
    save_dysl(model_dir, plan, modules, DySLConfig(static_ratio=static_ratio), dtype=torch.float32)
    return model_dir


def random_observation(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "image": {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in SPEC.cameras},
        "instruction": "put the red block in the bowl",
        "proprio": rng.normal(size=SPEC.state_dim).astype(np.float32),
    }
