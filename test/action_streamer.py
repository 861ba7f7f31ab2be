"""A constant-action controller for tests, in a process of its own: publishes the current action as
``std_msgs/Float64MultiArray`` at a fixed rate; each line on stdin (a JSON list) replaces the action.

A process, not a thread of the test: inside the pytest process a periodic thread shares the GIL and
the garbage collector with everything the suite has loaded, and on a 2-core machine it went quiet
for 50-300 ms at a time (issue 35). Ends on SIGINT or when stdin closes; then writes the system-clock
time of every publish, one per line, to ``--times``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--topic", required=True)
    p.add_argument("--rate", type=float, required=True, help="publishes per second")
    p.add_argument("--times", required=True, help="file for the publish times (seconds, system clock)")
    args = p.parse_args()

    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("test_action_streamer")
    qos = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Float64MultiArray, args.topic, qos)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    action: list[float] | None = None
    lock = threading.Lock()

    def read_stdin() -> None:
        nonlocal action
        for line in sys.stdin:
            with lock:
                action = [float(v) for v in json.loads(line)]
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    times: list[float] = []
    period = 1.0 / args.rate
    deadline = time.monotonic()
    try:
        while not stop.is_set():
            deadline = max(deadline + period, time.monotonic() - period)  # late: no burst to catch up
            stop.wait(max(0.0, deadline - time.monotonic()))
            with lock:
                current = action
            if current is not None and not stop.is_set():
                pub.publish(Float64MultiArray(data=current))
                times.append(time.time())
    finally:
        with open(args.times, "w") as f:
            f.write("".join(f"{t:.6f}\n" for t in times))
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
