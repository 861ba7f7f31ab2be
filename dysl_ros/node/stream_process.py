"""The control-rate ``~/action`` stream, in a process of its own.

Why a process: in the node's process the stream thread shares the GIL with inference (Python between
ONNX segments), image decoding and the executor; its period jitter was p99 5-13 ms. Here it has its
own interpreter, sleeps until ~1 ms before each deadline and spins the rest, and can run SCHED_FIFO
(``stream_priority``). It is one more DDS participant (node ``<node>_action_stream`` in the node's
namespace) publishing on the node's resolved ``~/action`` name (remappings applied by the node).

Protocol over a socket pair (``multiprocessing.connection`` framing, pickled messages below):

    node -> stream   Configure once (or Stop, when the node's configure failed), then Chunk,
                     SetActive, Stop
    stream -> node   Ready, Ack (of a SetActive), Replan when the queue of chunk ``seq`` falls to
                     ``replan_threshold`` (or it runs out or goes stale), Streamed when a chunk will
                     send no more, Grid once (period k is due at base + k*dt, monotonic), Stats
                     about every 0.1 s.

The stream follows the node's clock (image stamps): ``clock_offset_ns`` = node clock - system clock,
sent with every chunk. It exits when the node closes the socket (the node died) or on ("stop",).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dysl_ros.action_queue import ActionQueue

SPIN_NS = 1_000_000
"""Sleep until this long before a deadline, then spin: wake-up latency stays out of the period."""
PUBLISH_MARGIN_NS = 1_000_000
"""Staleness is judged this much after the check, covering the publish call itself."""
STATS_PERIOD_NS = 100_000_000
PERIOD_WINDOW = 500


@dataclass(frozen=True)
class StreamConfig:
    topic: str
    """Fully resolved ``~/action`` name of the node."""
    node_name: str
    namespace: str
    dt_ns: int
    max_age_ns: int
    on_stale: str
    action_dim: int
    replan_threshold: int
    aggregation: str
    decay: float
    priority: int
    """SCHED_FIFO priority 1-99; 0: normal scheduling."""
    command_topic: str = ""
    """Resolved ``~/commands`` (a forward command controller's joints), or "" for none."""
    command_dim: int = 0
    command_on_stale: str = "hold"
    """hold: the last commanded position | zero: zero velocity."""


# Node -> stream.
class Configure(NamedTuple):
    config: StreamConfig


class Chunk(NamedTuple):
    seq: int
    stamp_ns: int
    actions: npt.NDArray[np.float64]
    clock_offset_ns: int
    """Node clock - system clock: the stream follows the node's clock (image stamps)."""
    commands: npt.NDArray[np.float64] | None = None
    """(chunk_len, command_dim) joint commands of the same actions, when ``~/commands`` is wired."""


class SetActive(NamedTuple):
    active: bool
    token: int
    final_action: npt.NDArray[np.float64] | None = None
    """Deactivating: one last safe ``~/action`` to publish before stopping (None: none)."""
    final_commands: npt.NDArray[np.float64] | None = None
    """Deactivating: one last safe ``~/commands`` (hold the measured position / zero velocity)."""


class Stop(NamedTuple):
    pass


# Stream -> node.
class Ready(NamedTuple):
    scheduling: str


class Ack(NamedTuple):
    token: int


class Replan(NamedTuple):
    seq: int


class Streamed(NamedTuple):
    seq: int
    first_index: int
    sent: int
    """How many of the chunk's actions went out, from ``first_index`` on."""


class Grid(NamedTuple):
    base_ns: int
    dt_ns: int


class Stats(NamedTuple):
    values: dict[str, float]


ToStream = Configure | Chunk | SetActive | Stop
ToNode = Ready | Ack | Replan | Streamed | Grid | Stats
STREAM_MAIN = "import sys; from dysl_ros.node.stream_process import main; sys.exit(main())"
"""How the process starts: through the module's import name (not ``-m``, which would run it as
``__main__``), so that the messages above unpickle as the same classes on both sides."""


# ====================================================================== node side


class ActionStreamProcess:
    """The node's handle on the stream process. ``on_replan(seq)`` and ``on_streamed(seq, first,
    count)`` run on a reader thread."""

    def __init__(
        self,
        on_replan: Callable[[int], None],
        on_streamed: Callable[[int, int, int], None],
        on_exit: Callable[[str], None],
    ) -> None:
        self._on_replan = on_replan
        self._on_streamed = on_streamed
        self._on_exit = on_exit
        self._send_lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self._token = 0
        self.config: StreamConfig | None = None
        self.stats: dict[str, float] = {}
        self.scheduling = ""
        self.grid: tuple[int, int] | None = None
        """(base, dt) in CLOCK_MONOTONIC ns: period k of the stream is due at base + k*dt."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

    def spawn(self) -> None:
        """Start the process; it imports rclpy while the node loads its model, then waits for ``start``."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = theirs.fileno()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", STREAM_MAIN, str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL
        )
        theirs.close()
        self._conn = Connection(mine.detach())

    def start(self, config: StreamConfig, timeout: float = 60.0) -> str:
        """Configure the spawned process and wait until its publisher exists; returns its scheduling."""
        if self._conn is None:
            self.spawn()
        assert self._conn is not None
        self.config = config
        self._conn.send(Configure(config))
        if not self._conn.poll(timeout):
            self.stop()
            raise RuntimeError(f"action stream process did not start within {timeout} s")
        try:
            ready = self._conn.recv()
        except EOFError:
            self.stop()
            raise RuntimeError("action stream process exited during start-up (see its log above)") from None
        if not isinstance(ready, Ready):
            self.stop()
            raise RuntimeError(f"action stream process answered {ready!r} instead of Ready")
        self.scheduling = ready.scheduling
        self._reader = threading.Thread(target=self._read, name="dysl_stream_reader", daemon=True)
        self._reader.start()
        return self.scheduling

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def send_chunk(
        self,
        seq: int,
        stamp_ns: int,
        actions: npt.NDArray[np.float64],
        clock_offset_ns: int,
        commands: npt.NDArray[np.float64] | None = None,
    ) -> None:
        joint = None if commands is None else np.ascontiguousarray(commands, dtype=np.float64)
        self._send(Chunk(seq, stamp_ns, np.ascontiguousarray(actions, dtype=np.float64), clock_offset_ns, joint))

    def set_active(
        self,
        active: bool,
        timeout: float = 2.0,
        final_action: npt.NDArray[np.float64] | None = None,
        final_commands: npt.NDArray[np.float64] | None = None,
    ) -> bool:
        """Start or stop publishing; True once the stream has confirmed (after that, nothing more goes
        out when stopped). Stopping, ``final_action`` / ``final_commands`` go out once first."""
        with self._send_lock:
            self._token += 1
            token = self._token
            event = self._acks[token] = threading.Event()
        self._send(SetActive(active, token, final_action, final_commands))
        done = event.wait(timeout)
        self._acks.pop(token, None)
        return done

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        with contextlib.suppress(OSError, ValueError):
            self._send(Stop())
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout)
        self._proc = self._conn = self._reader = None

    def _send(self, message: ToStream) -> None:
        if self._conn is None:
            return
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                pass  # the reader reports the exit

    def _read(self) -> None:
        assert self._conn is not None
        conn = self._conn
        while True:
            try:
                message: ToNode = conn.recv()
            except (EOFError, OSError, ValueError):
                if not self._stopping:
                    code = self._proc.poll() if self._proc is not None else None
                    self._on_exit(f"action stream process exited (code {code})")
                return
            if isinstance(message, Replan):
                self._on_replan(message.seq)
            elif isinstance(message, Streamed):
                self._on_streamed(message.seq, message.first_index, message.sent)
            elif isinstance(message, Stats):
                self.stats = message.values
            elif isinstance(message, Grid):
                self.grid = (message.base_ns, message.dt_ns)
            elif isinstance(message, Ack):
                event = self._acks.get(message.token)
                if event is not None:
                    event.set()


