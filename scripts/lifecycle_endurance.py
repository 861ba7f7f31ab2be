#!/usr/bin/env python3
"""dysl_node through many lifecycle cycles with images flowing: memory must not grow and nothing may
be published while the node is not active.

    .venv/bin/python scripts/lifecycle_endurance.py --model-dir models/reference --cycles 100 [--json]

One ``dysl_node`` process (no autostart) on a ROS domain of its own, loopback only; this process
plays camera (20 Hz), joint states and instruction, and drives configure -> activate -> deactivate ->
cleanup ``--cycles`` times through the lifecycle services. Each cycle checks that the node served
(a chunk arrives while active) and that nothing was published on ``~/action`` or ``~/action_chunk``
(by the messages' DDS write times) while the node was not active: between configure and activate,
and after deactivate returned (the one final safe command goes out before it returns). The node's RSS
(its own process, not the stream's) is read after every cleanup; the growth from cycle 10 to the
last is the figure (bound: 2 %).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHUNK_TIMEOUT_S = 30.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="models/reference", help="model directory (default models/reference)")
    parser.add_argument("--cycles", type=int, default=100, help="lifecycle cycles (default 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()

    from dysl_ros.sim import rosenv

    domain = rosenv.claim_domain_id()
    rosenv.apply(rosenv.ros_environment(domain))  # before rclpy: Fast DDS reads the profile once
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    from dysl_ros.qos import LATCHED_QOS, SENSOR_QOS

    log = (REPO / "out" / "endurance.log").resolve()
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "dysl_ros.node.dysl_node", "--ros-args",
        "-p", f"model_dir:={Path(args.model_dir).resolve()}", "-p", "stream_priority:=0", "-p", "warmup_ticks:=1",
    ]
    with log.open("w") as out:
        node_proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    rclpy.init()
    probe = rclpy.create_node("endurance_probe")
    # (DDS write time of the message, ns on the system clock; what): when it was published, not when
    # it arrived, which on a loaded machine can be tens of ms later.
    received: list[tuple[int, str]] = []
    lock = threading.Lock()

    def on_action(msg: Float64MultiArray, info: Any) -> None:
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        with lock:
            received.append((int(info["source_timestamp"]), "final" if label == "final" else "action"))

    def on_chunk(_: JointTrajectory, info: Any) -> None:
        with lock:
            received.append((int(info["source_timestamp"]), "chunk"))

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(Float64MultiArray, "/dysl_node/action", on_action, reliable)
    probe.create_subscription(JointTrajectory, "/dysl_node/action_chunk", on_chunk, reliable)
    image_pub = probe.create_publisher(Image, "/dysl_node/image", SENSOR_QOS)
    state_pub = probe.create_publisher(JointState, "/dysl_node/joint_states", SENSOR_QOS)
    instruction_pub = probe.create_publisher(String, "/dysl_node/instruction", LATCHED_QOS)
    client = probe.create_client(ChangeState, "/dysl_node/change_state")
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(probe)
    stop = threading.Event()
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def feed() -> None:  # the camera and the arm, at 20 Hz, whatever the node's state
        rng = np.random.default_rng(0)
        while not stop.is_set():
            state_pub.publish(JointState(position=[0.0, 0.6, 0.2, 1.0]))
            msg = Image(encoding="rgb8", height=128, width=128, step=384)
            msg.data = rng.integers(0, 255, 128 * 128 * 3, np.uint8).tobytes()
            msg.header.stamp = probe.get_clock().now().to_msg()
            image_pub.publish(msg)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    instruction_pub.publish(String(data="reach the goal"))

    def transition(transition_id: int) -> None:
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"no lifecycle service; node log: {log}")
        request = ChangeState.Request()
        request.transition.id = transition_id
        future = client.call_async(request)
        deadline = time.monotonic() + 120.0
        while not future.done():
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise RuntimeError(f"transition {transition_id} did not finish; node log: {log}")
            time.sleep(0.01)
        if not future.result().success:
            raise RuntimeError(f"transition {transition_id} failed; node log: {log}")

    rows: list[dict[str, Any]] = []
    violations = 0
    started = time.perf_counter()
    try:
        for cycle in range(1, args.cycles + 1):
            transition(Transition.TRANSITION_CONFIGURE)
            inactive_from = time.time_ns()
            with lock:
                mark = len(received)
            activate_from = time.time_ns()
            transition(Transition.TRANSITION_ACTIVATE)
            active_from = time.time_ns()
            deadline = time.monotonic() + CHUNK_TIMEOUT_S
            while time.monotonic() < deadline:
                with lock:
                    if any(what == "chunk" and t >= active_from for t, what in received[mark:]):
                        break
                time.sleep(0.02)
            else:
                raise RuntimeError(f"cycle {cycle}: no chunk while active; node log: {log}")
            time.sleep(0.3)
            transition(Transition.TRANSITION_DEACTIVATE)
            deactivated = time.time_ns()
            time.sleep(0.5)  # images keep flowing: nothing may come out now
            transition(Transition.TRANSITION_CLEANUP)
            time.sleep(0.1)
            with lock:
                # Before activate (configured, inactive) and after deactivate: only the one final command.
                before_active = [w for t, w in received[mark:] if inactive_from <= t < activate_from]
                after = [w for t, w in received[mark:] if t >= deactivated]
            bad = len(before_active) + len(after)
            violations += bad
            rows.append({"cycle": cycle, "rss_mib": round(rss_mib(node_proc.pid), 1), "published_while_inactive": bad})
            print(f"cycle {cycle:3d}: node RSS {rows[-1]['rss_mib']:.1f} MiB, published while inactive {bad}",
                  file=sys.stderr)
    finally:
        stop.set()
        node_proc.terminate()
        try:
            node_proc.wait(20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        feeder.join(5)
        executor.shutdown()
        spinner.join(5)
        probe.destroy_node()
        rclpy.try_shutdown()

    reference = rows[min(9, len(rows) - 1)]["rss_mib"]
    last = rows[-1]["rss_mib"]
    summary = {
        "model_dir": str(args.model_dir),
        "cycles": len(rows),
        "rss_cycle_10_mib": reference,
        "rss_last_mib": last,
        "rss_growth_percent": round(100.0 * (last - reference) / reference, 2),
        "published_while_inactive": violations,
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    print(
        f"{len(rows)} cycles in {summary['wall_s']} s: node RSS {reference:.1f} MiB at cycle 10, {last:.1f} at the "
        "last "
        f"({summary['rss_growth_percent']:+.2f} %, bound 2 %); published while inactive: {violations}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(summary))
    return 0 if violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
