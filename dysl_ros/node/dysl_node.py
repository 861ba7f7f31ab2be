"""``dysl_node``: serves a VLA policy with DySL layer skipping as a ROS 2 lifecycle node.

    ~/image (Image) ─┐
    ~/instruction ───┼─► latest-input slots ─► inference thread ─► ~/action_chunk (JointTrajectory)
    ~/joint_states ──┘    (validated in the        │  DySLPolicy        ├─► ~/dysl_tick (per-tick telemetry)
                           subscription callbacks)  │                    └─► stream process ─► ~/action
                                                    └─ /diagnostics timer      (control_rate_hz, own GIL)

configure: validate parameters, load model + DySL modules, read the command joints' limits (robot
description, ``joint_limits.*``), warm up, create topics, start the stream process. activate: the
stream publishes and the inference thread runs. deactivate: inference stops and the joints brake to
rest within their limits; then nothing is published. Inference runs when the stream's queue falls to
``replan_threshold`` actions (not on every image) and takes the newest image then; an image older than
``max_image_age_ms`` is never used, and the stream never sends an action from one that has grown that
old. Bad input is rejected with a counter and a throttled log line. With joint commands wired, the
stream process plans and publishes ``~/joint_trajectory`` and ``~/commands`` (joint_output.py) and
brakes the arm on its own if this process dies; if the stream process or the inference thread dies,
this node brakes the arm from the last plan and takes the lifecycle error path. ``~/enable``
(std_srvs/SetBool) is a latching e-stop.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import rclpy
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecyclePublisher, State, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.publisher import Publisher
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dysl_ros.action_queue import predict_executed_slice, stamp_label
from dysl_ros.backends.errors import EngineError
from dysl_ros.core.config import ConfigError
from dysl_ros.core.continuity import NonFiniteActions
from dysl_ros.core.runner import TickResult
from dysl_ros.inputs import (
    InputRejected,
    JointStateReader,
    check_stamp,
    decode_compressed_image,
    decode_image,
    parse_instruction,
    parse_proprio,
    string_from_cdr,
)
from dysl_ros.joint_commands import JointWiring, check_on_stale, wire_joints
from dysl_ros.model.model_dir import ModelDirError
from dysl_ros.model.observation_spec import Observation, ObservationSpec
from dysl_ros.node import limits as joint_limits
from dysl_ros.node.joint_output import JointConfig, JointOutput, trajectory_message
from dysl_ros.node.motion import MotionLimiter, Plan
from dysl_ros.node.params import DYSL_FROM_MODEL, PARAMETERS, NodeParams
from dysl_ros.node.robot import controller_joints, declare_joint_limit_parameters, robot_description
from dysl_ros.node.stream_process import SPIN_NS, ActionStreamProcess, StreamConfig
from dysl_ros.policy import DySLPolicy, PolicyOptions, load_policy
from dysl_ros.qos import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS
from dysl_ros.wiring import DIAGNOSTICS_TOPIC, TICK_TOPIC


@contextlib.contextmanager
def suppress_context_errors(node: LifecycleNode) -> Any:
    """A publish during shutdown may find the context gone: logged, never raised (the caller is a
    stop path that must go on)."""
    try:
        yield
    except Exception as exc:
        node.get_logger().warning(f"could not publish while stopping: {exc!r}")


def camera_topic(spec: ObservationSpec, camera: str) -> str:
    """``~/image`` for a one-camera model, ``~/<camera>/image`` for each camera of several."""
    return "~/image" if len(spec.cameras) == 1 else f"~/{camera}/image"


TICK_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
HANDOVER_NS = SPIN_NS + 1_000_000
"""From a chunk's end of inference (or a re-plan request) to the stream taking it: send + the stream's
last command check before a deadline."""
SLICE_WINDOW = 100
REJECT_LOG_PERIOD_S = 2.0
LATENCY_WINDOW = 500


@dataclass
class LatestImage:
    rgb: npt.NDArray[np.uint8]
    """The camera's (H, W, C), fitted to the model's size."""
    stamp: float
    stamp_ns: int
    stamp_msg: Time
    received: float  # monotonic


def duration_msg(nanoseconds: int) -> Duration:
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class TickInputs(NamedTuple):
    """What one tick sees, taken together under the input lock."""

    image: LatestImage
    """The observation's oldest image: its stamp is the observation's."""
    images: dict[str, LatestImage]
    """Every camera's newest image."""
    instruction: str
    proprio: npt.NDArray[np.float64]
    joints: npt.NDArray[np.float64] | None
    """The command joints' positions measured with ``proprio`` (None without the wiring)."""


@dataclass
class Stats:
    rejected: dict[str, int] = field(default_factory=dict)
    images_received: int = 0
    images_stale: int = 0
    images_skewed: int = 0
    """Ticks that waited because the cameras' newest images lay more than max_camera_skew_ms apart."""
    ticks: int = 0
    verifications: int = 0
    reruns: int = 0
    chunks_published: int = 0
    tick_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    executed_layers: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    slice_match: deque[bool] = field(default_factory=lambda: deque(maxlen=SLICE_WINDOW))
    """Per chunk: the predicted executed slice (continuity history) equalled what the stream sent."""
    last_image_age_ms: float = float("nan")
    last_continuity: float = float("nan")
    last_delta: float = float("nan")
    last_allow_points: tuple[int, ...] = ()
    waiting_for: str = "configure"
    chunks_non_finite: int = 0
    """Chunks dropped because the model's output held NaN or inf."""
    ticks_failed: int = 0
    """Inferences that raised (nothing published for their image)."""
    failures_in_row: int = 0


class DySLNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dysl_node", **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(
                spec.name, spec.default, ParameterDescriptor(description=spec.description, read_only=True)
            )
        self.params: NodeParams | None = None
        self.policy: DySLPolicy | None = None
        self.limits: joint_limits.JointLimits | None = None
        """The command joints' limits (with joint commands wired)."""
        self.stream: ActionStreamProcess | None = None
        self.stats = Stats()
        self._lock = threading.Lock()
        self._new_image = threading.Condition(self._lock)
        self._images: dict[str, LatestImage] = {}  # camera name -> its newest image
        self._fresh_image = False  # the first camera sent an image since the last tick took one
        self._instruction: str | None = None
        self._new_task = False
        self._proprio: tuple[npt.NDArray[np.float64], float] | None = None  # (values, monotonic receive time)
        self._joint_positions: tuple[npt.NDArray[np.float64], float] | None = None
        """The command joints' measured positions (values, monotonic receive time)."""
        self._wiring: JointWiring | None = None  # set at configure when command_joint_names are given
        self._state_reader: JointStateReader | None = None  # state_joint_names given: the state by name
        self._command_reader: JointStateReader | None = None  # with the wiring: the command joints by name
        self._on_stale = "zero"  # the model-space stream's, resolved at configure
        self._active = threading.Event()
        self._stop = threading.Event()
        self._replan = threading.Event()
        """Set when the stream needs a new chunk (queue at replan_threshold, empty or stale)."""
        self._seq_lock = threading.Lock()
        self._seq = 0  # sequence number of the last chunk handed to the stream
        self._predicted: dict[int, slice] = {}  # seq -> executed slice the continuity history recorded
        self._stream_error = ""
        self._threads: list[threading.Thread] = []
        self._last_reject_log: dict[str, float] = {}
        self._rate_base: tuple[float, int, int] | None = None  # (monotonic, images, ticks)
        self._warmup_ms: list[float] = []  # latency estimate until real ticks have run
        self._enabled = True  # ~/enable: false latches an e-stop
        self._fault = ""  # why the node takes the error path (the stream or inference thread died)
        self._configure_error = ""  # the last failed configure's reason, for /diagnostics
        self._fault_wake = self.create_guard_condition(self._on_fault)
        self._braking: threading.Thread | None = None  # the node's own stop when the stream is gone
        self._joint_config: JointConfig | None = None
        self._shadow: JointOutput | None = None
        """The plans the stream follows, as it reports them: what the node brakes from without it."""
        # Set at configure from the parameters and the model:
        self._names: list[str] = []  # ~/action_chunk joint_names
        self._dt_ns = 0  # control period
        self._max_age_ns = 0  # max_image_age_ms
        self._low: npt.NDArray[np.float64] = np.zeros(0)  # action clamp
        self._high: npt.NDArray[np.float64] = np.zeros(0)
        self._input_subscriptions: list[Subscription[Any]] = []
        self.chunk_pub: LifecyclePublisher[JointTrajectory] | None = None
        self.tick_pub: LifecyclePublisher[DiagnosticStatus] | None = None
        # Fallback publishers on the stream's controller topics: the node brakes the arm with them
        # when the stream process is gone (ordinary publishers: they must work outside active).
        self.fallback_trajectory_pub: Publisher[JointTrajectory] | None = None
        self.fallback_command_pub: Publisher[Float64MultiArray] | None = None
        self.enable_service: Any = None
        # /diagnostics also reports an inactive, unconfigured or failed node: made once, here.
        self.diag_pub: Publisher[DiagnosticArray] = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.diag_timer: Timer = self.create_timer(
            max(float(self.get_parameter("diagnostics_period_s").value), 0.01),
            self._publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """SUCCESS: model loaded, limits read, topics and the stream process up. FAILURE: a bad
        parameter, model, engine or joint limit (the log names it); the node stays unconfigured."""
        stream = ActionStreamProcess(self._on_replan, self._on_streamed, self._on_stream_exit, self._on_adopted)
        try:
            values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
            params = NodeParams.from_values(values)
            stream.spawn()  # imports rclpy in parallel with the model loading below
            options = PolicyOptions(
                backend=params.backend,
                device=params.device,
                precision=params.precision,
                dysl_overrides=params.dysl_overrides,
                dense=params.dense,
                num_threads=params.inference_threads,
                engine_dir=params.engine_dir or None,  # engines: "" means <model_dir>/engines
                force_engine_update=params.force_engine_update,
            )
            policy = load_policy(params.model_dir, options)
            spec = policy.spec
            params.check_chunk_length(spec.horizon)
            names = list(params.model_action_names) or list(spec.action_names)
            if len(names) != spec.action_dim:
                raise ConfigError(f"action_names has {len(names)} names, the model's actions have {spec.action_dim}")
            low, high = params.action_limits(spec.action_dim, spec.action_bounds())
            on_stale = check_on_stale(params.on_stale, spec.action_semantics)
            wiring = wire_joints(
                spec.action_semantics, spec.action_names, params.command_joint_names, params.action_to_joint
            )
            if params.state_joints and len(params.state_joints) != spec.state_dim:
                raise ConfigError(
                    f"state_joint_names has {len(params.state_joints)} joints, the model's state has {spec.state_dim} "
                    f"({', '.join(spec.state_names)})"
                )
            limits = self._joint_limits(params, wiring) if wiring is not None else None
        except (ConfigError, ModelDirError, EngineError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._configure_error = f"configure failed: {exc}"
            stream.stop()
            return TransitionCallbackReturn.FAILURE
        if not np.all(np.isfinite(low)):
            self.get_logger().warning(
                "the model's observation spec states no action range: ~/action_chunk and ~/action are not clamped "
                "(set action_low / action_high, or actions.range in observation_spec.yaml)"
            )
        self._names, self._low, self._high = names, np.asarray(low), np.asarray(high)
        self._wiring, self._on_stale, self.limits = wiring, on_stale, limits
        self._state_reader = JointStateReader(params.state_joints) if params.state_joints else None
        self._command_reader = JointStateReader(wiring.joints, "command_joint_names") if wiring is not None else None
        self._dt_ns, self._max_age_ns = round(params.dt * 1e9), round(params.max_image_age_ms * 1e6)
        self.params, self.policy = params, policy
        self._warm_up()
        self._create_topics(params)
        self._shadow = None
        self._joint_config = None if wiring is None or limits is None else JointConfig(
            joints=wiring.joints,
            limits=limits.to_dict(),
            max_step=params.max_step,
            commands_are_velocities=wiring.commands_are_velocities,
            command_topic=self.resolve_topic_name("~/commands"),
            trajectory_topic=self.resolve_topic_name("~/joint_trajectory"),
            chunk_stamp=params.chunk_stamp,
            max_age_ns=self._max_age_ns,
            max_tracking_error=params.max_tracking_error,
        )
        if self._joint_config is not None:
            self._shadow = JointOutput(self._joint_config, self._dt_ns)
        stream_config = StreamConfig(
            topic=self.resolve_topic_name("~/action"),
            node_name=self.get_name(),
            namespace=self.get_namespace(),
            dt_ns=self._dt_ns,
            max_age_ns=self._max_age_ns,
            on_stale=on_stale,
            action_dim=spec.action_dim,
            replan_threshold=params.replan_threshold,
            aggregation=params.chunk_aggregation,
            decay=params.aggregation_decay,
            priority=params.stream_priority,
            joints=self._joint_config,
            watchdog_ns=params.watchdog_periods * self._dt_ns,
        )
        try:
            scheduling = stream.start(stream_config)
        except RuntimeError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._destroy_topics()
            return TransitionCallbackReturn.FAILURE
        self.stream, self._stream_error, self._fault, self._configure_error = stream, "", "", ""
        if params.stream_priority and not scheduling.startswith("SCHED_FIFO"):
            self.get_logger().warning(f"action stream: {scheduling}")
        self.stats = Stats(waiting_for="activate")
        self.get_logger().info(
            f"configured: model {params.model_dir} on {policy.backend_name} ({params.device}, {params.precision}), "
            f"{'dense' if params.dense else 'DySL'}, static layers {list(policy.plan.static_layers)}, "
            f"{params.control_rate_hz:g} Hz actions on {stream_config.topic} ({scheduling}), re-plan at "
            f"{params.replan_threshold} of {spec.horizon} queued, {params.chunk_aggregation} aggregation; cameras "
            f"{', '.join(f'{c.name} on {self.resolve_topic_name(camera_topic(spec, c.name))}' for c in spec.cameras)}"
        )
        if limits is not None:
            step = f", max_step {params.max_step:g}" if params.max_step > 0 else ""
            self.get_logger().info(f"joint limits{step}: {limits.describe()}")
        if not params.dense:
            dysl = policy.runner.config
            settings = ", ".join(
                f"{name} {getattr(dysl, name):g} ({'parameter' if name in params.dysl_overrides else 'model'})"
                for name in DYSL_FROM_MODEL
            )
            self.get_logger().info(f"DySL settings: {settings}")
        return TransitionCallbackReturn.SUCCESS

    def _joint_limits(self, params: NodeParams, wiring: JointWiring) -> joint_limits.JointLimits:
        """The command joints' limits: the URDF (parameter, else the /robot_description topic unless
        the parameters give every limit) under the ``joint_limits.*`` parameters."""
        given = declare_joint_limit_parameters(self, wiring.joints)
        urdf = params.robot_description
        if not urdf.strip():
            try:
                return joint_limits.resolve(wiring.joints, "", given)
            except ConfigError:
                urdf = robot_description(self, self.resolve_topic_name("robot_description"), params.startup_timeout_s)
        return joint_limits.resolve(wiring.joints, urdf, given)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """SUCCESS: the stream publishes and inference runs (after a new instruction unless
        resume_instruction_on_activate). FAILURE: forward_controller's joints are not
        command_joint_names in order, or the stream process does not answer (the node stays inactive)."""
        assert self.policy is not None and self.stream is not None and self.params is not None
        params = self.params
        if params.forward_controller and self._wiring is not None:
            try:
                joints = controller_joints(self, params.forward_controller, params.startup_timeout_s)
            except ConfigError as exc:
                self.get_logger().error(f"activate failed: {exc}")
                return TransitionCallbackReturn.FAILURE
            if tuple(joints) != self._wiring.joints:
                self.get_logger().error(
                    f"activate failed: forward_controller {params.forward_controller} writes data[i] to its joints "
                    f"{joints}, command_joint_names are {list(self._wiring.joints)}: ~/commands would drive the "
                    "wrong joints (fix command_joint_names to the controller's order)"
                )
                return TransitionCallbackReturn.FAILURE
        self.policy.reset()
        with self._lock:
            self._images, self._fresh_image = {}, False  # never act on an image from before activation
            if not params.resume_instruction_on_activate:
                self._instruction = None  # a deactivate used as a stop stays a stop
        if not self.stream.set_active(True):
            self.get_logger().error("activate failed: the action stream process does not answer")
            return TransitionCallbackReturn.FAILURE
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            self.stream.set_active(False)
            return result
        self._stop.clear()
        self._replan.set()
        self._active.set()
        self._threads = [threading.Thread(target=self._inference_loop, name="dysl_inference", daemon=True)]
        for thread in self._threads:
            thread.start()
        waiting = "" if self._instruction is not None else " once an instruction arrives"
        self.get_logger().info(f"active: serving{waiting}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """SUCCESS: inference stops, the joints brake to rest within their limits (one final command
        on ~/action), then nothing more is published until activate. ERROR: the node was deactivated
        by a fault (the stream process or the inference thread died): on to on_error."""
        self._stop_serving()
        self.stats.waiting_for = "activate"
        result = super().on_deactivate(state)  # disables the lifecycle publishers
        if self._fault:
            return TransitionCallbackReturn.ERROR
        self.get_logger().info("inactive: publishing stopped")
        return result

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """SUCCESS (to unconfigured): after a fault the arm was braked, everything is released;
        /diagnostics keeps reporting the fault until the node is configured again."""
        self.get_logger().error(f"error processing: {self._fault or 'a transition failed'}; back to unconfigured")
        self.shutdown()
        self.policy = None
        self.params = None
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Always SUCCESS: back to unconfigured, model and topics released."""
        self.shutdown()
        self.policy = None
        self.params = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Always SUCCESS: everything stopped."""
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop inference (the joints braked to rest when serving) and the stream process, destroy
        the topics (idempotent)."""
        if self._active.is_set():
            self._stop_serving()
        self._stop_threads()
        if self._braking is not None:
            self._braking.join()
            self._braking = None
        if self.stream is not None:
            self.stream.stop()
            self.stream = None
        self._destroy_topics()

    def _stop_serving(self) -> None:
        """Inference stops, then the stream brakes the joints to rest (label ``final``) and sends one
        final model-space action (zeros with on_stale zero, else the last one), then stops. Without a
        stream process the node brakes the joints itself from the last plan."""
        self._stop_threads()
        stream = self.stream
        final_action = np.zeros(len(self._low)) if self._on_stale == "zero" else None
        if stream is None or not stream.alive:
            self._brake_without_stream("final")
            return
        timeout = 2.0 + (self._stop_duration(stream.plan) if self._wiring is not None else 0.0)
        if not stream.set_active(False, timeout=timeout, final_action=final_action):
            self.get_logger().error("the action stream process did not confirm the joints came to rest")
            self._brake_without_stream("final")

    def _stop_duration(self, plan: Plan | None) -> float:
        if plan is None or self.limits is None:
            return 0.0
        limiter = MotionLimiter(self.limits, self._dt_ns)
        return limiter.stop_duration_s(plan.state_at(self._now_ns()).v)

    def _on_adopted(self, plan: Plan) -> None:
        if self._shadow is not None:
            self._shadow.adopt(plan, None)

    def _brake_without_stream(self, reason: str) -> None:
        """The stream process is gone: brake the joints from the plans it followed, as it would (on
        its period grid, a trajectory that continues the last one, the ramp on ~/commands), with the
        node's own publishers."""
        shadow, config, limits = self._shadow, self._joint_config, self.limits
        if shadow is None or config is None or limits is None or shadow.plan is None or self._braking is not None:
            return
        dt, now, grid = self._dt_ns, self._now_ns(), shadow.plan.start_ns
        start = grid + -(-(now + dt + 5_000_000 - grid) // dt) * dt
        stop = shadow.plan_stop(start, reason)
        if stop is None:
            return
        shadow.adopt(stop, None)
        if self.fallback_trajectory_pub is not None:
            sent = shadow.spliced(stop, grid + ((now - 2_000_000 - grid) // dt) * dt)
            with suppress_context_errors(self):
                self.fallback_trajectory_pub.publish(trajectory_message(sent, config, limits.has_jerk, None, now))

        def ramp() -> None:
            msg = Float64MultiArray()
            dim = MultiArrayDimension(label=reason, size=len(config.joints), stride=len(config.joints))
            msg.layout.dim = [dim]
            t = grid + -(-(self._now_ns() - grid) // dt) * dt
            while t <= stop.end_ns + dt and self.fallback_command_pub is not None:
                delay = (t - self._now_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                command = shadow.command(t)
                if command is not None:
                    msg.data = command.values.tolist()
                    with suppress_context_errors(self):
                        self.fallback_command_pub.publish(msg)
                t += dt

        if self.fallback_command_pub is not None:
            self._braking = threading.Thread(target=ramp, name="dysl_fallback_brake", daemon=True)
            self._braking.start()
        self.get_logger().warning(f"the node braked the joints itself ({reason}): the action stream process is gone")

    def _warm_up(self) -> None:
        """First inferences allocate and autotune; do them before the first real image."""
        assert self.policy is not None and self.params is not None
        spec = self.policy.spec
        blank = Observation(
            {c.name: np.zeros((c.height, c.width, c.channels), np.uint8) for c in spec.cameras},
            "warm up",
            np.zeros(spec.state_dim),
        )
        self._warmup_ms = []
        for _ in range(self.params.warmup_ticks):
            start = time.perf_counter()
            self.policy.predict_action_chunk(blank)
            self._warmup_ms = [(time.perf_counter() - start) * 1000.0]
        self.policy.reset()

    def _stop_threads(self) -> None:
        self._active.clear()
        self._stop.set()
        self._replan.set()
        with self._new_image:
            self._new_image.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []

    # ---------------------------------------------------------------- stream process hooks (reader thread)

    def _on_replan(self, seq: int) -> None:
        with self._seq_lock:
            if seq == self._seq:  # a request about an older chunk is moot
                self._replan.set()

    def _on_streamed(self, seq: int, first: int, count: int) -> None:
        with self._seq_lock:
            predicted = self._predicted.pop(seq, None)
        if predicted is not None and count > 0:
            self.stats.slice_match.append(predicted == slice(first, first + count))

    def _on_stream_exit(self, reason: str) -> None:
        self._stream_error = reason
        self.get_logger().error(f"{reason}: no more actions on ~/action")
        if self._active.is_set():
            self._brake_without_stream("stop")
            self._raise_fault(reason)

    # ---------------------------------------------------------------- faults

    def _raise_fault(self, reason: str) -> None:
        """From any thread: take the lifecycle error path (deactivate -> ERROR -> on_error) on the
        executor, where transitions run."""
        if not self._fault:
            self._fault = reason
            self._fault_wake.trigger()

    def _on_fault(self) -> None:
        if self._fault and self._state_machine.current_state[1] == "active":
            self.get_logger().error(f"fault: {self._fault}; deactivating with a stop, then error processing")
            self.trigger_deactivate()

    # ---------------------------------------------------------------- topics

    def _create_topics(self, params: NodeParams) -> None:
        assert self.policy is not None
        inputs = MutuallyExclusiveCallbackGroup()
        spec = self.policy.spec
        compressed = params.image_transport == "compressed"
        image_type = CompressedImage if compressed else Image
        self._input_subscriptions = [
            self.create_subscription(
                image_type,
                camera_topic(spec, c.name) + ("/compressed" if compressed else ""),
                partial(self._on_image, c.name),
                SENSOR_QOS,
                callback_group=inputs,
            )
            for c in spec.cameras
        ]
        self._input_subscriptions += [
            # Raw bytes: rclpy would quietly replace invalid UTF-8, and a robot should not act on that.
            self.create_subscription(
                String, "~/instruction", self._on_instruction, LATCHED_QOS, callback_group=inputs, raw=True
            ),
            self.create_subscription(
                JointState, "~/joint_states", self._on_joint_states, SENSOR_QOS, callback_group=inputs
            ),
        ]
        self.chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "~/action_chunk", RELIABLE_QOS)
        if self._wiring is not None:  # normally the stream process's; the node's when it is gone
            self.fallback_trajectory_pub = self.create_publisher(JointTrajectory, "~/joint_trajectory", RELIABLE_QOS)
            self.fallback_command_pub = self.create_publisher(Float64MultiArray, "~/commands", RELIABLE_QOS)
        # ~/action is published by the stream process (stream_process.py) under this node's resolved name.
        self.tick_pub = self.create_lifecycle_publisher(DiagnosticStatus, TICK_TOPIC, TICK_QOS)
        self.enable_service = self.create_service(SetBool, "~/enable", self._on_enable)

    def _destroy_topics(self) -> None:
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        for publisher in (self.chunk_pub, self.tick_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        for fallback in (self.fallback_trajectory_pub, self.fallback_command_pub):
            if fallback is not None:
                self.destroy_publisher(fallback)
        if self.enable_service is not None:
            self.destroy_service(self.enable_service)
        self.chunk_pub = self.tick_pub = None
        self.fallback_trajectory_pub, self.fallback_command_pub, self.enable_service = None, None, None

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """``~/enable``: false latches an e-stop (the joints brake to rest, only stop commands go
        out, no inference) until true; true resumes from the measured pose."""
        enabled = bool(request.data)
        stream = self.stream
        if stream is None:
            response.success, response.message = False, "not configured"
            return response
        if enabled == self._enabled:
            response.success, response.message = True, "enabled" if enabled else "already disabled (e-stop)"
            return response
        self._enabled = enabled
        if not enabled:
            self._replan.set()  # the inference thread sees the e-stop at once
        if not stream.set_enabled(enabled):
            response.success, response.message = False, "the action stream process did not answer"
            return response
        if enabled:
            with self._lock:
                self._new_task = True  # continuity restarts: the arm was stopped in between
            self._replan.set()
        self.get_logger().warning("~/enable: enabled" if enabled else "~/enable: disabled (e-stop): joints braking")
        response.success, response.message = True, "enabled" if enabled else "disabled (e-stop)"
        return response

    def _reject(self, error: InputRejected, camera: str = "") -> None:
        counters = self.stats.rejected
        counters[error.counter] = counters.get(error.counter, 0) + 1
        now = time.monotonic()
        if now - self._last_reject_log.get(error.counter, -1e9) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[error.counter] = now
            source = f" from camera {camera}" if camera else ""
            self.get_logger().warning(
                f"rejected input{source} ({error.counter}, {counters[error.counter]} so far): {error}"
            )

    def _on_image(self, camera_name: str, msg: Image | CompressedImage) -> None:
        assert self.policy is not None and self.params is not None
        camera = self.policy.spec.camera(camera_name)
        try:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            stamp = stamp_ns * 1e-9
            check_stamp(stamp, self._now(), self.params.max_future_stamp_ms)
            size, fit, channels = (camera.height, camera.width), camera.fit, camera.channels
            if isinstance(msg, CompressedImage):
                rgb = decode_compressed_image(msg.format, msg.data, size, fit, channels)
            else:
                rgb = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, size, fit, channels)
        except InputRejected as error:
            self._reject(error, camera_name)
            return
        with self._new_image:
            self.stats.images_received += 1
            self._images[camera_name] = LatestImage(rgb, stamp, stamp_ns, msg.header.stamp, time.monotonic())
            if camera_name == self.policy.spec.cameras[0].name:  # the first camera paces the ticks
                self._fresh_image = True
            self._new_image.notify_all()  # a tick may be waiting for another camera's frame too

    def _on_instruction(self, serialized: bytes) -> None:
        try:
            text = parse_instruction(string_from_cdr(serialized))
        except InputRejected as error:
            self._reject(error)
            return
        with self._lock:
            # Every instruction message starts a new episode, even with the same words (the next
            # episode of a task often reuses its phrasing): the inference thread resets continuity
            # and plans for it now rather than when the old chunk runs down.
            self.get_logger().info(f"instruction: {text!r}")
            self._new_task = True
            self._replan.set()
            self._instruction = text

    def _on_joint_states(self, msg: JointState) -> None:
        assert self.policy is not None
        names, positions = msg.name, msg.position
        try:
            if self._state_reader is not None:
                values = self._state_reader.read(names, positions, msg.velocity)
            else:
                values = parse_proprio(positions, self.policy.spec.state_dim)
            joints = self._command_reader.read(names, positions) if self._command_reader is not None else None
        except InputRejected as error:
            self._reject(error)
            return
        now = time.monotonic()
        with self._lock:
            self._proprio = (values, now)
            if joints is not None:
                self._joint_positions = (joints, now)

    # ---------------------------------------------------------------- inference

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _now_ns(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _take_inputs(self) -> TickInputs | None:
        """Wait for a new image of the first camera; returns what the tick sees, or None (and why, in
        stats)."""
        assert self.params is not None and self.policy is not None
        cameras = self.policy.spec.cameras
        with self._new_image:
            while not self._fresh_image and not self._stop.is_set():
                self._new_image.wait(timeout=0.1)
            fresh, self._fresh_image = self._fresh_image, False
            if fresh and len(cameras) > 1:
                self._await_cameras_in_step()
            images = dict(self._images)
            instruction, proprio, joints = self._instruction, self._proprio, self._joint_positions
            new_task, self._new_task = self._new_task, False
        if new_task:
            self.policy.reset()
        if not fresh:
            return None
        missing = [c.name for c in cameras if c.name not in images]
        if missing:
            self.stats.waiting_for = f"image from camera {missing[0]}"
            return None
        first = images[cameras[0].name]
        for camera in cameras[1:]:
            skew_ms = abs(images[camera.name].stamp_ns - first.stamp_ns) / 1e6
            if skew_ms > self.params.max_camera_skew_ms:
                self.stats.images_skewed += 1
                self.stats.waiting_for = f"camera {camera.name} in step ({skew_ms:.0f} ms from {cameras[0].name})"
                return None
        image = min(images.values(), key=lambda latest: latest.stamp_ns)
        if instruction is None:
            self.stats.waiting_for = "instruction"
            return None
        max_age_s = self.params.max_image_age_ms / 1000.0
        if proprio is None or time.monotonic() - proprio[1] > max_age_s:
            self.stats.waiting_for = "joint_states"
            return None
        if self._wiring is not None and (joints is None or time.monotonic() - joints[1] > max_age_s):
            self.stats.waiting_for = "joint_states with the command joints"
            return None
        age_ms = (self._now() - image.stamp) * 1000.0
        self.stats.last_image_age_ms = age_ms
        if age_ms > self.params.max_image_age_ms:
            self.stats.images_stale += 1
            self.stats.waiting_for = "fresh image"
            return None
        self.stats.waiting_for = ""
        return TickInputs(image, images, instruction, proprio[0], joints[0] if joints is not None else None)

    def _await_cameras_in_step(self) -> None:
        """(Input lock held.) The other cameras' frames of the same moment often land just after the
        first camera's, which paces the ticks: wait up to max_camera_skew_ms for a camera whose newest
        image is older than the first camera's by more than that, instead of skipping the tick."""
        assert self.params is not None and self.policy is not None
        cameras = self.policy.spec.cameras
        skew_ns = self.params.max_camera_skew_ms * 1e6
        deadline = time.monotonic() + self.params.max_camera_skew_ms / 1000.0

        def behind() -> bool:
            first = self._images.get(cameras[0].name)
            return first is not None and any(
                c.name in self._images and first.stamp_ns - self._images[c.name].stamp_ns > skew_ns
                for c in cameras[1:]
            )

        while behind() and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._new_image.wait(timeout=left)

    def _inference_loop(self) -> None:
        """The inference thread: a crash here is a fault (the arm brakes, the error path follows)."""
        try:
            self._serve()
        except Exception as exc:
            self.get_logger().fatal(f"inference thread died: {exc!r}")
            if self.stream is not None:
                self.stream.stop_motion("stop")
            self._raise_fault(f"inference thread died: {exc!r}")

    def _serve(self) -> None:
        assert self.params is not None and self.policy is not None and self.stream is not None
        assert self.chunk_pub is not None
        params, policy, stream, chunk_pub = self.params, self.policy, self.stream, self.chunk_pub
        chunk_len = policy.spec.horizon
        while not self._stop.is_set():
            if not self._replan.wait(timeout=0.1):  # the queued chunk still has more than replan_threshold
                continue
            if not self._enabled:
                self.stats.waiting_for = "enable (e-stop: ~/enable false)"
                self._replan.clear()
                continue
            taken = self._take_inputs()
            if taken is None:
                continue
            image = taken.image
            execute = self._executed_slice(image.stamp_ns, chunk_len)
            start = time.perf_counter()
            rgb = {name: latest.rgb for name, latest in taken.images.items()}
            observation = Observation(rgb, taken.instruction, taken.proprio)
            try:
                out = policy.predict_action_chunk(observation, execute)
                if not np.all(np.isfinite(out.actions)):  # past a runner that let them through: take it back
                    with contextlib.suppress(RuntimeError):
                        policy.withdraw_last()
                    raise NonFiniteActions("actions contain NaN or inf")
            except NonFiniteActions:  # the continuity monitor refuses them before they enter its history
                self._tick_failed("chunks_non_finite", "the model's actions contain NaN or inf")
                continue
            except Exception as exc:  # keep serving: a failed tick publishes nothing
                self._tick_failed("ticks_failed", f"inference failed: {exc!r}")
                continue
            self.stats.failures_in_row = 0
            tick_ms = (time.perf_counter() - start) * 1000.0
            actions = np.clip(out.actions, self._low, self._high)
            self._record_tick(out.tick, tick_ms)
            now_ns = self._now_ns()
            # The image may have aged past the limit during inference: then nothing from it goes out.
            if not self._active.is_set() or not self._enabled or now_ns - image.stamp_ns > self._max_age_ns:
                self.stats.images_stale += 1
                try:
                    policy.withdraw_last()  # never executed: continuity keeps following what the arm did
                except RuntimeError:
                    pass  # re-activation reset the policy meanwhile: no history left to amend
                if self._active.is_set() and self.context.ok():
                    self._publish_tick(image, out.tick, tick_ms, None)
                continue
            with self._seq_lock:
                self._replan.clear()  # until the stream asks again, for this chunk; an instruction sets it again
                with self._lock:
                    superseded = self._new_task
                if superseded:
                    self._replan.set()
                else:
                    self._seq += 1
                    seq = self._seq
                    self._predicted[seq] = execute
                    while len(self._predicted) > SLICE_WINDOW:
                        self._predicted.pop(next(iter(self._predicted)))
            if superseded:  # an instruction came during inference: this chunk plans the previous task
                self.get_logger().info("new instruction during inference: the previous task's chunk dropped")
                continue  # the next tick resets the policy and plans the new task
            wiring = self._wiring
            targets = wiring.joint_chunks(actions, taken.joints, params.dt)[0] if wiring is not None else None
            clock_offset = self._now_ns() - time.time_ns()  # read together: the node clock against the system's
            stream.send_chunk(seq, image.stamp_ns, actions, clock_offset, targets, taken.joints)
            try:
                chunk_pub.publish(self._chunk_message(image.stamp_msg, actions, params.dt))
                self.stats.chunks_published += 1
                self._publish_tick(image, out.tick, tick_ms, (self._now_ns() - image.stamp_ns) / 1e6)
            except Exception as exc:  # the context went down under us (Ctrl-C): stop quietly
                if self.context.ok():
                    raise
                self.get_logger().debug(f"shutting down, chunk not published: {exc!r}")
                return

    def _tick_failed(self, counter: str, message: str) -> None:
        """Nothing is published for this image; after max_consecutive_failures in a row the joints
        brake (the chunks that follow a recovery plan again)."""
        assert self.params is not None and self.stream is not None
        stats = self.stats
        setattr(stats, counter, getattr(stats, counter) + 1)
        stats.failures_in_row += 1
        now = time.monotonic()
        if now - self._last_reject_log.get(counter, -1e9) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[counter] = now
            self.get_logger().error(f"{message}: nothing published for this image ({getattr(stats, counter)} so far)")
        if stats.failures_in_row == self.params.max_consecutive_failures:
            self.get_logger().error(
                f"{stats.failures_in_row} inferences in a row failed: the joints brake to rest until one succeeds"
            )
            self.stream.stop_motion("stop")

    def _executed_slice(self, stamp_ns: int, chunk_len: int) -> slice:
        """The chunk's actions the stream will send: what the continuity history records (Eq. 1).

        Predicted from the stream's period grid, the expected inference latency and replan_threshold
        (``predict_executed_slice``): the runner records at step time, before the stream has sent
        anything. /diagnostics ``executed_slice_match`` says how often the prediction was exact.
        """
        assert self.params is not None and self.stream is not None
        mono, ros = time.monotonic_ns(), self._now_ns()
        grid = self.stream.grid or (mono, self._dt_ns)  # before the stream reported its grid: any phase
        return predict_executed_slice(
            stamp_ns=stamp_ns,
            ros_now_ns=ros,
            mono_now_ns=mono,
            grid=grid,
            latency_ns=round(self._expected_latency_s() * 1e9) + HANDOVER_NS,
            chunk_len=chunk_len,
            replan_threshold=self.params.replan_threshold,
        )

    def _expected_latency_s(self) -> float:
        recent = list(self.stats.tick_ms)[-10:] or self._warmup_ms
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
        for k, action in enumerate(actions.tolist()):
            point = JointTrajectoryPoint()
            point.positions = action
            point.time_from_start = duration_msg(round(k * dt * 1e9))
            msg.points.append(point)
        return msg

    # ---------------------------------------------------------------- per-tick telemetry

    def _publish_tick(
        self, image: LatestImage, tick: TickResult, tick_ms: float, image_to_chunk_ms: float | None
    ) -> None:
        """``~/dysl_tick``: one DiagnosticStatus per inference (name = node name). ``image_to_chunk_ms``
        is nan when the chunk was not published (its image had grown stale)."""
        values = {
            "image_stamp": stamp_label(image.stamp_ns),
            "tick_ms": f"{tick_ms:.3f}",
            "image_to_chunk_ms": "nan" if image_to_chunk_ms is None else f"{image_to_chunk_ms:.3f}",
            "executed_layers": str(tick.executed_layers),
            "layer_evaluations": str(tick.layer_evaluations),
            "continuity": f"{tick.continuity:.6g}",
            "delta": f"{tick.delta:.6g}",
            "allow_points": ",".join(str(p) for p in tick.allow_points),
            "verified": "true" if tick.verified else "false",
            "reran": "true" if tick.reran else "false",
            "skipped_from": ",".join("-" if s is None else str(s) for s in tick.skipped_from) or "-",
        }
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=self.get_name(), message="")
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        if self.tick_pub is not None:
            self.tick_pub.publish(status)

    # ---------------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        stats, params, policy = self.stats, self.params, self.policy
        status = DiagnosticStatus(name="dysl_node: inference", hardware_id=policy.backend_name if policy else "")
        waiting = stats.waiting_for
        stream = self.stream.stats if self.stream is not None else {}
        motion = self.stream.motion if self.stream is not None else ""
        if self._fault or self._stream_error:
            status.level, status.message = DiagnosticStatus.ERROR, self._fault or self._stream_error
        elif not self._enabled:
            status.level, status.message = DiagnosticStatus.WARN, "disabled (e-stop by ~/enable): only stop commands"
        elif self.params is None:
            failed = self._configure_error
            status.level = DiagnosticStatus.ERROR if failed else DiagnosticStatus.OK
            status.message = f"unconfigured: {failed}" if failed else "unconfigured"
        elif not self._active.is_set():
            status.level, status.message = DiagnosticStatus.OK, "inactive"
        elif waiting:
            status.level, status.message = DiagnosticStatus.WARN, f"waiting for {waiting}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "serving"
        ticks = list(stats.tick_ms)
        now = time.monotonic()
        counts = (stats.images_received, stats.ticks)
        rates = ["nan"] * 2
        if self._rate_base is not None and now > self._rate_base[0]:
            span = now - self._rate_base[0]
            rates = [f"{(c - b) / span:.1f}" for c, b in zip(counts, self._rate_base[1:], strict=True)]
        self._rate_base = (now, *counts)
        matches = list(stats.slice_match)

        def stream_value(key: str, fmt: str) -> str:
            value = stream.get(key)
            return "nan" if value is None else format(value, fmt)

        values: dict[str, str] = {
            "backend": policy.backend_name if policy else "",
            "backend_reason": policy.backend_reason if policy else "",
            "mode": "dense" if params and params.dense else "dysl",
            "image_rate_hz": rates[0],
            "tick_rate_hz": rates[1],
            "action_rate_hz": stream_value("rate_hz", ".1f"),
            "images_received": str(stats.images_received),
            "images_stale": str(stats.images_stale),
            "images_skewed": str(stats.images_skewed),
            "ticks": str(stats.ticks),
            "chunks_published": str(stats.chunks_published),
            "actions_published": stream_value("actions_published", ".0f"),
            "stale_action_periods": stream_value("stale_periods", ".0f"),
            "action_periods_late": stream_value("late_periods", ".0f"),
            "actions_withdrawn": stream_value("withdrawn_actions", ".0f"),
            "actions_written_past_max_age": stream_value("written_past_max_age", ".0f"),
            "tick_latency_p50_ms": _percentile(ticks, 50),
            "tick_latency_p99_ms": _percentile(ticks, 99),
            "action_period_p50_ms": stream_value("period_p50_ms", ".2f"),
            "action_period_jitter_p99_ms": stream_value("jitter_p99_ms", ".2f"),
            "stream_scheduling": self.stream.scheduling if self.stream is not None else "",
            "executed_slice_match": f"{np.mean(matches):.2f}" if matches else "nan",
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
            "enabled": "true" if self._enabled else "false",
            "chunks_non_finite": str(stats.chunks_non_finite),
            "ticks_failed": str(stats.ticks_failed),
            "failures_in_row": str(stats.failures_in_row),
            "joint_motion": motion,
            "joint_stops": stream_value("joint_stops", ".0f"),
            "joint_commands_refused": stream_value("commands_refused", ".0f"),
            "watchdog_trips": stream_value("watchdog_trips", ".0f"),
            "trajectories_late": stream_value("trajectories_late", ".0f"),
            "plans_without_controller": stream_value("plans_without_controller", ".0f"),
            "plans_rebased": stream_value("plans_rebased", ".0f"),
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
    from rclpy.signals import SignalHandlerOptions

    # SIGINT and SIGTERM are ours: rclpy's handler would shut the context down before the final
    # command could go out. They end the spin loop; the joints brake, then the context goes.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    node = DySLNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    status = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed, see the error above")
                return 1
            node.trigger_activate()
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if stop.is_set():
            node.get_logger().info("signal: stopping the joints, then shutting down")
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
