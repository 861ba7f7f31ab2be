"""Meta-World's Sawyer as a joint-controlled arm: the mocap weld off, seven joint position servos.

``JointSpaceTask`` wraps one ``MetaWorldTask`` (same scene, camera, seeds and success) and drives the
arm's seven joints ``right_j0`` .. ``right_j6`` instead of Meta-World's mocap:

    env = JointSpaceTask("pick-place-v3", seed=7)
    obs = env.reset()
    q = env.joint_positions()                        # (7,) rad, the measured arm
    targets, gripper, _ = env.expert(obs)            # the scripted expert, as joint targets
    obs, success, done = env.step(targets, gripper)  # one control period (50 ms) at 1 kHz physics

Choices, and why:

- **Reset** runs Meta-World's own (weld on, mocap at the start pose, 2.5 ms physics), then turns the
  weld off: every episode starts where an end-effector episode does.
- **Physics** at ``PHYSICS_RATE_HZ`` (1 kHz; Meta-World's 400 Hz is below what a joint controller
  runs at). Each arm joint is a position servo: torque ``SERVO_STIFFNESS · (setpoint − q)`` plus
  gravity and Coriolis compensation, and a damping (never below the MJCF's own 10 N·m·s/rad) that makes
  the joint critically damped at the start pose. The damping is the joint's ``dof_damping``, which
  MuJoCo integrates implicitly: stiff servos on the wrist's tiny inertias stay stable at 1 kHz. The
  servo takes positions only, like a ros2_control position command interface: no velocity
  feed-forward, so a moving setpoint is tracked with a lag (about 2 % of its speed in rad per rad/s).
- **Control period** ``CONTROL_PERIOD_S`` (50 ms, 20 Hz): one policy action per period, as in
  ``make demo``. Meta-World's step is 12.5 ms; the scripted experts move the hand up to 1 cm per
  step, so here the hand moves up to 20 cm/s instead of 80. The gripper fingers close at a quarter of
  their Meta-World speed (``FINGER_DAMPING``), so that hand travel per finger stroke, which the
  experts' grasp timing depends on, stays what it is in Meta-World.
- **The expert** (``expert``): Meta-World's scripted policy gives a hand motion; it is integrated into
  a virtual mocap target (clipped to Meta-World's bounds, the floor ``FLOOR_MARGIN`` lower: a stiff
  servo does not sag below it as the weld does, and peg-insert-side's expert needs that), the hand is
  sent a quarter of the way to it each period (``EXPERT_LAG``: the weld's lag in Meta-World steps,
  which the experts' paths were tuned with), and damped least squares (joint limits respected, the
  start posture kept in the null space) turns that hand pose (the start orientation) into joint targets.

Joint ranges are the MJCF's (``arm_limits``); ``sawyer_urdf`` writes them as a URDF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dysl_ros.mt10.env import (
    DEFAULT_GOAL_MARKER_RADIUS,
    DEFAULT_MAX_STEPS,
    DEFAULT_POST_SUCCESS_STEPS,
    MetaWorldTask,
    Obs,
)

Array = npt.NDArray[np.float64]

ARM_JOINTS: tuple[str, ...] = tuple(f"right_j{i}" for i in range(7))
"""The Sawyer's arm joints, base to wrist, as its MJCF (and Rethink's URDF) name them."""
FINGER_JOINTS: tuple[str, ...] = ("r_close", "l_close")
"""The gripper's two slide joints (m)."""
STATE_NAMES: tuple[str, ...] = ARM_JOINTS + FINGER_JOINTS
"""A joint-space policy's state: the seven arm joint positions (rad) and the two finger positions (m)."""
GRIPPER_ACTION = "gripper"
ACTION_NAMES: tuple[str, ...] = (*ARM_JOINTS, GRIPPER_ACTION)
"""A joint-space policy's actions: one per arm joint (the change of its target, rad), then the gripper
command in [-1, 1] (Meta-World's: -1 open, 1 closed)."""

CONTROL_PERIOD_S = 0.05
PHYSICS_RATE_HZ = 1000.0
PHYSICS_DT_S = 1.0 / PHYSICS_RATE_HZ
TICKS_PER_PERIOD = round(CONTROL_PERIOD_S * PHYSICS_RATE_HZ)
SERVO_STIFFNESS = 10_000.0
"""N·m/rad, every arm joint."""
FINGER_DAMPING = 4000.0
"""N·s/m on each finger slide (Meta-World's: 1000)."""
EXPERT_LAG = 0.25
FLOOR_MARGIN = 0.01
IK_ITERATIONS = 10
IK_DAMPING = 1e-2
"""Damped least squares: lambda (the square is added to J·Jᵀ)."""
IK_LIMIT_MARGIN = 0.01
"""rad kept from each joint limit by the expert's targets."""
IK_POSTURE_GAIN = 0.1
"""Null-space pull toward the start posture, per iteration (of the difference)."""


