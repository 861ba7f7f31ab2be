"""Segment names, tensor names and shapes shared by the exporter and the engine backends (no torch
here: loading and running engines must not need the exporter)."""

from __future__ import annotations

from dysl_ros.model.observation_spec import BackboneDims, ObservationSpec

EMBED = "embed"
HEAD = "head"
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


def segment_shapes(spec: ObservationSpec, dims: BackboneDims) -> dict[str, list[int]]:
    """Every tensor shape an engine set is built for (batch 1, fixed token count): the embed's
    inputs (one per camera, ``instruction``, ``proprio``), hidden states, controller and head outputs."""
    shapes = {name: shape for name, (shape, _) in spec.input_shapes().items()}
    shapes.update(
        {
            HIDDEN_INPUT: [1, dims.num_tokens, dims.hidden_size],
            SKIP_OUTPUT: [1],
            ACTIONS_OUTPUT: [1, spec.horizon, spec.action_dim],
        }
    )
    return shapes
