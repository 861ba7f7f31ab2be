"""What the closed-loop demo reports: per-episode figures, the table, a GIF and a DySL plot.

Inputs are what went over ROS: the bridge's ``~/episode_result`` JSON objects, the node's per-tick
telemetry ``~/dysl_tick`` (``diagnostic_msgs/DiagnosticStatus``; keys ``image_stamp``, ``tick_ms``,
``image_to_chunk_ms``, ``executed_layers``, ``layer_evaluations``, ``continuity``, ``delta``,
``allow_points`` (comma-separated ints), ``verified``, ``reran``, ``skipped_from``), the arrival
times of ``~/action`` messages at the demo's own subscriber, and camera frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

STAMP_MATCH_S = 1e-6
"""Stamps compared as float seconds (ROS time ~1.8e9 s): doubles resolve ~0.24 µs there."""


@dataclass(frozen=True)
class Tick:
    """One /dysl_node/tick message: the inference behind one published chunk."""

    image_stamp: float
    tick_ms: float
    image_to_chunk_ms: float
    executed_layers: float
    layer_evaluations: float
    continuity: float
    delta: float
    allow_points: tuple[int, ...]
    verified: bool
    reran: bool

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> Tick:
        """From the KeyValue pairs of one ``~/dysl_tick`` status; missing or odd values become NaN."""
        points: tuple[int, ...] = ()
        text = values.get("allow_points", "").strip().strip("[]()")
        if text:
            try:
                points = tuple(int(float(p)) for p in text.replace(" ", "").split(",") if p)
            except ValueError:
                points = ()
        return cls(
            image_stamp=_float(values.get("image_stamp")),
            tick_ms=_float(values.get("tick_ms")),
            image_to_chunk_ms=_float(values.get("image_to_chunk_ms")),
            executed_layers=_float(values.get("executed_layers")),
            layer_evaluations=_float(values.get("layer_evaluations")),
            continuity=_float(values.get("continuity")),
            delta=_float(values.get("delta")),
            allow_points=points,
            verified=_bool(values.get("verified")),
            reran=_bool(values.get("reran")),
        )


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _bool(text: str | None) -> bool:
    return (text or "").strip().lower() in ("true", "1", "yes")


def percentile(values: Sequence[float], q: float) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.percentile(finite, q)) if finite else math.nan


@dataclass(frozen=True)
class EpisodeFigures:
    """Per-episode figures measured over ROS (NaN where nothing was measured)."""

    ticks: int
    tick_ms_p50: float
    tick_ms_p99: float
    image_to_chunk_ms_p50: float
    image_to_chunk_ms_p99: float
    executed_layers_mean: float
    verifications: int
    actions_received: int
    action_period_p50_ms: float
    action_period_p99_ms: float
    jitter_p99_ms: float
    """p99 of the periods between consecutive ``~/action`` arrivals minus the nominal period."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


def episode_ticks(ticks: Sequence[Tick], result: Mapping[str, Any]) -> list[Tick]:
    """Ticks computed from this episode's images (image stamp within the episode's stamps)."""
    start, end = float(result["start_stamp"]), float(result["end_stamp"])
    return [t for t in ticks if start - STAMP_MATCH_S <= t.image_stamp <= end + STAMP_MATCH_S]


def episode_figures(
    ticks: Sequence[Tick], action_times: Sequence[float], result: Mapping[str, Any], control_rate_hz: float
) -> EpisodeFigures:
    """``action_times``: arrival times (ROS clock seconds, ascending) of ``~/action`` at the demo."""
    mine = episode_ticks(ticks, result)
    first = result.get("first_step_stamp")
    start = float(first) if first is not None and math.isfinite(float(first)) else float(result["start_stamp"])
    end = float(result["end_stamp"])
    arrivals = np.asarray([t for t in action_times if start <= t <= end])
    periods_ms = np.diff(arrivals) * 1000.0 if arrivals.size > 1 else np.zeros(0)
    nominal_ms = 1000.0 / control_rate_hz
    p99 = percentile(periods_ms.tolist(), 99)
    return EpisodeFigures(
        ticks=len(mine),
        tick_ms_p50=percentile([t.tick_ms for t in mine], 50),
        tick_ms_p99=percentile([t.tick_ms for t in mine], 99),
        image_to_chunk_ms_p50=percentile([t.image_to_chunk_ms for t in mine], 50),
        image_to_chunk_ms_p99=percentile([t.image_to_chunk_ms for t in mine], 99),
        executed_layers_mean=float(np.nanmean([t.executed_layers for t in mine])) if mine else math.nan,
        verifications=sum(t.verified for t in mine),
        actions_received=int(arrivals.size),
        action_period_p50_ms=percentile(periods_ms.tolist(), 50),
        action_period_p99_ms=p99,
        jitter_p99_ms=p99 - nominal_ms if math.isfinite(p99) else math.nan,
    )


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


TABLE_HEADER = (
    f"{'#':>3}  {'task':<24} {'seed':>10}  {'success':<7} {'steps':>5}  {'tick p50/p99 ms':>15}  "
    f"{'layers':>11}  {'jitter p99 ms':>13}  {'ticks':>5}"
)


