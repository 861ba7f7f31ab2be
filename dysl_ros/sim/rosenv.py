"""The project's ROS environment rules for processes a tool starts (the demo launcher), and a
background executor that stops cleanly.

Every ROS process stays on this host: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, the project's Fast
DDS profile (``config/fastdds.xml``: 16 MB shared memory, UDP on 127.0.0.1 only) and its own
``ROS_DOMAIN_ID``. Domain ids are claimed with the same lock files as the tests' harness
(``<tmp>/dysl_ros_test_domains/<id>.lock``), so a demo and a test session never share one.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from dysl_ros.wiring import FASTDDS_PROFILE, PACKAGE, localhost_environment, profile_environment

DOMAIN_MIN, DOMAIN_MAX = 1, 200
"""Fast DDS maps domain d to UDP ports 7400 + 250·d: ids above 232 overflow; 0 is everybody's default."""
_LOCK_DIR = Path(tempfile.gettempdir()) / "dysl_ros_test_domains"
_held: list[int] = []  # fds of claimed domains: released when this process exits


def fastdds_profile() -> Path:
    """``config/fastdds.xml`` of this source tree, else of an installed package (share/dysl_ros)."""
    candidates = [Path(__file__).resolve().parents[2] / FASTDDS_PROFILE]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    candidates += [Path(p) / "share" / PACKAGE / FASTDDS_PROFILE for p in prefixes if p]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"config/fastdds.xml not found (looked in {', '.join(map(str, candidates))})")


def claim_domain_id(preferred: int | None = None) -> int:
    """A ROS domain id locked for this process's lifetime; ``preferred`` must be free if given."""
    ids = [preferred] if preferred is not None else list(range(DOMAIN_MIN, DOMAIN_MAX + 1))
    if preferred is not None and not DOMAIN_MIN <= preferred <= DOMAIN_MAX:
        raise ValueError(f"domain id must lie in [{DOMAIN_MIN}, {DOMAIN_MAX}], got {preferred}")
    if preferred is None:  # spread concurrent users over the range
        start = (os.getpid() * 37) % len(ids)
        ids = ids[start:] + ids[:start]
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for domain in ids:
        fd = os.open(_LOCK_DIR / f"{domain}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held.append(fd)
        return domain
    raise RuntimeError(
        f"ROS domain {preferred} is in use by another dysl_ros process" if preferred is not None
        else f"every ROS domain id in [{DOMAIN_MIN}, {DOMAIN_MAX}] is held by other dysl_ros processes"
    )


def ros_environment(domain_id: int) -> dict[str, str]:
    """The variables every ROS process of the project sets (applied to this process by ``apply``)."""
    profile = str(fastdds_profile())
    prefix = os.environ.get("AMENT_PREFIX_PATH", "")
    if not any(Path(p, "share", "ament_index").is_dir() for p in prefix.split(os.pathsep) if p):
        # Message packages of the venv's ROS wheels are found through the venv's prefix.
        prefix = os.pathsep.join(p for p in (sys.prefix, prefix) if p)
    distro = os.environ.get("ROS_DISTRO", "")
    return {
        "ROS_DOMAIN_ID": str(domain_id),
        **localhost_environment(distro),
        **profile_environment(profile, distro),
        "AMENT_PREFIX_PATH": prefix,
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }


def apply(env: dict[str, str]) -> None:
    """Set ``env`` in this process: before its first rclpy context (Fast DDS reads the profile once)."""
    os.environ.update(env)


def start_process(
    args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group, stdout + stderr into ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> int | None:
    """SIGINT to the process group of ``proc`` (started with ``start_new_session``), SIGKILL after
    ``grace_s``; then whatever else of the group outlives its leader by ``grace_s`` (a helper process
    that missed its parent's exit) is killed too. Returns the leader's exit status."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5.0)
    deadline = time.monotonic() + grace_s
    while _group_alive(proc.pid):
        if time.monotonic() >= deadline:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def log_tail(path: Path, max_chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-max_chars:]
    except OSError as exc:
        return f"<no log: {exc}>"


class BackgroundSpinner:
    """An rclpy executor spun on a daemon thread, stopped so that the node and context can be
    destroyed after ``stop()``: the thread polls a flag between waits of ``poll_s`` and is joined.
    (``Executor.shutdown()`` alone does not wait for a spin in another thread: it destroys the guard
    condition that spin waits on, and tearing the node and context down under a spinning thread
    aborted sim_bridge once in CI, "terminate called without an active exception".)"""

    def __init__(self, executor: Any, name: str, poll_s: float = 0.05) -> None:
        self.executor = executor
        self.poll_s = poll_s
        self._spinning = threading.Event()
        self._spinning.set()
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with suppress(ExternalShutdownException):
            while self._spinning.is_set() and self.executor.context.ok():
                self.executor.spin_once(timeout_sec=self.poll_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Leave the spin loop (within ``poll_s`` plus the callback running), then shut the executor down."""
        self._spinning.clear()
        self._thread.join(timeout=timeout_s)
        self.executor.shutdown()
