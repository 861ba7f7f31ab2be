"""Every parameter of ``sim_bridge``: name, default, description, validation.

Declared up front by the bridge (read-only, dynamically typed so that ``-p control_rate_hz:=20``
is accepted as a number) and validated as a whole before anything is simulated: a bad value is a
startup error naming each bad parameter, never a silent default. ``config/sim_bridge.yaml``
documents the same list.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import dysl_ros.params as checks
from dysl_ros.mt10.env import DEFAULT_GOAL_MARKER_RADIUS, DEFAULT_MAX_STEPS, DEFAULT_POST_SUCCESS_STEPS
from dysl_ros.mt10.joint_env import CONTROL_PERIOD_S, PHYSICS_RATE_HZ
from dysl_ros.mt10.tasks import MT10_TASKS
from dysl_ros.params import ParamSpec, convert, declared, param, read_values, same_as
from dysl_ros.wiring import SharedParams

MODES = ("real_time", "lockstep")
ARMS = ("ee", "jtc", "forward")
JTC_DISTROS = ("humble", "jazzy")
JTC_START_STATES = ("measured", "desired")
JOINT_CONTROL_RATE_HZ = 1.0 / CONTROL_PERIOD_S
"""The joint arm modes' control rate (``mt10.joint_env.CONTROL_PERIOD_S``): the joint-space
demonstrations' step, which the policy node's ``control_rate_hz`` must equal."""
ON_MISSING_ACTION = ("hold", "zero")
ON_FINISH = ("exit", "idle")
SEED_LIMIT = 2**32


class BridgeConfigError(ValueError):
    """Invalid ``sim_bridge`` parameters; the message lists every problem."""


def _marker_radius(name: str, v: Any) -> str | None:
    ok = checks.is_number(v) and 0.0 <= float(v) <= 0.2
    return None if ok else f"{name} must be in [0, 0.2] metres (0: Meta-World's), got {v!r}"


def _divides_physics(name: str, v: Any) -> str | None:
    ok = checks.is_number(v) and 0 < float(v) <= PHYSICS_RATE_HZ and abs(PHYSICS_RATE_HZ / float(v) % 1) < 1e-9
    return None if ok else f"{name} must divide the {PHYSICS_RATE_HZ:g} Hz physics rate (e.g. 500, 250), got {v!r}"


def _camera(name: str, v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else f"{name} must be a camera name, got {v!r}"


@dataclass(frozen=True)
class BridgeParams:
    mode: str = param(
        "real_time",
        "real_time: step at control_rate_hz applying the latest ~/action | "
        "lockstep: execute execute_steps actions of the ~/action_chunk stamped with each image.",
        checks.one_of(MODES),
    )
    arm: str = param(
        "ee",
        "ee: Meta-World's end effector takes the model-space ~/action (or ~/action_chunk) | "
        "jtc: the Sawyer's joints through a joint_trajectory_controller model on ~/joint_trajectory | "
        "forward: through a forward position controller on ~/commands (both: the gripper from ~/action).",
        checks.one_of(ARMS),
    )
    controller_rate_hz: float = param(
        500.0, "jtc / forward: controller updates per second inside the 1 kHz physics (dividing 1000).",
        _divides_physics,
    )
    joint_state_rate_hz: float = param(
        100.0, "jtc / forward: ~/joint_states per second (joint_state_broadcaster's rate; dividing 1000).",
        _divides_physics,
    )
    jtc_distro: str = param(
        "humble", "jtc: whose joint_trajectory_controller rules (humble | jazzy).", checks.one_of(JTC_DISTROS)
    )
    jtc_start_state: str = param(
        "desired",
        "jtc: a new trajectory starts from the last command (desired: Humble open_loop_control / Jazzy "
        "interpolate_from_desired_state true) or the measured state (measured: their default).",
        checks.one_of(JTC_START_STATES),
    )
    policy_node: str = param(
        "",
        "jtc / forward: a lifecycle policy node (e.g. /dysl_node) deactivated before each episode's reset and "
        "activated after it, so that it plans each episode from the measured pose; empty: none.",
        checks.text,
    )
    motion_log: str = param(
        "", "jtc / forward: write episode motion_log_episode's joint log here (.npz); empty: none.", checks.text
    )
    motion_log_episode: int = param(
        1, "The episode (1-based, in run order) motion_log records.", checks.integer_at_least(1)
    )
    tasks: tuple[str, ...] = param(
        ("all",), "MT10 task names (v3) to cycle through, in MT10 order (comma-separated too); all: all ten."
    )
    episodes_per_task: int = param(1, "Episodes of each task (integer >= 1).", checks.integer_at_least(1))
    seed: int = param(
        2000,
        "Run seed; episode e of task t uses dysl_ros.mt10.tasks.episode_seed(seed, t, e).",
        checks.integer_in(0, SEED_LIMIT - 1, "[0, 2**32)"),
    )
    control_rate_hz: float = same_as(SharedParams, "control_rate_hz")
    camera_rate_hz: float = param(
        25.0, "Image rate in real_time mode (<= control_rate_hz; frames at step times).", checks.positive
    )
    execute_steps: int = param(
        4, "lockstep: actions executed from each chunk before the next image.", checks.integer_at_least(1)
    )
    on_missing_action: str = param(
        "hold",
        "real_time, a step with no new ~/action: hold (repeat the last) | zero.",
        checks.one_of(ON_MISSING_ACTION),
    )
    wait_for_policy: bool = param(
        True,
        "real_time: start stepping an episode only once a ~/action_chunk stamped "
        "with one of its images arrived (the policy has seen the new episode).",
        checks.boolean,
    )
    image_size: int = param(
        128, "Camera image width and height in pixels (the reference model's: 128).", checks.integer_in(16, 1024)
    )
    camera: str = param("corner", "Meta-World camera name (the reference model's: corner).", _camera)
    goal_marker_radius: float | None = param(
        DEFAULT_GOAL_MARKER_RADIUS or 0.0,
        "Radius (m) the goal marker is drawn with, as in the policy's demos; 0: Meta-World's 2 cm.",
        _marker_radius,
    )
    """None (the parameter's 0): Meta-World's own marker."""
    max_steps: int = param(DEFAULT_MAX_STEPS, "Episode step limit.", checks.integer_at_least(1))
    post_success_steps: int = param(
        DEFAULT_POST_SUCCESS_STEPS, "Steps run after the first success.", checks.integer_at_least(0)
    )
    policy_timeout_s: float = param(
        30.0, "No action chunk for the current episode / image within this: error, exit 1.", checks.positive
    )
    lockstep_retry_s: float = param(
        2.0,
        "lockstep: re-publish the unchanged observation with a new stamp after "
        "this long without its chunk (a best-effort image may be dropped).",
        checks.positive,
    )
    startup_timeout_s: float = param(
        0.0,
        "Wait at most this for the policy (a subscriber on ~/image and a publisher "
        "on ~/action_chunk) before the first episode; 0: wait forever.",
        checks.non_negative,
    )
    min_image_subscribers: int = param(
        1,
        "Subscribers ~/image must have before the first episode (2: the policy "
        "and a recorder or probe that must see every frame).",
        checks.integer_in(1, 64),
    )
    on_finish: str = param(
        "exit",
        "After the last episode: exit (status 0) | idle (stay up, publish nothing).",
        checks.one_of(ON_FINISH),
    )

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BridgeParams:
        """Validate every parameter; raise one BridgeConfigError listing all problems."""
        v, problems = read_values(cls, values, allow_unknown=False)
        tasks, task_problem = _tasks(v["tasks"])
        if task_problem:
            problems.append(task_problem)
        rates = (v["camera_rate_hz"], v["control_rate_hz"])
        rates_valid = checks.positive("", rates[0]) is None and checks.positive("", rates[1]) is None
        if rates_valid and float(rates[0]) > float(rates[1]) and v["arm"] == "ee":
            problems.append(
                f"camera_rate_hz ({rates[0]}) must not exceed control_rate_hz ({rates[1]}): "
                "the simulated scene only changes at a step"
            )
        if v["arm"] in ARMS[1:]:
            if v["mode"] != "real_time":
                problems.append(f"arm {v['arm']} runs in real_time mode only (a controller keeps time), got mode "
                                f"{v['mode']}")
            if checks.is_number(v["control_rate_hz"]) and float(v["control_rate_hz"]) != JOINT_CONTROL_RATE_HZ:
                problems.append(
                    f"arm {v['arm']}: control_rate_hz must be {JOINT_CONTROL_RATE_HZ:g} (the joint-space "
                    f"demonstrations' 50 ms step), got {v['control_rate_hz']}"
                )
        if problems:
            raise BridgeConfigError("invalid sim_bridge parameters:\n  - " + "\n  - ".join(problems))
        return cls(**convert(cls, {**v, "tasks": tasks, "goal_marker_radius": float(v["goal_marker_radius"]) or None}))


PARAMETERS: tuple[ParamSpec, ...] = declared(BridgeParams)
"""What the bridge declares, in order."""

DEMO_TASKS = ("reach-v3", "drawer-close-v3", "button-press-topdown-v3")


@dataclass(frozen=True)
class DemoSettings:
    """The closed-loop demo's run (``make demo``, ``launch/demo.launch.py``): sim_bridge's parameters
    at the demo's values, declared once; both front ends derive their flags and arguments from here."""

    tasks: tuple[str, ...] = same_as(BridgeParams, "tasks", default=DEMO_TASKS)
    episodes_per_task: int = same_as(BridgeParams, "episodes_per_task", default=2)
    seed: int = same_as(BridgeParams, "seed")
    mode: str = same_as(BridgeParams, "mode")
    control_rate_hz: float = same_as(
        BridgeParams, "control_rate_hz", default=20.0,
        note="The demo's 20 Hz leaves a 2-core CPU time for both processes and the renderer.",
    )
    camera_rate_hz: float = same_as(BridgeParams, "camera_rate_hz", default=10.0)
    execute_steps: int = same_as(BridgeParams, "execute_steps")
    max_steps: int = same_as(BridgeParams, "max_steps")

    def problems(self, **bridge: Any) -> list[str]:
        """What is wrong with these settings (sim_bridge's own checks), empty when nothing is; ``bridge``:
        other sim_bridge parameters checked with them (``make demo``'s ``arm``, from ``DemoWiring``)."""
        values = {**{f.name: getattr(self, f.name) for f in fields(self)}, **bridge}
        try:
            BridgeParams.from_values(values)
        except BridgeConfigError as exc:
            return [line.removeprefix("  - ") for line in str(exc).splitlines()[1:]]
        return []


@dataclass(frozen=True)
class DemoWiring:
    """``make demo``'s arm wiring (``WIRING=``), apart from ``DemoSettings``: ``demo.launch.py``, which
    takes those as its arguments, drives the end effector only."""

    wiring: str = same_as(
        BridgeParams, "arm",
        note="make demo: jtc and forward serve models/reference_joint unless --model-dir names another.",
    )
    joint_motion: bool = param(
        False, "--wiring ee: also report the arm joints' motion (always on for jtc and forward).", checks.boolean
    )


def _tasks(raw: Any) -> tuple[tuple[str, ...], str]:
    """The tasks to run in MT10 order, or () and what is wrong with ``raw``."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(t, str) for t in raw):
        return (), f"tasks must be a list of MT10 task names or ['all'], got {raw!r}"
    wanted = [part.strip() for name in raw for part in name.split(",") if part.strip()]
    unknown = [t for t in wanted if t not in MT10_TASKS and t != "all"]
    if not wanted:
        return (), "tasks is empty: give MT10 task names or ['all']"
    if unknown:
        return (), f"tasks: unknown task(s) {unknown}; choose from 'all' or {', '.join(MT10_TASKS)}"
    if "all" in wanted:
        if wanted != ["all"]:
            return (), f"tasks: 'all' cannot be combined with task names, got {wanted}"
        return MT10_TASKS, ""
    if len(set(wanted)) != len(wanted):
        return (), f"tasks: a task is named twice in {wanted}"
    return tuple(t for t in MT10_TASKS if t in wanted), ""  # MT10 order, like dysl_train demos
