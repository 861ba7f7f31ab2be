"""From action chunks to ros2_control commands (dysl_ros.joint_wiring): pure, no ROS."""

from __future__ import annotations

import numpy as np
import pytest

from dysl_ros.core.config import ConfigError
from dysl_ros.joint_wiring import check_on_stale, wire_joints

ACTIONS = ("a0", "a1", "gripper")
DT = 0.02
DT_NS = 20_000_000


def test_joints_follow_their_mapped_actions_in_the_controller_order() -> None:
    wiring = wire_joints("joint_positions", ACTIONS, ["j1", "j0"], ["a1", "a0"])
    assert wiring is not None and wiring.action_index == (1, 0)
    actions = np.array([[0.1, 0.2, 1.0], [0.3, 0.4, 0.0]])
    positions, velocities = wiring.joint_chunks(actions, None, DT)
    assert positions.tolist() == [[0.2, 0.1], [0.4, 0.3]] and velocities is None


def test_deltas_and_velocities_integrate_from_the_measured_joints() -> None:
    measured = np.array([1.0, -1.0])
    actions = np.array([[0.1, 0.2, 0.0], [0.1, -0.2, 0.0], [0.0, 0.4, 0.0]])
    deltas = wire_joints("joint_position_deltas", ACTIONS, ["j0", "j1"], ["a0", "a1"])
    assert deltas is not None
    positions, velocities = deltas.joint_chunks(actions, measured, DT)
    np.testing.assert_allclose(positions, [[1.1, -0.8], [1.2, -1.0], [1.2, -0.6]])
    assert velocities is None
    speeds = wire_joints("joint_velocities", ACTIONS, ["j0", "j1"], ["a0", "a1"])
    assert speeds is not None
    positions, velocities = speeds.joint_chunks(actions, measured, DT)
    assert velocities is not None
    np.testing.assert_allclose(velocities, actions[:, :2])
    np.testing.assert_allclose(positions, measured + np.cumsum(actions[:, :2] * DT, axis=0))
    with pytest.raises(ValueError, match="measured joint positions"):
        deltas.joint_chunks(actions, None, DT)


def test_wiring_refusals_name_the_problem() -> None:
    assert wire_joints("ee_deltas", ACTIONS, [], []) is None  # no joint commands wanted
    for args, message in (
        (("ee_deltas", ACTIONS, ["j0"], ["a0"]), "inverse kinematics"),
        (("joint_positions", ACTIONS, ["j0", "j0"], []), "repeats a joint"),
        (("joint_positions", ACTIONS, ["j0", "j1"], ["a0"]), "one per joint"),
        (("joint_positions", ACTIONS, ["j0"], ["elbow"]), "not the model's actions"),
        (("joint_positions", ACTIONS, [], ["a0"]), "command_joint_names is empty"),
    ):
        with pytest.raises(ConfigError, match=message):
            wire_joints(*args)  # type: ignore[arg-type]
    assert check_on_stale("", "joint_velocities") == "zero" and check_on_stale("", "joint_positions") == "hold"
    with pytest.raises(ConfigError, match="repeat the last motion"):
        check_on_stale("hold", "joint_position_deltas")
