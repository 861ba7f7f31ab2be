"""docker/entrypoint.sh run as the Jetson container runs it, on this machine without Docker: the ROS
install and the colcon install tree sourced, ``ros2 run dysl_ros build_engines``, then ``ros2 launch
dysl_ros dysl.launch.py`` in its place (``exec``).

The container's ROS install (``/opt/ros/<distro>/setup.bash``) is here a setup script that puts the
project venv (the Kilted wheels and the ROS 2 tools) on PATH and AMENT_PREFIX_PATH; the package is a
colcon build of this source tree; the backend is onnxruntime (no TensorRT or GPU here). Checked:

1. the first start builds the engines and the node reaches ``active``;
2. after a retrain (the model's weights changed, so its hash no longer matches the engines' manifest)
   the entrypoint refuses to start and says how to rebuild; nothing is launched;
3. with ``DYSL_FORCE_ENGINE_UPDATE=true`` the engines are rebuilt for the new model and the node is
   ``active`` again.

Skipped, saying why, where the ROS 2 command-line tools are not installed (install_tree.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from install_tree import REFERENCE_MODEL, ROS_TOOLS_MISSING, colcon_build, run, wait_active
from ros_harness import REPO, VENV, VENV_BIN, ros_env, ros_process, ros_session

if ROS_TOOLS_MISSING:
    pytest.skip(ROS_TOOLS_MISSING, allow_module_level=True)

pytestmark = pytest.mark.ros

ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
ACTIVE_TIMEOUT_S = 180.0  # engines built, then the model loaded, on a loaded 2-core machine
STOP_TIMEOUT_S = 30.0
"""Limits that only stop a hung test; nothing is asserted about how long anything takes."""


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colcon_build(tmp_path_factory.mktemp("colcon"))


def copy_model(target: Path) -> Path:
    """The shipped model's files (not its variants) under ``target``, which keeps the name ``reference``."""
    shutil.copytree(REFERENCE_MODEL, target, ignore=shutil.ignore_patterns("variants", "engines", "*.png"))
    return target


def retrain(model: Path) -> None:
    """New weights for ``model``, as a retrain gives: one tensor of model.safetensors changes."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = model / "model.safetensors"
    with safe_open(str(path), "pt") as weights:
        metadata = weights.metadata()
        tensors = {name: weights.get_tensor(name) for name in weights.keys()}
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(path), metadata=metadata)


def manifest_hash(engines: Path) -> str:
    return str(json.loads((engines / "reference" / "onnxruntime" / "manifest.json").read_text())["model_hash"])


@pytest.fixture
def container(install: Path, tmp_path: Path) -> dict[str, str]:
    """The container's variables (Dockerfile.jetson's ENV and `docker run -e`), for this machine."""
    underlay = tmp_path / "ros_setup.bash"
    underlay.write_text(
        "# What /opt/ros/<distro>/setup.bash is in the image: here the venv with the Kilted wheels + ROS 2 tools.\n"
        "export ROS_DISTRO=kilted\n"
        f"export PATH={VENV_BIN}:$PATH\n"
        f"export AMENT_PREFIX_PATH={VENV}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}\n"
    )
    return {
        "MODEL_DIR": str(copy_model(tmp_path / "models" / "reference")),
        "ENGINE_DIR": str(tmp_path / "engines"),
        "DYSL_BACKEND": "onnxruntime",
        "DYSL_FORCE_ENGINE_UPDATE": "false",
        "DYSL_UNDERLAY_SETUP": str(underlay),
        "DYSL_OVERLAY_SETUP": str(install / "setup.bash"),
        "ROS_DISTRO": "kilted",
        "TMPDIR": str(tmp_path),
        "ROS_HOME": str(tmp_path / "ros_home"),
    }


@contextmanager
def entrypoint_serving(container: dict[str, str], domain_id: int, log: Path) -> Iterator[None]:
    """The entrypoint running until dysl_node is ``active``; stopped with SIGINT (``docker stop``'s
    signal is SIGTERM; SIGINT is Ctrl-C of ``docker run -it``) at the end, which must end it cleanly."""
    with ros_process([str(ENTRYPOINT)], domain_id, log, env_extra=container, cwd=log.parent) as proc:
        with ros_session(domain_id, "entrypoint_probe") as ros:
            state = wait_active(ros, ACTIVE_TIMEOUT_S)
        assert state == "active", f"dysl_node: {state}\n{log.read_text()[-4000:]}"
        yield
        os.kill(proc.pid, signal.SIGINT)  # the entrypoint exec'd ros2 launch: the same process
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, log.read_text()[-4000:]


def test_entrypoint_builds_engines_launches_and_rebuilds_only_when_forced(
    container: dict[str, str], domain_id: int, tmp_path: Path
) -> None:
    from dysl_ros.model.checkpoint import model_hash

    model, engines = Path(container["MODEL_DIR"]), Path(container["ENGINE_DIR"])
    first = tmp_path / "first.log"
    with entrypoint_serving(container, domain_id, first):
        pass
    assert "dysl_entrypoint: onnxruntime engines for" in first.read_text()
    assert manifest_hash(engines) == model_hash(model)

    retrain(model)
    refused = run([str(ENTRYPOINT)], ros_env(domain_id, **container), tmp_path, timeout=ACTIVE_TIMEOUT_S)
    assert refused.returncode == 1, refused.stdout
    assert "engines were built from another model" in refused.stdout  # build_engines says why
    assert "-e DYSL_FORCE_ENGINE_UPDATE=true" in refused.stdout  # and the entrypoint how to rebuild
    assert "process started" not in refused.stdout  # nothing was launched
    assert manifest_hash(engines) != model_hash(model)

    forced = tmp_path / "forced.log"
    with entrypoint_serving({**container, "DYSL_FORCE_ENGINE_UPDATE": "true"}, domain_id, forced):
        pass
    assert "rebuilt as DYSL_FORCE_ENGINE_UPDATE=true" in forced.read_text()
    assert manifest_hash(engines) == model_hash(model)
