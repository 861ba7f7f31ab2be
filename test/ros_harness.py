"""Helpers for tests that start real ROS 2 processes and talk to them over DDS.

Every ROS participant started by the tests stays on loopback: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
plus the project's Fast DDS profile (``config/fastdds.xml``, shared memory + UDP on 127.0.0.1 only). Each
test gets its own ``ROS_DOMAIN_ID`` so concurrently running test sessions on this machine do not see
each other.

Typical use::

    with ros_process([python, script, ...], domain_id, log_path) as proc, \\
            ros_session(domain_id, "probe") as ros:
        rec = ros.subscribe(Image, "/camera/image_raw", SENSOR_QOS)
        assert rec.wait_for(10, timeout=5.0)
"""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from dysl_ros.sim.rosenv import stop_process

REPO: Path = Path(__file__).resolve().parents[1]
VENV_BIN: Path = REPO / ".venv" / "bin"
VENV: Path = VENV_BIN.parent
FASTDDS_PROFILE: Path = REPO / "config" / "fastdds.xml"
# Interpreter for child ROS processes: the project venv's when there is one (rclpy comes from it here),
# else the one running the tests (a system ROS install).
PYTHON: str = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable

# Product QoS (see the node's topics): camera frames are best effort / keep last 1; commands are
# reliable; configuration-like topics (instruction, status) are latched.
SENSOR_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
RELIABLE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# Fast DDS maps a domain id to UDP ports 7400 + 250 * domain (+ offsets), so ids above 232 overflow
# the port range; 0 is everybody's default. Use 1..200.
_DOMAIN_MIN, _DOMAIN_MAX = 1, 200
_DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "dysl_ros_test_domains"
_domain_counter = itertools.count()
_domain_lock = threading.Lock()
_claimed_domains: dict[int, int] = {}  # domain id -> fd holding its lock for this process's lifetime


def _try_claim(domain: int) -> bool:
    """Take an exclusive advisory lock on ``domain`` for this process (released when it exits)."""
    try:
        _DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(_DOMAIN_LOCK_DIR / f"{domain}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:  # cannot lock (read-only tmp?): fall back to the pid-derived spread alone
        _claimed_domains[domain] = -1
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _claimed_domains[domain] = fd
    return True


def unique_domain_id() -> int:
    """A ROS domain id for one test, not shared with another test session on this machine.

    The start point is derived from the pid (spread by a large odd multiplier so neighbouring pids do
    not get neighbouring ids) and a per-process counter; each id handed out is also locked (flock on a
    file under the temp dir) for the rest of this process's life, and ids locked by other live
    processes are skipped. Only when all 200 ids are taken is an id reused.
    """
    span = _DOMAIN_MAX - _DOMAIN_MIN + 1
    with _domain_lock:
        n = next(_domain_counter)
        start = (os.getpid() * 37 + n) % span
        for k in range(span):
            domain = _DOMAIN_MIN + (start + k) % span
            if domain not in _claimed_domains and _try_claim(domain):
                return domain
    return _DOMAIN_MIN + start


def _prepend_path(value: str, existing: str | None) -> str:
    parts = [p for p in (existing or "").split(os.pathsep) if p and p != value]
    return os.pathsep.join([value, *parts])


# ROS 2 distributions built on Fast DDS 2.x, which reads FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 3.x,
# Kilted on, reads FASTDDS_DEFAULT_PROFILES_FILE, and its rmw warns when the old name is set).
_FASTDDS2_DISTROS = {"foxy", "galactic", "humble", "iron", "jazzy"}


def _loopback_vars() -> dict[str, str]:
    env = {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
        "AMENT_PREFIX_PATH": _prepend_path(str(VENV), os.environ.get("AMENT_PREFIX_PATH")),
    }
    if os.environ.get("ROS_DISTRO", "") in _FASTDDS2_DISTROS:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    return env


def ros_env(domain_id: int, **extra: str) -> dict[str, str]:
    """Environment for a child ROS process: os.environ plus loopback-only DDS on ``domain_id``."""
    env = dict(os.environ)
    env.update(_loopback_vars())
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        PYTHONUNBUFFERED="1",
        RCUTILS_LOGGING_BUFFERED_STREAM="0",
    )
    env.update(extra)
    return env


