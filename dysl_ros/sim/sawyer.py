"""The simulated Sawyer's joint limits and URDF: what ``dysl_node`` is given to bound its commands.

Positions are the MJCF's joint ranges (Meta-World's ``sawyer_xyz`` model, the same in every MT10 task);
velocities and efforts are those of Rethink Robotics' Sawyer URDF (``sawyer_description``), which the
MJCF does not state. The MJCF and the URDF carry no acceleration limits: ``ACCELERATION`` is ours,
chosen from the joint-space demonstrations (``dysl_train demos --arm joint``, 600 episodes, run seed
1000): the median episode's largest joint acceleration (over 50 ms) was 2.3-7.9 rad/s² per joint,
and within an episode 99 % of the periods stayed under 1.8-6.3; the limits sit above those with room
(10 rad/s² on the shoulder and elbow, 15 on the wrist), so that they bound the rare jumps of a chunk
rather than the expert's ordinary motion. They reach the node as ros2_control's ``joint_limits.<joint>.*``
parameters (``joint_limit_parameters``), as on a robot, where they come from the arm's own docs.

``config/sawyer_arm.urdf`` is ``urdf()`` written out (``python -m dysl_ros.sim.sawyer --write``):
the arm's chain from the MJCF (each body's offset and orientation, the joints' axes) with these limits,
and the gripper's two finger slides.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dysl_ros.joint_limits import JointLimits as PlannerLimits
from dysl_ros.mt10.joint_env import ARM_JOINTS, FINGER_JOINTS
from dysl_ros.sim.motion_metrics import JointLimits

LOWER = (-3.0503, -3.8, -3.0426, -3.0439, -2.9761, -2.9761, -4.7124)
UPPER = (3.0503, -0.5, 3.0426, 3.0439, 2.9761, 2.9761, 4.7124)
"""rad: the MJCF's ``range`` of right_j0 .. right_j6."""
VELOCITY = (1.74, 1.328, 1.957, 1.957, 3.485, 3.485, 4.545)
"""rad/s: Rethink's Sawyer URDF."""
EFFORT = (80.0, 80.0, 40.0, 40.0, 9.0, 9.0, 9.0)
"""N·m: Rethink's Sawyer URDF."""
ACCELERATION = (10.0, 10.0, 10.0, 10.0, 15.0, 15.0, 15.0)
"""rad/s²: ours (see the module's docstring)."""
FINGER_RANGES = ((0.0, 0.04), (-0.03, 0.0))
"""m: the MJCF's range of r_close and l_close."""
FINGER_VELOCITY = 0.1
"""m/s: a finger closing at full actuator force against ``mt10.joint_env.FINGER_DAMPING``."""
FINGER_EFFORT = 400.0
"""N: the MJCF's finger actuator gain times its control range."""
URDF_FILE = Path(__file__).resolve().parents[2] / "config" / "sawyer_arm.urdf"

CHAIN = (
    ("right_arm_base_link", None),
    ("right_l0", "right_j0"),
    ("right_l1", "right_j1"),
    ("right_l2", "right_j2"),
    ("right_l3", "right_j3"),
    ("right_l4", "right_j4"),
    ("right_l5", "right_j5"),
    ("right_l6", "right_j6"),
    ("right_hand", None),
    ("hand", None),
)
"""The MJCF bodies from the arm's base to the gripper, and the joint that moves each (None: fixed)."""
FINGERS = (("rightclaw", "r_close"), ("leftclaw", "l_close"))


def motion_limits(joints: tuple[str, ...] = ARM_JOINTS) -> JointLimits:
    """The arm's limits for ``motion_metrics`` (hits are counted against them)."""
    index = [ARM_JOINTS.index(j) for j in joints]

    def pick(values: tuple[float, ...]) -> list[float]:
        return [values[i] for i in index]

    return JointLimits.make(len(joints), pick(LOWER), pick(UPPER), pick(VELOCITY), pick(ACCELERATION))


