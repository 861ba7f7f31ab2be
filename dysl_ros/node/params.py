"""Every parameter of ``dysl_node``: name, default, description, validation.

Declared up front by the node (read-only: change them in the params file and re-configure) and
validated as a whole at configure time; a bad value is a startup error naming the parameter.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.node.action_stream import AGGREGATIONS, MAX_AGGREGATION_DECAY, ON_STALE

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str


DYSL_FROM_MODEL = ("static_ratio", "eta", "eta_verify", "k", "skip_threshold")
"""DySL settings whose parameter default 0 means: the model's dysl.json value."""

# The single list the node declares, config/dysl.yaml documents and the README tabulates.
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_dir", "", "Directory of the trained VLA and its DySL modules (required)."),
    ParamSpec("engine_dir", "", "Where per-segment engines are cached; empty: <model_dir>/engines."),
    ParamSpec("force_engine_update", False, "Rebuild engines even when a matching manifest exists."),
    ParamSpec("backend", "auto", "Inference backend: auto | torch | onnxruntime | tensorrt."),
    ParamSpec("device", "cpu", "torch device for the torch backend: cpu, cuda or cuda:N."),
    ParamSpec("precision", "fp32", "Engine precision: fp32 | fp16 (fp16 needs a GPU)."),
    ParamSpec("num_threads", 0, "CPU threads for inference; 0: all cores but one (left to the action stream and DDS)."),
    ParamSpec("autostart", False, "Configure and activate on start-up without a lifecycle manager."),
    ParamSpec("control_rate_hz", 50.0, "Rate of the ~/action stream and spacing of the chunk points (Hz)."),
    ParamSpec("max_image_age_ms", 500.0, "Images older than this are not used; actions from them stop."),
    ParamSpec("max_future_stamp_ms", 100.0, "Images stamped further than this in the future are rejected."),
    ParamSpec("on_stale", "hold", "Action stream without fresh input: hold (repeat last action) | zero."),
    ParamSpec(
        "replan_threshold",
        4,
        "Start the next inference when this many actions of the current chunk are left to stream; "
        "0: only once the queue is empty. Below the model's chunk length.",
    ),
    ParamSpec(
        "chunk_aggregation",
        "latest",
        "latest: a new chunk replaces the queue | weighted: average the overlapping actions of the "
        "queued chunks (ACT temporal ensembling, weights exp(-aggregation_decay * i), i = 0 oldest).",
    ),
    ParamSpec(
        "aggregation_decay",
        0.01,
        "Decay m of the weighted aggregation, w_i = exp(-m * i) with i = 0 the oldest chunk's prediction: "
        "> 0 favours older predictions (ACT: 0.01), < 0 newer ones, 0 is the plain mean.",
    ),
    ParamSpec(
        "stream_priority",
        50,
        "SCHED_FIFO priority (1-99) of the action-stream process; 0: normal scheduling. Needs rtprio "
        "rights (CAP_SYS_NICE or an rtprio limit); if refused, the stream runs normally, with a warning "
        "and /diagnostics stream_scheduling saying so.",
    ),
    ParamSpec("dense", False, "Run every layer (the dense baseline) instead of DySL skipping."),
    ParamSpec(
        "static_ratio", 0.0, "Fraction of static layers; must match the model's layer plan. 0: the model's dysl.json."
    ),
    ParamSpec(
        "eta",
        0.0,
        "Continuity-change threshold moving the allow points (Eq. 2-3). 0: the model's dysl.json (calibrated on "
        "its demonstrations by dysl_train calibrate).",
    ),
    ParamSpec("eta_verify", 0.0, "Continuity-drop threshold of post-skip verification. 0: the model's dysl.json."),
    ParamSpec("k", 0, "Actions in the continuity window (Eq. 1). 0: the model's dysl.json."),
    ParamSpec(
        "skip_threshold",
        0.0,
        "A consulted controller skips when its probability is >= this. 0: the model's dysl.json.",
    ),
    ParamSpec("enable_pre_skip", True, "Move allow points with continuity (pre-skip prediction)."),
    ParamSpec("enable_post_verify", True, "Re-run densely on the first step of a continuity drop."),
    ParamSpec("action_names", [""], "Names in ~/action_chunk joint_names; [''] uses the model's names."),
    ParamSpec("action_low", [-1.0], "Lower clamp per action dimension (one value: all dimensions)."),
    ParamSpec("action_high", [1.0], "Upper clamp per action dimension (one value: all dimensions)."),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics messages (s)."),
    ParamSpec("warmup_ticks", 3, "Inferences run on a blank observation at configure time."),
)


