"""Every parameter of ``dysl_node``, declared once: name, type, default, description, check.

The node declares them up front (read-only: change them in the params file and re-configure) and
validates them as a whole at configure; a bad value is a startup error naming the parameter.
``config/dysl.yaml`` and ``docs/node.md`` list the same parameters (tests hold them to it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from dysl_ros.action_queue import AGGREGATIONS, MAX_AGGREGATION_DECAY, ON_STALE
from dysl_ros.backends.capability import ALL_PRECISIONS
from dysl_ros.backends.registry import BACKEND_CHOICES
from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.params import (
    ParamSpec,
    boolean,
    convert,
    declared,
    integer_at_least,
    integer_in,
    is_number,
    non_negative,
    numbers,
    one_of,
    param,
    positive,
    read_values,
    same_as,
    strings,
    text,
)
from dysl_ros.wiring import SharedParams

DYSL_FROM_MODEL = ("static_ratio", "eta", "eta_verify", "k", "skip_threshold")
"""DySL settings whose parameter default 0 means: the model's dysl.json value."""
_FROM_MODEL = "0: the model's dysl.json (where dysl_train calibrate put it)."
CHUNK_STAMPS = ("zero", "now", "image")
IMAGE_TRANSPORTS = ("raw", "compressed")


def _required_dir(name: str, v: Any) -> str | None:
    if isinstance(v, str) and v.strip():
        return None
    return f"{name} is required: the directory of the trained VLA (model.safetensors, vla_config.json)"


def _device(name: str, v: Any) -> str | None:
    device = str(v)
    ok = device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    return None if ok else f"{name} must be cpu, cuda or cuda:N, got {device!r}"


def _decay(name: str, v: Any) -> str | None:
    if is_number(v) and abs(float(v)) <= MAX_AGGREGATION_DECAY:
        return None
    bound = f"{MAX_AGGREGATION_DECAY:g}"
    return f"{name} must be a finite number in [-{bound}, {bound}], got {v!r}"


