#!/usr/bin/env python3
"""What ``dysl_node`` costs to start and to keep: start-up to ``active`` and its RSS after N ticks.

Starts ``dysl_node`` (autostart, ``backend: onnxruntime`` on engines already built, so no export is
timed) with the interpreter ``--python`` on a private loopback-only ROS domain (the project's ROS
environment: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, its own ``ROS_DOMAIN_ID``,
``config/fastdds.xml``), and from this process over DDS:

* start-up: from starting the process to the node's lifecycle ``~/get_state`` answering ``active``
  (polled every 20 ms);
* then camera images (the model's size), joint states and one instruction at ``--camera-hz`` until
  ``--ticks`` inferences have been reported on ``~/dysl_tick``; then the node process's RSS (VmRSS,
  and its peak VmHWM) from /proc, the action-stream child process's apart, and whether libtorch is
  mapped into the node process at all.

``--src DIR`` runs the node from another checkout of the package (its working directory, and first
on PYTHONPATH), e.g. the code before a change: ``git archive <commit> dysl_ros | tar -x -C DIR``.
The venv of ``--python`` gives AMENT_PREFIX_PATH. Nothing here asserts anything: it reports, the
last line one JSON object.

    .venv/bin/build_engines --model-dir models/reference --out /tmp/footprint_engines
    .venv/bin/python scripts/node_footprint.py --python .venv-runtime/bin/python \\
        --engine-dir /tmp/footprint_engines --label runtime
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NAME = "footprint"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the venv the node runs in")
    parser.add_argument("--model-dir", default=str(REPO / "models" / "reference"), help="model directory")
    parser.add_argument("--engine-dir", required=True, help="engine root holding the model's onnxruntime engines")
    parser.add_argument("--src", default=None, help="run the node from this checkout of dysl_ros/ instead")
    parser.add_argument("--ticks", type=int, default=1000, help="inferences before RSS is read")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="rate of images and joint states")
    parser.add_argument("--label", default="", help="a name for the run in the report")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    return parser.parse_args(argv)


def node_environment(python: Path, domain: int, src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(domain),
        FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds.xml"),
        AMENT_PREFIX_PATH=str(python.parent.parent),
        PYTHONUNBUFFERED="1",
    )
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return env


def status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from dysl_ros.model.model_dir import load_spec
    from dysl_ros.sim.rosenv import stop_process

    domain = random.randint(1, 200)
    os.environ.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds.xml"),
    )
    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus
    from lifecycle_msgs.srv import GetState
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    args.model_dir, args.engine_dir = str(Path(args.model_dir).resolve()), str(Path(args.engine_dir).resolve())
    spec = load_spec(args.model_dir)
    python = Path(args.python).absolute()
    command = [
        str(python), "-m", "dysl_ros.node.dysl_node", "--ros-args", "-r", f"__node:={NAME}",
        "-p", f"model_dir:={args.model_dir}", "-p", f"engine_dir:={args.engine_dir}",
        "-p", "backend:=onnxruntime", "-p", "autostart:=true", "-p", "stream_priority:=0",
    ]
    log = Path(tempfile.mkdtemp(prefix="dysl_footprint_")) / "node.log"
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("footprint_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    ticks = 0
    ticks_lock = threading.Lock()

    def on_tick(_: Any) -> None:
        nonlocal ticks
        with ticks_lock:
            ticks += 1

    node.create_subscription(DiagnosticStatus, f"/{NAME}/dysl_tick", on_tick, QoSProfile(depth=50))
    sensor = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    cameras = [c.name for c in spec.cameras]
    topics = [f"/{NAME}/image"] if len(cameras) == 1 else [f"/{NAME}/{c}/image" for c in cameras]
    image_pubs = [node.create_publisher(Image, topic, sensor) for topic in topics]
    state_pub = node.create_publisher(JointState, f"/{NAME}/joint_states", sensor)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_publisher(String, f"/{NAME}/instruction", latched).publish(String(data="push the button"))
    get_state = node.create_client(GetState, f"/{NAME}/get_state")
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    rng = np.random.default_rng(0)
    frames = [
        [rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8).tobytes() for c in spec.cameras]
        for _ in range(8)
    ]
    with open(log, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=args.src or str(REPO),
            env=node_environment(python, domain, args.src), start_new_session=True,
        )
    try:
        deadline = start + args.timeout
        startup_s = None
        while startup_s is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not become active; log {log}:\n{log.read_text()[-3000:]}")
            if get_state.service_is_ready():
                future = get_state.call_async(GetState.Request())
                answered = time.monotonic() + 2.0
                while not future.done() and time.monotonic() < answered:
                    time.sleep(0.005)
                if future.done() and future.result() is not None and future.result().current_state.label == "active":
                    startup_s = time.monotonic() - start
                    break
            time.sleep(0.02)
        period = 1.0 / args.camera_hz
        sent = 0
        feeding = time.monotonic()
        while True:
            with ticks_lock:
                done = ticks
            if done >= args.ticks:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stopped after {done} ticks; log {log}:\n{log.read_text()[-3000:]}")
            state_pub.publish(JointState(position=[0.1] * spec.state_dim))
            now = node.get_clock().now().nanoseconds
            for camera, pub, data in zip(spec.cameras, image_pubs, frames[sent % len(frames)], strict=True):
                msg = Image(encoding="rgb8", height=camera.height, width=camera.width, step=camera.width * 3)
                msg.data = data
                msg.header.stamp = Time(sec=now // 10**9, nanosec=now % 10**9)
                pub.publish(msg)
            sent += 1
            time.sleep(period)
        feeding_s = time.monotonic() - feeding
        stream = children(proc.pid)
        report = {
            "label": args.label,
            "python": str(python),
            "src": args.src or str(REPO),
            "model_dir": args.model_dir,
            "startup_to_active_s": round(startup_s, 3),
            "ticks": done,
            "feeding_s": round(feeding_s, 1),
            "node_rss_mib": round((status_kib(proc.pid, "VmRSS") or 0) / 1024, 1),
            "node_peak_rss_mib": round((status_kib(proc.pid, "VmHWM") or 0) / 1024, 1),
            "stream_rss_mib": round(sum(status_kib(p, "VmRSS") or 0 for p in stream) / 1024, 1),
            "libtorch_mapped": maps_torch(proc.pid),
        }
    finally:
        stop_process(proc)
        spinning.clear()
        thread.join(timeout=5.0)
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = measure(args)
    for key, value in report.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
