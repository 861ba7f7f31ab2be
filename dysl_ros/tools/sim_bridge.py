"""`sim_bridge`: a Meta-World MT10 task as a ROS 2 robot (see ``dysl_ros.sim.bridge``).

    sim_bridge --ros-args --params-file config/sim_bridge.yaml -p mode:=lockstep -p tasks:="[reach-v3]"

Exit status: 0 every episode ran (``on_finish: exit``) or interrupted, 1 bad parameters or the policy
never answered (the message says which).
"""

from __future__ import annotations

import sys


def main(args: list[str] | None = None) -> int:
    from dysl_ros.sim.bridge import main as bridge_main

    return bridge_main(args)


if __name__ == "__main__":
    sys.exit(main())
