"""The launch files from a colcon install tree, as ``ros2 launch`` runs them on a robot.

The package is built with colcon into a temporary install tree; launch_pytest runs its launch files (found
through AMENT_PREFIX_PATH, as ``ros2 launch dysl_ros ...`` finds them) in this process, which starts
dysl_node and sim_bridge from the tree's ``lib/dysl_ros``:

- ``dysl.launch.py`` brings dysl_node to ``active`` with the shipped model and it serves chunks on
  remapped topics; launch arguments left empty keep the params file's values;
- a bad ``model_dir`` ends the launch with the node's error and return code 1, instead of waiting; a
  bad launch argument ends it before the node starts;
- ``demo.launch.py`` runs one episode to its result and ends by itself;
- ``localhost_only:=false`` gives the node the network profile and subnet discovery (``ros2 launch`` in a
  network namespace of its own, which has loopback only, so nothing leaves the machine).

Skipped, saying why, where the ROS 2 launch tools are not installed (install_tree.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from install_tree import (
    ACTION_NAMES,
    REFERENCE_MODEL,
    ROS_TOOLS_MISSING,
    Inputs,
    colcon_build,
    descendants,
    package_prefix,
    process_environment,
    shell_vars,
    site_packages,
    sourced,
    wait_active,
)
from rcl_interfaces.srv import GetParameters
from ros_harness import LATCHED_QOS, RELIABLE_QOS, VENV, RosSession, ros_process, ros_session
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from dysl_ros.wiring import PACKAGE

if ROS_TOOLS_MISSING:
    pytest.skip(ROS_TOOLS_MISSING, allow_module_level=True)

import launch_pytest
from launch.actions import IncludeLaunchDescription, RegisterEventHandler
from launch.event_handlers import OnProcessStart, OnShutdown
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

pytestmark = pytest.mark.ros

NODE = "/dysl_node"
ACTIVE_TIMEOUT_S = 120.0  # configure loads the model and builds its engines on a loaded 2-core machine
SERVE_TIMEOUT_S = 60.0
EPISODE_TIMEOUT_S = 240.0
LAUNCH_END_TIMEOUT_S = 60.0
"""Limits that only stop a hung test; nothing is asserted about how long anything takes."""
PARAMS_FILE_RATE_HZ = 25.0
ROBOT_TOPICS = {
    "image_topic": "/robot/camera/color",
    "instruction_topic": "/robot/task",
    "joint_states_topic": "/robot/joint_states",
    "action_chunk_topic": "/robot/policy/chunk",
    "action_topic": "/robot/policy/action",
}


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colcon_build(tmp_path_factory.mktemp("colcon"))


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine cache of the module's launches (the node builds the onnxruntime engines when missing)."""
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def ros_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ros_home")


def share(install: Path) -> Path:
    return package_prefix(install) / "share" / PACKAGE


@pytest.fixture
def launch_env(install: Path, domain_id: int, ros_home: Path) -> Iterator[None]:
    """This process's environment while launch_pytest runs a launch in it: what sourcing the install tree
    sets, and this test's domain. Launch's own ROS node (which drives the lifecycle) reads it, the
    processes it starts inherit it, and the launch files' SetEnvironmentVariable actions write to it:
    all of it is restored afterwards. launch_ros writes the node's parameter files to the temporary
    directory: the module's, here."""
    saved, saved_tempdir = dict(os.environ), tempfile.tempdir
    tempfile.tempdir = str(ros_home)
    os.environ.update(
        ROS_DOMAIN_ID=str(domain_id),
        AMENT_PREFIX_PATH=os.pathsep.join([str(package_prefix(install)), str(VENV)]),
        PYTHONPATH=os.pathsep.join(p for p in (str(site_packages(install)), saved.get("PYTHONPATH")) if p),
        ROS_HOME=str(ros_home),
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        tempfile.tempdir = saved_tempdir


def include(install: Path, launch_file: str, **arguments: str) -> IncludeLaunchDescription:
    """The installed launch file with ``arguments`` (``ros2 launch dysl_ros <launch_file> name:=value ...``)."""
    path = share(install) / "launch" / launch_file
    assert path.is_file(), f"{launch_file} is not in the install tree"
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(str(path)), launch_arguments=list(arguments.items()))


def ready() -> Any:
    """launch_pytest's ReadyToTest, first in each description: the test starts as the launch does and
    waits for what it checks. (After the include, a launch failing before the ReadyToTest is visited
    would leave launch_pytest waiting for it for ever.)"""
    return launch_pytest.actions.ReadyToTest()


@dataclass
class Started:
    """The processes a launch started: an OnProcessStart callback."""

    processes: list[tuple[str, int, list[str]]]

    def __call__(self, event: Any, context: Any) -> None:
        self.processes.append((event.process_name, event.pid, list(event.cmd)))

    def one(self, name: str) -> tuple[int, list[str]]:
        found = [(pid, cmd) for process, pid, cmd in self.processes if process.startswith(f"{name}-")]
        assert len(found) == 1, f"{name}: {self.processes}"
        return found[0]


