"""``sim_bridge``'s joint arm modes: the Sawyer's seven joints driven as ros2_control would drive them.

    arm: jtc       ~/joint_trajectory (JointTrajectory) ──► TrajectoryFollower (jtc.py) ─┐
    arm: forward   ~/commands (Float64MultiArray) ──────► forward position controller ─┼─► joint servos
                   ~/action (Float64MultiArray) ────────► gripper (its ``gripper`` value)┘   (1 kHz physics)
                   ~/joint_states ◄── joint_state_broadcaster: names, positions, velocities

The simulation (``mt10.joint_env.JointSpaceTask``) steps its physics at 1 kHz; the controller updates
every ``1000 / controller_rate_hz`` ticks (500 Hz by default): ``jtc`` samples the newest accepted
trajectory by joint_trajectory_controller's rules (``jtc.TrajectoryFollower``: Humble or Jazzy,
measured or desired start state), ``forward`` writes the newest ``~/commands`` (seven finite values in
``right_j0`` .. ``right_j6`` order; anything else is rejected, as forward_command_controller's size
check does, and a non-finite value leaves that joint's setpoint where it was). The gripper, a separate
controller on a robot, takes the ``gripper`` element of the newest model-space ``~/action``.

Time: virtual, as ``jtc_arm``: tick k runs at ``start + k`` ms of the monotonic clock; each loop runs the
ticks that are due, then sleeps. Late scheduling delays when a tick is computed, never what it computes.
Messages are handed to the controllers at the first tick whose virtual time is not before their
arrival; stamps (images, joint states, the follower's clock) are the bridge's ROS time at the episode's
start plus virtual time. Before an episode starts the scene is still, as in the ``real_time`` mode.

Between episodes the arm jumps to the next start pose (Meta-World's reset). With ``policy_node`` the
bridge deactivates that lifecycle node before the reset and activates it after, so that the policy
starts each episode from the measured pose (dysl_node's ramp-in) instead of continuing the plan it
had for the previous one; trajectories and commands that arrived before the episode began are dropped.

Each episode's ``motion`` (``joint_log.summary`` against ``sawyer``'s limits) goes into its
``~/episode_result``; ``motion_log`` writes the whole log of episode ``motion_log_episode`` (``.npz``,
``jtc_arm``'s keys) for plots.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
from rclpy.qos import qos_profile_system_default
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from dysl_ros.mt10.joint_env import (
    ACTION_NAMES,
    ARM_JOINTS,
    GRIPPER_ACTION,
    PHYSICS_RATE_HZ,
    STATE_NAMES,
    TICKS_PER_PERIOD,
    JointSpaceTask,
)
from dysl_ros.sim import joint_log
from dysl_ros.sim.jtc import NS_PER_S, Distro, StartState, Trajectory, TrajectoryFollower, clock_pair
from dysl_ros.sim.jtc_arm import trajectory_from_msg
from dysl_ros.sim.sawyer import motion_limits

if TYPE_CHECKING:
    from dysl_ros.sim.bridge import EpisodeStats, SimBridge

TICK_NS = round(NS_PER_S / PHYSICS_RATE_HZ)
GRIPPER_INDEX = ACTION_NAMES.index(GRIPPER_ACTION)
LIFECYCLE_TIMEOUT_S = 30.0
ACTIVATE, DEACTIVATE = 3, 4
"""lifecycle_msgs/Transition ids."""


class JointArm:
    """The controllers' ROS side (created on the bridge's node) and the episode loop."""

    def __init__(self, bridge: SimBridge) -> None:
        self.bridge = bridge
        params = bridge.params
        self.mode = params.arm
        self._lock = threading.Lock()
        self._arrivals: deque[tuple[int, Any]] = deque()  # (monotonic ns, trajectory or command array)
        self._gripper: deque[tuple[int, float]] = deque()
        self.rejected_commands = 0
        self.motion_log: dict[str, Any] | None = None
        self._episodes_run = 0
        qos = qos_profile_system_default  # what JTC's and forward_command_controller's subscriptions use
        if self.mode == "jtc":
            self.input_sub = bridge.create_subscription(JointTrajectory, "~/joint_trajectory", self._on_trajectory, qos)
        else:
            self.input_sub = bridge.create_subscription(Float64MultiArray, "~/commands", self._on_commands, qos)
        self._lifecycle: Any = None
        if params.policy_node:
            from lifecycle_msgs.srv import ChangeState

            self._lifecycle = bridge.create_client(ChangeState, f"{params.policy_node.rstrip('/')}/change_state")

    # ---------------------------------------------------------------- subscriptions

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        trajectory = trajectory_from_msg(msg)
        with self._lock:
            self._arrivals.append((time.monotonic_ns(), trajectory))

    def _on_commands(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        if values.shape != (len(ARM_JOINTS),):
            with self._lock:
                self.rejected_commands += 1
            self.bridge._warn_throttled(
                "commands", f"rejected ~/commands: {len(ARM_JOINTS)} values ({', '.join(ARM_JOINTS)}) expected, "
                f"got {values.size}",
            )
            return
        with self._lock:
            self._arrivals.append((time.monotonic_ns(), values))

    def on_action(self, values: npt.NDArray[np.float64]) -> None:
        """The model-space ``~/action`` (the bridge checked its size and finiteness): the gripper's value."""
        with self._lock:
            self._gripper.append((time.monotonic_ns(), float(values[GRIPPER_INDEX])))

    def _take(self, queue: deque[Any], until_ns: int) -> list[Any]:
        with self._lock:
            taken = []
            while queue and queue[0][0] <= until_ns:
                taken.append(queue.popleft())
        return taken

    def _drop_before(self, monotonic_ns: int) -> None:
        """Forget what arrived before ``monotonic_ns``."""
        with self._lock:
            for queue in (self._arrivals, self._gripper):
                while queue and queue[0][0] < monotonic_ns:
                    queue.popleft()

    def _drop_stamped_before(self, stamp_ns: int) -> None:
        """Forget trajectories stamped before ``stamp_ns`` (the episode's first image): planned for an
        earlier episode, however late they arrived. Unstamped ones (start on arrival) are kept."""
        with self._lock:
            kept = [(t, m) for t, m in self._arrivals if not (isinstance(m, Trajectory) and 0 < m.stamp_ns < stamp_ns)]
            self._arrivals = deque(kept)

    # ---------------------------------------------------------------- the policy's lifecycle

    def policy_transition(self, transition: int) -> None:
        """Deactivate (4) or activate (3) ``policy_node``; RuntimeError when it does not answer or refuses."""
        from lifecycle_msgs.srv import ChangeState

        if self._lifecycle is None:
            return
        if not self._lifecycle.wait_for_service(timeout_sec=LIFECYCLE_TIMEOUT_S):
            raise RuntimeError(f"no lifecycle service {self._lifecycle.srv_name} within {LIFECYCLE_TIMEOUT_S:g} s")
        request = ChangeState.Request()
        request.transition.id = transition
        future = self._lifecycle.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(LIFECYCLE_TIMEOUT_S) or future.result() is None:
            raise RuntimeError(f"{self._lifecycle.srv_name}: no answer to transition {transition}")
        if not future.result().success:
            name = "activate" if transition == ACTIVATE else "deactivate"
            raise RuntimeError(f"{self.bridge.params.policy_node} refused to {name}")

    # ---------------------------------------------------------------- publishing

    def publish_state(self, env: JointSpaceTask, stamp_ns: int) -> None:
        from sensor_msgs.msg import JointState

        msg = JointState(name=list(STATE_NAMES))
        msg.position = [*env.joint_positions().tolist(), *env.finger_positions().tolist()]
        msg.velocity = [*env.joint_velocities().tolist(), *env.finger_velocities().tolist()]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, NS_PER_S)
        msg.header.frame_id = "world"
        self.bridge.state_pub.publish(msg)

    # ---------------------------------------------------------------- the episode

    def run_episode(self, env: JointSpaceTask, stats: EpisodeStats) -> None:
        bridge, params = self.bridge, self.bridge.params
        self._start_episode(env, stats)
        controller = self._controller(env)
        ticks_per_state = round(PHYSICS_RATE_HZ / params.joint_state_rate_hz)
        ticks_per_frame = round(PHYSICS_RATE_HZ / params.camera_rate_hz)
        ros_start, mono_start = clock_pair(lambda: bridge.get_clock().now().nanoseconds)
        stats.first_step_stamp = ros_start * 1e-9
        tick = 0
        done = False
        while not done:
            due = (time.monotonic_ns() - mono_start) // TICK_NS
            if due - tick > TICKS_PER_PERIOD:
                stats.late_steps += 1  # a whole control period behind: counted, then caught up
            while tick <= due and not done:
                now_ns = ros_start + tick * TICK_NS
                controller.step(self, env, tick, now_ns, mono_start + tick * TICK_NS)
                tick += 1
                if tick % ticks_per_state == 0:
                    self.publish_state(env, now_ns + TICK_NS)
                if tick % TICKS_PER_PERIOD == 0:
                    _obs, success, done = env.end_step()
                    stats.steps += 1
                    stats.success = stats.success or success
                    if stats.steps == 1:
                        stats.first_step_stamp = (now_ns + TICK_NS) * 1e-9
                if tick % ticks_per_frame == 0 and not done:
                    self.publish_state(env, now_ns + TICK_NS)
                    bridge._publish_image_at(now_ns + TICK_NS, env.render(), stats)
            delay_ns = mono_start + tick * TICK_NS - time.monotonic_ns()
            if delay_ns > 0 and not done:
                time.sleep(delay_ns / NS_PER_S)
        stats.end_stamp = (ros_start + tick * TICK_NS) * 1e-9
        self._finish_episode(stats, controller)

    def _start_episode(self, env: JointSpaceTask, stats: EpisodeStats) -> None:
        """Reset (the policy node deactivated around it), then hold the scene still until the policy
        answers one of this episode's images; what was planned for an earlier episode is dropped."""
        bridge = self.bridge
        if self._episodes_run > 0 and self._lifecycle is not None:
            self.policy_transition(DEACTIVATE)
        bridge._reset(env, stats)
        self.publish_state(env, bridge.get_clock().now().nanoseconds)
        if self._episodes_run > 0 and self._lifecycle is not None:
            self.policy_transition(ACTIVATE)
        self._drop_before(time.monotonic_ns())  # the previous episode's, the deactivate's stop included
        bridge._publish_instruction(stats)
        self._episodes_run += 1
        bridge._wait_for_episode_start(env, stats, lambda stamp: self.publish_state(env, stamp))
        self._drop_stamped_before(round(stats.start_stamp * NS_PER_S))

    def _controller(self, env: JointSpaceTask) -> _Controller:
        params = self.bridge.params
        follower = None
        if self.mode == "jtc":
            follower = TrajectoryFollower(
                ARM_JOINTS, distro=cast(Distro, params.jtc_distro),
                start_state=cast(StartState, params.jtc_start_state), update_rate_hz=params.controller_rate_hz,
            )
            follower.activate(env.joint_positions(), env.joint_velocities())
        ticks_per_update = round(PHYSICS_RATE_HZ / params.controller_rate_hz)
        return _Controller(follower, env.setpoint, ticks_per_update, joint_log.JointLog(ARM_JOINTS))

    def _finish_episode(self, stats: EpisodeStats, controller: _Controller) -> None:
        """The episode's motion figures and counts into its result; its log to ``motion_log`` if asked."""
        params = self.bridge.params
        data = controller.log.as_dict()
        summary = joint_log.summary(joint_log.report(data, motion_limits()))
        follower = controller.follower
        stats.extra = {
            "arm": self.mode,
            "motion": {k: (round(v, 6) if math.isfinite(v) else None) for k, v in summary.items()},
            "trajectories_rejected": controller.rejections,
            "commands_rejected": self.rejected_commands,
            "nonfinite_commands": controller.nonfinite_commands
            + (follower.nonfinite_received if follower is not None else 0),
        }
        if params.motion_log and self._episodes_run == params.motion_log_episode:
            self.motion_log = {**data, "task": np.array(stats.spec.task), "seed": np.array(stats.spec.seed),
                               "success": np.array(stats.success), "arm": np.array(self.mode)}
            Path(params.motion_log).parent.mkdir(parents=True, exist_ok=True)
            np.savez(params.motion_log, **self.motion_log)
        self.bridge._count_chunks(stats)


