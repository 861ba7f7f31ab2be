"""The settings of each training stage, declared once: ``dysl_train``'s flags, the entry points'
arguments and their checks derive from these dataclasses (``dysl_ros.params``).

    settings = DistillSettings(stage1_steps=400, stage2_steps=800, lam=0.001)
    distill_model_dir("models/reference", episodes, settings)

No torch here: ``dysl_train --help`` and ``demos`` do not pay for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.exit_error import ExitRule
from dysl_ros.mt10.env import (
    DEFAULT_GOAL_MARKER_RADIUS,
    DEFAULT_MAX_STEPS,
    DEFAULT_POST_SUCCESS_STEPS,
    check_goal_marker_radius,
    goal_marker_radius_arg,
)
from dysl_ros.mt10.tasks import ARMS, parse_tasks
from dysl_ros.params import (
    boolean,
    integer_at_least,
    integer_in,
    non_negative,
    number_in,
    one_of,
    optional,
    param,
    positive,
    problems,
    same_as,
    text,
)

ADAPTER_INITS = ("identity", "random")
PLAN_CHOICES = ("calibrated", "last-layer-only")
"""``--plan``: the calibrated static layers, or only the last layer static (the 'no static layers' ablation)."""
STAGE3_WEIGHTINGS = ("none", "margin")
ETA_QUANTILE = 0.75
"""eta = this quantile of the demonstrations' |dC|. On the reference model's closed-loop sweep
(scripts/speed_accuracy.py, eval seed 2000) eta at the median (0.026) ran 16.9 layers at 46 %
success and eta near the 75th percentile (0.12) 10.0 layers at 49 %: allow points that move on
every ordinary change mostly sit at the static layer, without protecting accuracy."""


class _Checked:
    """Settings that check every field when made: a bad value is a ConfigError naming each one."""

    def __post_init__(self) -> None:
        found = problems(self)
        if found:
            raise ConfigError("; ".join(found))


_DEVICE = "auto (a GPU when there is one), cpu, cuda or cuda:N"
_STEPS = integer_at_least(0)


def _tasks(name: str, v: Any) -> str | None:
    try:
        parse_tasks(v)
    except (ValueError, TypeError, AttributeError) as exc:
        return f"{name}: {exc}"
    return None


def _radius(name: str, v: Any) -> str | None:
    try:
        check_goal_marker_radius(v)
    except ValueError as exc:
        return str(exc).replace("goal_marker_radius", name, 1)
    return None


@dataclass(frozen=True)
class DemosSettings(_Checked):
    """``dysl_train demos``: scripted-expert episodes of Meta-World MT10 (``dysl_ros.training.demos``)."""

    tasks: str = param("all", "'all' or comma-separated MT10 task names.", _tasks)
    episodes_per_task: int = param(20, "Episodes run per task.", integer_at_least(1))
    seed: int = param(
        0, "Run seed: episode seeds derive from it (dysl_ros.mt10.tasks.episode_seed).", integer_in(0, 2**32 - 1)
    )
    workers: int = param(2, "Worker processes, one core each.", integer_at_least(1))
    image_size: int = param(128, "Square image size in pixels.", integer_at_least(1))
    camera: str = param("corner", "Meta-World camera name.", text)
    goal_marker_radius: float | None = param(
        DEFAULT_GOAL_MARKER_RADIUS,
        "Draw the goal marker with this radius in metres, 'none' for Meta-World's 2 cm (the reference model's: "
        "0.04).",
        _radius,
        parse=goal_marker_radius_arg,
    )
    max_steps: int = param(DEFAULT_MAX_STEPS, "Episode step limit.", integer_at_least(1))
    post_success_steps: int = param(
        DEFAULT_POST_SUCCESS_STEPS, "Steps recorded after the first success (one chunk).", integer_at_least(0)
    )
    action_noise: float = param(
        0.0,
        "DART: execute the expert's hand actions plus Gaussian noise of this std (labels stay the clean expert "
        "actions), so the demos show corrections from off-path states.",
        number_in(0, 1),
    )
    arm: str = param(
        "ee",
        "ee: Meta-World's end-effector control; joint: the Sawyer's seven joints through position servos, "
        "proprio and actions in joint space (dysl_ros.mt10.joint_env).",
        one_of(ARMS),
    )
    within_limits: bool = param(
        False,
        "--arm joint: move the arm within the Sawyer's velocity and acceleration limits (dysl_ros.sim.sawyer), "
        "the expert's joint targets followed as dysl_node plans them (dysl_ros.motion); labels are the limited "
        "targets. Without it the servos follow the expert's inverse kinematics at any speed.",
        boolean,
    )
    keep_failures: bool = param(False, "Also write episodes the expert failed.", boolean)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.within_limits and self.arm != "joint":
            raise ConfigError("within_limits: the arm's joint limits apply to --arm joint only "
                              "(Meta-World's end effector follows its mocap)")


@dataclass(frozen=True)
class BCSettings(_Checked):
    """``dysl_train bc``: behaviour cloning of the reference VLA (``dysl_ros.training.bc``)."""

    steps: int = param(20000, "Optimiser steps.", integer_at_least(1))
    batch_size: int = param(256, "Global batch size (split over DDP ranks).", integer_at_least(1))
    lr: float = param(3e-4, "Peak learning rate.", positive)
    device: str = param("auto", f"Device: {_DEVICE}.", text)
    seed: int = param(0, "Seed of the weights, the shuffle and the draws.", integer_at_least(0))
    log_every: int = param(50, "Steps between log records.", integer_at_least(1))
    warmup_steps: int | None = param(
        None, "Linear warm-up steps (default: steps / 20, at most 1000).", optional(integer_at_least(0))
    )
    checkpoint_every: int | None = param(
        None, "Steps between checkpoints (default: steps / 10).", optional(integer_at_least(1))
    )
    num_workers: int | None = param(
        None, "Data loader workers (default: 0 on the CPU, a few per GPU).", optional(integer_at_least(0))
    )
    augment_shift: int = param(0, "Random image shift in pixels.", integer_at_least(0))
    weight_decay: float = param(0.05, "AdamW weight decay.", non_negative)
    grad_clip: float = param(1.0, "Gradient norm clip; 0: none.", non_negative)
    time_limit_s: float | None = param(
        None, "Stop cleanly after this many seconds (exit 4); continue later with --resume.", optional(non_negative)
    )
    resume: bool = param(False, "Continue from <out>/train_state.pt.", boolean)
    init_from: str | None = param(
        None,
        "Start from this trained model's weights and architecture (fresh optimiser and schedule).",
        optional(text),
    )
    scene_loss_weight: float = param(
        0.0,
        "Weight of the auxiliary loss locating hand, object and goal from the vision tokens (training only; "
        "needs demos that record states; 0: off).",
        non_negative,
    )
    skip_loss_weight: float = param(
        0.0,
        "Weight of the loss on the chunk computed with layers i..L-2 skipped, i drawn each step (teaches the "
        "backbone the redundancy DySL uses; 0: off).",
        non_negative,
    )
    skip_min_layer: int = param(1, "First layer the skip loss may skip from.", integer_at_least(1))
    skip_max_layer: int | None = param(
        None,
        "Last layer the skip loss may skip from (default: L-2, the one before the last); a lower value puts "
        "the weight on the shallow exits DySL takes most.",
        optional(integer_at_least(0)),  # its range depends on the stack: checked by train_bc
    )
    skip_adapters: bool = param(
        False,
        "The skip loss's chunk passes a training-only adapter per exit (DySL's), trained with the backbone: "
        "the stack learns to be summarised, not to make the skipped layers idle.",
        boolean,
    )
    skip_smooth_share: float = param(
        1.0,
        "The skip loss counts only this share of each batch's frames, those whose target chunk moves most "
        "smoothly (the paper's premise: skipping is cheap on smooth motion, costly where continuity breaks); "
        "1: every frame.",
        number_in(0, 1, open_low=True),
        flag="--skip-loss-smooth-share",
    )
    # How the demos' pictures were drawn (from the demonstrations, not flags; recorded with the model:
    # evaluation must draw them the same way).
    camera: str | None = param(None, "Camera the demonstrations were rendered from.", optional(text))
    goal_marker_radius: float | None = param(
        None, "Radius (m) the demonstrations' goal marker was drawn with; None: Meta-World's.", optional(non_negative)
    )

    def resolved(self, num_layers: int) -> BCSettings:
        """The defaults that depend on the run filled in: warm-up, checkpoint spacing, last skip layer."""
        return dataclasses.replace(
            self,
            warmup_steps=self.warmup_steps if self.warmup_steps is not None else max(1, min(1000, self.steps // 20)),
            checkpoint_every=self.checkpoint_every or max(self.log_every, self.steps // 10),
            skip_max_layer=self.skip_max_layer if self.skip_max_layer is not None else num_layers - 2,
        )

    def must_match(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (the schedule depends on them)."""
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "warmup_steps": self.warmup_steps, "init_from": self.init_from,
                "scene_loss_weight": self.scene_loss_weight, "skip_loss_weight": self.skip_loss_weight,
                "skip_min_layer": self.skip_min_layer, "skip_max_layer": self.skip_max_layer,
                "skip_adapters": self.skip_adapters,
                # Only when set: states saved before the option existed still resume.
                **({"skip_smooth_share": self.skip_smooth_share} if self.skip_smooth_share != 1 else {})}


