"""``sim_bridge``: a Meta-World MT10 task as a ROS 2 robot.

    ~/image (Image, rgb8) ──────► policy ──► ~/action (Float64MultiArray)      real_time
    ~/joint_states (JointState)             ~/action_chunk (JointTrajectory)  lockstep (+ episode start)
    ~/instruction (String, latched)
    ~/episode_result (String: one JSON object per episode, latched history)

Published observations carry one stamp, from the bridge's ROS clock, for the image and the joint
state of the same simulated state; ``joint_states.position`` is the proprio vector the reference
model was trained on (hand xyz in metres, gripper opening; ``MetaWorldTask.proprio``).

Modes:

- ``real_time``: one ``env.step`` per control period on wall-clock deadlines (``control_rate_hz``),
  applying the latest ``~/action`` received since the previous step (older ones in between are
  superseded). A step with no new action applies ``on_missing_action``: ``hold`` repeats the last
  applied action, ``zero`` applies zeros (both apply zeros before the episode's first action). The
  joint state goes out after every step, the image at ``camera_rate_hz`` (at step times). With
  ``wait_for_policy`` (default) an episode's first step waits until an ``~/action_chunk`` stamped
  with one of the episode's images arrived: the policy has seen the new episode, and actions still
  streaming from the previous one are not applied to it.
- ``lockstep`` (reproducible evaluation): publish state + image, wait for the ``~/action_chunk``
  whose ``header.stamp`` equals that image's stamp, execute its first ``execute_steps`` actions,
  repeat. Simulated time advances only by executed actions, so wall-clock speed does not change
  the episode; stamps are still the ROS clock at publication (the policy node checks image age
  against its own clock), strictly increasing, one per published image. When the chunk does not
  come within ``lockstep_retry_s`` (a best-effort image can be dropped), the unchanged observation
  is published again under a new stamp; a chunk for any of them is accepted.

Episodes: for each task of ``tasks`` (MT10 order), ``episodes_per_task`` episodes with environment
seed ``episode_seed(seed, task, e)`` and instruction ``pick_instruction(task, env_seed)`` from
``dysl_ros.training.demos``: the episodes of the in-process closed-loop benchmark and of
``dysl_train demos`` for the same run seed. Each episode starts by publishing its instruction.

``~/episode_result`` (reliable, transient local, the last 1000 kept): one JSON object per episode,
keys ``task``, ``episode`` (index within the task), ``seed`` (environment seed), ``run_seed``,
``instruction``, ``mode``, ``success`` (Meta-World ``info["success"]`` at any step), ``steps``,
``wall_time_s`` (first observation published to last step), ``start_stamp`` / ``end_stamp`` (ROS
time in seconds of the episode's first observation and last step), ``first_step_stamp``,
``chunks_received`` (chunks stamped with this episode's images), ``chunks_executed`` (lockstep),
``actions_applied`` / ``actions_missing`` (real_time: steps with a new action / without one),
``actions_rejected``, ``late_steps`` (real_time: deadlines missed by more than one period),
``error`` (null, or why the episode was aborted).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import rclpy
import rclpy.logging
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from dysl_ros.mt10.tasks import ACTION_DIM, episode_seed, pick_instruction
from dysl_ros.qos import LATCHED_QOS, SENSOR_QOS, latched, reliable
from dysl_ros.sim import rosenv
from dysl_ros.sim.params import PARAMETERS, BridgeConfigError, BridgeParams
from dysl_ros.wiring import EPISODE_RESULT_TOPIC

if TYPE_CHECKING:
    from dysl_ros.sim.joint_arm import JointArm

RESULTS_QOS = latched(1000)
COMMAND_QOS = reliable(10)
JOINT_NAMES = ("hand_x", "hand_y", "hand_z", "gripper")
STATE_LEAD_S = 0.01
"""lockstep: the joint state goes out this long before its image, so that the policy node, which
pairs each image with the newest state it holds, has it when the image arrives."""
LOG_PERIOD_S = 5.0
KEPT_CHUNKS = 64
EXIT_OK, EXIT_FAILED = 0, 1


class PolicyTimeout(RuntimeError):
    """The policy did not answer within ``policy_timeout_s``."""


@dataclass(frozen=True)
class EpisodeSpec:
    task: str
    episode: int
    seed: int
    instruction: str


def episode_plan(params: BridgeParams) -> list[EpisodeSpec]:
    """The episodes of a run, in order: seeds and instructions derived exactly as in ``demos.py``."""
    plan = []
    for task in params.tasks:
        for e in range(params.episodes_per_task):
            env_seed = episode_seed(params.seed, task, e)
            plan.append(EpisodeSpec(task, e, env_seed, pick_instruction(task, env_seed)))
    return plan


@dataclass
class EpisodeStats:
    spec: EpisodeSpec
    start_stamp: float = math.nan
    first_step_stamp: float = math.nan
    end_stamp: float = math.nan
    started: float = 0.0  # monotonic
    steps: int = 0
    success: bool = False
    chunks_received: int = 0
    chunks_executed: int = 0
    actions_applied: int = 0
    actions_missing: int = 0
    actions_rejected: int = 0
    late_steps: int = 0
    stamps: set[int] = field(default_factory=set)  # ns of every image published in this episode
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the joint arm modes' keys (joint_arm.py)


def _stamp_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _seconds(ns: int) -> float:
    return ns * 1e-9


def _time(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SimBridge(Node):
    """The ROS side: parameters, publishers, subscriptions. ``run()`` simulates (call from main)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_bridge", **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(
                spec.name,
                spec.default,
                ParameterDescriptor(description=spec.description, read_only=True, dynamic_typing=True),
            )
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        self.params = BridgeParams.from_values(values)  # BridgeConfigError: the caller reports and exits

        self._cond = threading.Condition()
        self._latest_action: tuple[int, npt.NDArray[np.float32]] | None = None  # (sequence number, action)
        self._action_seq = 0
        self._actions_rejected = 0
        self._chunks: dict[int, npt.NDArray[np.float32]] = {}  # image stamp ns -> actions (n, 4)
        self._bad_chunks: dict[int, str] = {}
        self._chunk_order: list[int] = []
        self._last_stamp_ns = 0
        self._last_log: dict[str, float] = {}
        self._episode: EpisodeStats | None = None  # the running one: chunks are counted as they arrive
        self._episodes_run = 0

        self.image_pub = self.create_publisher(Image, "~/image", SENSOR_QOS)
        self.state_pub = self.create_publisher(JointState, "~/joint_states", SENSOR_QOS)
        self.instruction_pub = self.create_publisher(String, "~/instruction", LATCHED_QOS)
        self.result_pub = self.create_publisher(String, EPISODE_RESULT_TOPIC, RESULTS_QOS)
        self.action_sub = self.create_subscription(Float64MultiArray, "~/action", self._on_action, COMMAND_QOS)
        self.chunk_sub = self.create_subscription(JointTrajectory, "~/action_chunk", self._on_chunk, COMMAND_QOS)
        self.joint_arm: JointArm | None = None
        self._action_dim = ACTION_DIM
        if self.params.arm != "ee":
            from dysl_ros.mt10.joint_env import ACTION_NAMES
            from dysl_ros.sim.joint_arm import JointArm

            self.joint_arm = JointArm(self)
            self._action_dim = len(ACTION_NAMES)

    # ---------------------------------------------------------------- subscriptions

    def _warn_throttled(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= LOG_PERIOD_S:
            self._last_log[key] = now
            self.get_logger().warning(message)

    def _on_action(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        if values.shape != (self._action_dim,) or not np.all(np.isfinite(values)):
            with self._cond:
                self._actions_rejected += 1
                count = self._actions_rejected
            self._warn_throttled(
                "action",
                f"rejected ~/action ({count} so far): need {self._action_dim} finite values, got {list(values)}",
            )
            return
        if self.joint_arm is not None:
            self.joint_arm.on_action(values)
            return
        with self._cond:
            self._action_seq += 1
            self._latest_action = (self._action_seq, values.astype(np.float32))

    def _on_chunk(self, msg: JointTrajectory) -> None:
        stamp = _stamp_ns(msg.header.stamp)
        problem = ""
        if not msg.points:
            problem = "no points"
        elif any(len(p.positions) != self._action_dim for p in msg.points):
            problem = f"points must have {self._action_dim} positions, got {[len(p.positions) for p in msg.points]}"
        actions = np.asarray([list(p.positions) for p in msg.points], dtype=np.float64) if not problem else None
        if actions is not None and not np.all(np.isfinite(actions)):
            problem, actions = "non-finite positions", None
        with self._cond:
            if actions is None:
                self._bad_chunks[stamp] = problem
            else:
                self._chunks[stamp] = actions.astype(np.float32)
                if self._episode is not None and stamp in self._episode.stamps:
                    self._episode.chunks_received += 1
            self._chunk_order.append(stamp)
            while len(self._chunk_order) > KEPT_CHUNKS:
                old = self._chunk_order.pop(0)
                self._chunks.pop(old, None)
                self._bad_chunks.pop(old, None)
            self._cond.notify_all()
        if problem:
            self._warn_throttled("chunk", f"rejected ~/action_chunk stamped {_seconds(stamp):.6f}: {problem}")

    def _take_action(self, after_seq: int) -> tuple[int, npt.NDArray[np.float32]] | None:
        with self._cond:
            latest = self._latest_action
        return latest if latest is not None and latest[0] > after_seq else None

    def _wait_chunk(self, stamps: set[int], timeout: float) -> tuple[int, npt.NDArray[np.float32]] | None:
        """The chunk stamped with one of ``stamps`` (the newest such image first), or None on timeout."""

        def find() -> tuple[int, npt.NDArray[np.float32]] | None:
            for stamp in sorted(stamps, reverse=True):
                if stamp in self._bad_chunks:
                    raise RuntimeError(
                        f"the action chunk for image {_seconds(stamp):.6f} is malformed: {self._bad_chunks[stamp]}"
                    )
                if stamp in self._chunks:
                    return stamp, self._chunks[stamp]
            return None

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = find()
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self._cond.wait(min(remaining, 0.1))

    # ---------------------------------------------------------------- publishing

    def _new_stamp(self) -> Time:
        ns = max(self.get_clock().now().nanoseconds, self._last_stamp_ns + 1)  # unique, increasing
        self._last_stamp_ns = ns
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _publish_state(self, stamp: Time, proprio: npt.NDArray[np.float32]) -> None:
        msg = JointState(name=list(JOINT_NAMES), position=[float(x) for x in proprio])
        msg.header.stamp = stamp
        msg.header.frame_id = "world"
        self.state_pub.publish(msg)

    def _publish_image_at(self, stamp_ns: int, frame: npt.NDArray[np.uint8], stats: EpisodeStats) -> None:
        """An image under a given stamp (the joint arm modes' virtual time); stamps stay increasing."""
        stamp_ns = max(stamp_ns, self._last_stamp_ns + 1)
        self._last_stamp_ns = stamp_ns
        self._publish_image(_time(stamp_ns), frame, stats)

    def _publish_image(self, stamp: Time, frame: npt.NDArray[np.uint8], stats: EpisodeStats) -> None:
        height, width = frame.shape[:2]
        msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
        msg.data = frame.tobytes()
        msg.header.stamp = stamp
        msg.header.frame_id = self.params.camera
        with self._cond:
            stats.stamps.add(_stamp_ns(stamp))
        self.image_pub.publish(msg)

    def _publish_result(self, stats: EpisodeStats) -> dict[str, Any]:
        spec = stats.spec
        result = {
            "task": spec.task,
            "episode": spec.episode,
            "seed": spec.seed,
            "run_seed": self.params.seed,
            "instruction": spec.instruction,
            "mode": self.params.mode,
            "success": stats.success,
            "steps": stats.steps,
            "wall_time_s": round(time.monotonic() - stats.started, 4),
            "start_stamp": stats.start_stamp,
            "first_step_stamp": stats.first_step_stamp,
            "end_stamp": stats.end_stamp,
            "chunks_received": stats.chunks_received,
            "chunks_executed": stats.chunks_executed,
            "actions_applied": stats.actions_applied,
            "actions_missing": stats.actions_missing,
            "actions_rejected": stats.actions_rejected,
            "late_steps": stats.late_steps,
            "error": stats.error,
            **stats.extra,
        }
        self.result_pub.publish(String(data=json.dumps(result)))
        return result

    # ---------------------------------------------------------------- running

    def _policy_ready(self) -> bool:
        """min_image_subscribers read ~/image and something writes what this mode acts on (a policy node;
        the joint arm modes: also its controller input and the ~/action the gripper takes)."""
        readers = self.image_pub.get_subscription_count()
        topics = [self._answer_topic()]
        if self.joint_arm is not None:
            topics += [self.joint_arm.input_sub.topic_name, self.action_sub.topic_name]
        return readers >= self.params.min_image_subscribers and all(self.count_publishers(t) > 0 for t in topics)

    def _answer_topic(self) -> str:
        params = self.params
        answer = self.action_sub if params.mode == "real_time" and not params.wait_for_policy else self.chunk_sub
        return answer.topic_name

    def _connection_summary(self) -> str:
        answers = [self._answer_topic()]
        if self.joint_arm is not None:
            answers += [self.joint_arm.input_sub.topic_name, self.action_sub.topic_name]
        return (
            f"{self.image_pub.get_subscription_count()} of {self.params.min_image_subscribers} subscriber(s) on "
            f"{self.image_pub.topic_name}, "
            + ", ".join(f"{self.count_publishers(topic)} publisher(s) on {topic}" for topic in answers)
        )

    def wait_for_policy(self) -> None:
        """Block until a policy is connected: min_image_subscribers subscribers on ~/image and a
        publisher of ~/action_chunk (~/action in real_time mode without wait_for_policy)."""
        timeout = self.params.startup_timeout_s
        started = last_log = time.monotonic()
        while not self._policy_ready():
            now = time.monotonic()
            if timeout > 0 and now - started > timeout:
                raise PolicyTimeout(
                    f"no policy connected within startup_timeout_s={timeout:g} s ({self._connection_summary()}): "
                    "is the policy node running on this ROS_DOMAIN_ID with its topics remapped to these?"
                )
            if now - last_log >= 10.0:
                last_log = now
                self.get_logger().info(f"waiting for a policy: {self._connection_summary()}")
            time.sleep(0.05)

    def run(self) -> int:
        """Simulate every episode of the plan; returns the process exit status."""
        from dysl_ros.mt10.env import make_env
        from dysl_ros.mt10.joint_env import JointSpaceTask

        params = self.params
        make: Any = JointSpaceTask if params.arm != "ee" else make_env
        plan = episode_plan(params)
        self.get_logger().info(
            f"{params.mode}, arm {params.arm}: {len(plan)} episode(s) over {', '.join(params.tasks)}, "
            f"run seed {params.seed}"
            + (f", {params.control_rate_hz:g} Hz control, {params.camera_rate_hz:g} Hz camera"
               if params.mode == "real_time" else f", {params.execute_steps} actions per chunk")
        )
        self.wait_for_policy()
        env: Any = None
        successes = 0
        try:
            for number, spec in enumerate(plan, start=1):
                if env is None or env.task != spec.task:
                    if env is not None:
                        env.close()
                    env = make(
                        spec.task, spec.seed, params.image_size, params.camera,
                        max_steps=params.max_steps, post_success_steps=params.post_success_steps,
                        goal_marker_radius=params.goal_marker_radius,
                    )
                stats = EpisodeStats(spec)
                try:
                    if self.joint_arm is not None:
                        self.joint_arm.run_episode(env, stats)
                    elif params.mode == "lockstep":
                        self._run_lockstep(env, stats)
                    else:
                        self._run_real_time(env, stats)
                except (PolicyTimeout, RuntimeError) as exc:
                    stats.error = str(exc)
                result = self._publish_result(stats)
                successes += int(stats.success)
                self.get_logger().info(
                    f"episode {number}/{len(plan)}: {spec.task} seed {spec.seed} "
                    f"{'success' if stats.success else 'failure'} in {stats.steps} steps, "
                    f"{result['wall_time_s']:.1f} s ({successes}/{number} successes)"
                )
                if stats.error is not None:
                    self.get_logger().error(f"episode aborted, stopping: {stats.error}")
                    self.result_pub.wait_for_all_acked(Duration(seconds=5.0))
                    return EXIT_FAILED
        finally:
            if env is not None:
                env.close()
        self.get_logger().info(f"done: {successes}/{len(plan)} successes")
        # Let late or slow readers get every result before this process goes away.
        self.result_pub.wait_for_all_acked(Duration(seconds=5.0))
        return EXIT_OK

    def _begin(self, env: Any, stats: EpisodeStats) -> npt.NDArray[np.float64]:
        obs = self._reset(env, stats)
        self._publish_instruction(stats)
        return obs

    def _reset(self, env: Any, stats: EpisodeStats) -> npt.NDArray[np.float64]:
        obs: npt.NDArray[np.float64] = env.reset(stats.spec.seed)
        with self._cond:  # nothing received for an earlier episode may act on this one
            self._latest_action = None
            self._episode = stats
        stats.started = time.monotonic()
        return obs

    def _publish_instruction(self, stats: EpisodeStats) -> None:
        self.instruction_pub.publish(String(data=stats.spec.instruction))

    def _count_chunks(self, stats: EpisodeStats) -> None:
        with self._cond:
            self._episode = None
            stats.actions_rejected = self._actions_rejected

    def _run_lockstep(self, env: Any, stats: EpisodeStats) -> None:
        params = self.params
        obs = self._begin(env, stats)
        done = False
        while not done:
            frame = env.render()
            proprio = env.proprio(obs)
            pending: set[int] = set()
            waited = 0.0
            found = None
            while found is None:
                if waited >= params.policy_timeout_s:
                    raise PolicyTimeout(
                        f"no ~/action_chunk for the image(s) of step {stats.steps} of {stats.spec.task} within "
                        f"policy_timeout_s={params.policy_timeout_s:g} s"
                    )
                stamp = self._new_stamp()
                self._publish_state(stamp, proprio)
                time.sleep(STATE_LEAD_S)
                self._publish_image(stamp, frame, stats)
                pending.add(_stamp_ns(stamp))
                if math.isnan(stats.start_stamp):
                    stats.start_stamp = _seconds(_stamp_ns(stamp))
                wait = min(params.lockstep_retry_s, params.policy_timeout_s - waited)
                found = self._wait_chunk(pending, wait)
                waited += wait
            _, actions = found
            stats.chunks_executed += 1
            for action in actions[: params.execute_steps]:
                obs, success, done = env.step(action)
                stats.steps += 1
                stats.success = stats.success or success
                if stats.steps == 1:
                    stats.first_step_stamp = self.get_clock().now().nanoseconds * 1e-9
                if done:
                    break
        stats.end_stamp = self.get_clock().now().nanoseconds * 1e-9
        self._count_chunks(stats)

    def _wait_for_episode_start(self, env: Any, stats: EpisodeStats, publish_state: Any) -> None:
        """Before the first step: the scene is still, published at the camera rate (``publish_state(stamp
        ns)`` then the image) until the policy answers one of this episode's images (``wait_for_policy``)."""
        params = self.params
        camera_period = 1.0 / params.camera_rate_hz
        frame = env.render()
        next_frame = time.monotonic()
        waiting_since = time.monotonic()
        while True:
            stamp = self._new_stamp()
            publish_state(_stamp_ns(stamp))
            self._publish_image(stamp, frame, stats)
            if math.isnan(stats.start_stamp):
                stats.start_stamp = _seconds(_stamp_ns(stamp))
            if not params.wait_for_policy:
                break
            next_frame += camera_period
            if self._wait_chunk(stats.stamps, max(0.0, next_frame - time.monotonic())) is not None:
                break
            if time.monotonic() - waiting_since > params.policy_timeout_s:
                raise PolicyTimeout(
                    f"no ~/action_chunk for any image of episode {stats.spec.episode} of {stats.spec.task} within "
                    f"policy_timeout_s={params.policy_timeout_s:g} s"
                )

    def _run_real_time(self, env: Any, stats: EpisodeStats) -> None:
        params = self.params
        period, camera_period = params.dt, 1.0 / params.camera_rate_hz
        obs = self._begin(env, stats)
        proprio = env.proprio(obs)
        self._wait_for_episode_start(env, stats, lambda stamp_ns: self._publish_state(_time(stamp_ns), proprio))
        with self._cond:  # actions that arrived before the policy saw this episode belong to the last one
            after_seq = self._action_seq
        last = np.zeros(ACTION_DIM, dtype=np.float32)
        deadline = time.monotonic()
        next_frame = deadline + camera_period
        joints = EndEffectorJoints(env)
        done = False
        while not done:
            deadline += period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:  # missed a whole period (machine overloaded): count it, do not burst
                stats.late_steps += 1
                deadline = time.monotonic()
            taken = self._take_action(after_seq)
            if taken is not None:
                after_seq, last = taken
                stats.actions_applied += 1
            else:
                stats.actions_missing += 1
                if params.on_missing_action == "zero":
                    last = np.zeros(ACTION_DIM, dtype=np.float32)
            obs, success, done = env.step(last)
            stats.steps += 1
            joints.add(stats.steps)
            stats.success = stats.success or success
            stamp = self._new_stamp()
            if stats.steps == 1:
                stats.first_step_stamp = _seconds(_stamp_ns(stamp))
            self._publish_state(stamp, env.proprio(obs))
            now = time.monotonic()
            if now >= next_frame - 1e-4 and not done:
                self._publish_image(stamp, env.render(), stats)
                next_frame = max(next_frame + camera_period, now)
        stats.end_stamp = self.get_clock().now().nanoseconds * 1e-9
        stats.extra = joints.figures()
        self._episodes_run += 1
        if params.motion_log and self._episodes_run == params.motion_log_episode:
            joints.write(params.motion_log, stats)
        self._count_chunks(stats)


class EndEffectorJoints:
    """``arm: ee``: the arm joints' own motion (they follow Meta-World's mocap weld; no joint controller),
    sampled after each simulated step (12.5 ms); for the log the setpoint is the measured position."""

    def __init__(self, env: Any) -> None:
        from dysl_ros.mt10.joint_env import ARM_JOINTS
        from dysl_ros.sim.joint_log import JointLog

        self.env = env
        self.step_ns = round(env.step_seconds * 1e9)
        self.log = JointLog(ARM_JOINTS)
        self.add(0)

    def add(self, step: int) -> None:
        q, qd = self.env.arm_joints()
        self.log.add(step * self.step_ns, q, qd, np.zeros_like(q), q, qd)

    def figures(self) -> dict[str, Any]:
        from dysl_ros.sim import joint_log
        from dysl_ros.sim.sawyer import motion_limits

        summary = joint_log.summary(joint_log.report(self.log.as_dict(), motion_limits()))
        return {"arm": "ee", "motion": {k: (round(v, 6) if math.isfinite(v) else None) for k, v in summary.items()}}

    def write(self, path: str, stats: EpisodeStats) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        arrays = {**self.log.as_dict(), "task": np.array(stats.spec.task), "seed": np.array(stats.spec.seed),
                  "success": np.array(stats.success), "arm": np.array("ee")}
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle


def main(args: list[str] | None = None) -> int:
    # Mesa's rasteriser with one thread renders these small frames faster than with several (demos.py).
    os.environ.setdefault("LP_NUM_THREADS", "1")
    os.environ.setdefault("MUJOCO_GL", "egl")
    # The executor thread must get the GIL promptly while the main thread simulates.
    sys.setswitchinterval(0.0005)
    from rclpy.signals import SignalHandlerOptions

    # SIGINT raises KeyboardInterrupt in the main thread (the simulation) instead of shutting the
    # context down underneath it.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = SimBridge()
    except BridgeConfigError as exc:
        rclpy.logging.get_logger("sim_bridge").fatal(str(exc))
        rclpy.try_shutdown()
        return EXIT_FAILED
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = rosenv.BackgroundSpinner(executor, "sim_bridge_executor")
    status = EXIT_OK
    try:
        status = node.run()
        if status == EXIT_OK and node.params.on_finish == "idle":
            node.get_logger().info("idle: all episodes done; Ctrl-C to exit")
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    except PolicyTimeout as exc:
        node.get_logger().fatal(str(exc))
        status = EXIT_FAILED
    finally:
        spinner.stop()  # before the node and context go
        node.destroy_node()
        rclpy.try_shutdown()
    return status