# ====================================================================== stream side


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
        # ~/commands: the same periods' joint commands, queued alongside (same stamps, same freshness).
        self.commands: ActionQueue | None = None
        if config.command_topic:
            self.commands = ActionQueue(
                config.dt_ns, config.max_age_ns, config.command_on_stale, config.command_dim,
                config.aggregation, config.decay,
            )
            self.command_pub = self.node.create_publisher(Float64MultiArray, config.command_topic, qos)
            self.command_msg = Float64MultiArray()
            self.command_dim = MultiArrayDimension(label="", size=config.command_dim, stride=config.command_dim)
            self.command_msg.layout.dim = [self.command_dim]
        self.active = False
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

    def handle(self, message: ToStream) -> bool:
        """Apply one message from the node; False when it says stop."""
        if isinstance(message, Chunk):
            self.clock_offset_ns = message.clock_offset_ns
            self.queue.push(message.seq, message.stamp_ns, message.actions)
            if self.commands is not None and message.commands is not None:
                self.commands.push(message.seq, message.stamp_ns, message.commands)
            self.last_pushed = message.seq
        elif isinstance(message, SetActive):
            if not message.active and self.active:
                self._publish_final(message)
            self.active = message.active
            if not self.active:
                self.queue.clear()
                if self.commands is not None:
                    self.commands.clear()
                self.last_pushed = self.replan_sent = -1
                self.last_publish = None
                self.sent_times.clear()
            self.conn.send(Ack(message.token))
        elif isinstance(message, Stop):
            return False
        return True

    def run(self) -> None:
        dt = self.config.dt_ns
        base = time.monotonic_ns()
        k = 0
        next_stats = base + STATS_PERIOD_NS
        self.conn.send(Grid(base, dt))  # period k is due at base + k*dt (CLOCK_MONOTONIC)
        while True:
            k += 1
            deadline = base + k * dt
            while True:  # commands until just before the deadline
                left = deadline - SPIN_NS - time.monotonic_ns()
                if left <= 0:
                    break
                readable, _, _ = select.select([self.fd], [], [], left / 1e9)
                if readable and not self.handle(self.conn.recv()):
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
            ros_now = time.time_ns() + self.clock_offset_ns
            nominal = ros_now - (now - deadline)
            action = self.queue.plan_action(k, nominal, ros_now + PUBLISH_MARGIN_NS)
            if action is not None:
                self.msg.data = action.values.tolist()
                self.dim.label = action.label
                # Checked again just before the write: preempted since the plan, a source may have
                # passed max_age; then the period's action is planned again (hold/zero, or the mean
                # of the younger chunks) and the stale one is never written.
                ros_now = time.time_ns() + self.clock_offset_ns
                if action.expires_ns is not None and ros_now + PUBLISH_MARGIN_NS > action.expires_ns:
                    self.withdrawn += 1
                    action = self.queue.plan_action(k, nominal, ros_now + PUBLISH_MARGIN_NS)
                    if action is not None:
                        self.msg.data = action.values.tolist()
                        self.dim.label = action.label
            if action is not None:
                self.queue.commit_action(action)
                self.pub.publish(self.msg)
                self._publish_command(k, nominal, ros_now)
                # The write's own time (DDS source timestamp) lies inside publish(): a fresh action
                # whose source expired before publish() returned may have been written late.
                written_by = time.time_ns() + self.clock_offset_ns
                if action.expires_ns is not None and written_by > action.expires_ns:
                    self.written_past_max_age += 1
                sent = time.monotonic_ns()
                if self.last_publish is not None:
                    self.periods.append(sent - self.last_publish)
                self.last_publish = sent
                self.sent_times.append(sent)
                self.published += 1
                self.stale += int(not action.fresh)
            self._report(k)
            if time.monotonic_ns() >= next_stats:
                next_stats = time.monotonic_ns() + STATS_PERIOD_NS
                self._send_stats()

    def _publish_command(self, k: int, nominal: int, ros_now: int) -> None:
        """This period's joint command, planned at the time its action was: same chunks, same freshness."""
        if self.commands is None:
            return
        command = self.commands.plan_action(k, nominal, ros_now + PUBLISH_MARGIN_NS)
        if command is None:
            return
        self.commands.commit_action(command)
        self.command_msg.data = command.values.tolist()
        self.command_dim.label = command.label
        self.command_pub.publish(self.command_msg)

    def _publish_final(self, message: SetActive) -> None:
        """One safe command as the stream stops (deactivate): the arm is left holding still."""
        final = message.final_action if message.final_action is not None else self.queue.last_command
        if final is not None:  # zeros, or hold the last action (absolute positions)
            self.msg.data = np.asarray(final, dtype=np.float64).tolist()
            self.dim.label = "final"
            self.pub.publish(self.msg)
        if self.commands is not None and message.final_commands is not None:
            self.command_msg.data = np.asarray(message.final_commands, dtype=np.float64).tolist()
            self.command_dim.label = "final"
            self.command_pub.publish(self.command_msg)

    def _report(self, k: int) -> None:
        if self.last_pushed >= 0 and self.replan_sent != self.last_pushed:
            if self.queue.newest_seq != self.last_pushed or self.queue.remaining(k) <= self.config.replan_threshold:
                self.replan_sent = self.last_pushed
                self.conn.send(Replan(self.last_pushed))
        for s in self.queue.take_finished():
            self.conn.send(Streamed(s.seq, s.first_index, s.count))

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
        }
        self.conn.send(Stats(stats))

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
    except (EOFError, OSError):
        pass  # the node went away
    finally:
        stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