def table_row(number: int, result: Mapping[str, Any], fig: EpisodeFigures, num_layers: int) -> str:
    layers = f"{_fmt(fig.executed_layers_mean)}/{num_layers}" if num_layers else _fmt(fig.executed_layers_mean)
    ok = "error" if result.get("error") else ("yes" if result["success"] else "no")
    return (
        f"{number:>3}  {result['task']:<24} {result['seed']:>10}  {ok:<7} {result['steps']:>5}  "
        f"{_fmt(fig.tick_ms_p50) + ' / ' + _fmt(fig.tick_ms_p99):>15}  {layers:>11}  "
        f"{_fmt(fig.jitter_p99_ms, 2):>13}  {fig.ticks:>5}"
    )


def _tick_at(ticks: Sequence[Tick], stamp: float) -> Tick | None:
    """The tick computed from the image stamped ``stamp``, else the latest one from an earlier image."""
    best = None
    for tick in ticks:
        if tick.image_stamp <= stamp + STAMP_MATCH_S and (best is None or tick.image_stamp >= best.image_stamp):
            best = tick
    return best


def write_gif(
    path: Path,
    frames: Sequence[tuple[float, npt.NDArray[np.uint8]]],
    ticks: Sequence[Tick],
    result: Mapping[str, Any],
    num_layers: int,
    frame_rate_hz: float,
    scale: int = 3,
) -> int:
    """An animated GIF of ``frames`` ((stamp, HxWx3 RGB), in order) with the executed layer count
    of the tick behind each frame overlaid; returns the number of frames written."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    start = float(result["start_stamp"])
    images = []
    for stamp, rgb in frames:
        size = (rgb.shape[1] * scale, rgb.shape[0] * scale)
        image = PILImage.fromarray(rgb).resize(size, PILImage.Resampling.NEAREST)
        draw = ImageDraw.Draw(image)
        tick = _tick_at(ticks, stamp)
        if tick is None or not math.isfinite(tick.executed_layers):
            layers = "layers: (no tick yet)"
        else:
            exact = abs(tick.image_stamp - stamp) <= STAMP_MATCH_S
            layers = f"layers {int(tick.executed_layers)}/{num_layers}" + ("" if exact else " (prev. tick)")
            if tick.reran:
                layers += " +dense re-run"
        lines = [layers, f"{result['task']}  t={stamp - start:4.1f} s"]
        for row, text in enumerate(lines):
            xy = (4, 4 + 14 * row)
            draw.rectangle((xy[0] - 2, xy[1] - 1, xy[0] + 7 * len(text) + 2, xy[1] + 12), fill=(0, 0, 0))
            draw.text(xy, text, fill=(255, 255, 0) if row == 0 else (255, 255, 255), font=font)
        images.append(image.convert("P", palette=PILImage.Palette.ADAPTIVE))
    if not images:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=max(20, round(1000.0 / frame_rate_hz)), loop=0
    )
    return len(images)


def write_plot(
    path: Path, ticks: Sequence[Tick], results: Sequence[Mapping[str, Any]], num_layers: int, title: str
) -> None:
    """C_t, allow points and executed layers per tick over time, episodes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted((t for t in ticks if math.isfinite(t.image_stamp)), key=lambda t: t.image_stamp)
    origin = min([float(r["start_stamp"]) for r in results] + [t.image_stamp for t in ordered[:1]] or [0.0])
    x = np.asarray([t.image_stamp - origin for t in ordered])
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    ax_c, ax_a, ax_l = axes
    ax_c.plot(x, [t.continuity for t in ordered], lw=0.9, color="tab:blue", label="C_t")
    verified = [(xi, t.continuity) for xi, t in zip(x, ordered, strict=True) if t.verified]
    if verified:
        ax_c.scatter(*zip(*verified, strict=True), color="tab:red", marker="x", zorder=3, label="verification")
    ax_c.set_ylabel("continuity C_t")
    ax_c.legend(loc="lower right", fontsize=8)
    gaps = max((len(t.allow_points) for t in ordered), default=0)
    for g in range(gaps):
        ys = [t.allow_points[g] if len(t.allow_points) > g else np.nan for t in ordered]
        ax_a.step(x, ys, where="post", lw=1.0, label=f"gap {g}")
    ax_a.set_ylabel("allow point (layer)")
    if gaps:
        ax_a.legend(loc="upper right", fontsize=8, ncol=min(gaps, 6))
    ax_l.plot(x, [t.executed_layers for t in ordered], lw=0.9, color="tab:green", label="executed layers")
    if any(t.layer_evaluations != t.executed_layers for t in ordered):
        ax_l.plot(x, [t.layer_evaluations for t in ordered], lw=0.7, color="tab:orange", label="layer evaluations")
    if num_layers:
        ax_l.axhline(num_layers, color="gray", ls="--", lw=0.8, label=f"dense ({num_layers})")
    ax_l.set_ylabel("layers")
    if num_layers:
        ax_l.set_ylim(0, num_layers + 1)
    ax_l.set_xlabel("time since the first episode started (s)")
    ax_l.legend(loc="lower right", fontsize=8)
    for r in results:
        x0 = float(r["start_stamp"]) - origin
        for ax in axes:
            ax.axvline(x0, color="black", lw=0.5, alpha=0.5)
        mark = "✓" if r.get("success") else "✗"
        ax_c.annotate(f"{r['task'].removesuffix('-v3')} {mark}", (x0, 1.0), xycoords=("data", "axes fraction"),
                      fontsize=7, va="bottom", rotation=0)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
