"""A 7-joint arm for the safety tests: its URDF (position and velocity limits, written here, not
taken from a robot), ros2_control-style acceleration limits, and the params file that gives both to
dysl_node. The joints are the tiny bring-your-own model's (byom_fixture.JOINTS); the limits are
narrower than the model's action range (+-1.5) so that they, not the model, bound the commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from byom_fixture import JOINTS

LOWER = np.array([-1.0, -0.8, -1.2, -1.0, -0.9, -1.1, 0.0])
UPPER = np.array([1.1, 0.9, 1.0, 1.2, 0.8, 1.0, 0.8])
VELOCITY = np.array([1.2, 1.0, 1.4, 1.6, 1.8, 2.0, 0.5])
ACCELERATION = np.array([4.0, 3.0, 5.0, 6.0, 8.0, 8.0, 2.0])


def urdf(
    joints: tuple[str, ...] = JOINTS,
    drop: str | None = None,
    limit_of: dict[str, str] | None = None,
    limits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> str:
    """The arm's URDF: a chain of revolute joints and a prismatic gripper. ``drop`` leaves a joint
    out; ``limit_of`` replaces a joint's ``<limit .../>`` element text (for the bad cases);
    ``limits``: (lower, upper, velocity) instead of this arm's."""
    lower, upper, velocity = limits if limits is not None else (LOWER, UPPER, VELOCITY)
    links = ['  <link name="base"/>']
    elements = []
    parent = "base"
    for i, name in enumerate(joints):
        if name == drop:
            continue
        child = f"link_{i}"
        links.append(f'  <link name="{child}"/>')
        kind = "prismatic" if name == "gripper" else "revolute"
        limit = (limit_of or {}).get(
            name, f'<limit lower="{lower[i]}" upper="{upper[i]}" velocity="{velocity[i]}" effort="50"/>'
        )
        elements.append(
            f'  <joint name="{name}" type="{kind}">\n'
            f'    <parent link="{parent}"/><child link="{child}"/><axis xyz="0 0 1"/>\n'
            f"    {limit}\n"
            "  </joint>"
        )
        parent = child
    return '<?xml version="1.0"?>\n<robot name="arm7">\n' + "\n".join(links + elements) + "\n</robot>\n"


def acceleration_parameters(joints: tuple[str, ...] = JOINTS) -> dict[str, dict[str, object]]:
    """ros2_control's joint_limits.<joint>.* for the acceleration limits (URDF has none)."""
    return {
        name: {"has_acceleration_limits": True, "max_acceleration": float(ACCELERATION[i])}
        for i, name in enumerate(joints)
    }


def write_params(path: Path, node_name: str, description: str | None = None, **extra: object) -> Path:
    """A params file for ``node_name``: the URDF as ``robot_description`` and the acceleration limits."""
    values: dict[str, object] = {"joint_limits": acceleration_parameters(), **extra}
    if description is not None:
        values["robot_description"] = description
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": values}}, sort_keys=False))
    return path
