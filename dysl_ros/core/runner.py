"""One DySL inference tick over any segment backend.

A backend runs the compiled (or eager) segments: embed, runs of layers, adapters, controllers, head.
This module decides which segments run: forced layers in front of each allow point, controllers
from the allow point on (skip -> adapter -> the gap's static layer), post-skip verification, then
continuity and allow-point updates. It knows nothing of torch, ONNX or ROS; the tensor type of a
backend is opaque here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Mapping, Protocol, Sequence, TypeVar

import numpy as np
import numpy.typing as npt

from dysl_ros.core.allow_points import AllowPoints
from dysl_ros.core.config import DySLConfig
from dysl_ros.core.continuity import ContinuityMonitor, ContinuityReading, MonitorState, is_first_drop
from dysl_ros.core.layer_plan import Gap, LayerPlan

T = TypeVar("T")
FloatArray = npt.NDArray[np.float32]
ModelInputs = Mapping[str, npt.NDArray[np.generic]]


class SegmentBackend(Protocol[T]):
    """What an executor must provide. ``layer`` indices are backbone layer indices."""

    name: str

    def embed(self, inputs: ModelInputs) -> T:
        """Observation tensors (see ``dysl_ros.model.preprocess``) -> hidden states."""
        ...

    def run_layers(self, start: int, stop: int, x: T) -> T:
        """Backbone layers ``start .. stop-1`` in order (identity when start == stop)."""
        ...

    def adapt(self, layer: int, x: T) -> T:
        """Adapter of dynamic layer ``layer``: its input -> estimate of its gap's static-layer input."""
        ...

    def skip_probability(self, layer: int, x: T) -> float:
        """Controller of dynamic layer ``layer`` on its input."""
        ...

    def head(self, x: T) -> FloatArray:
        """Hidden states -> action chunk (chunk_len, action_dim), normalised actions."""
        ...


@dataclass(frozen=True)
class PathTrace:
    executed_layers: tuple[int, ...]
    skipped_from: tuple[int | None, ...]
    """Per gap: the dynamic layer whose adapter jumped to the static layer, or None."""
    controllers_consulted: int

    @property
    def skipped_any(self) -> bool:
        return any(s is not None for s in self.skipped_from)


@dataclass(frozen=True)
class DensePrefix(Generic[T]):
    """Where a skipping pass first left the dense path: the hidden state entering dynamic layer
    ``layer`` of gap ``gap_index``, before its adapter ran. Every layer before it ran exactly as in the
    dense pass, so a dense re-run (post-skip verification) resumes here instead of at the embedding."""

    gap_index: int
    layer: int
    hidden: T
    executed_layers: tuple[int, ...]


def skips(backend: SegmentBackend[T], layer: int, x: T, skip_threshold: float) -> bool:
    """Dynamic layer ``layer``'s controller, consulted on ``x``, says skip (p >= the threshold)."""
    return backend.skip_probability(layer, x) >= skip_threshold


def run_path(
    backend: SegmentBackend[T],
    inputs: ModelInputs,
    gaps: Sequence[Gap],
    allow_points: Sequence[int],
    skip_threshold: float,
) -> tuple[FloatArray, PathTrace]:
    """Run one forward pass with the given allow points (each in ``[gap.start, gap.static]``)."""
    chunk, trace, _ = run_path_keeping_prefix(backend, inputs, gaps, allow_points, skip_threshold)
    return chunk, trace


