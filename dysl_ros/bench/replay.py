"""Replaying DySL decisions over any segment backend, timed: the core of `dysl_bench latency`.

No torch, ONNX or ROS here: the backend is a ``SegmentBackend`` and the tensor type stays opaque.

A replayed pass issues exactly the backend calls ``dysl_ros.core.runner.run_path`` issues for the
recorded path: per gap, the forced prefix ``run_layers(gap.start, allow)`` in one call, then from the
allow point on ``skip_probability(layer)`` (the controller runs: its cost counts) followed by
``run_layers(layer, layer + 1)`` or, at the recorded skip layer, ``adapt(layer)`` and the jump, then
``run_layers(static, static + 1)``; ``embed`` before and ``head`` after. The skip decision is the
recorded one, not the controller's answer (latency must not depend on the observation's content).

Re-run ticks (post-skip verification that re-ran densely) cost what ``DySLRunner.step`` runs: the
skipping pass with the recorded allow points and ``discarded_skipped_from``, then the dense rest from
its first skip on (``run_layers(skip, static + 1)`` for that gap, every later gap whole) and a second
``head``. A ``dysl-decision-trace/1`` file did not record where the discarded pass jumped; on its
re-run ticks the skipping pass is replayed without skipping (controllers consulted up to every static
layer) and then a full dense pass with its own ``embed``: an upper bound of the cost, as that version
of the runner re-ran from the embedding.

Mapping a trace onto another layer plan (the 7B-shaped synthetic backbone replays a reference-model
trace): each target gap takes the decisions of the source gap that contains the target gap's middle
(by relative depth, layer ``i`` of ``L`` covering ``[i/L, (i+1)/L)``); allow point and skip layer are
carried as fractions of the gap's length (``allow = start + round(f_allow * len)``, ``skip = start +
floor(f_skip * len)``, clamped to ``[allow, static - 1]``). The share of each gap that runs is kept,
so the mean executed fraction of the dynamic layers is preserved up to rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from dysl_ros.bench.trace import DecisionTrace, TickDecision
from dysl_ros.core.layer_plan import Gap, LayerPlan
from dysl_ros.core.runner import FloatArray, ModelInputs, SegmentBackend, run_dense_rest

T = TypeVar("T")

SYNTHETIC_PATTERNS = ("half", "static-only", "no-skip")
"""Skip patterns derived from the layer plan alone (no recorded trace), every tick the same:
``half``: controllers consulted from each gap's start, the skip taken half-way through the gap (the
first ``len // 2`` dynamic layers run); ``static-only``: the skip taken at each gap's first layer
(only static layers run: DySL's best case); ``no-skip``: controllers consulted everywhere, nothing
skipped (DySL's overhead over dense)."""


class TraceError(ValueError):
    """A decision trace is unreadable or does not fit the model's layer plan; the message says why."""


def _noop() -> None:
    return None


@dataclass(frozen=True)
class PassCount:
    """Backend calls of one pass."""

    executed_layers: int
    controllers: int
    adapters: int


@dataclass(frozen=True)
class TickTiming:
    """One replayed tick. Times in seconds; ``backbone_s`` sums layers + controllers + adapters of
    every pass of the tick, ``tick_s`` spans preprocess to the final head (re-run included)."""

    preprocess_s: float
    embed_s: float
    backbone_s: float
    head_s: float
    tick_s: float
    executed_layers: int
    """Layers on the path of the chunk the tick returns (the dense pass on re-run ticks), as
    ``TickResult.executed_layers``."""
    layer_evaluations: int
    """Every layer run this tick, the discarded skipping pass of a re-run included."""
    controllers: int
    adapters: int
    reran: bool
    rerun_upper_bound: bool = False
    """A re-run tick of a version-1 trace, replayed as a skipping pass without skips plus a whole
    dense pass (where the discarded pass jumped was not recorded)."""


def dense_decision(plan: LayerPlan) -> TickDecision:
    """What ``DySLRunner(dense=True)`` does every tick: allow points at the static layers."""
    return TickDecision(tuple(g.static for g in plan.gaps), tuple(None for _ in plan.gaps), False, False)


def replay_pass(
    backend: SegmentBackend[T],
    x: T,
    gaps: Sequence[Gap],
    allow_points: Sequence[int],
    skipped_from: Sequence[int | None],
) -> tuple[T, PassCount, tuple[int, int, T] | None]:
    """The backbone part of one pass (hidden states in and out), as ``run_path`` calls it; also the
    first skip's (gap index, layer, hidden state entering it), where a dense re-run resumes."""
    executed = controllers = adapters = 0
    first_skip: tuple[int, int, T] | None = None
    for index, (gap, allow, skip) in enumerate(zip(gaps, allow_points, skipped_from, strict=True)):
        x = backend.run_layers(gap.start, allow, x)  # forced prefix
        executed += allow - gap.start
        layer = allow
        while layer < gap.static:
            backend.skip_probability(layer, x)  # its cost counts; the decision is the recorded one
            controllers += 1
            if layer == skip:
                if first_skip is None:
                    first_skip = (index, layer, x)
                x = backend.adapt(layer, x)
                adapters += 1
                break
            x = backend.run_layers(layer, layer + 1, x)
            executed += 1
            layer += 1
        x = backend.run_layers(gap.static, gap.static + 1, x)
        executed += 1
    return x, PassCount(executed, controllers, adapters), first_skip


def replay_tick(
    backend: SegmentBackend[T],
    preprocess: Callable[[], ModelInputs],
    gaps: Sequence[Gap],
    decision: TickDecision,
    *,
    synchronize: Callable[[], None] = _noop,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[FloatArray, TickTiming]:
    """Replay one tick: preprocess, embed, the recorded path, head, and on ``reran`` the dense re-run.

    ``synchronize`` waits for the device (CUDA backends: queued kernels) before a clock is read
    between segments; ``head`` returns host memory, so the tick's end needs none. ``decision`` must
    fit ``gaps`` (see ``check_trace``)."""
    resume = decision.reran and decision.discarded_skipped_from is not None
    first_skips = decision.discarded_skipped_from if resume else decision.skipped_from
    assert first_skips is not None
    start = clock()
    inputs = preprocess()
    preprocess_s = clock() - start

    t0 = clock()
    x = backend.embed(inputs)
    synchronize()
    t1 = clock()
    x, count, first_skip = replay_pass(backend, x, gaps, decision.allow_points, first_skips)
    synchronize()
    t2 = clock()
    chunk = backend.head(x)
    t3 = clock()
    embed_s, backbone_s, head_s = t1 - t0, t2 - t1, t3 - t2
    executed, evaluations = count.executed_layers, count.executed_layers
    controllers, adapters = count.controllers, count.adapters

    if decision.reran:
        t0 = clock()
        if resume:
            assert first_skip is not None  # check_trace: a re-run's discarded pass skipped somewhere
            t1 = t0
            x, rest = run_dense_rest(backend, gaps, *first_skip)
            executed = gaps[-1].static + 1  # the kept chunk's path is dense
            evaluations += len(rest)
        else:  # version-1 trace: a whole second pass, embedding included
            x = backend.embed(inputs)
            synchronize()
            t1 = clock()
            x, dense_count, _ = replay_pass(backend, x, gaps, [g.static for g in gaps], [None] * len(gaps))
            executed = dense_count.executed_layers
            evaluations += executed
            controllers += dense_count.controllers
        synchronize()
        t2 = clock()
        chunk = backend.head(x)
        t3 = clock()
        embed_s += t1 - t0
        backbone_s += t2 - t1
        head_s += t3 - t2
    return chunk, TickTiming(
        preprocess_s=preprocess_s,
        embed_s=embed_s,
        backbone_s=backbone_s,
        head_s=head_s,
        tick_s=clock() - start,
        executed_layers=executed,
        layer_evaluations=evaluations,
        controllers=controllers,
        adapters=adapters,
        reran=decision.reran,
        rerun_upper_bound=decision.reran and not resume,
    )


def executed_layers(plan: LayerPlan, decision: TickDecision) -> int:
    """Layers on the path of the chunk a tick returns (dense on re-run ticks)."""
    if decision.reran:
        return plan.num_layers
    return sum(
        (gap.static - gap.start if skip is None else skip - gap.start) + 1
        for gap, skip in zip(plan.gaps, decision.skipped_from, strict=True)
    )


def load_trace(path: str | Path) -> DecisionTrace:
    """``DecisionTrace.load`` with every malformation turned into a TraceError naming the file."""
    try:
        trace = DecisionTrace.load(path)
    except (KeyError, TypeError, AttributeError) as exc:
        raise TraceError(f"decision trace {path} is malformed: missing or bad field {exc}") from exc
    except ValueError as exc:
        raise TraceError(str(exc)) from exc
    if not trace.ticks:
        raise TraceError(f"decision trace {path} has no ticks")
    return trace


def trace_plan(trace: DecisionTrace) -> LayerPlan:
    """The layer plan the trace was recorded with."""
    try:
        return LayerPlan(trace.num_layers, tuple(trace.static_layers))
    except ValueError as exc:
        raise TraceError(f"decision trace of {trace.model!r}: bad layer plan: {exc}") from exc


def check_trace(trace: DecisionTrace, plan: LayerPlan, source: str = "decision trace") -> None:
    """Raise TraceError unless every tick of ``trace`` is a valid path through ``plan``."""
    if trace.num_layers != plan.num_layers or tuple(trace.static_layers) != plan.static_layers:
        raise TraceError(
            f"{source} was recorded on a model with {trace.num_layers} layers, static {list(trace.static_layers)}; "
            f"this model has {plan.num_layers} layers, static {list(plan.static_layers)}. Record a trace with this "
            "model (dysl_bench closed-loop --record-trace)"
        )
    gaps = plan.gaps
    for index, tick in enumerate(trace.ticks):
        where = f"{source}, tick {index}"
        if len(tick.allow_points) != len(gaps):
            raise TraceError(f"{where}: {len(tick.allow_points)} allow points for {len(gaps)} gaps")
        for number, (gap, allow) in enumerate(zip(gaps, tick.allow_points, strict=True)):
            if not gap.start <= allow <= gap.static:
                raise TraceError(f"{where}, gap {number}: allow point {allow} outside [{gap.start}, {gap.static}]")
        _check_skips(where, "skipped_from", gaps, tick.allow_points, tick.skipped_from)
        if tick.reran and not tick.verified:
            raise TraceError(f"{where}: reran without verified")
        if tick.discarded_skipped_from is not None:
            if not tick.reran:
                raise TraceError(f"{where}: discarded_skipped_from on a tick that did not re-run")
            _check_skips(where, "discarded_skipped_from", gaps, tick.allow_points, tick.discarded_skipped_from)
            if all(skip is None for skip in tick.discarded_skipped_from):
                raise TraceError(f"{where}: re-run after a pass that skipped nothing (the runner does not re-run it)")


def _check_skips(
    where: str, name: str, gaps: Sequence[Gap], allow_points: Sequence[int], skips: Sequence[int | None]
) -> None:
    if len(skips) != len(gaps):
        raise TraceError(f"{where}: {len(skips)} {name} entries for {len(gaps)} gaps")
    for number, (gap, allow, skip) in enumerate(zip(gaps, allow_points, skips, strict=True)):
        if skip is not None and not allow <= skip < gap.static:
            raise TraceError(
                f"{where}, gap {number}: {name} layer {skip} outside [{allow}, {gap.static - 1}] "
                "(between the allow point and the static layer)"
            )


def synthetic_decisions(plan: LayerPlan, pattern: str) -> list[TickDecision]:
    """One tick of a plan-derived pattern (see SYNTHETIC_PATTERNS); replayed every tick."""
    if pattern not in SYNTHETIC_PATTERNS:
        raise ValueError(f"unknown skip pattern {pattern!r}; known: {list(SYNTHETIC_PATTERNS)}")
    allow = tuple(g.start for g in plan.gaps)
    skips: list[int | None] = []
    for gap in plan.gaps:
        if pattern == "no-skip" or len(gap) == 0:
            skips.append(None)
        elif pattern == "static-only":
            skips.append(gap.start)
        else:
            skips.append(gap.start + len(gap) // 2)
    return [TickDecision(allow, tuple(skips), False, False)]


def _source_gap(source: LayerPlan, target: LayerPlan, gap: Gap) -> int:
    middle = (gap.start + gap.static + 1) / 2 / target.num_layers  # relative depth of the gap's middle
    for index, candidate in enumerate(source.gaps):
        if middle < (candidate.static + 1) / source.num_layers:
            return index
    return len(source.gaps) - 1


def map_decision(source: LayerPlan, target: LayerPlan, decision: TickDecision) -> TickDecision:
    """A decision on ``source``'s gaps carried onto ``target``'s (see the module docstring)."""
    allow_points: list[int] = []
    skipped_from: list[int | None] = []
    discarded: list[int | None] = []
    for gap in target.gaps:
        index = _source_gap(source, target, gap)
        origin = source.gaps[index]
        if len(origin) == 0:
            allow_fraction = 1.0
        else:
            allow_fraction = (decision.allow_points[index] - origin.start) / len(origin)
        allow = min(gap.static, gap.start + round(allow_fraction * len(gap)))
        skip = _map_skip(origin, gap, decision.skipped_from[index])
        lost = None if decision.discarded_skipped_from is None else decision.discarded_skipped_from[index]
        discarded_skip = _map_skip(origin, gap, lost)
        if skip is not None or discarded_skip is not None:
            allow = min(allow, gap.static - 1)
        allow_points.append(allow)
        skipped_from.append(None if skip is None else max(allow, skip))
        discarded.append(None if discarded_skip is None else max(allow, discarded_skip))
    return TickDecision(
        tuple(allow_points),
        tuple(skipped_from),
        decision.verified,
        decision.reran,
        None if decision.discarded_skipped_from is None else tuple(discarded),
    )


def _map_skip(origin: Gap, gap: Gap, skip: int | None) -> int | None:
    """A skip layer of ``origin`` at the same fraction of ``gap`` (before clamping to the allow point)."""
    if skip is None or len(gap) == 0:
        return None
    return gap.start + min(math.floor((skip - origin.start) / len(origin) * len(gap)), len(gap) - 1)


def map_trace(trace: DecisionTrace, target: LayerPlan) -> DecisionTrace:
    """``trace`` (checked against its own plan) carried onto ``target``."""
    source = trace_plan(trace)
    check_trace(trace, source)
    mapped = [map_decision(source, target, tick) for tick in trace.ticks]
    name = f"{trace.model} mapped onto {target.num_layers} layers"
    return DecisionTrace(name, target.num_layers, target.static_layers, mapped)