def planner_limits() -> PlannerLimits:
    """The arm's limits as dysl_node plans with them (``dysl_ros.motion``; no jerk limit): what
    ``config/sawyer_arm.urdf`` and ``joint_limit_parameters`` give the node, for planning in process."""
    def array(values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    return PlannerLimits(ARM_JOINTS, array(LOWER), array(UPPER), array(VELOCITY), array(ACCELERATION),
                         np.full(len(ARM_JOINTS), np.inf))


def joint_limit_parameters() -> dict[str, dict[str, Any]]:
    """ros2_control's ``joint_limits.<joint>.*`` for the acceleration limits (the URDF has none)."""
    return {
        name: {"has_acceleration_limits": True, "max_acceleration": float(ACCELERATION[i])}
        for i, name in enumerate(ARM_JOINTS)
    }


def _rpy(quat_wxyz: Any) -> tuple[float, float, float]:
    """URDF's roll, pitch, yaw (R = Rz(yaw)·Ry(pitch)·Rx(roll)) of a unit quaternion (w, x, y, z); at
    pitch ±90° the roll is taken as 0."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    r = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    pitch = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    if math.cos(pitch) > 1e-9:
        return math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0])
    return 0.0, pitch, math.atan2(-r[0, 1], r[1, 1])


def _numbers(values: Any) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def urdf(model: Any = None) -> str:
    """The Sawyer arm's URDF: the MJCF's chain (``model``: a MuJoCo model of any MT10 task; default:
    reach-v3's) with the limits above."""
    import mujoco

    if model is None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        env_class: Any = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE["reach-v3-goal-observable"]
        env: Any = env_class(seed=0)
        model = env.model

    def body(name: str) -> int:
        return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name))

    def axis(joint: str) -> Any:
        return model.jnt_axis[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)]

    lines = ['<?xml version="1.0"?>', "<!-- Written by dysl_ros/sim/sawyer.py: Meta-World's Sawyer MJCF chain with",
             "     its joint ranges; velocities and efforts from Rethink's Sawyer URDF; acceleration limits are",
             "     not URDF: see dysl_ros/sim/sawyer.py. -->", '<robot name="sawyer">', '  <link name="base"/>']
    parent = "base"
    for link, joint in CHAIN:
        b = body(link)
        lines.append(f'  <link name="{link}"/>')
        origin = f'<origin xyz="{_numbers(model.body_pos[b])}" rpy="{_numbers(_rpy(model.body_quat[b]))}"/>'
        if joint is None:
            lines += [f'  <joint name="{parent}_to_{link}" type="fixed">',
                      f'    <parent link="{parent}"/><child link="{link}"/>', f"    {origin}", "  </joint>"]
        else:
            i = ARM_JOINTS.index(joint)
            lines += [
                f'  <joint name="{joint}" type="revolute">',
                f'    <parent link="{parent}"/><child link="{link}"/>',
                f"    {origin}",
                f'    <axis xyz="{_numbers(axis(joint))}"/>',
                f'    <limit lower="{LOWER[i]}" upper="{UPPER[i]}" velocity="{VELOCITY[i]}" effort="{EFFORT[i]}"/>',
                "  </joint>",
            ]
        parent = link
    for (link, joint), (lower, upper) in zip(FINGERS, FINGER_RANGES, strict=True):
        b = body(link)
        lines += [
            f'  <link name="{link}"/>',
            f'  <joint name="{joint}" type="prismatic">',
            f'    <parent link="hand"/><child link="{link}"/>',
            f'    <origin xyz="{_numbers(model.body_pos[b])}" rpy="{_numbers(_rpy(model.body_quat[b]))}"/>',
            f'    <axis xyz="{_numbers(axis(joint))}"/>',
            f'    <limit lower="{lower}" upper="{upper}" velocity="{FINGER_VELOCITY}" effort="{FINGER_EFFORT}"/>',
            "  </joint>",
        ]
    lines.append("</robot>")
    assert tuple(j for _, j in CHAIN if j) == ARM_JOINTS and tuple(j for _, j in FINGERS) == FINGER_JOINTS
    return "\n".join(lines) + "\n"


def read_urdf() -> str:
    """``config/sawyer_arm.urdf`` as shipped."""
    return URDF_FILE.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dysl_ros.sim.sawyer", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {URDF_FILE} (default: print the URDF)")
    args = parser.parse_args(argv)
    text = urdf()
    if args.write:
        URDF_FILE.write_text(text)
        print(f"wrote {URDF_FILE}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
