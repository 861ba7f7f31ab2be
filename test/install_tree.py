"""dysl_ros as a robot installs and runs it: a colcon install tree of this source tree, and commands run
in it as a user types them (``source install/setup.bash && ros2 ...``).

The ROS 2 tools (launch, launch_ros, launch_pytest, ros2cli and its verbs) come with a ROS 2 install;
here ``make setup`` adds them as wheels where ``../shared/ros_wheels`` exists. ``ROS_TOOLS_MISSING`` says
which are missing; the tests that need them skip with it.

Every command runs in its own process group on the test's ROS domain with the loopback-only DDS setup of
``ros_harness.ros_env`` and ``ROS_HOME`` in the test's directory (logs), and is stopped with SIGINT, then
SIGKILL. The ``ros2`` daemon is started and stopped explicitly (``ros2_daemon``): it detaches from the
command that spawns it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lifecycle_msgs.srv import GetState
from ros_harness import LATCHED_QOS, REPO, SENSOR_QOS, VENV, VENV_BIN, RosSession, ros_env
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from dysl_ros.sim.rosenv import stop_process
from dysl_ros.wiring import PACKAGE

REFERENCE_MODEL: Path = REPO / "models" / "reference"
ACTION_NAMES: list[str] = json.loads((REFERENCE_MODEL / "vla_config.json").read_text())["action_names"]
PROPRIO = [0.0, 0.6, 0.2, 1.0]  # hand xyz + gripper, in the reference model's range
BUILD_TIMEOUT_S = 120.0
COMMAND_TIMEOUT_S = 60.0
"""Limits that only stop a hung command; nothing is asserted about how long a command takes."""

_TOOLS = ("launch", "launch_ros", "launch_pytest", "ros2cli", "ros2launch", "ros2lifecycle", "ros2param", "ros2topic")
_missing = [name for name in _TOOLS if importlib.util.find_spec(name) is None]
ROS_TOOLS_MISSING: str | None = (
    f"the ROS 2 launch and command-line tools are not installed ({', '.join(_missing)} missing): a ROS 2 "
    "install has them; `make setup` installs them where ../shared/ros_wheels exists"
    if _missing
    else None
)


def colcon_build(root: Path, setup_bash: bool = True) -> Path:
    """``colcon build --packages-select dysl_ros`` of this source tree with bases under ``root``, as a robot
    builds it (test_colcon_install.py checks the tree); returns the install base (with ``setup_bash``:
    ``setup.bash`` in it, which colcon-bash writes)."""
    env = dict(os.environ)
    for name in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_DEFAULTS_FILE"):
        env.pop(name, None)  # no underlay workspace, no user defaults
    env["COLCON_HOME"] = str(root / "colcon_home")
    command = [
        str(VENV_BIN / "colcon"),
        "--log-base", str(root / "log"),
        "build",
        "--base-paths", str(REPO),
        "--packages-select", PACKAGE,
        "--build-base", str(root / "build"),
        "--install-base", str(root / "install"),
        "--event-handlers", "console_direct-",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, f"colcon build failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    install = root / "install"
    if setup_bash:
        assert (install / "setup.bash").is_file(), f"colcon wrote no setup.bash (colcon-bash missing?):\n{done.stdout}"
    return install


def package_prefix(install: Path) -> Path:
    """The package's prefix in an isolated install tree (colcon's default layout)."""
    return install / PACKAGE


def site_packages(install: Path) -> Path:
    found = sorted(package_prefix(install).glob("lib/python3*/site-packages"))
    assert found, f"no site-packages under {package_prefix(install) / 'lib'}"
    return found[0]


def shell_vars(home: Path) -> dict[str, str]:
    """A user's shell before sourcing the workspace: ROS (here the venv, with the Kilted wheels and the
    tools) on PATH and AMENT_PREFIX_PATH; ROS logs and temporary files (launch_ros writes the node's
    parameters to one) under ``home``."""
    return {
        "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
        "AMENT_PREFIX_PATH": str(VENV),
        "ROS_HOME": str(home),
        "TMPDIR": str(home),
    }


def user_env(domain_id: int, home: Path, **extra: str) -> dict[str, str]:
    """``shell_vars`` with loopback-only DDS on ``domain_id`` (``ros_harness.ros_env``)."""
    return ros_env(domain_id, **shell_vars(home), **extra)


def sourced(command: str) -> list[str]:
    """``command`` as typed in a shell at the workspace root (the install tree's parent: run it there)
    after ``source install/setup.bash``."""
    return ["bash", "-c", f"source install/setup.bash && {command}"]


def run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end in its own process group; a hung one is stopped (SIGINT, then SIGKILL)."""
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)  # type: ignore[arg-type]
        out, _ = proc.communicate()
        raise AssertionError(f"{args[-1]!r} did not finish within {timeout} s:\n{out}") from None
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
    return subprocess.CompletedProcess(args, proc.returncode, out, None)


