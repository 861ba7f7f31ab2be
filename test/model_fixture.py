"""Small randomly initialised model directories for tests: the node and the runtime behave the same
whatever the weights are, and a tiny model keeps CI fast on two cores."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from dysl_ros.core.config import DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.backbone import HFLlamaVLA
from dysl_ros.model.checkpoint import save_dysl, save_model
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import DySLModules
from dysl_ros.model.spec import VLAConfig

TINY = VLAConfig(
    image_size=32, patch_size=16, instruction_tokens=16, hidden_size=32, num_layers=10, num_heads=2, ffn_size=64
)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a block: the tiny models gain nothing from threads, and on a busy 2-core
    machine OpenMP workers competing with other processes made these tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_llama_vla(num_layers: int = 4, seed: int = 1) -> HFLlamaVLA:
    """A randomly initialised Hugging Face Llama decoder stack as a VLA backbone (hidden 32, 2 heads)."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    llama = LlamaConfig(
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        vocab_size=16,
        max_position_embeddings=64,
    )
    return HFLlamaVLA.from_llama(LlamaModel(llama), image_size=32, patch_size=16, instruction_tokens=8).eval()


def randomise_adapters(modules: DySLModules, std: float = 0.5) -> None:
    """Adapters start as the identity (zero ``up``); tests that must tell an adapter path from the
    dense one give them random ``up`` weights."""
    with torch.no_grad():
        for adapter in modules.adapters.values():
            torch.nn.init.normal_(adapter.up.weight, std=std)
            torch.nn.init.normal_(adapter.up.bias, std=std)


def make_model_dir(path: Path, config: VLAConfig = TINY, seed: int = 0, static_ratio: float = 0.2) -> Path:
    torch.manual_seed(seed)
    model = ReferenceVLA(config)
    similarities = np.random.default_rng(seed).uniform(0.5, 1.0, config.num_layers)
    plan = LayerPlan.from_similarities(similarities.tolist(), static_ratio)
    modules = DySLModules(config.hidden_size, plan)
    save_model(model, path, dtype=torch.float32)
    save_dysl(path, plan, modules, DySLConfig(static_ratio=static_ratio), dtype=torch.float32)
    return path
