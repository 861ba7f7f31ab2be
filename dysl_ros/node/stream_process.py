"""The control-rate ``~/action`` stream, in a process of its own.

Why a process: in the node's process the stream thread shares the GIL with inference (Python between
ONNX segments), image decoding and the executor; its period jitter was p99 5-13 ms. Here it has its
own interpreter, sleeps until ~1 ms before each deadline and spins the rest, and can run SCHED_FIFO
(``stream_priority``). It is one more DDS participant (node ``<node>_action_stream`` in the node's
namespace) publishing on the node's resolved ``~/action`` name (remappings applied by the node).

With joint commands wired it is also what the arm's controllers hear: ``~/joint_trajectory`` and
``~/commands`` come from here, planned within the joint limits (``joint_output.py``). It is the arm's
watchdog: when the node dies (the socket closes) or stops sending heartbeats for ``watchdog_periods``,
it brakes the arm on its own; on SIGTERM it brakes, then exits.

The messages are stream_protocol.py's; the node's side is stream_client.py. It exits on Stop, or after
braking when the node closed the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from dysl_ros.action_queue import ActionQueue
from dysl_ros.motion import Plan
from dysl_ros.node.joint_output import JointOutput, trajectory_message
from dysl_ros.node.stream_protocol import (
    SPIN_NS,
    Ack,
    Adopted,
    Chunk,
    Configure,
    Grid,
    Heartbeat,
    Ready,
    Replan,
    SetActive,
    SetEnabled,
    Stats,
    Stop,
    StopMotion,
    StreamConfig,
    Streamed,
    ToNode,
    ToStream,
)

PUBLISH_MARGIN_NS = 1_000_000
"""Staleness is judged this much after the check, covering the publish call itself."""
STATS_PERIOD_NS = 100_000_000
PERIOD_WINDOW = 500
CLOCK_JUMP_NS = 5_000_000
"""A node clock this far from the grid's mapping has jumped: the grid follows it."""
CLOCK_CHECK_PERIODS = 50
PLAN_ALLOWANCE_NS = 5_000_000
"""Planning and sending a trajectory takes ~1 ms (more on a loaded machine): added to its lead."""
CONTROLLER_SETTLE_NS = 500_000_000
"""A controller counts as listening once subscribed this long (DDS matches the writer's side first)."""
HOLD_AFTER_STOP_NS = 200_000_000
"""After a stop of its own (the node died, SIGTERM), the rest command goes on this long before exit."""


def _set_scheduling(priority: int) -> str:
    with contextlib.suppress(OSError, AttributeError):  # finer sleeps than the default 50 us slack
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK = 29
    if priority <= 0:
        return f"SCHED_OTHER nice {os.nice(0)}"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        return f"SCHED_OTHER nice {os.nice(0)} (SCHED_FIFO {priority} refused: {exc}; grant rtprio, e.g. limits.conf)"
    return f"SCHED_FIFO {priority}"


