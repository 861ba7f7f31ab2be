"""Segment names, tensor names and shapes shared by the exporter and the engine backends (no torch
here: loading and running engines must not need the exporter)."""

from __future__ import annotations

from dysl_ros.model.spec import VLAConfig

EMBED = "embed"
HEAD = "head"
EMBED_INPUTS = ("image", "instruction", "proprio")
HIDDEN_INPUT = "hidden"
HIDDEN_OUTPUT = "hidden_out"
SKIP_OUTPUT = "skip_probability"
ACTIONS_OUTPUT = "actions"


def _index(layer: int, num_layers: int) -> str:
    # Zero-padded to the widest index so file listings sort in layer order.
    return f"{layer:0{max(2, len(str(num_layers - 1)))}d}"


def layer_segment(layer: int, num_layers: int) -> str:
    return f"layer_{_index(layer, num_layers)}"


def adapter_segment(layer: int, num_layers: int) -> str:
    return f"adapter_{_index(layer, num_layers)}"


def controller_segment(layer: int, num_layers: int) -> str:
    return f"controller_{_index(layer, num_layers)}"


def segment_shapes(config: VLAConfig) -> dict[str, list[int]]:
    """Every tensor shape an engine set is built for (batch 1, fixed token count)."""
    return {
        "image": [1, 3, config.image_size, config.image_size],
        "instruction": [1, config.instruction_tokens],
        "proprio": [1, config.proprio_dim],
        "hidden": [1, config.num_tokens, config.hidden_size],
        "skip_probability": [1],
        "actions": [1, config.chunk_len, config.action_dim],
    }