def run_path_keeping_prefix(
    backend: SegmentBackend[T],
    inputs: ModelInputs,
    gaps: Sequence[Gap],
    allow_points: Sequence[int],
    skip_threshold: float,
) -> tuple[FloatArray, PathTrace, DensePrefix[T] | None]:
    """``run_path``, also returning the dense prefix of a pass that skipped (None if it skipped nothing)."""
    x = backend.embed(inputs)
    executed: list[int] = []
    skipped_from: list[int | None] = []
    prefix: DensePrefix[T] | None = None
    consulted = 0
    for index, (gap, allow) in enumerate(zip(gaps, allow_points, strict=True)):
        x = backend.run_layers(gap.start, allow, x)  # forced prefix
        executed.extend(range(gap.start, allow))
        jumped: int | None = None
        layer = allow
        while layer < gap.static:
            consulted += 1
            if skips(backend, layer, x, skip_threshold):
                if prefix is None:
                    prefix = DensePrefix(index, layer, x, tuple(executed))
                x = backend.adapt(layer, x)
                jumped = layer
                break
            x = backend.run_layers(layer, layer + 1, x)
            executed.append(layer)
            layer += 1
        x = backend.run_layers(gap.static, gap.static + 1, x)
        executed.append(gap.static)
        skipped_from.append(jumped)
    chunk = backend.head(x)
    return chunk, PathTrace(tuple(executed), tuple(skipped_from), consulted), prefix


def run_dense_rest(
    backend: SegmentBackend[T], gaps: Sequence[Gap], gap_index: int, layer: int, x: T
) -> tuple[T, list[int]]:
    """The dense pass from dynamic layer ``layer`` of gap ``gap_index`` on (``x`` entering it) to the
    last layer; returns the hidden state and the layers run. Shared by the runner and the replay."""
    executed: list[int] = []
    for index in range(gap_index, len(gaps)):
        start = layer if index == gap_index else gaps[index].start
        x = backend.run_layers(start, gaps[index].static + 1, x)
        executed.extend(range(start, gaps[index].static + 1))
    return x, executed


def finish_dense(
    backend: SegmentBackend[T], gaps: Sequence[Gap], prefix: DensePrefix[T]
) -> tuple[FloatArray, PathTrace]:
    """The dense pass from a skipping pass's ``prefix`` on: the chunk a dense pass gives, for the
    layers from ``prefix.layer`` to the last only. The backend must not have overwritten
    ``prefix.hidden`` (a skipping pass never runs a layer again after it left the dense path)."""
    x, rest = run_dense_rest(backend, gaps, prefix.gap_index, prefix.layer, prefix.hidden)
    executed = prefix.executed_layers + tuple(rest)
    return backend.head(x), PathTrace(executed, tuple(None for _ in gaps), 0)


@dataclass(frozen=True)
class TickResult:
    chunk: FloatArray
    """(chunk_len, action_dim) normalised actions that should be executed."""
    executed_layers: int
    """Backbone layers on the path that produced ``chunk``."""
    layer_evaluations: int
    """All backbone layers run this tick, a discarded skipping pass included."""
    allow_points: tuple[int, ...]
    """Allow points used for this tick's (first) pass."""
    next_allow_points: tuple[int, ...]
    skipped_from: tuple[int | None, ...]
    controllers_consulted: int
    continuity: float
    delta: float
    verified: bool
    """Post-skip verification fired (first step of a continuity drop)."""
    reran: bool
    """Verification re-ran densely (False if the skipping pass had skipped nothing)."""
    discarded_skipped_from: tuple[int | None, ...] | None = None
    """On a re-run tick, where the discarded skipping pass jumped per gap (the dense re-run resumed
    at the first of these); None on every other tick."""