@dataclass(frozen=True)
class NodeParams:
    # --- model and engines
    model_dir: str = param("", "Directory of the trained VLA and its DySL modules (required).", _required_dir)
    engine_dir: str = param("", "Where per-segment engines are cached; empty: <model_dir>/engines.", text)
    force_engine_update: bool = param(False, "Rebuild engines even when a matching manifest exists.", boolean)
    backend: str = param(
        "auto", "Inference backend: auto | torch | onnxruntime | tensorrt.", one_of(BACKEND_CHOICES)
    )
    device: str = param("cpu", "torch device for the torch backend: cpu, cuda or cuda:N.", _device)
    precision: str = param("fp32", "Engine precision: fp32 | fp16 (fp16 needs a GPU).", one_of(ALL_PRECISIONS))
    num_threads: int = param(
        0,
        "CPU threads for inference; 0: all cores but one (left to the action stream and DDS).",
        integer_at_least(0),
    )
    autostart: bool = param(False, "Configure and activate on start-up without a lifecycle manager.", boolean)
    # --- timing and safety
    control_rate_hz: float = same_as(SharedParams, "control_rate_hz")
    max_image_age_ms: float = param(
        500.0, "Images older than this are not used; actions from them stop.", positive
    )
    max_future_stamp_ms: float = param(
        100.0, "Images stamped further than this in the future are rejected.", non_negative
    )
    max_camera_skew_ms: float = param(
        50.0,
        "Several cameras: an observation takes each camera's newest image only if their stamps lie within this of "
        "each other; else the tick waits (waiting_for names the camera). Also how far from the image's stamp the "
        "joint state paired with it may lie (else the newest).",
        non_negative,
    )
    on_stale: str = param(
        "",
        "~/action without fresh input: hold (repeat the last action) | zero; empty: the safe one for the model's "
        "action semantics (hold for joint positions, zero for deltas and velocities; hold with those is refused).",
        one_of(("", *ON_STALE)),
    )
    replan_threshold: int = param(
        4,
        "Start the next inference when this many actions of the current chunk are left to stream; "
        "0: only once the queue is empty. Below the model's chunk length.",
        integer_at_least(0, " (below the chunk length)"),
    )
    chunk_aggregation: str = param(
        "latest",
        "latest: a new chunk replaces the queue | weighted: average the overlapping actions of the "
        "queued chunks (ACT temporal ensembling, weights exp(-aggregation_decay * i), i = 0 oldest).",
        one_of(AGGREGATIONS),
    )
    aggregation_decay: float = param(
        0.01,
        "Decay m of the weighted aggregation, w_i = exp(-m * i) with i = 0 the oldest chunk's prediction: "
        "> 0 favours older predictions (ACT: 0.01), < 0 newer ones, 0 is the plain mean.",
        _decay,
    )
    stream_priority: int = param(
        50,
        "SCHED_FIFO priority (1-99) of the action-stream process; 0: normal scheduling. Needs rtprio "
        "rights (CAP_SYS_NICE or an rtprio limit); if refused, the stream runs normally, with a warning "
        "and /diagnostics stream_scheduling saying so.",
        integer_in(0, 99),
    )
    # --- DySL: declared by DySLConfig; 0 leaves a threshold to the model's dysl.json
    dense: bool = param(False, "Run every layer (the dense baseline) instead of DySL skipping.", boolean)
    static_ratio: float = same_as(
        DySLConfig, "static_ratio", default=0.0, note="Must match the model's layer plan. " + _FROM_MODEL, or_zero=True
    )
    eta: float = same_as(DySLConfig, "eta", default=0.0, note=_FROM_MODEL, or_zero=True)
    eta_verify: float = same_as(DySLConfig, "eta_verify", default=0.0, note=_FROM_MODEL, or_zero=True)
    k: int = same_as(DySLConfig, "k", default=0, note=_FROM_MODEL, or_zero=True)
    skip_threshold: float = same_as(DySLConfig, "skip_threshold", default=0.0, note=_FROM_MODEL, or_zero=True)
    enable_pre_skip: bool = same_as(DySLConfig, "enable_pre_skip")
    enable_post_verify: bool = same_as(DySLConfig, "enable_post_verify")
    # --- action output
    action_names: tuple[str, ...] = param(
        ("",), "Names in ~/action_chunk joint_names; [''] uses the model's names.", strings
    )
    action_low: tuple[float, ...] = param(
        (0.0,),
        "Lower clamp of ~/action_chunk and ~/action per action dimension (one value: all dimensions); [0.0] with "
        "action_high [0.0]: the model's own action range from its observation spec (none stated: no clamp).",
        numbers,
    )
    action_high: tuple[float, ...] = param(
        (0.0,), "Upper clamp per action dimension (one value: all dimensions); [0.0]: see action_low.", numbers
    )
    # --- robot wiring
    state_joint_names: tuple[str, ...] = param(
        ("",),
        "Joints whose ~/joint_states positions form the model's state, in its order, picked by name from any "
        "JointState (extra joints ignored); '<joint>/velocity' takes the joint's velocity instead; [''] = "
        "position in message order, exactly the state's size.",
        strings,
    )
    command_joint_names: tuple[str, ...] = param(
        ("",),
        "The controller's joints, in its order: ~/joint_trajectory and ~/commands carry them; [''] = no joint "
        "commands (only the model-space ~/action_chunk and ~/action).",
        strings,
    )
    action_to_joint: tuple[str, ...] = param(
        ("",),
        "Per command joint, the name of the action that drives it; [''] = the action with the joint's name.",
        strings,
    )
    chunk_stamp: str = param(
        "now",
        "header.stamp of ~/joint_trajectory: now (its first point's time, a control period or more before it is "
        "sent) | image (the image stamp) | zero (the controller starts it on arrival; times count from publication).",
        one_of(CHUNK_STAMPS),
    )
    image_transport: str = param(
        "raw",
        "raw: sensor_msgs/Image on each camera topic | compressed: sensor_msgs/CompressedImage (JPEG, PNG) on "
        "<camera topic>/compressed, image_transport's convention.",
        one_of(IMAGE_TRANSPORTS),
    )
    # --- arm safety
    robot_description: str = param(
        "",
        "URDF of the robot: the command joints' position and velocity limits. Empty: read the /robot_description "
        "topic (transient local, as robot_state_publisher offers it) for up to startup_timeout_s at configure.",
        text,
    )
    max_step: float = param(
        0.0,
        "Largest distance (rad or m) from the measured position that any joint command may ask for "
        "(LeRobot's max_relative_target); 0: only the joint limits bound it.",
        non_negative,
    )
    max_tracking_error: float = param(
        0.2,
        "A chunk whose measured joints lie farther than this (rad or m) from what the last trajectory commanded "
        "when they were measured starts over from the measured pose: the controller is not following it "
        "(not up yet, stopped by someone else). 0: never.",
        non_negative,
    )
    forward_controller: str = param(
        "",
        "Name of the forward_command_controller that takes ~/commands (e.g. /forward_position_controller): at "
        "activate its 'joints' parameter must list command_joint_names in the same order, else activate fails.",
        text,
    )
    resume_instruction_on_activate: bool = param(
        False,
        "Keep the instruction across deactivate/activate; false: after activate the node waits for a new "
        "instruction, so that a deactivate used as a stop is not undone by the next activate.",
        boolean,
    )
    max_consecutive_failures: int = param(
        3,
        "Inferences in a row that fail (an exception, or a chunk with NaN or inf) before the joints brake to rest.",
        integer_at_least(1),
    )
    watchdog_periods: int = param(
        2,
        "The action-stream process brakes the joints when the node's heartbeat is this many control periods "
        "late (the node hangs); 0: only when the node's process dies.",
        integer_at_least(0),
    )
    startup_timeout_s: float = param(
        5.0,
        "How long configure waits for /robot_description and activate for forward_controller's parameters.",
        positive,
    )
    diagnostics_period_s: float = param(1.0, "Period of /diagnostics messages (s).", positive)
    warmup_ticks: int = param(3, "Inferences run on a blank observation at configure time.", integer_at_least(0))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeParams:
        """Validate every parameter; raise one ConfigError listing all problems."""
        v, problems = read_values(cls, values)
        low, high = list(v["action_low"]), list(v["action_high"])
        if not problems and not _model_range(low, high):
            lengths_match = len(low) == len(high) or 1 in (len(low), len(high))
            if not lengths_match:
                problems.append(f"action_low ({len(low)} values) and action_high ({len(high)}) differ in length")
            elif not all(lo < hi for lo, hi in zip(_broadcast(low, high), _broadcast(high, low), strict=True)):
                problems.append(f"action_low must be below action_high in every dimension, got {low} / {high}")
        if problems:
            raise ConfigError("invalid dysl_node parameters:\n  - " + "\n  - ".join(problems))
        return cls(**convert(cls, v))

    @property
    def dysl_overrides(self) -> dict[str, Any]:
        """DySL settings given as parameters; the others come from the model's dysl.json (see
        ``DYSL_FROM_MODEL``)."""
        return _dysl_overrides({name: getattr(self, name) for name in (*DYSL_FROM_MODEL, *_DYSL_SWITCHES)})

    @property
    def state_joints(self) -> tuple[str, ...]:
        """``state_joint_names`` without the empty placeholder: () means message order."""
        return tuple(name for name in self.state_joint_names if name)

    @property
    def model_action_names(self) -> tuple[str, ...]:
        """``action_names`` without the empty placeholder: () means the model's names."""
        return tuple(name for name in self.action_names if name)

    @property
    def inference_threads(self) -> int:
        # Inference on every core starves the control-rate thread and DDS (seen on 2 cores: 50 Hz -> 13 Hz).
        return self.num_threads if self.num_threads > 0 else max(1, (os.cpu_count() or 2) - 1)

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    def check_chunk_length(self, chunk_len: int) -> None:
        """replan_threshold against the model's chunk length (known once the model is loaded)."""
        if self.replan_threshold >= chunk_len:
            raise ConfigError(
                f"replan_threshold must be below the model's chunk length {chunk_len} "
                f"(0 .. {chunk_len - 1}), got {self.replan_threshold}"
            )

    def action_limits(
        self, action_dim: int, model_range: tuple[tuple[float, ...], tuple[float, ...]] | None
    ) -> tuple[list[float], list[float]]:
        """Clamp limits broadcast to the model's action size (the model's own range by default, none
        when it states none); raises if the sizes cannot match."""
        low, high = list(self.action_low), list(self.action_high)
        if _model_range(low, high):
            if model_range is None:
                return [-math.inf] * action_dim, [math.inf] * action_dim
            low, high = list(model_range[0]), list(model_range[1])
        if len(low) == 1:
            low = low * action_dim
        if len(high) == 1:
            high = high * action_dim
        if len(low) != action_dim or len(high) != action_dim:
            raise ConfigError(
                f"action_low/action_high have {len(low)}/{len(high)} values; the model's actions have {action_dim}"
            )
        return low, high


_DYSL_SWITCHES = ("enable_pre_skip", "enable_post_verify")
PARAMETERS: tuple[ParamSpec, ...] = declared(NodeParams)
"""What the node declares, in order."""


def _dysl_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    overrides = {name: values[name] for name in DYSL_FROM_MODEL if not (is_number(values[name]) and values[name] == 0)}
    overrides.update({name: values[name] for name in _DYSL_SWITCHES})
    return overrides


def _model_range(low: list[float], high: list[float]) -> bool:
    """action_low and action_high left at [0.0]: the model's own range."""
    return low == [0.0] and high == [0.0]


def _broadcast(values: list[float], other: list[float]) -> list[float]:
    return values * len(other) if len(values) == 1 else values
