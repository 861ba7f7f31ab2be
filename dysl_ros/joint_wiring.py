"""From the model's action chunk to what ros2_control's controllers accept, and what is safe when
input stops. No ROS here: the node and its stream process call these.

The model's actions mean what its observation spec's ``semantics`` says:

    semantics               ~/joint_trajectory (joint_trajectory_controller)   ~/commands (forward controller)
    joint_positions         positions                                          positions
    joint_position_deltas   positions, integrated from the measured ones       positions, integrated likewise
    joint_velocities        positions integrated from the measured ones        velocities
                            + velocities
    ee_deltas, other        refused at configure: no inverse kinematics here   refused

These give the joint targets; the stream process plans them within the joint limits
(``dysl_ros/motion.py``, ``joint_output.py``), and every stop (input stops, deactivate, shutdown)
brakes the joints to rest at their acceleration limit. The model-space ``~/action`` stream follows
``on_stale``, whose default is ``hold`` for absolute positions and ``zero`` otherwise; ``hold`` with
deltas or velocities would keep the arm moving and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError

JOINT_SEMANTICS = ("joint_positions", "joint_position_deltas", "joint_velocities")
ABSOLUTE = "joint_positions"


def default_on_stale(semantics: str) -> str:
    """What the model-space stream sends without fresh input: the last command for absolute
    positions, zeros for anything that moves the arm while repeated."""
    return "hold" if semantics == ABSOLUTE else "zero"


def check_on_stale(on_stale: str, semantics: str) -> str:
    """``on_stale`` as given ("" = the semantics' default), refused where it would keep the arm moving."""
    if not on_stale:
        return default_on_stale(semantics)
    if on_stale == "hold" and semantics != ABSOLUTE:
        raise ConfigError(
            f"on_stale hold with {semantics} actions would repeat the last motion forever when input stops: "
            "use zero (or leave on_stale empty for the safe default)"
        )
    return on_stale


@dataclass(frozen=True)
class JointWiring:
    """Which action dimension drives which controller joint, and what the actions mean."""

    semantics: str
    joints: tuple[str, ...]
    """The controller's joints, in its order (``command_joint_names``)."""
    action_index: tuple[int, ...]
    """Per joint, the action dimension that drives it."""

    @property
    def commands_are_velocities(self) -> bool:
        return self.semantics == "joint_velocities"

    @property
    def needs_measured_positions(self) -> bool:
        return self.semantics != ABSOLUTE

    def joint_chunks(
        self, actions: npt.NDArray[np.floating], measured: npt.NDArray[np.floating] | None, dt: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """(H, J) positions for every action of the chunk (velocities: the positions they lead to),
        integrated from ``measured`` (the joints' positions the observation saw) where the actions
        are relative; and (H, J) velocities for velocity actions, else None."""
        values = np.asarray(actions, dtype=np.float64)[:, list(self.action_index)]
        if self.semantics == ABSOLUTE:
            return values, None
        if measured is None:
            raise ValueError(f"{self.semantics} need the measured joint positions to integrate from")
        steps = values * dt if self.commands_are_velocities else values
        positions = np.asarray(measured, dtype=np.float64)[None, :] + np.cumsum(steps, axis=0)
        return positions, values if self.commands_are_velocities else None



def wire_joints(
    semantics: str, action_names: Sequence[str], command_joint_names: Sequence[str], action_to_joint: Sequence[str]
) -> JointWiring | None:
    """The wiring the node's parameters ask for, or None when no joint commands are wanted
    (``command_joint_names`` empty). ConfigError names what cannot work."""
    joints = tuple(name for name in command_joint_names if name)
    mapping = tuple(name for name in action_to_joint if name)
    if not joints:
        if mapping:
            raise ConfigError("action_to_joint is set but command_joint_names is empty: name the controller's joints")
        return None
    if len(set(joints)) != len(joints):
        raise ConfigError(f"command_joint_names repeats a joint: {list(joints)}")
    if semantics not in JOINT_SEMANTICS:
        raise ConfigError(
            f"the model's actions are {semantics}, which no joint controller can take without inverse kinematics "
            f"(not part of dysl_ros): leave command_joint_names empty and consume the model-space ~/action_chunk "
            f"and ~/action, or serve a model whose actions are one of {JOINT_SEMANTICS}"
        )
    sources = mapping or joints
    if len(sources) != len(joints):
        raise ConfigError(
            f"action_to_joint names {len(sources)} actions for {len(joints)} command joints: one per joint, in "
            "command_joint_names' order"
        )
    unknown = [name for name in sources if name not in action_names]
    if unknown:
        how = "action_to_joint" if mapping else "command_joint_names (by name: no action_to_joint given)"
        raise ConfigError(f"{how} names {unknown}, which are not the model's actions {list(action_names)}")
    return JointWiring(semantics, joints, tuple(list(action_names).index(name) for name in sources))
