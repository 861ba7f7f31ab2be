"""Every parameter of ``sim_bridge``: name, default, description, validation.

Declared up front by the bridge (read-only, dynamically typed so that ``-p control_rate_hz:=20``
is accepted as a number) and validated as a whole before anything is simulated: a bad value is a
startup error naming each bad parameter, never a silent default. ``config/sim_bridge.yaml``
documents the same list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dysl_ros.node.params import ParamSpec, is_integer, is_number, is_positive
from dysl_ros.training.metaworld_env import (
    DEFAULT_GOAL_MARKER_RADIUS,
    DEFAULT_MAX_STEPS,
    DEFAULT_POST_SUCCESS_STEPS,
    MT10_TASKS,
)

MODES = ("real_time", "lockstep")
ON_MISSING_ACTION = ("hold", "zero")
ON_FINISH = ("exit", "idle")
SEED_LIMIT = 2**32


class BridgeConfigError(ValueError):
    """Invalid ``sim_bridge`` parameters; the message lists every problem."""


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("mode", "real_time", "real_time: step at control_rate_hz applying the latest ~/action | "
              "lockstep: execute execute_steps actions of the ~/action_chunk stamped with each image."),
    ParamSpec("tasks", ["all"], "MT10 task names (v3) to cycle through, in MT10 order; ['all'] = all ten."),
    ParamSpec("episodes_per_task", 1, "Episodes of each task (integer >= 1)."),
    ParamSpec("seed", 2000, "Run seed; episode e of task t uses dysl_ros.training.demos.episode_seed(seed, t, e)."),
    ParamSpec("control_rate_hz", 50.0, "Simulation steps per second in real_time mode (one action per step)."),
    ParamSpec("camera_rate_hz", 25.0, "Image rate in real_time mode (<= control_rate_hz; frames at step times)."),
    ParamSpec("execute_steps", 4, "lockstep: actions executed from each chunk before the next image."),
    ParamSpec("on_missing_action", "hold", "real_time, a step with no new ~/action: hold (repeat the last) | zero."),
    ParamSpec("wait_for_policy", True, "real_time: start stepping an episode only once a ~/action_chunk stamped "
              "with one of its images arrived (the policy has seen the new episode)."),
    ParamSpec("image_size", 128, "Camera image width and height in pixels (the reference model's: 128)."),
    ParamSpec("camera", "corner", "Meta-World camera name (the reference model's: corner)."),
    ParamSpec("goal_marker_radius", DEFAULT_GOAL_MARKER_RADIUS or 0.0,
              "Radius (m) the goal marker is drawn with, as in the policy's demos; 0: Meta-World's 2 cm."),
    ParamSpec("max_steps", DEFAULT_MAX_STEPS, "Episode step limit."),
    ParamSpec("post_success_steps", DEFAULT_POST_SUCCESS_STEPS, "Steps run after the first success."),
    ParamSpec("policy_timeout_s", 30.0, "No action chunk for the current episode / image within this: error, exit 1."),
    ParamSpec("lockstep_retry_s", 2.0, "lockstep: re-publish the unchanged observation with a new stamp after "
              "this long without its chunk (a best-effort image may be dropped)."),
    ParamSpec("startup_timeout_s", 0.0, "Wait at most this for the policy (a subscriber on ~/image and a publisher "
              "on ~/action_chunk) before the first episode; 0: wait forever."),
    ParamSpec("min_image_subscribers", 1, "Subscribers ~/image must have before the first episode (2: the policy "
              "and a recorder or probe that must see every frame)."),
    ParamSpec("on_finish", "exit", "After the last episode: exit (status 0) | idle (stay up, publish nothing)."),
)


@dataclass(frozen=True)
class BridgeParams:
    mode: str
    tasks: tuple[str, ...]
    episodes_per_task: int
    seed: int
    control_rate_hz: float
    camera_rate_hz: float
    execute_steps: int
    on_missing_action: str
    wait_for_policy: bool
    image_size: int
    camera: str
    goal_marker_radius: float | None
    max_steps: int
    post_success_steps: int
    policy_timeout_s: float
    lockstep_retry_s: float
    startup_timeout_s: float
    min_image_subscribers: int
    on_finish: str

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BridgeParams:
        """Validate every parameter; raise one BridgeConfigError listing all problems."""
        unknown = sorted(set(values) - {spec.name for spec in PARAMETERS})
        v = {spec.name: values.get(spec.name, spec.default) for spec in PARAMETERS}
        problems = [f"unknown parameter {name!r}" for name in unknown]

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        for name, choices in (("mode", MODES), ("on_missing_action", ON_MISSING_ACTION), ("on_finish", ON_FINISH)):
            need(v[name] in choices, f"{name} must be one of {choices}, got {v[name]!r}")
        tasks: tuple[str, ...] = ()
        raw_tasks = v["tasks"]
        if isinstance(raw_tasks, str):
            raw_tasks = [raw_tasks]
        if not isinstance(raw_tasks, (list, tuple)) or not all(isinstance(t, str) for t in raw_tasks):
            problems.append(f"tasks must be a list of MT10 task names or ['all'], got {v['tasks']!r}")
        else:
            wanted = [part.strip() for name in raw_tasks for part in name.split(",") if part.strip()]
            unknown_tasks = [t for t in wanted if t not in MT10_TASKS and t != "all"]
            if not wanted:
                problems.append("tasks is empty: give MT10 task names or ['all']")
            elif unknown_tasks:
                problems.append(f"tasks: unknown task(s) {unknown_tasks}; choose from 'all' or {', '.join(MT10_TASKS)}")
            elif "all" in wanted:
                need(wanted == ["all"], f"tasks: 'all' cannot be combined with task names, got {wanted}")
                tasks = MT10_TASKS
            else:
                need(len(set(wanted)) == len(wanted), f"tasks: a task is named twice in {wanted}")
                tasks = tuple(t for t in MT10_TASKS if t in wanted)  # MT10 order, like dysl_train demos
        for name, low in (("episodes_per_task", 1), ("execute_steps", 1), ("max_steps", 1),
                          ("post_success_steps", 0)):
            need(is_integer(v[name]) and v[name] >= low, f"{name} must be an integer >= {low}, got {v[name]!r}")
        need(is_integer(v["image_size"]) and 16 <= v["image_size"] <= 1024,
             f"image_size must be an integer in [16, 1024], got {v['image_size']!r}")
        need(is_integer(v["seed"]) and 0 <= v["seed"] < SEED_LIMIT,
             f"seed must be an integer in [0, 2**32), got {v['seed']!r}")
        need(is_positive(v["control_rate_hz"]) and float(v["control_rate_hz"]) <= 1000.0,
             f"control_rate_hz must lie in (0, 1000], got {v['control_rate_hz']!r}")
        need(is_positive(v["camera_rate_hz"]),
             f"camera_rate_hz must be a finite number > 0, got {v['camera_rate_hz']!r}")
        if is_positive(v["camera_rate_hz"]) and is_positive(v["control_rate_hz"]):
            need(float(v["camera_rate_hz"]) <= float(v["control_rate_hz"]),
                 f"camera_rate_hz ({v['camera_rate_hz']}) must not exceed control_rate_hz ({v['control_rate_hz']}): "
                 "the simulated scene only changes at a step")
        for name in ("policy_timeout_s", "lockstep_retry_s"):
            need(is_positive(v[name]), f"{name} must be a finite number > 0, got {v[name]!r}")
        need(is_number(v["startup_timeout_s"]) and float(v["startup_timeout_s"]) >= 0.0,
             f"startup_timeout_s must be a finite number >= 0 (0: wait forever), got {v['startup_timeout_s']!r}")
        need(isinstance(v["camera"], str) and v["camera"].strip() != "",
             f"camera must be a camera name, got {v['camera']!r}")
        need(is_number(v["goal_marker_radius"]) and 0.0 <= float(v["goal_marker_radius"]) <= 0.2,
             f"goal_marker_radius must be in [0, 0.2] metres (0: Meta-World's), got {v['goal_marker_radius']!r}")
        need(is_integer(v["min_image_subscribers"]) and 1 <= v["min_image_subscribers"] <= 64,
             f"min_image_subscribers must be an integer in [1, 64], got {v['min_image_subscribers']!r}")
        need(isinstance(v["wait_for_policy"], bool),
             f"wait_for_policy must be true or false, got {v['wait_for_policy']!r}")
        if problems:
            raise BridgeConfigError("invalid sim_bridge parameters:\n  - " + "\n  - ".join(problems))
        return cls(
            mode=v["mode"],
            tasks=tasks,
            episodes_per_task=int(v["episodes_per_task"]),
            seed=int(v["seed"]),
            control_rate_hz=float(v["control_rate_hz"]),
            camera_rate_hz=float(v["camera_rate_hz"]),
            execute_steps=int(v["execute_steps"]),
            on_missing_action=v["on_missing_action"],
            wait_for_policy=bool(v["wait_for_policy"]),
            image_size=int(v["image_size"]),
            camera=str(v["camera"]),
            goal_marker_radius=float(v["goal_marker_radius"]) or None,
            max_steps=int(v["max_steps"]),
            post_success_steps=int(v["post_success_steps"]),
            policy_timeout_s=float(v["policy_timeout_s"]),
            lockstep_retry_s=float(v["lockstep_retry_s"]),
            startup_timeout_s=float(v["startup_timeout_s"]),
            min_image_subscribers=int(v["min_image_subscribers"]),
            on_finish=v["on_finish"],
        )

