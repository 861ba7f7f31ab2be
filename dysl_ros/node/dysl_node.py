"""``dysl_node``: serves a VLA policy with DySL layer skipping as a ROS 2 lifecycle node.

    ~/image, ~/instruction, ~/joint_states ─► subscriptions.py ─► input_slots.py ─► inference thread
    inference thread (DySLPolicy) ─► ~/action_chunk, ~/dysl_tick; chunks ─► stream process (own GIL):
        ~/action at control_rate_hz, and with joints wired ~/joint_trajectory, ~/commands (joint_output.py)
    /diagnostics timer (telemetry.py); ~/enable, a latching e-stop

This file: the lifecycle (configure loads the model and the joints' limits; activate serves; deactivate
brakes the joints to rest, then nothing is published), the inference loop (when the stream's queue falls to
``replan_threshold``, on the newest image, never one older than ``max_image_age_ms``), and the faults: the
stream brakes the arm if this process dies; if the stream or the inference thread dies, this node does (arm.py).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecyclePublisher, State, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.publisher import Publisher
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.timer import Timer
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from dysl_ros import joint_limits
from dysl_ros.action_queue import predict_executed_slice
from dysl_ros.backends.errors import EngineError
from dysl_ros.core.config import ConfigError
from dysl_ros.core.continuity import NonFiniteActions
from dysl_ros.inputs import JointStateReader
from dysl_ros.joint_wiring import JointWiring, check_on_stale, wire_joints
from dysl_ros.model.model_dir import ModelDirError
from dysl_ros.model.observation_spec import Observation
from dysl_ros.motion import Plan
from dysl_ros.node.arm import ArmShadow, read_limits
from dysl_ros.node.input_slots import InputSlots, LatestImage, TickInputs
from dysl_ros.node.joint_output import JointConfig
from dysl_ros.node.params import PARAMETERS, NodeParams
from dysl_ros.node.robot import controller_joints
from dysl_ros.node.stream_client import ActionStreamProcess
from dysl_ros.node.stream_protocol import SPIN_NS, StreamConfig
from dysl_ros.node.subscriptions import InputSubscriptions, camera_topic
from dysl_ros.node.telemetry import (
    SLICE_WINDOW,
    Diagnostics,
    NodeState,
    Stats,
    chunk_message,
    configured_report,
    tick_status,
)
from dysl_ros.policy import DySLPolicy, PolicyOptions, load_policy
from dysl_ros.qos import RELIABLE_QOS
from dysl_ros.wiring import DIAGNOSTICS_TOPIC, TICK_TOPIC

TICK_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
HANDOVER_NS = SPIN_NS + 1_000_000
"""From a chunk's end of inference (or a re-plan request) to the stream taking it: send + the stream's
last command check before a deadline."""
REJECT_LOG_PERIOD_S = 2.0


class Loaded(NamedTuple):
    """What configure loads and checks before anything is set on the node."""

    policy: DySLPolicy
    names: list[str]
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    on_stale: str
    wiring: JointWiring | None
    limits: joint_limits.JointLimits | None


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
        self.slots: InputSlots | None = None
        """The latest inputs, written by the subscriptions, taken by the inference thread (configure)."""
        self._wiring: JointWiring | None = None  # set at configure when command_joint_names are given
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
        self._diagnostics = Diagnostics()
        self._last_failure_log: dict[str, float] = {}
        self._warmup_ms: list[float] = []  # latency estimate until real ticks have run
        self._enabled = True  # ~/enable: false latches an e-stop
        self._fault = ""  # why the node takes the error path (the stream or inference thread died)
        self._configure_error = ""  # the last failed configure's reason, for /diagnostics
        self._fault_wake = self.create_guard_condition(self._on_fault)
        self._joint_config: JointConfig | None = None
        self._shadow: ArmShadow | None = None
        """The plans the stream follows, as it reports them: what the node brakes from without it."""
        # Set at configure from the parameters and the model:
        self._names: list[str] = []  # ~/action_chunk joint_names
        self._dt_ns = 0  # control period
        self._max_age_ns = 0  # max_image_age_ms
        self._low: npt.NDArray[np.float64] = np.zeros(0)  # action clamp
        self._high: npt.NDArray[np.float64] = np.zeros(0)
        self.inputs: InputSubscriptions | None = None
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
            loaded = self._load(params)
        except (ConfigError, ModelDirError, EngineError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._configure_error = f"configure failed: {exc}"
            stream.stop()
            return TransitionCallbackReturn.FAILURE
        self._adopt(params, loaded)
        self._warm_up()
        self._create_topics(params)
        stream_config = self._stream_config(params, loaded)
        try:
            scheduling = stream.start(stream_config)
        except RuntimeError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._destroy_topics()
            return TransitionCallbackReturn.FAILURE
        self.stream, self._stream_error, self._fault, self._configure_error = stream, "", "", ""
        self.stats = Stats(waiting_for="activate")
        self._log_configured(params, loaded, stream_config.topic, scheduling)
        return TransitionCallbackReturn.SUCCESS

    def _load(self, params: NodeParams) -> Loaded:
        """The model on its backend and everything checked against it: names, clamp, wiring, limits."""
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
        limits = read_limits(self, params, wiring) if wiring is not None else None
        return Loaded(policy, names, np.asarray(low), np.asarray(high), on_stale, wiring, limits)

    def _adopt(self, params: NodeParams, loaded: Loaded) -> None:
        """The configured state: what the callbacks, the inference thread and the stops read."""
        wiring, spec = loaded.wiring, loaded.policy.spec
        self.params, self.policy, self.limits = params, loaded.policy, loaded.limits
        self._names, self._low, self._high = loaded.names, loaded.low, loaded.high
        self._wiring, self._on_stale = wiring, loaded.on_stale
        self._dt_ns, self._max_age_ns = round(params.dt * 1e9), round(params.max_image_age_ms * 1e6)
        self.slots = InputSlots(
            tuple(c.name for c in spec.cameras), params.max_camera_skew_ms, params.max_image_age_ms, wiring is not None
        )
        self._joint_config = None if wiring is None or loaded.limits is None else JointConfig(
            joints=wiring.joints,
            limits=loaded.limits.to_dict(),
            max_step=params.max_step,
            commands_are_velocities=wiring.commands_are_velocities,
            command_topic=self.resolve_topic_name("~/commands"),
            trajectory_topic=self.resolve_topic_name("~/joint_trajectory"),
            chunk_stamp=params.chunk_stamp,
            max_age_ns=self._max_age_ns,
            max_tracking_error=params.max_tracking_error,
        )
        self._shadow = (
            ArmShadow(self._joint_config, loaded.limits, self._dt_ns)
            if self._joint_config is not None and loaded.limits is not None else None
        )

    def _stream_config(self, params: NodeParams, loaded: Loaded) -> StreamConfig:
        return StreamConfig(
            topic=self.resolve_topic_name("~/action"),
            node_name=self.get_name(),
            namespace=self.get_namespace(),
            dt_ns=self._dt_ns,
            max_age_ns=self._max_age_ns,
            on_stale=loaded.on_stale,
            action_dim=loaded.policy.spec.action_dim,
            replan_threshold=params.replan_threshold,
            aggregation=params.chunk_aggregation,
            decay=params.aggregation_decay,
            priority=params.stream_priority,
            joints=self._joint_config,
            watchdog_ns=params.watchdog_periods * self._dt_ns,
        )

    def _log_configured(self, params: NodeParams, loaded: Loaded, topic: str, scheduling: str) -> None:
        spec = loaded.policy.spec
        cameras = {c.name: self.resolve_topic_name(camera_topic(spec, c.name)) for c in spec.cameras}
        warnings, lines = configured_report(
            params, loaded.policy, loaded.low, loaded.limits, topic, scheduling, cameras
        )
        for line in warnings:
            self.get_logger().warning(line)
        for line in lines:
            self.get_logger().info(line)

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
        assert self.slots is not None
        self.policy.reset()
        # Never act on an image from before activation; a deactivate used as a stop stays a stop.
        self.slots.activate(keep_instruction=params.resume_instruction_on_activate)
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
        waiting = " once an instruction arrives" if not params.resume_instruction_on_activate else ""
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
        if self._shadow is not None:
            self._shadow.join()
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
        timeout = 2.0 + (self._shadow.stop_duration_s(self._now_ns()) if self._shadow is not None else 0.0)
        if not stream.set_active(False, timeout=timeout, final_action=final_action):
            self.get_logger().error("the action stream process did not confirm the joints came to rest")
            self._brake_without_stream("final")

    def _on_adopted(self, plan: Plan) -> None:
        if self._shadow is not None:
            self._shadow.adopted(plan)

    def _brake_without_stream(self, reason: str) -> None:
        """The stream process is gone: the node brakes the joints as it would have (arm.py)."""
        if self._shadow is not None and self._shadow.brake(
            self, reason, self._now_ns, self.fallback_trajectory_pub, self.fallback_command_pub
        ):
            self.get_logger().warning(f"the node braked the joints itself ({reason}): the action stream is gone")

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
        if self.slots is not None:
            self.slots.wake()
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
        assert self.policy is not None and self.slots is not None
        self.inputs = InputSubscriptions(
            self, self.policy.spec, self.slots, lambda: self.stats, self._replan.set,
            compressed=params.image_transport == "compressed", max_future_stamp_ms=params.max_future_stamp_ms,
            state_reader=JointStateReader(params.state_joints) if params.state_joints else None,
            command_reader=(
                JointStateReader(self._wiring.joints, "command_joint_names") if self._wiring is not None else None
            ),
        )
        self.chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "~/action_chunk", RELIABLE_QOS)
        if self._wiring is not None:  # normally the stream process's; the node's when it is gone
            self.fallback_trajectory_pub = self.create_publisher(JointTrajectory, "~/joint_trajectory", RELIABLE_QOS)
            self.fallback_command_pub = self.create_publisher(Float64MultiArray, "~/commands", RELIABLE_QOS)
        # ~/action is published by the stream process (stream_process.py) under this node's resolved name.
        self.tick_pub = self.create_lifecycle_publisher(DiagnosticStatus, TICK_TOPIC, TICK_QOS)
        self.enable_service = self.create_service(SetBool, "~/enable", self._on_enable)

    def _destroy_topics(self) -> None:
        if self.inputs is not None:
            self.inputs.destroy()
            self.inputs = None
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
        enabled, stream = bool(request.data), self.stream
        said = "enabled" if enabled else "disabled (e-stop)"
        if stream is None or enabled == self._enabled:
            response.success, response.message = stream is not None, "not configured" if stream is None else said
            return response
        self._enabled = enabled
        if enabled and self.slots is not None:
            self.slots.new_episode()  # continuity restarts: the arm was stopped in between
        self._replan.set()  # the inference thread sees the change at once
        response.success = stream.set_enabled(enabled)
        response.message = said if response.success else "the action stream process did not answer"
        self.get_logger().warning(f"~/enable: {said}{': joints braking' if not enabled else ''}")
        return response

    # ---------------------------------------------------------------- inference

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _now_ns(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _take_inputs(self) -> TickInputs | None:
        """Wait for a new image of the first camera; returns what the tick sees, or None (and why, in
        stats)."""
        assert self.policy is not None and self.slots is not None
        taken = self.slots.take(self._stop, self._now)
        if taken.new_task:
            self.policy.reset()
        if taken.waiting_for is not None:
            self.stats.waiting_for = taken.waiting_for
        self.stats.images_skewed += int(taken.skewed)
        self.stats.images_stale += int(taken.stale)
        if taken.image_age_ms == taken.image_age_ms:  # measured (not nan)
            self.stats.last_image_age_ms = taken.image_age_ms
        return taken.inputs

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
            self.stats.record_tick(out.tick, tick_ms)
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
                assert self.slots is not None
                superseded = self.slots.superseded()
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
            measured_ns = 0  # when the joint state was measured, on the node clock (0: no joint state)
            if taken.joints is not None:
                measured_ns = self._now_ns() - round((time.monotonic() - taken.joints_received) * 1e9)
            stream.send_chunk(seq, image.stamp_ns, actions, clock_offset, targets, taken.joints, measured_ns)
            try:
                chunk_pub.publish(chunk_message(self._names, image.stamp_msg, actions, params.dt))
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
        if now - self._last_failure_log.get(counter, -1e9) >= REJECT_LOG_PERIOD_S:
            self._last_failure_log[counter] = now
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
            latency_ns=round(self.stats.expected_latency_s(self._warmup_ms) * 1e9) + HANDOVER_NS,
            chunk_len=chunk_len,
            replan_threshold=self.params.replan_threshold,
        )

    def _publish_tick(
        self, image: LatestImage, tick: Any, tick_ms: float, image_to_chunk_ms: float | None
    ) -> None:
        if self.tick_pub is not None:
            self.tick_pub.publish(tick_status(self.get_name(), image.stamp_ns, tick, tick_ms, image_to_chunk_ms))

    def _publish_diagnostics(self) -> None:
        policy, stream = self.policy, self.stream
        state = NodeState(
            stats=self.stats,
            backend=policy.backend_name if policy else "",
            backend_reason=policy.backend_reason if policy else "",
            dense=bool(self.params and self.params.dense),
            configured=self.params is not None,
            active=self._active.is_set(),
            enabled=self._enabled,
            fault=self._fault or self._stream_error,
            configure_error=self._configure_error,
            stream=stream.stats if stream is not None else {},
            stream_scheduling=stream.scheduling if stream is not None else "",
            motion=stream.motion if stream is not None else "",
        )
        msg = DiagnosticArray(status=[self._diagnostics.status(state)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