def configure_this_process() -> None:
    """Make rclpy contexts created later in this process loopback-only with the project profile.

    Must run before the first rclpy context is initialised (Fast DDS reads the profile file once).
    """
    os.environ.update(_loopback_vars())


def _log_tail(log_path: Path, max_chars: int = 4000) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return text[-max_chars:]


@contextmanager
def ros_process(
    args: list[str],
    domain_id: int,
    log_path: Path,
    env_extra: dict[str, str] | None = None,
    stdin: int = subprocess.DEVNULL,
    cwd: Path | None = None,
    may_die: bool = False,
) -> Iterator[subprocess.Popen]:
    """Run ``args`` as a ROS process (own process group) for the duration of the ``with`` block.

    stdout and stderr go to ``log_path``; the environment is ``ros_env(domain_id, **env_extra)``; the
    working directory ``cwd`` (default: the repository). On exit the process group gets SIGINT, up to
    10 s to finish, then SIGKILL. ``stdin=subprocess.PIPE`` gives the block ``proc.stdin`` (closed
    before the stop). ``may_die``: the block kills it on purpose. Otherwise, if the process had already died
    with a non-zero status before the block ended, a RuntimeError carrying the log's tail is raised (or,
    when the block itself raised, that tail is attached to its exception as a note). A process that
    finished on its own with status 0 (a script that runs for a fixed time) is not an error.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = ros_env(domain_id, **(env_extra or {}))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd or REPO),
            start_new_session=True,  # own session, hence own process group
        )
    try:
        yield proc
    except BaseException as exc:
        rc = proc.poll()
        if rc not in (None, 0) and hasattr(exc, "add_note"):
            exc.add_note(f"process {args!r} had exited with code {rc}; log {log_path}:\n{_log_tail(log_path)}")
        raise
    finally:
        died_early = proc.poll()
        if proc.stdin is not None:
            with suppress(OSError):
                proc.stdin.close()
        stop_process(proc)  # the child leads its own process group: SIGINT to all of it, then SIGKILL
    if died_early not in (None, 0) and not may_die:
        raise RuntimeError(
            f"process {args!r} exited early with code {died_early}; log {log_path}:\n{_log_tail(log_path)}"
        )


def check_alive(proc: subprocess.Popen, log_path: Path) -> None:
    """Raise with the log's tail if ``proc`` has exited (call inside a ``ros_process`` block)."""
    rc = proc.poll()
    if rc is not None:
        raise RuntimeError(f"process {proc.args!r} exited with code {rc}; log {log_path}:\n{_log_tail(log_path)}")


