"""pytest setup shared by all tests: loopback-only DDS for any rclpy context created in-process, and
the session-end check that nothing a test started is left behind (leak_check.py)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import leak_check  # first: sets the marker every process started from here on inherits
from ros_harness import configure_this_process, unique_domain_id

# A shell starts background commands (`make test &`, nohup, a CI step without job control) with SIGINT
# ignored, and every process started from here would inherit that: `ros2 launch` (which hears SIGINT
# only through Python's handler) would then never stop on Ctrl-C, and the launch tests would time out.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Before any test module can create an rclpy context (Fast DDS reads its profile file once per process).
configure_this_process()
# The probe's executor shares the GIL with the test thread; a short switch interval keeps it taking
# messages promptly (as dysl_node does for itself).
sys.setswitchinterval(0.0005)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ros: starts real ROS 2 processes / DDS participants (slower, loopback only)")
    config.pluginmanager.register(leak_check, "dysl_leak_check")
    # An exception in a thread or a finaliser is a failure, not a line in the warnings summary.
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnhandledThreadExceptionWarning")
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnraisableExceptionWarning")
    # lark (through rosidl's parser) imports sre_parse, deprecated since Python 3.11: not ours.
    config.addinivalue_line("filterwarnings", "ignore:module 'sre_:DeprecationWarning")
    # tqdm's monitor thread would outlive the first progress bar a test draws.
    import tqdm

    tqdm.tqdm.monitor_interval = 0


@pytest.fixture
def domain_id() -> int:
    """A ROS domain id of this test's own, so concurrent test sessions do not cross-talk."""
    return unique_domain_id()
