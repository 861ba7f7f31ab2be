"""The node's handle on its action-stream process (stream_process.py): spawn, configure, send
chunks and commands, hear re-plan requests, plans and statistics; a heartbeat while active."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np
import numpy.typing as npt

from dysl_ros.motion import Plan
from dysl_ros.node import stream_protocol as wire


class ActionStreamProcess:
    """The node's handle on the stream process. ``on_replan(seq)`` and ``on_streamed(seq, first,
    count)`` run on a reader thread; ``on_exit(reason)`` when the process is gone. While active, a
    heartbeat thread tells the stream the node is alive every half period; ``on_adopted(plan)`` hears
    every joint plan the stream follows."""

    def __init__(
        self,
        on_replan: Callable[[int], None],
        on_streamed: Callable[[int, int, int], None],
        on_exit: Callable[[str], None],
        on_adopted: Callable[[Plan], None] | None = None,
    ) -> None:
        self._on_replan = on_replan
        self._on_streamed = on_streamed
        self._on_exit = on_exit
        self._on_adopted = on_adopted
        self._send_lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self._token = 0
        self.config: wire.StreamConfig | None = None
        self.stats: dict[str, float] = {}
        self.motion = ""
        """The joint output's state, as the stream last reported it."""
        self.plan: Plan | None = None
        """The joint plan the stream follows (the node brakes from it if the stream dies)."""
        self.scheduling = ""
        self.grid: tuple[int, int] | None = None
        """(base, dt) in CLOCK_MONOTONIC ns: period k of the stream is due at base + k*dt."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._heart: threading.Thread | None = None
        self._beating = threading.Event()
        self._stopping = False

    def spawn(self) -> None:
        """Start the process; it imports rclpy while the node loads its model, then waits for ``start``."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = theirs.fileno()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", wire.STREAM_MAIN, str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL
        )
        theirs.close()
        self._conn = Connection(mine.detach())

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, config: wire.StreamConfig, timeout: float = 60.0) -> str:
        """Configure the spawned process and wait until its publishers exist; returns its scheduling."""
        if self._conn is None:
            self.spawn()
        assert self._conn is not None
        self.config = config
        self._conn.send(wire.Configure(config))
        if not self._conn.poll(timeout):
            self.stop()
            raise RuntimeError(f"action stream process did not start within {timeout} s")
        try:
            ready = self._conn.recv()
        except EOFError:
            self.stop()
            raise RuntimeError("action stream process exited during start-up (see its log above)") from None
        if not isinstance(ready, wire.Ready):
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
        targets: npt.NDArray[np.float64] | None = None,
        measured: npt.NDArray[np.float64] | None = None,
        measured_ns: int = 0,
    ) -> None:
        joint = None if targets is None else np.ascontiguousarray(targets, dtype=np.float64)
        here = None if measured is None else np.ascontiguousarray(measured, dtype=np.float64)
        chunk = np.ascontiguousarray(actions, dtype=np.float64)
        self._send(wire.Chunk(seq, stamp_ns, chunk, clock_offset_ns, joint, here, measured_ns))

    def set_active(
        self, active: bool, timeout: float = 2.0, final_action: npt.NDArray[np.float64] | None = None
    ) -> bool:
        """Start or stop publishing; True once the stream has confirmed (stopping: after the joints
        came to rest; after that nothing more goes out). Stopping, ``final_action`` goes out first."""
        if active:
            self._start_heartbeat()
        else:
            self._beating.clear()
        return self._request(lambda token: wire.SetActive(active, token, final_action), timeout)

    def set_enabled(self, enabled: bool, timeout: float = 2.0) -> bool:
        return self._request(lambda token: wire.SetEnabled(enabled, token), timeout)

    def stop_motion(self, reason: str) -> None:
        self._send(wire.StopMotion(reason))

    def _request(self, make: Callable[[int], wire.ToStream], timeout: float) -> bool:
        with self._send_lock:
            self._token += 1
            token = self._token
            event = self._acks[token] = threading.Event()
        self._send(make(token))
        done = event.wait(timeout)
        self._acks.pop(token, None)
        return done

    def _start_heartbeat(self) -> None:
        if self.config is None or self.config.watchdog_ns <= 0 or self._beating.is_set():
            return
        self._beating.set()
        period = max(self.config.dt_ns / 2e9, 0.001)

        def beat() -> None:
            while self._beating.is_set() and self._conn is not None:
                self._send(wire.Heartbeat())
                time.sleep(period)

        self._heart = threading.Thread(target=beat, name="dysl_stream_heartbeat", daemon=True)
        self._heart.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._beating.clear()
        if self._heart is not None and self._heart is not threading.current_thread():
            self._heart.join(timeout)
        with contextlib.suppress(OSError, ValueError):
            self._send(wire.Stop())
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
        self._proc = self._conn = self._reader = self._heart = None

    def _send(self, message: wire.ToStream) -> None:
        conn = self._conn
        if conn is None:
            return
        with self._send_lock:
            try:
                conn.send(message)
            except (OSError, ValueError):
                pass  # the reader reports the exit

    def _read(self) -> None:
        assert self._conn is not None
        conn = self._conn
        while True:
            try:
                message: wire.ToNode = conn.recv()
            except (EOFError, OSError, ValueError):
                self._beating.clear()
                if not self._stopping:
                    code = None
                    if self._proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            code = self._proc.wait(1.0)
                    self._on_exit(f"action stream process exited (code {code})")
                return
            if isinstance(message, wire.Replan):
                self._on_replan(message.seq)
            elif isinstance(message, wire.Streamed):
                self._on_streamed(message.seq, message.first_index, message.sent)
            elif isinstance(message, wire.Stats):
                self.stats, self.motion = message.values, message.motion
            elif isinstance(message, wire.Adopted):
                self.plan = message.plan
                if self._on_adopted is not None:
                    self._on_adopted(message.plan)
            elif isinstance(message, wire.Grid):
                self.grid = (message.base_ns, message.dt_ns)
            elif isinstance(message, wire.Ack):
                event = self._acks.get(message.token)
                if event is not None:
                    event.set()
