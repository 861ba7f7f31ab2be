"""The per-layer router baseline (FlexiDepth-like) over any segment backend.

Every layer but the last has a router and an adapter (DySL modules over the last-layer-only plan:
``skip_probability(i, x)`` is layer i's router, ``adapt(i, x)`` maps x_i to an estimate of x_{i+1}).
Each layer independently runs or, when its router says p >= threshold, is replaced by its adapter;
the last layer always runs. No continuity, no allow points, no verification: the baseline DySL's
trajectory-aware skipping is compared with. Pure Python over the ``SegmentBackend`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from dysl_ros.core.runner import FloatArray, ModelInputs, SegmentBackend, skips

T = TypeVar("T")


@dataclass(frozen=True)
class RouterTrace:
    executed_layers: tuple[int, ...]
    """Backbone layers that ran, in order (the last layer always)."""
    routed_layers: tuple[int, ...]
    """Layers replaced by their adapter."""

    @property
    def routers_consulted(self) -> int:
        return len(self.executed_layers) + len(self.routed_layers) - 1


def run_router_path(
    backend: SegmentBackend[T], inputs: ModelInputs, threshold: float, *, num_layers: int
) -> tuple[FloatArray, RouterTrace]:
    """One forward pass: layer i < num_layers - 1 runs unless ``skip_probability(i, x) >= threshold``,
    in which case ``adapt(i, x)`` stands in for it; layer ``num_layers - 1`` always runs."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    x = backend.embed(inputs)
    executed: list[int] = []
    routed: list[int] = []
    for layer in range(num_layers - 1):
        if skips(backend, layer, x, threshold):
            x = backend.adapt(layer, x)
            routed.append(layer)
        else:
            x = backend.run_layers(layer, layer + 1, x)
            executed.append(layer)
    x = backend.run_layers(num_layers - 1, num_layers, x)
    executed.append(num_layers - 1)
    return backend.head(x), RouterTrace(tuple(executed), tuple(routed))
