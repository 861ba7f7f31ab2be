"""``dysl_node``: serves a VLA policy with DySL layer skipping as a ROS 2 lifecycle node.

    ~/image (Image) ─┐
    ~/instruction ───┼─► latest-input slots ─► inference thread ─► ~/action_chunk (JointTrajectory)
    ~/joint_states ──┘    (validated in the        │  DySLPolicy        └─► ActionSchedule ─► stream thread ─► ~/action
                           subscription callbacks)  └─ /diagnostics timer                   (control_rate_hz)

configure: validate parameters, load model + DySL modules, warm up, create topics.
activate:  start the inference and action-stream threads.  deactivate: stop them; nothing is published.
Inference never queues: it always takes the newest image, and an image older than
``max_image_age_ms`` is never used. Bad input is rejected with a counter and a throttled log line.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rclpy
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dysl_ros.backends.engines import EngineError
from dysl_ros.core.config import ConfigError
from dysl_ros.core.runner import TickResult
from dysl_ros.model.checkpoint import ModelDirError
from dysl_ros.model.spec import Observation
from dysl_ros.node.action_stream import ActionSchedule
from dysl_ros.node.inputs import (
    InputRejected,
    check_stamp,
    decode_image,
    parse_instruction,
    parse_proprio,
    string_from_cdr,
)
from dysl_ros.node.params import PARAMETERS, NodeParams
from dysl_ros.policy import DySLPolicy, load_policy

SENSOR_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
LATCHED_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
RELIABLE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
REJECT_LOG_PERIOD_S = 2.0
LATENCY_WINDOW = 500


@dataclass
class LatestImage:
    rgb: npt.NDArray[np.uint8]
    stamp: float
    stamp_msg: Time
    received: float  # monotonic


@dataclass
class Stats:
    rejected: dict[str, int] = field(default_factory=dict)
    images_received: int = 0
    images_stale: int = 0
    ticks: int = 0
    verifications: int = 0
    reruns: int = 0
    chunks_published: int = 0
    actions_published: int = 0
    stale_periods: int = 0
    tick_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    executed_layers: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    stream_periods_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    last_image_age_ms: float = float("nan")
    last_continuity: float = float("nan")
    last_delta: float = float("nan")
    last_allow_points: tuple[int, ...] = ()
    waiting_for: str = "configure"


class DySLNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dysl_node", **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(
                spec.name, spec.default, ParameterDescriptor(description=spec.description, read_only=True)
            )
        self.params: NodeParams | None = None
        self.policy: DySLPolicy | None = None
        self.schedule: ActionSchedule | None = None
        self.stats = Stats()
        self._lock = threading.Lock()
        self._new_image = threading.Condition(self._lock)
        self._image: LatestImage | None = None
        self._instruction: str | None = None
        self._new_task = False
        self._proprio: tuple[npt.NDArray[np.float64], float] | None = None  # (values, monotonic receive time)
        self._active = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_reject_log: dict[str, float] = {}
        self._entities: list[Any] = []
        self._rate_base: tuple[float, int, int, int] | None = None  # (monotonic, images, ticks, actions)

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
            params = NodeParams.from_values(values)
            policy = load_policy(
                params.model_dir,
                backend=params.backend,
                device=params.device,
                precision=params.precision,
                dysl=params.dysl,
                dense=params.dense,
                num_threads=params.inference_threads,
                engine_dir=params.engine_dir or None,  # engines: "" means <model_dir>/engines
                force_engine_update=params.force_engine_update,
            )
            config = policy.config
            self._names = list(params.action_names) or list(config.action_names)
            if len(self._names) != config.action_dim:
                raise ConfigError(
                    f"action_names has {len(self._names)} names, the model's actions have {config.action_dim}"
                )
            low, high = params.action_limits(config.action_dim)
        except (ConfigError, ModelDirError, EngineError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._low, self._high = np.asarray(low), np.asarray(high)
        self.params, self.policy = params, policy
        self._warm_up()
        self.schedule = ActionSchedule(params.dt, params.max_image_age_ms / 1000.0, params.on_stale, config.action_dim)
        self._create_topics(params)
        self.stats = Stats(waiting_for="activate")
        self.get_logger().info(
            f"configured: model {params.model_dir} on {policy.backend_name} ({params.device}, {params.precision}), "
            f"{'dense' if params.dense else 'DySL'}, static layers {list(policy.plan.static_layers)}, "
            f"{params.control_rate_hz:g} Hz actions"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        assert self.policy is not None
        self.policy.reset()
        with self._lock:
            self._image = None  # never act on an image that arrived before activation
        self._stop.clear()
        self._active.set()
        self._threads = [
            threading.Thread(target=self._inference_loop, name="dysl_inference", daemon=True),
            threading.Thread(target=self._stream_loop, name="dysl_action_stream", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.get_logger().info("active: serving")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_threads()
        if self.schedule is not None:
            self.schedule.clear()
        self.stats.waiting_for = "activate"
        self.get_logger().info("inactive: publishing stopped")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_threads()
        self._destroy_topics()
        self.policy = None
        self.params = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_threads()
        self._destroy_topics()
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self) -> None:
        """First inferences allocate and autotune; do them before the first real image."""
        assert self.policy is not None and self.params is not None
        config = self.policy.config
        blank = Observation(
            np.zeros((config.image_size, config.image_size, 3), np.uint8), "warm up", np.zeros(config.proprio_dim)
        )
        for _ in range(self.params.warmup_ticks):
            self.policy.select_action(blank)
        self.policy.reset()

    def _stop_threads(self) -> None:
        self._active.clear()
        self._stop.set()
        with self._new_image:
            self._new_image.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []

    # ---------------------------------------------------------------- topics

    def _create_topics(self, params: NodeParams) -> None:
        inputs = MutuallyExclusiveCallbackGroup()
        self._entities = [
            self.create_subscription(Image, "~/image", self._on_image, SENSOR_QOS, callback_group=inputs),
            # Raw bytes: rclpy would quietly replace invalid UTF-8, and a robot should not act on that.
            self.create_subscription(
                String, "~/instruction", self._on_instruction, LATCHED_QOS, callback_group=inputs, raw=True
            ),
            self.create_subscription(
                JointState, "~/joint_states", self._on_joint_states, SENSOR_QOS, callback_group=inputs
            ),
        ]
        self.chunk_pub = self.create_publisher(JointTrajectory, "~/action_chunk", RELIABLE_QOS)
        self.action_pub = self.create_publisher(Float64MultiArray, "~/action", RELIABLE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.diag_timer = self.create_timer(
            params.diagnostics_period_s, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self._entities += [self.chunk_pub, self.action_pub, self.diag_pub, self.diag_timer]

    def _destroy_topics(self) -> None:
        for entity in self._entities:
            if hasattr(entity, "cancel"):
                entity.cancel()
                self.destroy_timer(entity)
            elif hasattr(entity, "publish"):
                self.destroy_publisher(entity)
            else:
                self.destroy_subscription(entity)
        self._entities = []

    def _reject(self, error: InputRejected) -> None:
        counters = self.stats.rejected
        counters[error.counter] = counters.get(error.counter, 0) + 1
        now = time.monotonic()
        if now - self._last_reject_log.get(error.counter, -1e9) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[error.counter] = now
            self.get_logger().warning(f"rejected input ({error.counter}, {counters[error.counter]} so far): {error}")

    def _on_image(self, msg: Image) -> None:
        assert self.policy is not None and self.params is not None
        try:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            check_stamp(stamp, self._now(), self.params.max_future_stamp_ms)
            rgb = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, self.policy.config.image_size)
        except InputRejected as error:
            self._reject(error)
            return
        with self._new_image:
            self.stats.images_received += 1
            self._image = LatestImage(rgb, stamp, msg.header.stamp, time.monotonic())
            self._new_image.notify()

    def _on_instruction(self, serialized: bytes) -> None:
        try:
            text = parse_instruction(string_from_cdr(serialized))
        except InputRejected as error:
            self._reject(error)
            return
        with self._lock:
            if text != self._instruction:
                self.get_logger().info(f"instruction: {text!r}")
                self._new_task = True  # the inference thread resets continuity: a new task, a new trajectory
            self._instruction = text

    def _on_joint_states(self, msg: JointState) -> None:
        assert self.policy is not None
        try:
            values = parse_proprio(list(msg.position), self.policy.config.proprio_dim)
        except InputRejected as error:
            self._reject(error)
            return
        with self._lock:
            self._proprio = (values, time.monotonic())

    # ---------------------------------------------------------------- inference

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _take_inputs(self) -> tuple[LatestImage, str, npt.NDArray[np.float64]] | None:
        """Wait for a new image; returns it with the instruction and state, or None (and why, in stats)."""
        assert self.params is not None
        with self._new_image:
            while self._image is None and not self._stop.is_set():
                self._new_image.wait(timeout=0.1)
            image, self._image = self._image, None
            instruction, proprio = self._instruction, self._proprio
            new_task, self._new_task = self._new_task, False
        if new_task and self.policy is not None:
            self.policy.reset()
        if image is None:
            return None
        if instruction is None:
            self.stats.waiting_for = "instruction"
            return None
        max_age_s = self.params.max_image_age_ms / 1000.0
        if proprio is None or time.monotonic() - proprio[1] > max_age_s:
            self.stats.waiting_for = "joint_states"
            return None
        age_ms = (self._now() - image.stamp) * 1000.0
        self.stats.last_image_age_ms = age_ms
        if age_ms > self.params.max_image_age_ms:
            self.stats.images_stale += 1
            self.stats.waiting_for = "fresh image"
            return None
        self.stats.waiting_for = ""
        return image, instruction, proprio[0]

    def _inference_loop(self) -> None:
        assert self.params is not None and self.policy is not None and self.schedule is not None
        params, policy, schedule = self.params, self.policy, self.schedule
        while not self._stop.is_set():
            taken = self._take_inputs()
            if taken is None:
                continue
            image, instruction, proprio = taken
            start = time.perf_counter()
            elapsed = schedule.elapsed_steps(image.stamp, self._now() + self._expected_latency_s())
            execute = slice(min(elapsed, policy.config.chunk_len - 1), None)
            try:
                out = policy.select_action(Observation(image.rgb, instruction, proprio), execute)
            except Exception as exc:  # keep serving: a failed tick publishes nothing
                self.get_logger().error(f"inference failed, nothing published for this image: {exc!r}")
                continue
            tick_ms = (time.perf_counter() - start) * 1000.0
            actions = np.clip(out.actions, self._low, self._high)
            self._record_tick(out.tick, tick_ms)
            # The image may have aged past the limit during inference: then nothing from it goes out.
            if not self._active.is_set() or (self._now() - image.stamp) * 1000.0 > params.max_image_age_ms:
                self.stats.images_stale += 1
                continue
            self.chunk_pub.publish(self._chunk_message(image.stamp_msg, actions, params.dt))
            self.stats.chunks_published += 1
            schedule.replace(image.stamp, actions)

    def _expected_latency_s(self) -> float:
        recent = list(self.stats.tick_ms)[-10:]
        return float(np.median(recent)) / 1000.0 if recent else 0.0

    def _record_tick(self, tick: TickResult, tick_ms: float) -> None:
        stats = self.stats
        stats.ticks += 1
        stats.tick_ms.append(tick_ms)
        stats.executed_layers.append(tick.layer_evaluations)
        stats.verifications += int(tick.verified)
        stats.reruns += int(tick.reran)
        stats.last_continuity, stats.last_delta = tick.continuity, tick.delta
        stats.last_allow_points = tick.next_allow_points

    def _chunk_message(self, stamp: Time, actions: npt.NDArray[np.float64], dt: float) -> JointTrajectory:
        msg = JointTrajectory()
        msg.header.stamp = stamp
        msg.joint_names = list(self._names)
        for k, action in enumerate(actions):
            nanos = round(k * dt * 1e9)
            point = JointTrajectoryPoint()
            point.positions = [float(a) for a in action]
            point.time_from_start = Duration(sec=nanos // 1_000_000_000, nanosec=nanos % 1_000_000_000)
            msg.points.append(point)
        return msg

    # ---------------------------------------------------------------- action stream

    def _stream_loop(self) -> None:
        # A plain thread on absolute deadlines: steadier than an executor timer while inference runs.
        assert self.params is not None and self.schedule is not None
        period = self.params.dt
        next_deadline = time.monotonic()
        last_sent: float | None = None
        while not self._stop.is_set():
            next_deadline += period
            delay = next_deadline - time.monotonic()
            if delay < -period:  # fell behind (suspended?): resynchronise instead of bursting
                next_deadline = time.monotonic()
                continue
            if delay > 0 and self._stop.wait(delay):
                break
            action = self.schedule.next_action(self._now())
            if action is None or not self._active.is_set():
                continue
            self.action_pub.publish(Float64MultiArray(data=[float(a) for a in action.values]))
            sent = time.monotonic()
            if last_sent is not None:
                self.stats.stream_periods_ms.append((sent - last_sent) * 1000.0)
            last_sent = sent
            self.stats.actions_published += 1
            self.stats.stale_periods += int(not action.fresh)

    # ---------------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        stats, params, policy = self.stats, self.params, self.policy
        status = DiagnosticStatus(name="dysl_node: inference", hardware_id=policy.backend_name if policy else "")
        waiting = stats.waiting_for
        if not self._active.is_set():
            status.level, status.message = DiagnosticStatus.OK, "inactive"
        elif waiting:
            status.level, status.message = DiagnosticStatus.WARN, f"waiting for {waiting}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "serving"
        ticks = list(stats.tick_ms)
        periods = list(stats.stream_periods_ms)
        now = time.monotonic()
        counts = (stats.images_received, stats.ticks, stats.actions_published)
        rates = ["nan"] * 3
        if self._rate_base is not None and now > self._rate_base[0]:
            span = now - self._rate_base[0]
            rates = [f"{(c - b) / span:.1f}" for c, b in zip(counts, self._rate_base[1:], strict=True)]
        self._rate_base = (now, *counts)
        values: dict[str, str] = {
            "backend": policy.backend_name if policy else "",
            "mode": "dense" if params and params.dense else "dysl",
            "image_rate_hz": rates[0],
            "tick_rate_hz": rates[1],
            "action_rate_hz": rates[2],
            "images_received": str(stats.images_received),
            "images_stale": str(stats.images_stale),
            "ticks": str(stats.ticks),
            "chunks_published": str(stats.chunks_published),
            "actions_published": str(stats.actions_published),
            "stale_action_periods": str(stats.stale_periods),
            "tick_latency_p50_ms": _percentile(ticks, 50),
            "tick_latency_p99_ms": _percentile(ticks, 99),
            "action_period_p50_ms": _percentile(periods, 50),
            "action_period_jitter_p99_ms": _percentile([abs(p - params.dt * 1000.0) for p in periods], 99)
            if params
            else "nan",
            "image_age_ms": f"{stats.last_image_age_ms:.1f}",
            "executed_layers_mean": f"{np.mean(stats.executed_layers):.2f}" if stats.executed_layers else "nan",
            "executed_layers_last": str(stats.executed_layers[-1]) if stats.executed_layers else "nan",
            "continuity": f"{stats.last_continuity:.5f}",
            "continuity_delta": f"{stats.last_delta:.5f}",
            "allow_points": str(list(stats.last_allow_points)),
            "verifications": str(stats.verifications),
            "verification_reruns": str(stats.reruns),
            "waiting_for": waiting,
            "rejected_total": str(sum(stats.rejected.values())),
        }
        values.update({f"rejected_{name}": str(count) for name, count in sorted(stats.rejected.items())})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


def _percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "nan"


def main(args: list[str] | None = None) -> int:
    # The executor needs the GIL many times per message; with the default 5 ms switch interval and
    # the inference thread running, one callback could wait tens of ms and depth-1 inputs were
    # overwritten (seen: 10 of 30 images/s taken). 0.5 ms keeps the executor and the stream prompt.
    sys.setswitchinterval(0.0005)
    rclpy.init(args=args)
    node = DySLNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed, see the error above")
                return 1
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_threads()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