def parameters(ros: RosSession, names: list[str]) -> dict[str, Any]:
    response = ros.call_service(GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=names), 10.0)
    fields = {1: "bool_value", 2: "integer_value", 3: "double_value", 4: "string_value"}
    return {name: getattr(value, fields[value.type]) for name, value in zip(names, response.values, strict=True)}


def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


# --------------------------------------------------------------------------- dysl.launch.py serves


@launch_pytest.fixture
def dysl_launch(launch_env: None, install: Path, engines: Path, tmp_path: Path) -> tuple[LaunchDescription, Started]:
    # A robot's params file: its model_dir is overridden by the launch argument; its control rate is
    # kept, because the control_rate_hz argument is left empty.
    params = tmp_path / "robot.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "/**": {
                    "ros__parameters": {
                        "model_dir": str(tmp_path / "not_this_model"),
                        "control_rate_hz": PARAMS_FILE_RATE_HZ,
                        "warmup_ticks": 1,
                    }
                }
            }
        )
    )
    started = Started([])
    arguments = dict(params_file=str(params), model_dir=str(REFERENCE_MODEL), engine_dir=str(engines), **ROBOT_TOPICS)
    description = LaunchDescription(
        [
            ready(),
            RegisterEventHandler(OnProcessStart(on_start=started)),
            include(install, "dysl.launch.py", **arguments),
        ]
    )
    return description, started


@pytest.mark.launch(fixture=dysl_launch)
def test_dysl_launch_activates_the_node_and_it_serves_remapped_topics(
    dysl_launch: tuple[LaunchDescription, Started], install: Path, engines: Path, domain_id: int
) -> None:
    _, started = dysl_launch
    with ros_session(domain_id, "launch_probe") as ros:
        chunks = ros.subscribe(JointTrajectory, ROBOT_TOPICS["action_chunk_topic"], RELIABLE_QOS)
        actions = ros.subscribe(Float64MultiArray, ROBOT_TOPICS["action_topic"], RELIABLE_QOS, lambda m: list(m.data))
        assert wait_active(ros, ACTIVE_TIMEOUT_S) == "active"

        values = parameters(ros, ["model_dir", "engine_dir", "control_rate_hz", "autostart"])
        assert values == {
            "model_dir": str(REFERENCE_MODEL),  # the launch argument over the params file
            "engine_dir": str(engines),
            "control_rate_hz": PARAMS_FILE_RATE_HZ,  # the params file: the empty argument does not override it
            "autostart": False,  # the launch file drives the lifecycle
        }

        inputs = Inputs(
            ros, ROBOT_TOPICS["image_topic"], ROBOT_TOPICS["joint_states_topic"], ROBOT_TOPICS["instruction_topic"]
        )

        def served() -> bool:
            return any(stamp_ns(m) in inputs.stamps for m in chunks.messages) and len(actions) > 0

        assert inputs.until(served, SERVE_TIMEOUT_S), (
            f"no chunk for the images sent on {ROBOT_TOPICS['image_topic']} within {SERVE_TIMEOUT_S} s "
            f"({len(chunks)} chunks, {len(actions)} actions)"
        )
        chunk = next(m for m in chunks.messages if stamp_ns(m) in inputs.stamps)
        assert list(chunk.joint_names) == ACTION_NAMES
        assert len(chunk.points) == 8 and all(len(p.positions) == len(ACTION_NAMES) for p in chunk.points)
        dt = chunk.points[1].time_from_start
        assert dt.sec * 10**9 + dt.nanosec == round(1e9 / PARAMS_FILE_RATE_HZ)
        assert all(len(a) == len(ACTION_NAMES) for a in actions.messages)

    # dysl_node came from the install tree, with the DDS setup the launch file gives it.
    pid, cmd = started.one("dysl_node")
    assert Path(cmd[0]) == package_prefix(install) / "lib" / PACKAGE / "dysl_node"
    environment = process_environment(pid)
    assert environment["FASTDDS_DEFAULT_PROFILES_FILE"] == str(share(install) / "config" / "fastdds.xml")
    assert environment["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


# --------------------------------------------------------------------------- a failed configure ends it


@launch_pytest.fixture
def bad_model_launch(launch_env: None, install: Path, tmp_path: Path) -> tuple[LaunchDescription, list[str], Path]:
    not_a_model = tmp_path / "no_model_here"
    reasons: list[str] = []
    description = LaunchDescription(
        [
            ready(),
            RegisterEventHandler(OnShutdown(on_shutdown=lambda event, context: reasons.append(event.reason))),
            include(install, "dysl.launch.py", model_dir=str(not_a_model)),
        ]
    )
    return description, reasons, not_a_model


@pytest.mark.launch(fixture=bad_model_launch)
async def test_a_bad_model_dir_ends_the_launch_with_the_nodes_error(
    bad_model_launch: tuple[LaunchDescription, list[str], Path], launch_service: Any
) -> None:
    _, reasons, not_a_model = bad_model_launch
    return_code = await asyncio.wait_for(asyncio.shield(launch_service.task), LAUNCH_END_TIMEOUT_S + ACTIVE_TIMEOUT_S)
    assert return_code == 1, reasons  # what `ros2 launch` exits with
    assert len(reasons) == 1, reasons
    assert "dysl_node failed to configure" in reasons[0]
    assert f"model_dir {not_a_model} does not exist" in reasons[0]  # the node's own words


@launch_pytest.fixture
def bad_argument_launch(launch_env: None, install: Path) -> tuple[LaunchDescription, list[str], Started]:
    reasons: list[str] = []
    started = Started([])
    description = LaunchDescription(
        [
            ready(),
            RegisterEventHandler(OnShutdown(on_shutdown=lambda event, context: reasons.append(event.reason))),
            RegisterEventHandler(OnProcessStart(on_start=started)),
            include(install, "dysl.launch.py", model_dir=str(REFERENCE_MODEL), control_rate_hz="fast"),
        ]
    )
    return description, reasons, started


@pytest.mark.launch(fixture=bad_argument_launch)
async def test_a_bad_launch_argument_ends_the_launch_before_the_node_starts(
    bad_argument_launch: tuple[LaunchDescription, list[str], Started], launch_service: Any
) -> None:
    _, reasons, started = bad_argument_launch
    return_code = await asyncio.wait_for(asyncio.shield(launch_service.task), LAUNCH_END_TIMEOUT_S)
    assert return_code == 1
    assert len(reasons) == 1 and "launch argument control_rate_hz:='fast' is not a number" in reasons[0], reasons
    assert started.processes == []


# --------------------------------------------------------------------------- demo.launch.py


@launch_pytest.fixture
def demo_launch(launch_env: None, install: Path, engines: Path) -> LaunchDescription:
    return LaunchDescription(
        [
            ready(),
            include(
                install,
                "demo.launch.py",
                model_dir=str(REFERENCE_MODEL),
                engine_dir=str(engines),
                tasks="[reach-v3]",
                episodes_per_task="1",
            ),
        ]
    )


@pytest.mark.launch(fixture=demo_launch)
async def test_demo_launch_runs_an_episode_to_its_result(launch_service: Any, domain_id: int) -> None:
    with ros_session(domain_id, "demo_probe") as ros:
        results = ros.subscribe(String, "/sim_bridge/episode_result", LATCHED_QOS, lambda m: json.loads(m.data))
        deadline = time.monotonic() + EPISODE_TIMEOUT_S
        while not len(results) and not launch_service.task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the launch runs in this event loop
        return_code = await asyncio.wait_for(asyncio.shield(launch_service.task), LAUNCH_END_TIMEOUT_S)
        # The bridge publishes the result before it exits; its subscription may still be delivering it.
        assert ros.wait_until(lambda: len(results) > 0, timeout=5.0), "no /sim_bridge/episode_result"
    assert return_code == 0  # the launch ends by itself once the bridge has run its episodes
    (result,) = results.messages
    assert (result["task"], result["episode"], result["error"]) == ("reach-v3", 0, None), result
    assert isinstance(result["success"], bool) and result["steps"] > 0 and result["chunks_received"] > 0, result


# --------------------------------------------------------------------------- localhost_only:=false


def test_localhost_only_false_gives_the_node_the_network_profile(
    install: Path, engines: Path, domain_id: int, tmp_path: Path
) -> None:
    """``ros2 launch`` in a network namespace of its own (loopback only, so subnet discovery reaches
    nothing outside): the node runs with config/fastdds_network.xml and ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET,
    and the launch's own ROS node, under the same rules, still brings it to ``active``."""
    ip, unshare = shutil.which("ip"), shutil.which("unshare")
    if ip is None or unshare is None:
        pytest.skip("needs iproute2 (ip) and util-linux (unshare)")
    probe = subprocess.run([unshare, "--net", ip, "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace (needs CAP_SYS_ADMIN): {probe.stderr.strip()}")
    command = sourced(
        f"{ip} link set lo up && exec ros2 launch {PACKAGE} dysl.launch.py localhost_only:=false "
        f"model_dir:={REFERENCE_MODEL} engine_dir:={engines}",
    )
    log = tmp_path / "launch.log"
    with ros_process(
        [unshare, "--net", "--", *command], domain_id, log, env_extra=shell_vars(tmp_path), cwd=install.parent
    ) as proc:
        deadline = time.monotonic() + ACTIVE_TIMEOUT_S
        while "dysl_node is active" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"ros2 launch exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"dysl_node not active:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        nodes = [
            pid for pid, cmd in descendants(proc.pid) if any(part.endswith("/lib/dysl_ros/dysl_node") for part in cmd)
        ]
        assert len(nodes) == 1, descendants(proc.pid)
        environment = process_environment(nodes[0])
        os.kill(proc.pid, signal.SIGINT)  # to ros2 launch (the shell exec'd it), which stops dysl_node
        assert proc.wait(timeout=LAUNCH_END_TIMEOUT_S) == 0, log.read_text()[-3000:]
    assert environment["FASTDDS_DEFAULT_PROFILES_FILE"] == str(share(install) / "config" / "fastdds_network.xml")
    assert environment["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
