"""The robot's own commands, run as a user types them in a shell at the workspace root after
``colcon build`` (each one a ``bash -c 'source install/setup.bash && ...'`` of its own):

    ros2 run dysl_ros build_engines --model-dir models/reference --out engines
    ros2 daemon start
    ros2 launch dysl_ros dysl.launch.py model_dir:=models/reference engine_dir:=engines image_topic:=...
    ros2 lifecycle get /dysl_node                    # active [3]
    ros2 param get /dysl_node model_dir
    ros2 topic echo --once /cli/action_chunk         # while a camera, the arm state and an instruction come in
    ros2 lifecycle set /dysl_node deactivate
    ros2 lifecycle get /dysl_node                    # inactive [2]
    kill -INT <ros2 launch's pid>                    # SIGINT: launch stops dysl_node and exits 0
    ros2 daemon stop

The node loads the engines ``ros2 run dysl_ros build_engines`` built (their files are left as they were).
Skipped, saying why, where the ROS 2 command-line tools are not installed (install_tree.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from install_tree import (
    ACTION_NAMES,
    REFERENCE_MODEL,
    ROS_TOOLS_MISSING,
    Inputs,
    colcon_build,
    ros2_daemon,
    run,
    shell_vars,
    sourced,
    user_env,
)
from ros_harness import ros_process, ros_session

from dysl_ros.wiring import PACKAGE

if ROS_TOOLS_MISSING:
    pytest.skip(ROS_TOOLS_MISSING, allow_module_level=True)

pytestmark = pytest.mark.ros

TOPICS = {
    "image_topic": "/cli/camera",
    "instruction_topic": "/cli/instruction",
    "joint_states_topic": "/cli/joint_states",
    "action_chunk_topic": "/cli/action_chunk",
}
ACTIVE_TIMEOUT_S = 120.0
ECHO_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
"""Limits that only stop a hung test; nothing is asserted about how long anything takes."""


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colcon_build(tmp_path_factory.mktemp("colcon"))


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (modification time ns, size)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def test_a_user_builds_engines_launches_inspects_and_stops_the_node(
    install: Path, domain_id: int, tmp_path: Path
) -> None:
    workspace = install.parent
    env = user_env(domain_id, tmp_path)
    engines = tmp_path / "engines"

    def ros2(command: str) -> str:
        done = run(sourced(command), env, workspace)
        assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout}"
        return str(done.stdout)

    ros2(f"ros2 run {PACKAGE} build_engines --model-dir {REFERENCE_MODEL} --out {engines}")
    assert (engines / REFERENCE_MODEL.name / "onnxruntime" / "manifest.json").is_file()
    built = files(engines)

    remaps = " ".join(f"{name}:={topic}" for name, topic in TOPICS.items())
    launch = sourced(
        f"exec ros2 launch {PACKAGE} dysl.launch.py model_dir:={REFERENCE_MODEL} engine_dir:={engines} {remaps}"
    )
    log = tmp_path / "launch.log"
    with (
        ros2_daemon(env, workspace),
        ros_process(launch, domain_id, log, env_extra=shell_vars(tmp_path), cwd=workspace) as proc,
    ):
        state = ""
        deadline = time.monotonic() + ACTIVE_TIMEOUT_S
        while not state.startswith("active"):
            assert proc.poll() is None, f"ros2 launch exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"last `ros2 lifecycle get`: {state!r}\n{log.read_text()[-3000:]}"
            state = run(sourced("ros2 lifecycle get /dysl_node"), env, workspace).stdout.strip()
        assert state == "active [3]"

        assert ros2("ros2 param get /dysl_node model_dir").strip() == f"String value is: {REFERENCE_MODEL}"
        assert ros2("ros2 param get /dysl_node engine_dir").strip() == f"String value is: {engines}"
        assert ros2("ros2 param get /dysl_node autostart").strip() == "Boolean value is: False"

        # One chunk, echoed while the robot's inputs come in (from this test, over DDS).
        echo_log = tmp_path / "echo.log"
        echo = sourced(f"exec ros2 topic echo --once {TOPICS['action_chunk_topic']}")
        with (
            ros_session(domain_id, "cli_robot") as ros,
            ros_process(echo, domain_id, echo_log, env_extra=shell_vars(tmp_path), cwd=workspace) as echoing,
        ):
            inputs = Inputs(ros, TOPICS["image_topic"], TOPICS["joint_states_topic"], TOPICS["instruction_topic"])
            assert inputs.until(lambda: echoing.poll() is not None, ECHO_TIMEOUT_S), "ros2 topic echo got no chunk"
            assert echoing.returncode == 0, echo_log.read_text()
        text = echo_log.read_text()
        chunk = yaml.safe_load(text[text.index("header:") :].split("\n---")[0])
        assert chunk["joint_names"] == ACTION_NAMES
        assert len(chunk["points"]) == 8
        stamp = chunk["header"]["stamp"]
        assert stamp["sec"] * 10**9 + stamp["nanosec"] in inputs.stamps  # computed from one of our images

        assert ros2("ros2 lifecycle set /dysl_node deactivate").strip() == "Transitioning successful"
        assert ros2("ros2 lifecycle get /dysl_node").strip() == "inactive [2]"

        # SIGINT to ros2 launch (the process is ros2 launch: `exec`), as the tools' README says; launch
        # passes it on to dysl_node and waits for it.
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert "dysl_node is active" in output
    assert "process has finished cleanly" in output  # dysl_node ended on the SIGINT
    # The node loaded the engines build_engines made: it rebuilt nothing.
    assert files(engines) == built