def _processes() -> Iterator[tuple[int, int, list[str]]]:
    """(pid, parent pid, command line) of every process this user can see."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        yield int(entry.name), ppid, [part.decode(errors="replace") for part in cmdline if part]


def descendants(pid: int) -> list[tuple[int, list[str]]]:
    """The processes below ``pid`` (children, their children, ...), with their command lines."""
    table = list(_processes())
    found: list[tuple[int, list[str]]] = []
    parents = {pid}
    while True:
        new = [(p, cmd) for p, ppid, cmd in table if ppid in parents and p not in {q for q, _ in found}]
        if not new:
            return found
        found += new
        parents = {p for p, _ in new}


def process_environment(pid: int) -> dict[str, str]:
    """The environment a running process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


def _daemon_pids(domain_id: int) -> list[int]:
    """``ros2 daemon`` processes serving ``domain_id`` (the daemon tags its command line with both)."""
    tag = ["--name", "ros2-daemon", "--ros-domain-id", str(domain_id)]
    return [
        pid for pid, _, cmd in _processes() if any(cmd[i : i + len(tag)] == tag for i in range(len(cmd) - len(tag) + 1))
    ]


@contextmanager
def ros2_daemon(env: dict[str, str], cwd: Path) -> Iterator[None]:
    """``ros2 daemon start`` on the environment's domain (``cwd``: the workspace root); ``ros2 daemon
    stop`` at the end. The daemon stays in the process group of the command that started it (``run``
    would kill it with its group), which is killed at the end in case the daemon outlived the stop."""
    domain = int(env["ROS_DOMAIN_ID"])
    start = subprocess.Popen(
        sourced("ros2 daemon start"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = start.communicate(timeout=COMMAND_TIMEOUT_S)
        assert start.returncode == 0, out
        yield
    finally:
        run(sourced("ros2 daemon stop"), env, cwd)
        deadline = time.monotonic() + 10.0
        while _daemon_pids(domain) and time.monotonic() < deadline:
            time.sleep(0.1)
        with suppress(ProcessLookupError):
            os.killpg(start.pid, signal.SIGKILL)
        start.wait(timeout=5.0)


def wait_active(ros: RosSession, timeout: float, node: str = "/dysl_node") -> str:
    """The node's lifecycle state once it is ``active``, or the last one seen when ``timeout`` passed."""
    label = "unknown"
    deadline = time.monotonic() + timeout
    while label != "active" and time.monotonic() < deadline:
        try:
            label = ros.call_service(GetState, f"{node}/get_state", GetState.Request(), 10.0).current_state.label
        except TimeoutError:  # not there yet, or its one executor thread busy loading the model (configure)
            continue
        time.sleep(0.2)
    return label


@dataclass
class Inputs:
    """Camera, state and instruction for one dysl_node, published from a test's ROS session."""

    ros: RosSession
    image_topic: str
    joint_states_topic: str
    instruction_topic: str
    stamps: set[int] = field(default_factory=set)
    """Stamps (ns) of the images sent."""

    def __post_init__(self) -> None:
        self._image = self.ros.publisher(Image, self.image_topic, SENSOR_QOS)
        self._state = self.ros.publisher(JointState, self.joint_states_topic, SENSOR_QOS)
        self._instruction = self.ros.publisher(String, self.instruction_topic, LATCHED_QOS)
        self._instruction.publish(String(data="reach the goal"))
        self._rng = np.random.default_rng(0)

    def send(self) -> None:
        """One state and one 64x48 rgb8 image stamped now."""
        self._state.publish(JointState(position=PROPRIO))
        msg = Image(encoding="rgb8", width=64, height=48, step=64 * 3)
        msg.data = self._rng.integers(0, 255, 64 * 48 * 3, np.uint8).tobytes()
        msg.header.stamp = self.ros.node.get_clock().now().to_msg()
        self.stamps.add(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
        self._image.publish(msg)

    def until(self, done: Callable[[], bool], timeout: float, rate_hz: float = 20.0) -> bool:
        """Send at ``rate_hz`` until ``done()`` is true; False on timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            self.send()
            time.sleep(1.0 / rate_hz)
        return True
