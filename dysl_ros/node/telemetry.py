"""What dysl_node says about itself and publishes besides commands: its counters (``Stats``), the
model-space chunk message, one ``~/dysl_tick`` status per inference, and the ``/diagnostics`` values
(keys listed in docs/node.md). Message building only: the node decides when.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dysl_ros.action_queue import stamp_label
from dysl_ros.core.runner import TickResult

SLICE_WINDOW = 100
LATENCY_WINDOW = 500
DIAGNOSTICS_NAME = "dysl_node: inference"


@dataclass
class Stats:
    rejected: dict[str, int] = field(default_factory=dict)
    images_received: int = 0
    images_stale: int = 0
    images_skewed: int = 0
    """Ticks that waited because the cameras' newest images lay more than max_camera_skew_ms apart."""
    ticks: int = 0
    verifications: int = 0
    reruns: int = 0
    chunks_published: int = 0
    tick_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    executed_layers: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    slice_match: deque[bool] = field(default_factory=lambda: deque(maxlen=SLICE_WINDOW))
    """Per chunk: the predicted executed slice (continuity history) equalled what the stream sent."""
    last_image_age_ms: float = float("nan")
    last_continuity: float = float("nan")
    last_delta: float = float("nan")
    last_allow_points: tuple[int, ...] = ()
    waiting_for: str = "configure"
    chunks_non_finite: int = 0
    """Chunks dropped because the model's output held NaN or inf."""
    ticks_failed: int = 0
    """Inferences that raised (nothing published for their image)."""
    failures_in_row: int = 0

    def expected_latency_s(self, warmup_ms: list[float]) -> float:
        """The median of the last ten ticks (the warm-up's until ticks have run)."""
        recent = list(self.tick_ms)[-10:] or warmup_ms
        return float(np.median(recent)) / 1000.0 if recent else 0.0

    def record_tick(self, tick: TickResult, tick_ms: float) -> None:
        self.ticks += 1
        self.tick_ms.append(tick_ms)
        self.executed_layers.append(tick.layer_evaluations)
        self.verifications += int(tick.verified)
        self.reruns += int(tick.reran)
        self.last_continuity, self.last_delta = tick.continuity, tick.delta
        self.last_allow_points = tick.next_allow_points


def configured_report(
    params: Any, policy: Any, low: npt.NDArray[np.float64], limits: Any, topic: str, scheduling: str,
    cameras: dict[str, str],
) -> tuple[list[str], list[str]]:
    """What configure says: (warnings, info lines). ``params``: NodeParams; ``policy``: DySLPolicy;
    ``limits``: the command joints' JointLimits or None; ``cameras``: camera -> resolved topic."""
    from dysl_ros.node.params import DYSL_FROM_MODEL

    spec, warnings = policy.spec, []
    if params.stream_priority and not scheduling.startswith("SCHED_FIFO"):
        warnings.append(f"action stream: {scheduling}")
    if not np.all(np.isfinite(low)):
        warnings.append(
            "the model's observation spec states no action range: ~/action_chunk and ~/action are not clamped "
            "(set action_low / action_high, or actions.range in observation_spec.yaml)"
        )
    lines = [
        f"configured: model {params.model_dir} on {policy.backend_name} ({params.device}, {params.precision}), "
        f"{'dense' if params.dense else 'DySL'}, static layers {list(policy.plan.static_layers)}, "
        f"{params.control_rate_hz:g} Hz actions on {topic} ({scheduling}), re-plan at "
        f"{params.replan_threshold} of {spec.horizon} queued, {params.chunk_aggregation} aggregation; "
        f"cameras {', '.join(f'{name} on {path}' for name, path in cameras.items())}"
    ]
    if limits is not None:
        step = f", max_step {params.max_step:g}" if params.max_step > 0 else ""
        lines.append(f"joint limits{step}: {limits.describe()}")
    if not params.dense:
        dysl = policy.runner.config
        settings = ", ".join(
            f"{name} {getattr(dysl, name):g} ({'parameter' if name in params.dysl_overrides else 'model'})"
            for name in DYSL_FROM_MODEL
        )
        lines.append(f"DySL settings: {settings}")
    return warnings, lines


def duration_msg(nanoseconds: int) -> Duration:
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def chunk_message(names: list[str], stamp: Any, actions: npt.NDArray[np.float64], dt: float) -> JointTrajectory:
    """``~/action_chunk``: the chunk in the model's action space, action k at k*dt after the image."""
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.joint_names = list(names)
    for k, action in enumerate(actions.tolist()):
        point = JointTrajectoryPoint()
        point.positions = action
        point.time_from_start = duration_msg(round(k * dt * 1e9))
        msg.points.append(point)
    return msg


def tick_status(node_name: str, image_stamp_ns: int, tick: TickResult, tick_ms: float,
                image_to_chunk_ms: float | None) -> DiagnosticStatus:
    """``~/dysl_tick``: one status per inference; ``image_to_chunk_ms`` None when the chunk was not
    published (its image had grown stale)."""
    values = {
        "image_stamp": stamp_label(image_stamp_ns),
        "tick_ms": f"{tick_ms:.3f}",
        "image_to_chunk_ms": "nan" if image_to_chunk_ms is None else f"{image_to_chunk_ms:.3f}",
        "executed_layers": str(tick.executed_layers),
        "layer_evaluations": str(tick.layer_evaluations),
        "continuity": f"{tick.continuity:.6g}",
        "delta": f"{tick.delta:.6g}",
        "allow_points": ",".join(str(p) for p in tick.allow_points),
        "verified": "true" if tick.verified else "false",
        "reran": "true" if tick.reran else "false",
        "skipped_from": ",".join("-" if s is None else str(s) for s in tick.skipped_from) or "-",
    }
    status = DiagnosticStatus(level=DiagnosticStatus.OK, name=node_name, message="")
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status


