"""launch/dysl.launch.py on a real ROS 2 install: dysl_node comes up, reaches ``active``, publishes
/diagnostics.

Needs launch, launch_ros and launch_pytest (ROS 2 apt/source installs; not installable from PyPI) and
an installed dysl_ros (``colcon build`` + ``source install/setup.bash``) with a usable model configured
in config/dysl.yaml. Without launch_pytest the whole module is skipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest",
    reason="launch_pytest is not installed (it ships with ROS 2 installs, not on PyPI); "
    "the launch-file test only runs on a real ROS 2 installation",
)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description import LaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from lifecycle_msgs.msg import State  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_harness import REPO, ros_session  # noqa: E402

pytestmark = pytest.mark.ros

NODE = "/dysl_node"
ACTIVE_TIMEOUT_S = 120.0  # includes loading the model / engines on configure
DIAGNOSTICS_TIMEOUT_S = 15.0
# Matches reliable and best-effort /diagnostics publishers alike.
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def _launch_file() -> Path:
    """The installed launch file when dysl_ros is installed, else the one in this source tree."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        installed = Path(get_package_share_directory("dysl_ros")) / "launch" / "dysl.launch.py"
    except (ImportError, PackageNotFoundError):
        return REPO / "launch" / "dysl.launch.py"
    return installed if installed.exists() else REPO / "launch" / "dysl.launch.py"


@launch_pytest.fixture
def launch_description(domain_id: int, monkeypatch: pytest.MonkeyPatch) -> LaunchDescription:
    # The launch service's own ROS node (which drives the lifecycle transitions) and the launched
    # node both read ROS_DOMAIN_ID from this process's environment: give them this test's domain.
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    return LaunchDescription(
        [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(_launch_file())),
                launch_arguments={"log_level": "info", "localhost_only": "true"}.items(),
            ),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


@pytest.mark.launch(fixture=launch_description)
def test_node_becomes_active_and_publishes_diagnostics(domain_id: int) -> None:
    assert os.environ.get("ROS_DOMAIN_ID") == str(domain_id)
    with ros_session(domain_id, "launch_probe") as ros:
        diagnostics = ros.subscribe(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)

        assert ros.wait_for_service(GetState, f"{NODE}/get_state", timeout=30.0), (
            f"{NODE}/get_state never appeared: did the launch start dysl_node?"
        )
        deadline = time.monotonic() + ACTIVE_TIMEOUT_S
        label = "unknown"
        while time.monotonic() < deadline:
            response = ros.call_service(GetState, f"{NODE}/get_state", GetState.Request(), timeout=10.0)
            label = response.current_state.label
            if response.current_state.id == State.PRIMARY_STATE_ACTIVE:
                break
            time.sleep(0.2)
        assert label == "active", f"dysl_node did not reach 'active' within {ACTIVE_TIMEOUT_S} s (last: {label!r})"

        assert diagnostics.wait_for(1, timeout=DIAGNOSTICS_TIMEOUT_S), "no /diagnostics message from the active node"
        names = {status.name for _, msg in diagnostics.items for status in msg.status}
        assert names, "/diagnostics arrived without any status entries"