class DySLRunner(Generic[T]):
    """Stateful per-episode driver: call ``step`` once per inference, ``reset`` between episodes.

    ``withdraw_last`` takes back the last step's effect on continuity and allow points, for a chunk
    that was computed but never executed (the node drops one whose image aged past its limit).

    ``dense=True`` never skips (every allow point at its static layer) but keeps the same telemetry:
    that is the dense baseline run through identical code.
    """

    def __init__(
        self,
        backend: SegmentBackend[T],
        plan: LayerPlan,
        config: DySLConfig,
        *,
        dense: bool = False,
    ) -> None:
        self.backend = backend
        self.plan = plan
        self.config = config
        self.dense = dense
        self.gaps = plan.gaps
        self.allow = AllowPoints(plan, config.eta)
        self.monitor = ContinuityMonitor(config.k)
        self._before_last_step: tuple[MonitorState, tuple[int, ...]] | None = None
        self.reset()

    def reset(self) -> None:
        self._before_last_step = None
        self.monitor.reset()
        if self.dense:
            self.allow.close_all()
        else:
            self.allow.reset()

    def forward(self, inputs: ModelInputs, allow_points: Sequence[int]) -> tuple[FloatArray, PathTrace]:
        """One pass with explicit allow points, no state change."""
        return run_path(self.backend, inputs, self.gaps, allow_points, self.config.skip_threshold)

    def dense_forward(self, inputs: ModelInputs) -> FloatArray:
        chunk, _ = self.forward(inputs, [gap.static for gap in self.gaps])
        return chunk

    def step(self, inputs: ModelInputs, execute: slice | None = None) -> TickResult:
        """One tick. ``execute`` selects the chunk's actions that will be executed (default: all);
        they are what the continuity history records."""
        used_points = self.allow.points
        chunk, trace, prefix = run_path_keeping_prefix(
            self.backend, inputs, self.gaps, used_points, self.config.skip_threshold
        )
        evaluations = len(trace.executed_layers)
        reading = self.monitor.preview(_executed(chunk, execute))

        verified = (
            self.config.enable_post_verify
            and not self.dense
            and is_first_drop(reading.delta, self.monitor.last_delta, self.config.eta_verify)
        )
        reran = False
        discarded: tuple[int | None, ...] | None = None
        if verified and prefix is not None:
            # The chunk may be the first critical action, computed with skipping: redo it densely
            # and let the dense chunk drive continuity and the allow points. Everything before the
            # first skip already ran as the dense pass would, so the re-run resumes there: the
            # worst tick costs about one dense pass plus the controllers, not two passes.
            discarded = trace.skipped_from
            chunk, trace = finish_dense(self.backend, self.gaps, prefix)
            evaluations += len(trace.executed_layers) - len(prefix.executed_layers)
            reading = self.monitor.preview(_executed(chunk, execute))
            reran = True

        reading = self._commit(chunk, execute, reading)
        return TickResult(
            chunk=chunk,
            executed_layers=len(trace.executed_layers),
            layer_evaluations=evaluations,
            allow_points=used_points,
            next_allow_points=self.allow.points,
            skipped_from=trace.skipped_from,
            controllers_consulted=trace.controllers_consulted,
            continuity=reading.continuity,
            delta=reading.delta,
            verified=verified,
            reran=reran,
            discarded_skipped_from=discarded,
        )

    def withdraw_last(self) -> None:
        """Undo the last ``step``'s push to the continuity history and its allow-point move: its
        chunk was not executed, so the history must keep following the actions actually executed."""
        if self._before_last_step is None:
            raise RuntimeError("no step to withdraw: none since the last reset, or it was withdrawn already")
        monitor_state, points = self._before_last_step
        self.monitor.restore(monitor_state)
        self.allow.set(points)
        self._before_last_step = None

    def _commit(self, chunk: FloatArray, execute: slice | None, expected: ContinuityReading) -> ContinuityReading:
        self._before_last_step = (self.monitor.snapshot(), self.allow.points)
        reading = self.monitor.push(_executed(chunk, execute))
        assert reading == expected  # preview and push must agree, or verification saw another world
        if self.config.enable_pre_skip and not self.dense:
            self.allow.update(reading.delta)
        return reading


def _executed(chunk: FloatArray, execute: slice | None) -> FloatArray:
    selected = chunk if execute is None else chunk[execute]
    if len(selected) == 0:
        raise ValueError(f"execute={execute} selects no action of a {len(chunk)}-action chunk")
    return selected