@dataclass(frozen=True)
class ArmLimits:
    """Per arm joint, from the MJCF: position range (rad)."""

    lower: Array
    upper: Array


class JointSpaceTask:
    """One MT10 task whose arm is driven through joint position servos. Build it like ``make_env``."""

    def __init__(
        self,
        task: str,
        seed: int,
        image_size: int = 128,
        camera: str = "corner",
        max_steps: int = DEFAULT_MAX_STEPS,
        post_success_steps: int = DEFAULT_POST_SUCCESS_STEPS,
        goal_marker_radius: float | None = DEFAULT_GOAL_MARKER_RADIUS,
    ) -> None:
        import mujoco

        self._inner = MetaWorldTask(
            task, seed, image_size, camera, max_steps=max_steps, post_success_steps=post_success_steps,
            goal_marker_radius=goal_marker_radius,
        )
        self._mujoco: Any = mujoco
        env = self._inner._env
        self._env: Any = env
        model = env.model
        self._model: Any = model
        self._data: Any = env.data
        self._scratch: Any = mujoco.MjData(model)
        self.task = task
        self.max_steps = max_steps
        self.post_success_steps = post_success_steps

        def joint(name: str) -> int:
            index = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if index < 0:
                raise RuntimeError(f"{task}: the Sawyer model has no joint {name!r}")
            return int(index)

        arm = [joint(name) for name in ARM_JOINTS]
        fingers = [joint(name) for name in FINGER_JOINTS]
        self._qpos = np.asarray([model.jnt_qposadr[j] for j in arm])
        self._dof = np.asarray([model.jnt_dofadr[j] for j in arm])
        self._finger_qpos = np.asarray([model.jnt_qposadr[j] for j in fingers])
        self._finger_dof = np.asarray([model.jnt_dofadr[j] for j in fingers])
        if not np.array_equal(self._dof, np.arange(7)) or not np.array_equal(self._qpos, np.arange(7)):
            raise RuntimeError(f"{task}: expected the arm joints first in qpos and qvel")
        self.limits = ArmLimits(model.jnt_range[arm, 0].astype(np.float64), model.jnt_range[arm, 1].astype(np.float64))
        self._hand = int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand"))
        welds = [i for i in range(model.neq) if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD]
        if len(welds) != 1:
            raise RuntimeError(f"{task}: expected one mocap weld, found {len(welds)}")
        self._weld = welds[0]
        self._meta_timestep = float(model.opt.timestep)
        self._meta_arm_damping = model.dof_damping[self._dof].copy()
        self._meta_finger_damping = model.dof_damping[self._finger_dof].copy()
        self._servo_damping = self._meta_arm_damping.copy()
        self._setpoint = np.zeros(7)
        self._mocap_target = np.zeros(3)
        self._orientation = np.eye(3)
        self._posture = np.zeros(7)
        self._gripper = -1.0
        self._ticks = 0
        self._steps = 0
        self._success_step: int | None = None
        self._episode_over = True

    # Episode ----------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Start the episode of ``seed``: Meta-World's reset with the weld, then the weld off."""
        model, data, mujoco = self._model, self._data, self._mujoco
        data.qfrc_applied[:] = 0.0
        model.opt.timestep = self._meta_timestep
        model.dof_damping[self._dof] = self._meta_arm_damping
        model.dof_damping[self._finger_dof] = self._meta_finger_damping
        data.eq_active[self._weld] = 1
        obs = self._inner.reset(seed)
        data.eq_active[self._weld] = 0
        model.opt.timestep = PHYSICS_DT_S
        data.qvel[:] = 0.0
        mujoco.mj_forward(model, data)
        inertia = data.qM[model.dof_Madr[self._dof]]
        self._servo_damping = np.maximum.reduce([
            self._meta_arm_damping, 2.0 * np.sqrt(SERVO_STIFFNESS * inertia), np.full(7, SERVO_STIFFNESS * PHYSICS_DT_S)
        ])
        model.dof_damping[self._dof] = self._servo_damping
        model.dof_damping[self._finger_dof] = FINGER_DAMPING
        self._setpoint = self.joint_positions()
        self._posture = self._setpoint.copy()
        self._mocap_target = data.xpos[self._hand].copy()
        self._orientation = data.xmat[self._hand].reshape(3, 3).copy()
        self._gripper = -1.0
        self._ticks = 0
        self._steps = 0
        self._success_step = None
        self._episode_over = False
        return obs

    @property
    def seed(self) -> int:
        return self._inner.seed

    @property
    def steps(self) -> int:
        """Control periods run in this episode."""
        return self._steps

    @property
    def succeeded(self) -> bool:
        return self._success_step is not None

    @property
    def episode_over(self) -> bool:
        return self._episode_over

    # State ------------------------------------------------------------------------------------

    def joint_positions(self) -> Array:
        return np.asarray(self._data.qpos[self._qpos], dtype=np.float64).copy()

    def joint_velocities(self) -> Array:
        return np.asarray(self._data.qvel[self._dof], dtype=np.float64).copy()

    def finger_positions(self) -> Array:
        return np.asarray(self._data.qpos[self._finger_qpos], dtype=np.float64).copy()

    def finger_velocities(self) -> Array:
        return np.asarray(self._data.qvel[self._finger_dof], dtype=np.float64).copy()

    def proprio(self, obs: Obs | None = None) -> npt.NDArray[np.float32]:
        """The joint-space policy's state (``STATE_NAMES``): arm joint positions, finger positions."""
        return np.concatenate([self.joint_positions(), self.finger_positions()]).astype(np.float32)

    @property
    def setpoint(self) -> Array:
        """The servos' current position setpoints (rad)."""
        return self._setpoint.copy()

    @property
    def time_s(self) -> float:
        """Simulated time since the episode started (s)."""
        return self._ticks * PHYSICS_DT_S

    def render(self) -> npt.NDArray[np.uint8]:
        return self._inner.render()

    # Physics ----------------------------------------------------------------------------------

    def physics_step(self, setpoint: Array | None = None, gripper: float | None = None) -> None:
        """One physics tick (1 ms) with the servos at ``setpoint`` (default: the last one; a non-finite
        value keeps that joint's last setpoint) and the gripper at ``gripper`` (default: the last)."""
        if self._episode_over:
            raise RuntimeError("the episode is over (or was never started): call reset() first")
        if setpoint is not None:
            target = np.asarray(setpoint, dtype=np.float64).reshape(7)
            self._setpoint = np.where(np.isfinite(target), target, self._setpoint)
        if gripper is not None and math.isfinite(gripper):
            self._gripper = float(np.clip(gripper, -1.0, 1.0))
        data = self._data
        data.ctrl[:] = (self._gripper, -self._gripper)
        q = data.qpos[self._qpos]
        data.qfrc_applied[self._dof] = SERVO_STIFFNESS * (self._setpoint - q) + data.qfrc_bias[self._dof]
        self._mujoco.mj_step(self._model, data)
        self._ticks += 1

    def end_step(self) -> tuple[Obs, bool, bool]:
        """Close one control period: Meta-World's observation and success; (state, success, over)."""
        env, mujoco = self._env, self._mujoco
        for site in env._target_site_config:  # as Meta-World's step: simulation moves the sites
            env._set_pos_site(*site)
        mujoco.mj_forward(self._model, self._data)
        obs = np.clip(env._get_obs(), env.sawyer_observation_space.low, env.sawyer_observation_space.high)
        _reward, info = env.evaluate_state(obs, np.array([0.0, 0.0, 0.0, self._gripper]))
        self._steps += 1
        success = bool(info["success"])
        if success and self._success_step is None:
            self._success_step = self._steps
        done = self._steps >= self.max_steps or (
            self._success_step is not None and self._steps >= self._success_step + self.post_success_steps
        )
        self._episode_over = done
        return np.asarray(obs, dtype=np.float64), success, done

    def step(self, targets: npt.ArrayLike, gripper: float) -> tuple[Obs, bool, bool]:
        """One control period toward joint ``targets`` (rad): the setpoint moves linearly from the last
        target to them over the period, as a trajectory controller interpolates; the gripper command is
        held. Non-finite targets are not followed (that joint keeps its last target)."""
        goal = np.asarray(targets, dtype=np.float64).reshape(-1)
        if goal.shape != (7,):
            raise ValueError(f"joint targets: 7 values (right_j0..right_j6), got {goal.shape[0]}")
        start = self._setpoint.copy()
        goal = np.where(np.isfinite(goal), goal, start)
        for tick in range(1, TICKS_PER_PERIOD + 1):
            self.physics_step(start + (goal - start) * (tick / TICKS_PER_PERIOD), gripper)
        return self.end_step()

    # The expert -------------------------------------------------------------------------------

    def expert(self, obs: Obs, hand_noise: Array | None = None) -> tuple[Array, float, Array]:
        """The scripted expert for this state as joint targets: (targets, gripper, executed targets).
        ``hand_noise`` (3,) is added to the executed hand motion (DART: the executed targets go off
        the expert's path, the labelled ones stay its clean choice); without it both are the same."""
        action = self._inner.expert_action(obs)
        env = self._env
        low = np.asarray(env.mocap_low, dtype=np.float64) - np.array([0.0, 0.0, FLOOR_MARGIN])
        high = np.asarray(env.mocap_high, dtype=np.float64)
        scale = float(env.action_scale)
        hand = self._data.xpos[self._hand].copy()
        q = self.joint_positions()

        def targets_for(motion: Array) -> tuple[Array, Array]:
            mocap = np.clip(self._mocap_target + np.clip(motion, -1.0, 1.0) * scale, low, high)
            return self.inverse_kinematics(q, hand + EXPERT_LAG * (mocap - hand)), mocap

        clean, clean_mocap = targets_for(action[:3].astype(np.float64))
        if hand_noise is None:
            executed, mocap = clean, clean_mocap
        else:
            executed, mocap = targets_for(action[:3].astype(np.float64) + np.asarray(hand_noise, dtype=np.float64))
        self._mocap_target = mocap
        return clean, float(action[3]), executed

    def inverse_kinematics(self, start: Array, hand_position: Array) -> Array:
        """Joint positions that put the hand at ``hand_position`` with the start orientation: damped
        least squares from ``start``, joints at a limit taken out of the step, the start posture
        pulled toward in the null space."""
        model, scratch, mujoco = self._model, self._scratch, self._mujoco
        scratch.qpos[:] = self._data.qpos
        q = np.asarray(start, dtype=np.float64).copy()
        low, high = self.limits.lower + IK_LIMIT_MARGIN, self.limits.upper - IK_LIMIT_MARGIN
        jac_p, jac_r = np.zeros((3, model.nv)), np.zeros((3, model.nv))
        for _ in range(IK_ITERATIONS):
            scratch.qpos[self._qpos] = q
            mujoco.mj_kinematics(model, scratch)
            mujoco.mj_comPos(model, scratch)
            position_error = hand_position - scratch.xpos[self._hand]
            rotation = scratch.xmat[self._hand].reshape(3, 3)
            rotation_error = 0.5 * sum(np.cross(rotation[:, i], self._orientation[:, i]) for i in range(3))
            if np.linalg.norm(position_error) < 1e-5 and np.linalg.norm(rotation_error) < 1e-4:
                break
            mujoco.mj_jacBody(model, scratch, jac_p, jac_r, self._hand)
            jacobian = np.vstack([jac_p[:, self._dof], jac_r[:, self._dof]])
            error = np.concatenate([position_error, rotation_error])
            free = np.ones(7, dtype=bool)
            step = np.zeros(7)
            for _active_set in range(7):
                masked = jacobian * free
                pinv = masked.T @ np.linalg.inv(masked @ masked.T + IK_DAMPING**2 * np.eye(6))
                posture = (np.eye(7) - pinv @ masked) @ (IK_POSTURE_GAIN * (self._posture - q)) * free
                step = pinv @ error + posture
                blocked = free & (((q + step < low) & (step < 0)) | ((q + step > high) & (step > 0)))
                if not blocked.any():
                    break
                free &= ~blocked
            q = np.clip(q + step, low, high)
        return q

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> JointSpaceTask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def arm_limits(task: str = "reach-v3") -> ArmLimits:
    """The arm joints' ranges in the Sawyer MJCF (the same in every MT10 task), without rendering."""
    import mujoco
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    env_class: Any = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"]
    env: Any = env_class(seed=0)
    model = env.model
    index = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name) for name in ARM_JOINTS]
    limits = ArmLimits(model.jnt_range[index, 0].astype(np.float64), model.jnt_range[index, 1].astype(np.float64))
    env.close()
    return limits