@dataclass(frozen=True)
class NodeParams:
    model_dir: str
    engine_dir: str
    force_engine_update: bool
    backend: str
    device: str
    precision: str
    num_threads: int
    autostart: bool
    control_rate_hz: float
    max_image_age_ms: float
    max_future_stamp_ms: float
    on_stale: str
    replan_threshold: int
    chunk_aggregation: str
    aggregation_decay: float
    stream_priority: int
    dense: bool
    dysl_overrides: dict[str, Any]
    """DySL settings given as parameters; the others come from the model's dysl.json (see
    ``DYSL_FROM_MODEL``)."""
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    diagnostics_period_s: float
    warmup_ticks: int

    @property
    def inference_threads(self) -> int:
        # Inference on every core starves the control-rate thread and DDS (seen on 2 cores: 50 Hz -> 13 Hz).
        return self.num_threads if self.num_threads > 0 else max(1, (os.cpu_count() or 2) - 1)

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeParams:
        """Validate every parameter; raise one ConfigError listing all problems."""
        v = {spec.name: values.get(spec.name, spec.default) for spec in PARAMETERS}
        problems: list[str] = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        need(
            isinstance(v["model_dir"], str) and v["model_dir"].strip() != "",
            "model_dir is required: the directory of the trained VLA (model.safetensors, vla_config.json)",
        )
        need(v["backend"] in BACKENDS, f"backend must be one of {BACKENDS}, got {v['backend']!r}")
        need(v["precision"] in PRECISIONS, f"precision must be one of {PRECISIONS}, got {v['precision']!r}")
        need(v["on_stale"] in ON_STALE, f"on_stale must be one of {ON_STALE}, got {v['on_stale']!r}")
        need(
            v["chunk_aggregation"] in AGGREGATIONS,
            f"chunk_aggregation must be one of {AGGREGATIONS}, got {v['chunk_aggregation']!r}",
        )
        need(
            is_number(v["aggregation_decay"]) and abs(float(v["aggregation_decay"])) <= MAX_AGGREGATION_DECAY,
            f"aggregation_decay must be a finite number in [-{MAX_AGGREGATION_DECAY:g}, {MAX_AGGREGATION_DECAY:g}], "
            f"got {v['aggregation_decay']!r}",
        )
        need(
            is_integer(v["replan_threshold"]) and int(v["replan_threshold"]) >= 0,
            f"replan_threshold must be an integer >= 0 (below the chunk length), got {v['replan_threshold']!r}",
        )
        need(
            is_integer(v["stream_priority"]) and 0 <= int(v["stream_priority"]) <= 99,
            f"stream_priority must be an integer in [0, 99], got {v['stream_priority']!r}",
        )
        device = str(v["device"])
        need(
            device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()),
            f"device must be cpu, cuda or cuda:N, got {device!r}",
        )
        need(
            is_positive(v["control_rate_hz"]) and float(v["control_rate_hz"]) <= 1000.0,
            f"control_rate_hz must lie in (0, 1000], got {v['control_rate_hz']!r}",
        )
        for name in ("max_image_age_ms", "diagnostics_period_s"):
            need(is_positive(v[name]), f"{name} must be a finite number > 0, got {v[name]!r}")
        need(
            is_number(v["max_future_stamp_ms"]) and float(v["max_future_stamp_ms"]) >= 0.0,
            f"max_future_stamp_ms must be >= 0, got {v['max_future_stamp_ms']!r}",
        )
        for name in ("num_threads", "warmup_ticks"):
            need(is_integer(v[name]) and int(v[name]) >= 0, f"{name} must be an integer >= 0, got {v[name]!r}")
        low, high = list(v["action_low"]), list(v["action_high"])
        need(all(is_number(x) for x in low + high), "action_low/action_high must be finite numbers")
        if not problems:
            lengths_match = len(low) == len(high) or 1 in (len(low), len(high))
            need(lengths_match, f"action_low ({len(low)} values) and action_high ({len(high)}) differ in length")
            need(
                not lengths_match
                or all(lo < hi for lo, hi in zip(_broadcast(low, high), _broadcast(high, low), strict=True)),
                f"action_low must be below action_high in every dimension, got {low} / {high}",
            )
        # 0 leaves a setting to the model's dysl.json, where calibration put it; any other value is
        # checked by DySLConfig itself (negative, NaN, out of range).
        overrides: dict[str, Any] = {
            name: v[name] for name in DYSL_FROM_MODEL if not (is_number(v[name]) and v[name] == 0)
        }
        overrides.update(enable_pre_skip=v["enable_pre_skip"], enable_post_verify=v["enable_post_verify"])
        dysl: DySLConfig | None = None
        try:
            dysl = dataclasses.replace(DySLConfig(), **overrides)
        except (ConfigError, TypeError) as exc:
            problems.append(str(exc))
        for name in ("force_engine_update", "autostart", "dense"):
            need(isinstance(v[name], bool), f"{name} must be true or false, got {v[name]!r}")
        if problems or dysl is None:
            raise ConfigError("invalid dysl_node parameters:\n  - " + "\n  - ".join(problems))
        names = tuple(str(n) for n in v["action_names"] if str(n))
        return cls(
            model_dir=v["model_dir"],
            engine_dir=v["engine_dir"],
            force_engine_update=v["force_engine_update"],
            backend=v["backend"],
            device=device,
            precision=v["precision"],
            num_threads=int(v["num_threads"]),
            autostart=v["autostart"],
            control_rate_hz=float(v["control_rate_hz"]),
            max_image_age_ms=float(v["max_image_age_ms"]),
            max_future_stamp_ms=float(v["max_future_stamp_ms"]),
            on_stale=v["on_stale"],
            replan_threshold=int(v["replan_threshold"]),
            chunk_aggregation=v["chunk_aggregation"],
            aggregation_decay=float(v["aggregation_decay"]),
            stream_priority=int(v["stream_priority"]),
            dense=v["dense"],
            dysl_overrides=overrides,
            action_names=names,
            action_low=tuple(float(x) for x in low),
            action_high=tuple(float(x) for x in high),
            diagnostics_period_s=float(v["diagnostics_period_s"]),
            warmup_ticks=int(v["warmup_ticks"]),
        )

    def check_chunk_length(self, chunk_len: int) -> None:
        """replan_threshold against the model's chunk length (known once the model is loaded)."""
        if self.replan_threshold >= chunk_len:
            raise ConfigError(
                f"replan_threshold must be below the model's chunk length {chunk_len} "
                f"(0 .. {chunk_len - 1}), got {self.replan_threshold}"
            )

    def action_limits(self, action_dim: int) -> tuple[list[float], list[float]]:
        """Clamp limits broadcast to the model's action size; raises if the sizes cannot match."""
        low, high = list(self.action_low), list(self.action_high)
        if len(low) == 1:
            low = low * action_dim
        if len(high) == 1:
            high = high * action_dim
        if len(low) != action_dim or len(high) != action_dim:
            raise ConfigError(
                f"action_low/action_high have {len(low)}/{len(high)} values; the model's actions have {action_dim}"
            )
        return low, high


def is_number(x: object) -> bool:
    """A finite int or float parameter value (bool excluded: ROS would accept True as 1)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_positive(x: object) -> bool:
    return is_number(x) and float(x) > 0.0  # type: ignore[arg-type]


def is_integer(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _broadcast(values: list[float], other: list[float]) -> list[float]:
    return values * len(other) if len(values) == 1 else values