@dataclass(frozen=True)
class CalibrateSettings(_Checked):
    """``dysl_train calibrate``: static layers and continuity thresholds (``dysl_ros.training.distill``)."""

    static_ratio: float = same_as(DySLConfig, "static_ratio")
    max_gap: int | None = param(
        None,
        "Spread the static layers: the lowest-similarity set with no gap longer than this many dynamic layers.",
        optional(integer_at_least(1)),
    )
    static_layers: str | None = param(
        None, "The static layers as given, e.g. 0,1,2,3,13,23 (the last layer must be among them).", optional(text)
    )
    execute_steps: int = param(
        4, "Actions executed per inference when measuring continuity changes for eta.", integer_at_least(1)
    )
    eta_quantile: float = param(ETA_QUANTILE, "eta = this quantile of the demonstrations' |dC|.", number_in(0, 1))
    batches: int = param(16, "Demonstration batches the layer similarities are measured on.", integer_at_least(1))
    batch_size: int = param(32, "Batch size of those batches.", integer_at_least(1))
    device: str = param("auto", f"Device: {_DEVICE}.", text)
    seed: int = param(0, "Seed of the batches drawn.", integer_at_least(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.static_layers is not None and self.max_gap is not None:
            raise ConfigError("give --static-layers or --max-gap, not both")

    def layers(self) -> list[int] | None:
        """``static_layers`` "0,1,2,3,13,23" -> [0, 1, 2, 3, 13, 23]."""
        if self.static_layers is None:
            return None
        try:
            return [int(part) for part in self.static_layers.split(",") if part.strip()]
        except ValueError as exc:
            raise ConfigError(f"--static-layers takes comma-separated layer indices, got {self.static_layers!r}") \
                from exc


@dataclass(frozen=True)
class DistillSettings(_Checked):
    """``dysl_train distill``: the DySL adapters and controllers, two-stage (``dysl_ros.training.distill``)."""

    stage1_steps: int = param(MISSING, "Stage 1 steps: adapters only (Eq. 4).", _STEPS)
    stage2_steps: int = param(MISSING, "Stage 2 steps: adapters and controllers (Eq. 5-6).", _STEPS)
    lam: float = param(0.0, "Skip reward weight lambda (Eq. 6).", non_negative, flag="--lambda")
    one_stage: bool = param(False, "Ablation: no stage 1.", boolean)
    adapter_init: str = param(
        "identity",
        "Fresh adapters start as the identity or from random weights (the paper's setting).",
        one_of(ADAPTER_INITS),
    )
    skip_threshold: float | None = same_as(
        DySLConfig, "skip_threshold", default=None, note="Written to dysl.json (default: the model dir's, 0.5)."
    )
    stage3_steps: int = param(
        0,
        "Then refit the controllers alone to the exit error: skip where the jump lands within --exit-tolerance "
        "of the dense chunk (0: no stage 3).",
        _STEPS,
    )
    exit_tolerance: float | None = same_as(ExitRule, "tolerance", note="Stage 3 labels a jump 'skip' within it.")
    exit_measure: str = same_as(ExitRule, "measure")
    task_exit_tolerance: tuple[str, ...] = param(
        (),
        "Stage 3: TASK=T, this tolerance instead of --exit-tolerance for the frames of TASK (repeatable; T=inf "
        "labels every exit of the task 'skip').",
        flag="--task-exit-tolerance",
    )
    stage3_weighting: str = param(
        "none", "Stage 3: every frame alike, or weighed by |exit error - tolerance| / tolerance (margin).",
        one_of(STAGE3_WEIGHTINGS),
    )
    modules_from: str | None = param(
        None,
        "Continue from the plan and modules in this directory (a model or modules directory of this backbone) "
        "instead of fresh ones; e.g. --stage1-steps 0 --stage2-steps 0 --stage3-steps N.",
        optional(text),
    )
    batch_size: int = param(32, "Batch size.", integer_at_least(1))
    lr: float = param(1e-3, "Peak learning rate of each stage.", positive)
    gt_weight: float = param(0.0, "Weight of the demo-action loss.", non_negative)
    adapter_bottleneck: int | None = param(
        None, "Adapter bottleneck width (default: the modules' own, 12).", optional(integer_at_least(1))
    )
    controller_hidden: int | None = param(
        None, "Controller hidden width (default: the modules' own, 8).", optional(integer_at_least(1))
    )
    plan: str = param(
        "calibrated",
        "Static layers the modules are trained for: the calibrated plan, or only the last layer (the 'no "
        "static layers' ablation).",
        one_of(PLAN_CHOICES),
    )
    modules_out: str | None = param(
        None,
        "Write the layer plan, modules, dysl.json and reports there (ablations, lambda sweeps: <model "
        "dir>/variants/<name>); default: the model directory itself.",
        optional(text),
    )
    device: str = param("auto", f"Device: {_DEVICE}.", text)
    seed: int = param(0, "Seed of the modules, the batches and the stage-2 draws.", integer_at_least(0))

    def task_tolerances(self) -> dict[str, float]:
        """``task_exit_tolerance``'s TASK=T items -> {task: T}; T may be ``inf``."""
        tolerances: dict[str, float] = {}
        for item in self.task_exit_tolerance:
            task, sep, value = item.partition("=")
            problem = ConfigError(f"--task-exit-tolerance takes TASK=T (T a number or inf), got {item!r}")
            if not sep or not task.strip():
                raise problem
            try:
                tolerances[task.strip()] = float(value)
            except ValueError:
                raise problem from None
        return tolerances


@dataclass(frozen=True)
class RouterSettings(_Checked):
    """``dysl_train router``: the per-layer router baseline (``dysl_ros.training.router``)."""

    stage1_steps: int = param(MISSING, "Adapter-only steps (targets x_{i+1}).", _STEPS)
    stage2_steps: int = param(MISSING, "Soft-routing steps.", _STEPS)
    lam: float = param(0.0, "Weight of sum_i (1 - p_i).", non_negative, flag="--lambda")
    batch_size: int = same_as(DistillSettings, "batch_size")
    lr: float = same_as(DistillSettings, "lr")
    gt_weight: float = same_as(DistillSettings, "gt_weight")
    adapter_bottleneck: int | None = same_as(DistillSettings, "adapter_bottleneck")
    controller_hidden: int | None = same_as(DistillSettings, "controller_hidden")
    modules_out: str | None = param(
        None, "Where the router modules go (default: <model dir>/variants/router).", optional(text)
    )
    device: str = same_as(DistillSettings, "device")
    seed: int = same_as(DistillSettings, "seed")
