"""The Meta-World MT10 tasks as the project names, phrases and seeds them (no simulator here).

Episode ``i`` of task ``k`` (index in ``MT10_TASKS``) under the run seed ``s`` has the environment
seed ``SeedSequence([s, k, i])`` and one of the task's phrasings, drawn from that seed: the same
episode for ``dysl_train demos``, ``sim_bridge`` and ``dysl_bench closed-loop``, whatever other
tasks, episode counts or worker counts are asked for.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dysl_ros.params import chosen

MT10_TASKS: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
"""Meta-World's MT10 benchmark, in Meta-World's own order (the task index seeds the demos)."""

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "reach-v3": (
        "reach the goal position",
        "move the gripper to the target",
        "bring the hand to the goal marker",
        "reach for the target point",
    ),
    "push-v3": (
        "push the puck to the goal",
        "slide the puck to the target position",
        "push the block over to the goal marker",
        "shove the puck onto the target",
    ),
    "pick-place-v3": (
        "pick up the puck and place it at the goal",
        "grasp the puck and put it on the target",
        "pick the object up and move it to the goal",
        "lift the puck and drop it at the target",
    ),
    "door-open-v3": (
        "open the door",
        "pull the door open",
        "swing the door open",
        "grab the door handle and open it",
    ),
    "drawer-open-v3": (
        "open the drawer",
        "pull the drawer open",
        "pull out the drawer",
        "slide the drawer out",
    ),
    "drawer-close-v3": (
        "close the drawer",
        "push the drawer shut",
        "push the drawer closed",
        "slide the drawer in",
    ),
    "button-press-topdown-v3": (
        "press the button from the top",
        "push the button down",
        "press down on the button",
        "press the button from above",
    ),
    "peg-insert-side-v3": (
        "insert the peg into the hole",
        "put the peg in the hole on the side",
        "pick up the peg and slide it into the hole",
        "push the peg sideways into the box",
    ),
    "window-open-v3": (
        "open the window",
        "slide the window open",
        "push the window open",
        "slide the window pane to open it",
    ),
    "window-close-v3": (
        "close the window",
        "slide the window closed",
        "push the window shut",
        "slide the window pane to close it",
    ),
}
"""Several phrasings per task, so the policy has to read the instruction rather than memorise one
string. Each fits the reference model's 48 instruction bytes."""

PROPRIO_DIM = 4
"""Hand xyz and gripper opening."""
ACTION_DIM = 4
"""Hand xyz motion and gripper, in [-1, 1]."""
ARMS: tuple[str, ...] = ("ee", "joint")
"""How the Sawyer is driven: ``ee`` Meta-World's end-effector control (``env``), ``joint`` its seven
joints through position servos (``joint_env``)."""


def episode_seed(seed: int, task: str, episode: int) -> int:
    """The environment seed of episode ``episode`` of ``task`` under the run seed ``seed``."""
    task_index = MT10_TASKS.index(task)
    return int(np.random.SeedSequence([seed, task_index, episode]).generate_state(1)[0])


def pick_instruction(task: str, env_seed: int) -> str:
    phrasings = INSTRUCTIONS[task]
    return phrasings[int(np.random.default_rng(env_seed).integers(len(phrasings)))]


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` or comma-separated MT10 names (or a list of them) -> task names, in MT10 order."""
    return chosen(spec, MT10_TASKS, "task")