@dataclass
class NodeState:
    """What /diagnostics reports on, gathered by the node."""

    stats: Stats
    backend: str
    backend_reason: str
    dense: bool
    configured: bool
    active: bool
    enabled: bool
    fault: str
    configure_error: str
    stream: dict[str, float]
    stream_scheduling: str
    motion: str


class Diagnostics:
    """The ``/diagnostics`` status of the node; rates are over the time since the previous one."""

    def __init__(self) -> None:
        self._rate_base: tuple[float, int, int] | None = None  # (monotonic, images, ticks)

    def status(self, state: NodeState) -> DiagnosticStatus:
        stats = state.stats
        status = DiagnosticStatus(name=DIAGNOSTICS_NAME, hardware_id=state.backend)
        status.level, status.message = self._headline(state)
        now = time.monotonic()
        counts = (stats.images_received, stats.ticks)
        rates = ["nan"] * 2
        if self._rate_base is not None and now > self._rate_base[0]:
            span = now - self._rate_base[0]
            rates = [f"{(c - b) / span:.1f}" for c, b in zip(counts, self._rate_base[1:], strict=True)]
        self._rate_base = (now, *counts)
        stream, ticks, matches = state.stream, list(stats.tick_ms), list(stats.slice_match)

        def streamed(key: str, fmt: str) -> str:
            value = stream.get(key)
            return "nan" if value is None else format(value, fmt)

        values: dict[str, str] = {
            "backend": state.backend,
            "backend_reason": state.backend_reason,
            "mode": "dense" if state.dense else "dysl",
            "image_rate_hz": rates[0],
            "tick_rate_hz": rates[1],
            "action_rate_hz": streamed("rate_hz", ".1f"),
            "images_received": str(stats.images_received),
            "images_stale": str(stats.images_stale),
            "images_skewed": str(stats.images_skewed),
            "ticks": str(stats.ticks),
            "chunks_published": str(stats.chunks_published),
            "actions_published": streamed("actions_published", ".0f"),
            "stale_action_periods": streamed("stale_periods", ".0f"),
            "action_periods_late": streamed("late_periods", ".0f"),
            "actions_withdrawn": streamed("withdrawn_actions", ".0f"),
            "actions_written_past_max_age": streamed("written_past_max_age", ".0f"),
            "tick_latency_p50_ms": _percentile(ticks, 50),
            "tick_latency_p99_ms": _percentile(ticks, 99),
            "action_period_p50_ms": streamed("period_p50_ms", ".2f"),
            "action_period_jitter_p99_ms": streamed("jitter_p99_ms", ".2f"),
            "stream_scheduling": state.stream_scheduling,
            "executed_slice_match": f"{np.mean(matches):.2f}" if matches else "nan",
            "image_age_ms": f"{stats.last_image_age_ms:.1f}",
            "executed_layers_mean": f"{np.mean(stats.executed_layers):.2f}" if stats.executed_layers else "nan",
            "executed_layers_last": str(stats.executed_layers[-1]) if stats.executed_layers else "nan",
            "continuity": f"{stats.last_continuity:.5f}",
            "continuity_delta": f"{stats.last_delta:.5f}",
            "allow_points": str(list(stats.last_allow_points)),
            "verifications": str(stats.verifications),
            "verification_reruns": str(stats.reruns),
            "waiting_for": stats.waiting_for,
            "rejected_total": str(sum(stats.rejected.values())),
            "enabled": "true" if state.enabled else "false",
            "chunks_non_finite": str(stats.chunks_non_finite),
            "ticks_failed": str(stats.ticks_failed),
            "failures_in_row": str(stats.failures_in_row),
            "joint_motion": state.motion,
            "joint_stops": streamed("joint_stops", ".0f"),
            "joint_commands_refused": streamed("commands_refused", ".0f"),
            "watchdog_trips": streamed("watchdog_trips", ".0f"),
            "trajectories_late": streamed("trajectories_late", ".0f"),
            "plans_without_controller": streamed("plans_without_controller", ".0f"),
            "plans_rebased": streamed("plans_rebased", ".0f"),
        }
        values.update({f"rejected_{name}": str(count) for name, count in sorted(stats.rejected.items())})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    @staticmethod
    def _headline(state: NodeState) -> tuple[bytes, str]:
        if state.fault:
            return DiagnosticStatus.ERROR, state.fault
        if not state.enabled:
            return DiagnosticStatus.WARN, "disabled (e-stop by ~/enable): only stop commands"
        if not state.configured:
            if state.configure_error:
                return DiagnosticStatus.ERROR, f"unconfigured: {state.configure_error}"
            return DiagnosticStatus.OK, "unconfigured"
        if not state.active:
            return DiagnosticStatus.OK, "inactive"
        if state.stats.waiting_for:
            return DiagnosticStatus.WARN, f"waiting for {state.stats.waiting_for}"
        return DiagnosticStatus.OK, "serving"


def _percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "nan"
