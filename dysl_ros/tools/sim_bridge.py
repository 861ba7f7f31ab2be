"""`sim_bridge`: Meta-World as a ROS 2 robot."""

from __future__ import annotations

import sys

from dysl_ros.tools.pending import not_implemented


def main() -> int:
    return not_implemented("sim_bridge", "Meta-World as a ROS 2 robot")


if __name__ == "__main__":
    sys.exit(main())