class _Stream:
    def __init__(self, conn: Connection, config: StreamConfig) -> None:
        import rclpy
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float64MultiArray, MultiArrayDimension

        self.conn = conn
        self.config = config
        self.fd = conn.fileno()
        self.queue = ActionQueue(
            config.dt_ns, config.max_age_ns, config.on_stale, config.action_dim, config.aggregation, config.decay
        )
        try:  # Ctrl-C goes to the whole process group: the node, not a signal, stops the stream
            from rclpy.signals import SignalHandlerOptions

            rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
        except ImportError:
            rclpy.init(args=[])
        self.rclpy = rclpy
        self.node = rclpy.create_node(
            f"{config.node_name}_action_stream", namespace=config.namespace, start_parameter_services=False
        )
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Float64MultiArray, config.topic, qos)
        self.msg = Float64MultiArray()
        self.dim = MultiArrayDimension(label="", size=config.action_dim, stride=config.action_dim)
        self.msg.layout.dim = [self.dim]
        # The arm's controllers: ~/commands each period and ~/joint_trajectory per plan, from one plan.
        self.joints: JointOutput | None = None
        self.command_pub: Any = None
        self.trajectory_pub: Any = None
        joints = config.joints
        if joints is not None:
            from trajectory_msgs.msg import JointTrajectory

            self.joints = JointOutput(joints, config.dt_ns)
            if joints.command_topic:
                self.command_pub = self.node.create_publisher(Float64MultiArray, joints.command_topic, qos)
                self.command_msg = Float64MultiArray()
                self.command_dim = MultiArrayDimension(label="", size=len(joints.joints), stride=len(joints.joints))
                self.command_msg.layout.dim = [self.command_dim]
            if joints.trajectory_topic:
                self.trajectory_pub = self.node.create_publisher(JointTrajectory, joints.trajectory_topic, qos)
        self.active = False
        self.enabled = True
        self.deactivating: int | None = None
        """The token of a SetActive(False) whose final stop is still braking."""
        self.orphaned = False
        """The node is gone (socket closed, SIGTERM): brake, hold a moment, exit."""
        self.orphaned_at: int | None = None
        self.last_heartbeat = time.monotonic_ns()
        self.watchdog_trips = 0
        self.trajectories_late = 0
        self.unheard_plans = 0
        self.subscribed_since: int | None = None
        """Chunks not planned because no controller subscribed to ~/joint_trajectory or ~/commands."""
        self.base = 0
        self.base_ros = 0
        """Node-clock time of period 0 (``period_ros``)."""
        self.clock_offset_ns = 0
        self.last_pushed = -1
        self.replan_sent = -1
        self.published = 0
        self.stale = 0
        self.late = 0
        self.withdrawn = 0
        self.written_past_max_age = 0
        self.periods: deque[int] = deque(maxlen=PERIOD_WINDOW)
        self.sent_times: deque[int] = deque(maxlen=PERIOD_WINDOW)
        self.last_publish: int | None = None

    # ------------------------------------------------------------------ clocks

    def ros_now(self) -> int:
        return time.time_ns() + self.clock_offset_ns

    def period_ros(self, k: int) -> int:
        """Node-clock time at which period k is due: one exact grid for plans and the commands sampled
        from them (two clock reads per period would jitter it by microseconds, and a command sampled
        off the plan's grid can step beyond the limits by as much)."""
        return self.base_ros + k * self.config.dt_ns

    def clock_skew(self) -> int:
        """How far the node clock has moved from the grid's mapping (ns), from two clock reads taken
        back to back (retried if preempted in between)."""
        for _ in range(5):
            before = time.monotonic_ns()
            ros = self.ros_now()
            after = time.monotonic_ns()
            if after - before < 50_000:
                break
        return ros - (self.base_ros + ((before + after) // 2 - self.base))

    def sync_clock(self) -> None:
        """Map the monotonic period grid onto the node's clock: at start, and when that clock jumped
        (sim time, a stepped system clock). Plans and commands share the mapping, so a slow drift
        between the clocks never changes the spacing of the commands."""
        self.base_ros += self.clock_skew()

    def next_period_ros(self, lead_ns: int) -> int:
        """Node-clock time of the first period at least ``lead_ns`` from now."""
        k = -(-(time.monotonic_ns() + lead_ns - self.base) // self.config.dt_ns)
        return self.period_ros(k)

    # ------------------------------------------------------------------ messages from the node

    def handle(self, message: ToStream) -> bool:
        """Apply one message from the node; False when it says stop."""
        if isinstance(message, Heartbeat):
            self.last_heartbeat = time.monotonic_ns()
        elif isinstance(message, Chunk):
            self.last_heartbeat = time.monotonic_ns()
            # Two clock reads in the node, apart by however long its thread was preempted between them:
            # follow a real change of the node's clock (sim time, a jump), not that noise, which would
            # shift the plans' grid.
            if abs(message.clock_offset_ns - self.clock_offset_ns) > CLOCK_JUMP_NS:
                self.clock_offset_ns = message.clock_offset_ns
                self.sync_clock()
            if not self.enabled or self.deactivating is not None:
                return True  # e-stopped or stopping: only stop commands go out
            self.queue.push(message.seq, message.stamp_ns, message.actions)
            self.last_pushed = message.seq
            if self.joints is not None and message.targets is not None and self.active:
                self._plan_chunk(message)
        elif isinstance(message, SetActive):
            self._set_active(message)
        elif isinstance(message, SetEnabled):
            if not message.enabled and self.enabled:
                self.queue.clear()
                self._stop_joints("estop")
            elif message.enabled and not self.enabled and self.joints is not None:
                self.joints.reset()  # ramp in from the measured pose, as at activation
            self.enabled = message.enabled
            self.conn.send(Ack(message.token))
        elif isinstance(message, StopMotion):
            self.queue.clear()
            self._stop_joints(message.reason)
        elif isinstance(message, Stop):
            return False
        return True

    def _set_active(self, message: SetActive) -> None:
        if message.active:
            self.active, self.deactivating = True, None
            self.last_heartbeat = time.monotonic_ns()
            if self.joints is not None:
                self.joints.reset()
            self.conn.send(Ack(message.token))
            return
        if self.active:
            self._publish_final(message)
        self.queue.clear()
        self.last_pushed = self.replan_sent = -1
        if self.active and self.joints is not None and not self.joints.at_rest(self.ros_now()):
            self._stop_joints("final")
            self.deactivating = message.token  # acked once at rest (see run)
            return
        if self.active:
            self._publish_command(self.ros_now(), label="final")  # at rest already: say so, once
        self._go_inactive()
        self.conn.send(Ack(message.token))

    def _go_inactive(self) -> None:
        self.active, self.deactivating = False, None
        self.last_publish = None
        self.sent_times.clear()

    # ------------------------------------------------------------------ joints

    def _plan_chunk(self, chunk: Chunk) -> None:
        assert self.joints is not None and chunk.targets is not None
        joints, targets = self.joints, chunk.targets
        self._publish_plan(
            lambda start: joints.plan_chunk(
                chunk.stamp_ns, targets, chunk.measured, start, len(targets), chunk.measured_ns
            ),
            chunk.stamp_ns,
        )

    def _stop_joints(self, reason: str) -> None:
        if self.joints is not None:
            joints = self.joints
            self._publish_plan(lambda start: joints.plan_stop(start, reason), None)

    def _publish_plan(self, make: Callable[[int], Plan | None], image_ns: int | None) -> None:
        """Plan from the first period a control period (plus planning time) ahead, adopt, publish.
        Preempted between planning and publishing so that less than a period of lead is left, it
        plans again from a later period: the controller never gets a trajectory that starts sooner."""
        assert self.joints is not None
        joints = self.joints
        if not self._controller_connected():
            # Nobody would follow the plan, and the next one would continue from states no controller
            # ever had: move only once a controller listens (then from the measured pose).
            joints.reset()
            self.unheard_plans += 1
            return
        plan: Plan | None = None
        for _ in range(3):
            start = self.next_period_ros(self.config.dt_ns + PLAN_ALLOWANCE_NS)
            plan = make(start)
            if plan is None:
                return
            message = None
            if self.trajectory_pub is not None:
                sent = joints.spliced(plan, self.ros_now())
                message = trajectory_message(sent, joints.config, joints.limits.has_jerk, image_ns, self.ros_now())
            if self.ros_now() + self.config.dt_ns + PUBLISH_MARGIN_NS <= start:
                break
        assert plan is not None
        joints.adopt(plan, image_ns)
        self.conn_send(Adopted(plan))
        if message is not None and self.trajectory_pub is not None:
            self.trajectory_pub.publish(message)
            # Starved past every re-plan, or inside the write: the controller got less lead. Counted.
            self.trajectories_late += int(self.ros_now() + self.config.dt_ns > start)

    def _controller_connected(self) -> bool:
        """A controller subscribed for at least CONTROLLER_SETTLE_NS: DDS matches the writer's side
        first, and a trajectory sent before the reader's side matched is lost (the next one, which
        continues from it, would then step)."""
        subscribed = any(
            publisher is not None and publisher.get_subscription_count() > 0
            for publisher in (self.trajectory_pub, self.command_pub)
        )
        now = time.monotonic_ns()
        if not subscribed:
            self.subscribed_since = None
            return False
        if self.subscribed_since is None:
            self.subscribed_since = now
        return now - self.subscribed_since >= CONTROLLER_SETTLE_NS

    def conn_send(self, message: ToNode) -> None:
        if self.orphaned:
            return
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(message)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        dt = self.config.dt_ns
        self.base = base = time.monotonic_ns()
        self.base_ros = self.ros_now()
        self.sync_clock()
        k = 0
        next_stats = base + STATS_PERIOD_NS
        self.conn.send(Grid(base, dt))  # period k is due at base + k*dt (CLOCK_MONOTONIC)
        signal.signal(signal.SIGTERM, lambda *_: self._orphan())
        while True:
            k += 1
            deadline = base + k * dt
            while not self.orphaned:  # commands until just before the deadline
                left = deadline - SPIN_NS - time.monotonic_ns()
                if left <= 0:
                    break
                readable, _, _ = select.select([self.fd], [], [], left / 1e9)
                if not readable:
                    continue
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    self._orphan()  # the node died: the arm is ours to stop
                    break
                if not self.handle(message):
                    return
            if self.orphaned:
                now = time.monotonic_ns()
                if now < deadline:
                    time.sleep((deadline - now) / 1e9)
                if self._orphan_done():
                    return
            if not self.active:
                continue
            while time.monotonic_ns() < deadline:
                pass
            now = time.monotonic_ns()
            if now - deadline > dt:  # suspended or starved: resynchronise instead of bursting
                missed = (now - base) // dt
                self.late += missed - k + 1  # periods k .. missed go unserved
                k = missed
                continue
            self._watchdog(now)
            if k % CLOCK_CHECK_PERIODS == 0 and abs(self.clock_skew()) > CLOCK_JUMP_NS:
                self.sync_clock()  # the node's clock jumped: follow it
            nominal = self.period_ros(k)
            if self.deactivating is None and not self.orphaned:
                self._publish_action(k, nominal)
            self._publish_command(nominal, label="final" if self.deactivating is not None else "")
            if self.deactivating is not None and self.joints is not None and self.joints.at_rest(nominal):
                token = self.deactivating
                self._go_inactive()
                self.conn_send(Ack(token))
            self._report(k)
            if time.monotonic_ns() >= next_stats:
                next_stats = time.monotonic_ns() + STATS_PERIOD_NS
                self._send_stats()

    def _watchdog(self, now: int) -> None:
        limit = self.config.watchdog_ns
        if limit <= 0 or self.orphaned or self.joints is None or self.joints.plan is None:
            return
        if self.joints.plan.reason == "" and now - self.last_heartbeat > limit:
            self.watchdog_trips += 1
            self._stop_joints("stop")

    def _orphan(self) -> None:
        if self.orphaned:
            return
        self._stop_joints("stop")
        self.orphaned = True
        self.orphaned_at = time.monotonic_ns()

    def _orphan_done(self) -> bool:
        """Braking on our own: done once at rest and the rest command went on for a moment."""
        assert self.orphaned_at is not None
        if not self.active or self.joints is None:
            return True
        at_rest = self.joints.at_rest(self.ros_now())
        return at_rest and time.monotonic_ns() - self.orphaned_at > HOLD_AFTER_STOP_NS

    def _publish_action(self, k: int, nominal: int) -> None:
        ros_now = self.ros_now()
        action = self.queue.plan_action(k, nominal, ros_now + PUBLISH_MARGIN_NS)
        if action is not None:
            self.msg.data = action.values.tolist()
            self.dim.label = action.label if self.enabled else "estop"
            # Checked again just before the write: preempted since the plan, a source may have
            # passed max_age; then the period's action is planned again (hold/zero, or the mean
            # of the younger chunks) and the stale one is never written.
            ros_now = self.ros_now()
            if action.expires_ns is not None and ros_now + PUBLISH_MARGIN_NS > action.expires_ns:
                self.withdrawn += 1
                action = self.queue.plan_action(k, nominal, ros_now + PUBLISH_MARGIN_NS)
                if action is not None:
                    self.msg.data = action.values.tolist()
                    self.dim.label = action.label if self.enabled else "estop"
        if action is None:
            return
        self.queue.commit_action(action)
        self.pub.publish(self.msg)
        # The write's own time (DDS source timestamp) lies inside publish(): a fresh action
        # whose source expired before publish() returned may have been written late.
        written_by = self.ros_now()
        if action.expires_ns is not None and written_by > action.expires_ns:
            self.written_past_max_age += 1
        sent = time.monotonic_ns()
        if self.last_publish is not None:
            self.periods.append(sent - self.last_publish)
        self.last_publish = sent
        self.sent_times.append(sent)
        self.published += 1
        self.stale += int(not action.fresh)

    def _publish_command(self, nominal: int, label: str = "") -> None:
        """This period's joint command: the plan sampled at the period's time, checked."""
        if self.joints is None or self.command_pub is None:
            return
        command = self.joints.command(nominal)
        if command is None:
            return
        self.command_msg.data = command.values.tolist()
        if not label:
            label = command.label if self.enabled or command.label in ("hold", "zero") else "estop"
        self.command_dim.label = label
        self.command_pub.publish(self.command_msg)

    def _publish_final(self, message: SetActive) -> None:
        """One safe model-space action as the stream stops (deactivate)."""
        final = message.final_action if message.final_action is not None else self.queue.last_command
        if final is not None:  # zeros, or hold the last action (absolute positions)
            self.msg.data = np.asarray(final, dtype=np.float64).tolist()
            self.dim.label = "final"
            self.pub.publish(self.msg)

    def _report(self, k: int) -> None:
        if self.last_pushed >= 0 and self.replan_sent != self.last_pushed:
            if self.queue.newest_seq != self.last_pushed or self.queue.remaining(k) <= self.config.replan_threshold:
                self.replan_sent = self.last_pushed
                self.conn_send(Replan(self.last_pushed))
        for s in self.queue.take_finished():
            self.conn_send(Streamed(s.seq, s.first_index, s.count))

    def _motion(self) -> str:
        joints = self.joints
        if joints is None:
            return ""
        if not self.enabled:
            return "disabled"
        plan = joints.plan
        if plan is None:
            return "idle" if self._controller_connected() else "no controller subscribed"
        now = self.ros_now()
        if now >= plan.end_ns:
            return "at rest"
        if plan.reason == "" and now <= plan.start_ns + plan.tracked * plan.dt_ns:
            return "tracking"
        return f"braking ({plan.reason or 'chunk ended'})"

    def _send_stats(self) -> None:
        periods_ms = np.asarray(self.periods, dtype=np.float64) / 1e6
        dt_ms = self.config.dt_ns / 1e6
        now = time.monotonic_ns()
        stats = {
            "rate_hz": float(sum(1 for t in self.sent_times if now - t <= 1_000_000_000)),
            "actions_published": float(self.published),
            "stale_periods": float(self.stale),
            "late_periods": float(self.late),
            "withdrawn_actions": float(self.withdrawn),
            "written_past_max_age": float(self.written_past_max_age),
            "period_p50_ms": float(np.percentile(periods_ms, 50)) if len(periods_ms) else float("nan"),
            "jitter_p99_ms": float(np.percentile(np.abs(periods_ms - dt_ms), 99)) if len(periods_ms) else float("nan"),
            "watchdog_trips": float(self.watchdog_trips),
            "trajectories_late": float(self.trajectories_late),
            "plans_without_controller": float(self.unheard_plans),
            "plans_rebased": float(self.joints.rebased if self.joints else 0),
            "joint_stops": float(self.joints.stops if self.joints else 0),
            "commands_refused": float(self.joints.refused if self.joints else 0),
        }
        self.conn_send(Stats(stats, self._motion()))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.node.destroy_node()
        with contextlib.suppress(Exception):
            self.rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the node stops us
    conn = Connection(int(args[0]))
    try:
        first = conn.recv()
    except EOFError:
        return 1  # the node died before configuring us
    if isinstance(first, Stop):
        return 0  # the node's configure failed (its log says why): nothing to stream
    if not isinstance(first, Configure):
        print(f"action stream: expected Configure from the node, got {first!r}", file=sys.stderr)
        return 1
    config = first.config
    stream = _Stream(conn, config)
    import gc

    gc.collect()
    gc.freeze()  # nothing allocated so far is scanned again: shorter collections in the loop
    conn.send(Ready(_set_scheduling(config.priority)))
    try:
        stream.run()
    finally:
        stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
