"""A DySL tick as one straight-line program of conditional steps: what a device captures once and
replays every tick without asking the host at each consulted controller.

The design of a backend that does not exist yet (CUDA graph conditional nodes, docs/engines.md
"The whole tick on the GPU"): the reference semantics its device code will be held to, here beside
the backends rather than in ``core`` (which holds what every robot runs; nothing runs this yet).

The runner (``runner.run_path``) decides on the host: each consulted controller's probability comes
back to the CPU before the next segment can be chosen, one device sync per controller. Here the
same pass is a fixed sequence of steps over a little state that lives beside the hidden states:

    per gap g:  allow[g]    the allow point, written by the host before the tick (from continuity)
                active[g]   1 while the pass is still on gap g's layers, 0 once it jumped
                skipped[g]  the dynamic layer it jumped from, or -1

    EMBED
    for each gap g, for each dynamic layer i of g:
        CONSULT i   if active[g] and i >= allow[g]: p = controller_i(h);
                    if p >= threshold: adapter_i (writes the static layer's input); active[g] = 0; skipped[g] = i
        LAYER i     if active[g]: layer_i
    STATIC s_g      layer s_g, always (its input is where either path left it)
    HEAD

Every branch is a flag test, so the program maps onto CUDA graph conditional nodes (an IF node per
CONSULT and per LAYER, its condition set by a one-element kernel from the flags and the controller's
output): one replay per tick, and the host reads ``skipped`` and the chunk once at the end. Hidden
states flow through the same per-boundary buffers the CUDA-graph and TensorRT backends use (layer i
reads boundary i, writes i + 1; adapter i writes its static layer's boundary), so no step moves data.

``execute`` interprets the program over any segment backend; it equals the runner's ``run_path``
for every allow point and decision (tested) and takes the skip decision from it (``skips``). No
torch or ROS here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import FloatArray, ModelInputs, PathTrace, SegmentBackend, skips

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    op: str
    """``embed``, ``consult``, ``layer``, ``static`` or ``head``."""
    layer: int = -1
    gap: int = -1


def tick_program(plan: LayerPlan) -> tuple[Step, ...]:
    """The steps of one tick for ``plan``, in the order a device runs them."""
    steps = [Step("embed")]
    for index, gap in enumerate(plan.gaps):
        for layer in gap.dynamic_layers:
            steps += [Step("consult", layer, index), Step("layer", layer, index)]
        steps.append(Step("static", gap.static, index))
    steps.append(Step("head"))
    return tuple(steps)


def execute(
    program: Sequence[Step],
    backend: SegmentBackend[T],
    inputs: ModelInputs,
    allow_points: Sequence[int],
    skip_threshold: float,
) -> tuple[FloatArray, PathTrace]:
    """Run ``program`` as a device would, flags and all; the chunk and the path taken."""
    gaps = max((step.gap for step in program), default=-1) + 1
    if len(allow_points) != gaps:
        raise ValueError(f"{len(allow_points)} allow points for {gaps} gaps")
    active = [True] * gaps
    skipped: list[int | None] = [None] * gaps
    executed: list[int] = []
    consulted = 0
    x: T | None = None
    chunk: FloatArray | None = None
    for step in program:
        if step.op == "embed":
            x = backend.embed(inputs)
            continue
        assert x is not None, "the program must start with embed"
        if step.op == "consult":
            if active[step.gap] and step.layer >= allow_points[step.gap]:
                consulted += 1
                if skips(backend, step.layer, x, skip_threshold):
                    x = backend.adapt(step.layer, x)
                    active[step.gap], skipped[step.gap] = False, step.layer
        elif step.op == "layer":
            if active[step.gap]:
                x = backend.run_layers(step.layer, step.layer + 1, x)
                executed.append(step.layer)
        elif step.op == "static":
            x = backend.run_layers(step.layer, step.layer + 1, x)
            executed.append(step.layer)
        elif step.op == "head":
            chunk = backend.head(x)
        else:
            raise ValueError(f"unknown step {step.op!r}")
    if chunk is None:
        raise ValueError("the program must end with head")
    return chunk, PathTrace(tuple(executed), tuple(skipped), consulted)