@dataclass
class _Controller:
    """One episode's controller: the trajectory follower (``jtc``) or the newest command (``forward``),
    the setpoint it holds, the gripper command, and the log of every update."""

    follower: TrajectoryFollower | None
    setpoint: npt.NDArray[np.float64]
    ticks_per_update: int
    log: joint_log.JointLog
    velocity: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(len(ARM_JOINTS)))
    acceleration: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(len(ARM_JOINTS)))
    gripper: float | None = None
    rejections: int = 0
    nonfinite_commands: int = 0

    def step(self, arm: JointArm, env: JointSpaceTask, tick: int, now_ns: int, virtual_mono: int) -> None:
        """Physics tick ``tick``: the messages due by then handed over, the controller updated when
        one is due, then the servos stepped toward the setpoint."""
        for _arrived, value in arm._take(arm._gripper, virtual_mono):
            self.gripper = value
        if tick % self.ticks_per_update == 0:
            self._update(arm, env, now_ns, virtual_mono)
        env.physics_step(self.setpoint, self.gripper)

    def _update(self, arm: JointArm, env: JointSpaceTask, now_ns: int, virtual_mono: int) -> None:
        q, qd = env.joint_positions(), env.joint_velocities()
        handoff = False
        if self.follower is not None:
            for _arrived, trajectory in arm._take(arm._arrivals, virtual_mono):
                assert isinstance(trajectory, Trajectory)
                reason = self.follower.receive(trajectory, now_ns)
                if reason is not None:
                    self.rejections += 1
                    arm.bridge._warn_throttled("trajectory", f"trajectory rejected: {reason}")
            sampled = self.follower.update(now_ns, q, qd)
            self.setpoint, self.velocity, self.acceleration = (
                sampled.positions, sampled.velocities, sampled.accelerations
            )
            handoff = sampled.handoff
        else:
            update_s = self.ticks_per_update * TICK_NS / NS_PER_S
            for _arrived, command in arm._take(arm._arrivals, virtual_mono):
                self.nonfinite_commands += int(np.count_nonzero(~np.isfinite(command)))
                new = np.where(np.isfinite(command), command, self.setpoint)
                self.velocity = (new - self.setpoint) / update_s
                self.setpoint = new
                handoff = True
        self.log.add(now_ns, self.setpoint, self.velocity, self.acceleration, q, qd, handoff)
        if self.follower is None:
            self.velocity = np.zeros(len(ARM_JOINTS))  # a held command
