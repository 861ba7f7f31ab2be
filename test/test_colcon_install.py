"""The package builds with colcon as a robot builds it, and the install tree holds what ROS looks for.

``colcon build`` (colcon-ros's ament_python task) runs setup.py with setup.cfg's ``install_scripts``,
so each console script must land in ``lib/dysl_ros/`` where ``ros2 run`` and launch files find it,
and the data files in ``share/``. No ROS install is needed to build an ament_python package: colcon
only reads package.xml and runs setup.py with this interpreter. Build, install and log bases are
temporary, so nothing is written into the source tree (setup.py's egg-info goes to the build base).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from install_tree import colcon_build

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "dysl_ros"
"""A build takes a few seconds; the limit only stops a hung one."""


def console_scripts() -> list[str]:
    """The console script names of setup.py's entry points, read without running setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = ast.literal_eval(value)
                    return [entry.split("=")[0].strip() for entry in entries]
    raise AssertionError("setup.py declares no console_scripts")


@pytest.fixture(scope="module")
def install_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``colcon build --packages-select dysl_ros`` of this source tree; the package's install prefix."""
    root = tmp_path_factory.mktemp("colcon")
    colcon_build(root, setup_bash=False)
    prefix = root / "install" / PACKAGE  # colcon's default isolated layout: one prefix per package
    assert prefix.is_dir(), f"no install prefix {prefix}"
    return prefix


def test_console_scripts_are_in_lib_package(install_prefix: Path) -> None:
    scripts = console_scripts()
    assert set(scripts) >= {"dysl_node", "build_engines", "dysl_train", "dysl_bench", "sim_bridge"}
    for name in scripts:
        path = install_prefix / "lib" / PACKAGE / name
        assert path.is_file(), f"{name}: not in lib/{PACKAGE}/ (setup.cfg install_scripts), so ros2 run cannot find it"
        assert os.access(path, os.X_OK), f"{path} is not executable"
    assert not (install_prefix / "bin").exists(), "console scripts also went to bin/"


def test_share_has_launch_config_manifest_and_ament_index(install_prefix: Path) -> None:
    share = install_prefix / "share"
    launch_files = sorted(path.name for path in (share / PACKAGE / "launch").glob("*.launch.py"))
    assert launch_files == sorted(path.name for path in (REPO / "launch").glob("*.launch.py"))
    assert (share / PACKAGE / "config" / "dysl.yaml").is_file()
    assert (share / PACKAGE / "package.xml").read_text() == (REPO / "package.xml").read_text()
    # The marker that makes the package visible to ament_index (ros2 pkg, ros2 launch, ros2 run).
    assert (share / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


def test_installed_script_runs_from_the_install_tree(install_prefix: Path, tmp_path: Path) -> None:
    """The installed build_engines starts (its entry point resolves) and imports the installed package."""
    site_packages = sorted(install_prefix.glob("lib/python3*/site-packages"))
    assert site_packages, f"no site-packages under {install_prefix / 'lib'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(path) for path in site_packages)}
    done = subprocess.run(
        [str(install_prefix / "lib" / PACKAGE / "build_engines"), "--help"],
        cwd=tmp_path,  # not the source tree, whose dysl_ros would be importable from the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "MODEL_DIR/engines" in " ".join(done.stdout.split())  # the node's default engine root
    where = subprocess.run(
        [sys.executable, "-c", "import dysl_ros; print(dysl_ros.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(install_prefix), where.stdout