class Recorder:
    """Messages received on one subscription, with the monotonic time each arrived.

    ``transform`` (optional) maps each message to what is kept, e.g. a frame index instead of a 1 MB image.
    """

    def __init__(self, transform: Callable[[Any], Any] | None = None) -> None:
        self._cond = threading.Condition()
        self._items: list[tuple[float, Any]] = []
        self._transform = transform
        self.subscription: Any = None  # set by RosSession.subscribe: the rclpy Subscription feeding it

    def __call__(self, msg: Any) -> None:
        now = time.monotonic()
        if self._transform is not None:
            msg = self._transform(msg)
        with self._cond:
            self._items.append((now, msg))
            self._cond.notify_all()

    @property
    def items(self) -> list[tuple[float, Any]]:
        """A snapshot of (receive_monotonic_time, msg) pairs."""
        with self._cond:
            return list(self._items)

    @property
    def messages(self) -> list[Any]:
        with self._cond:
            return [m for _, m in self._items]

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` messages have arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._items) >= count, timeout=timeout)


class RosSession:
    """One rclpy context + node, spun by a SingleThreadedExecutor in a background thread."""

    def __init__(self, node: Any, executor: Any) -> None:
        self.node = node
        self._executor = executor
        self._keep: list[Any] = []  # entities that must live as long as the session
        self.extra_nodes: list[Any] = []  # destroyed by ros_session after its spin thread has stopped

    def subscribe(
        self,
        msg_type: type,
        topic: str,
        qos: QoSProfile,
        transform: Callable[[Any], Any] | None = None,
    ) -> Recorder:
        """Record every message on ``topic`` (optionally reduced by ``transform``)."""
        recorder = Recorder(transform)
        sub = self.node.create_subscription(msg_type, topic, recorder, qos)
        self._keep.append(sub)
        recorder.subscription = sub
        return recorder

    def subscribe_with_info(
        self,
        msg_type: type,
        topic: str,
        qos: QoSProfile,
        transform: Callable[[Any], Any] | None = None,
    ) -> Recorder:
        """Like ``subscribe``, but each kept item is ``(transform(msg), source_timestamp_ns)``: the
        publisher's DDS write time (system clock), from rclpy's MessageInfo (rclpy >= Iron)."""
        recorder = Recorder()

        def callback(msg: Any, info: Any) -> None:  # two parameters: rclpy passes MessageInfo
            recorder((transform(msg) if transform is not None else msg, int(info["source_timestamp"])))

        sub = self.node.create_subscription(msg_type, topic, callback, qos)
        self._keep.append(sub)
        return recorder

    def add_node(self, node: Any) -> None:
        """Spin another node of this session's context (a stand-in for a robot's node). The session
        owns it from here: it is destroyed at teardown, once the spin thread has stopped, because
        ``remove_node`` does not wait for a wait set the spin thread is already building (destroying
        the node then failed there with "cannot use Destroyable because destruction was requested")."""
        self._executor.add_node(node)
        self.extra_nodes.append(node)

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile) -> Any:
        pub = self.node.create_publisher(msg_type, topic, qos)
        self._keep.append(pub)
        return pub

    def _client(self, srv_type: type, name: str) -> Any:
        key = (srv_type, name)
        for entry in self._keep:
            if isinstance(entry, tuple) and entry[0] == key:
                return entry[1]
        client = self.node.create_client(srv_type, name)
        self._keep.append((key, client))
        return client

    def wait_for_service(self, srv_type: type, name: str, timeout: float) -> bool:
        return bool(self._client(srv_type, name).wait_for_service(timeout_sec=timeout))

    def call_service(self, srv_type: type, name: str, request: Any, timeout: float) -> Any:
        """Call a service synchronously from the test thread; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        client = self._client(srv_type, name)
        if not client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"service {name} not available within {timeout} s")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(max(0.0, deadline - time.monotonic())):
            future.cancel()
            raise TimeoutError(f"service {name} did not answer within {timeout} s")
        exc = future.exception()
        if exc is not None:
            raise exc
        return future.result()

    def wait_until(self, predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(period)


_contexts: weakref.WeakSet[Any] = weakref.WeakSet()
"""Every rclpy context a ``ros_session`` opened: the session-end check (leak_check.py) fails the run
if one is still up (a DDS participant left behind)."""


def open_contexts() -> list[Any]:
    """The in-process rclpy contexts of ``ros_session`` that are not shut down."""
    return [ctx for ctx in list(_contexts) if ctx.ok()]


@contextmanager
def ros_session(domain_id: int, name: str) -> Iterator[RosSession]:
    """An in-test ROS context on ``domain_id`` with one node ``name`` spinning in the background.

    Teardown order matters: the spin loop is left and joined first, then the executor waits for
    callbacks still running on its pool, and only then are the node and context destroyed. Destroying
    them under a spinning executor (what ``Executor.shutdown`` alone allows: it does not wait for a
    spin in another thread) left callbacks failing with "cannot use Destroyable because destruction
    was requested", reported at garbage collection, and the spin thread's wait failing with "wait set
    is empty". The executor is single-threaded because ``MultiThreadedExecutor.shutdown`` destroys
    its guard condition before it joins its pool (rclpy 9): a callback still on the pool then fails
    in ``trigger()`` and the failed task is only reported when it is garbage-collected.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from dysl_ros.sim.rosenv import BackgroundSpinner

    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") != str(FASTDDS_PROFILE):
        configure_this_process()
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    _contexts.add(ctx)
    node = None
    spinner = None
    session = None
    try:
        node = rclpy.create_node(name, context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        spinner = BackgroundSpinner(executor, f"ros-session-{name}", poll_s=0.02)
        session = RosSession(node, executor)
        yield session
    finally:
        if spinner is not None:
            spinner.stop()  # joins the spin thread (callbacks run on it), then shuts the executor down
        for extra in session.extra_nodes if session is not None else []:
            extra.destroy_node()
        if node is not None:
            node.destroy_node()
        with suppress(Exception):
            ctx.try_shutdown()
