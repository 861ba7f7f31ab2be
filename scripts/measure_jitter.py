#!/usr/bin/env python3
"""Measure the ``~/action`` stream of ``dysl_node`` where a controller sees it.

Starts three processes on a private loopback-only ROS domain (the project's ROS environment rules:
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, own ``ROS_DOMAIN_ID``, ``config/fastdds.xml``):

* ``dysl_node`` (autostart, ``--backend``, default onnxruntime) on ``--model-dir``; without one, a
  randomly initialised model of the reference shape (``VLAConfig()`` defaults: 24 layers, hidden 128,
  37 tokens) is written to ``/tmp/dysl_jitter_model`` once and reused;
* a camera process: 640x480 rgb8 images at ``--camera-hz`` plus joint states and the instruction;
* a controller process: subscribes to ``/dysl_node/action`` and records, per message, the time the
  callback ran (monotonic), the DDS reception time and the DDS source (publish) time.

After ``--warmup`` s of actions it records ``--duration`` s and prints a summary, then one JSON object
as the last line. Periods are between consecutive messages; jitter = |period - 1/rate|. The
reception-time figures are what a C++ controller listening on the same DDS reader would see; the
callback figures add this Python subscriber's own wake-up latency.

    .venv/bin/python scripts/measure_jitter.py --duration 60 --node-nice -5 --controller-nice -5

Nothing here asserts anything: it reports. Note the machine's load with the figures (``uptime``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NODE = "dysl_node"
DEFAULT_MODEL = Path(tempfile.gettempdir()) / "dysl_jitter_model"


def ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    venv = REPO / ".venv"
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(domain),
        FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds.xml"),
        AMENT_PREFIX_PATH=os.pathsep.join(p for p in (str(venv), os.environ.get("AMENT_PREFIX_PATH", "")) if p),
        PYTHONUNBUFFERED="1",
        RCUTILS_LOGGING_BUFFERED_STREAM="0",
    )
    return env


def make_reference_model(path: Path) -> Path:
    """A randomly initialised model directory of the reference shape (weights do not matter for timing)."""
    if (path / "dysl_modules.safetensors").exists():
        return path
    import numpy as np
    import torch

    from dysl_ros.core.config import DySLConfig
    from dysl_ros.core.layer_plan import LayerPlan
    from dysl_ros.model.checkpoint import save_dysl, save_model
    from dysl_ros.model.reference_vla import ReferenceVLA
    from dysl_ros.model.skip_modules import DySLModules
    from dysl_ros.model.spec import VLAConfig

    config = VLAConfig()
    torch.manual_seed(0)
    model = ReferenceVLA(config)
    plan = LayerPlan.from_similarities(np.random.default_rng(0).uniform(0.5, 1.0, config.num_layers).tolist(), 0.2)
    save_model(model, path, dtype=torch.float32)
    save_dysl(path, plan, DySLModules(config.hidden_size, plan), DySLConfig(static_ratio=0.2), dtype=torch.float32)
    return path


# ---------------------------------------------------------------- camera role


def run_camera(args: argparse.Namespace) -> int:
    import array

    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    sensor = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
    latched = QoSProfile(
        depth=1,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    rclpy.init()
    node = rclpy.create_node("jitter_camera")
    images = node.create_publisher(Image, f"/{NODE}/image", sensor)
    states = node.create_publisher(JointState, f"/{NODE}/joint_states", sensor)
    instruction = node.create_publisher(String, f"/{NODE}/instruction", latched)
    instruction.publish(String(data="pick up the puck and place it at the goal"))
    msg = Image(encoding="rgb8", width=args.width, height=args.height, step=args.width * 3)
    payload = array.array("B", os.urandom(args.height * args.width * 3))
    period = 1.0 / args.camera_hz
    start = time.monotonic()
    i = 0
    try:
        while True:
            i += 1
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            states.publish(JointState(position=[0.0, 0.6, 0.2, 1.0]))
            msg.data = payload
            msg.header.stamp = node.get_clock().now().to_msg()
            images.publish(msg)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# ---------------------------------------------------------------- controller role


def _stats(periods_ms: list[float], dt_ms: float) -> dict[str, float]:
    import numpy as np

    if not periods_ms:
        return {}
    p = np.asarray(periods_ms)
    jitter = np.abs(p - dt_ms)
    return {
        "n": float(len(p)),
        "period_p50_ms": float(np.percentile(p, 50)),
        "period_p99_ms": float(np.percentile(p, 99)),
        "period_max_ms": float(p.max()),
        "period_min_ms": float(p.min()),
        "jitter_p50_ms": float(np.percentile(jitter, 50)),
        "jitter_p99_ms": float(np.percentile(jitter, 99)),
        "jitter_max_ms": float(jitter.max()),
        "over_2ms": float((jitter > 2.0).sum()),
    }


def run_controller(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray

    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    if args.controller_fifo:  # before rclpy.init: the DDS receive threads created later inherit it
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.controller_fifo))
    rclpy.init()
    node = rclpy.create_node("jitter_controller")
    rows: list[tuple[int, int, int, int, str]] = []  # callback mono ns, received ns, source ns, wall ns, label
    state: dict[str, Any] = {"first": None}

    def on_action(msg: Float64MultiArray, info: Any) -> None:  # two arguments: rclpy passes MessageInfo
        mono = time.monotonic_ns()
        wall = time.time_ns()
        if state["first"] is None:
            state["first"] = mono
        if mono - state["first"] < args.warmup * 1e9:
            return
        received = int(info["received_timestamp"]) if info else 0
        source = int(info["source_timestamp"]) if info else 0
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        rows.append((mono, received, source, wall, label))

    node.create_subscription(Float64MultiArray, f"/{NODE}/action", on_action, qos)
    deadline = time.monotonic() + args.startup_timeout
    try:
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
            if state["first"] is None and time.monotonic() > deadline:
                print(json.dumps({"error": f"no action within {args.startup_timeout} s"}), flush=True)
                return 2
            if rows and (rows[-1][0] - rows[0][0]) >= args.duration * 1e9:
                break
    except KeyboardInterrupt:
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    dt_ms = 1000.0 / args.rate
    callback = [(b[0] - a[0]) / 1e6 for a, b in itertools.pairwise(rows)]
    received = [(b[1] - a[1]) / 1e6 for a, b in itertools.pairwise(rows) if a[1] and b[1]]
    source = [(b[2] - a[2]) / 1e6 for a, b in itertools.pairwise(rows) if a[2] and b[2]]
    fresh = [r for r in rows if r[4] and r[4][0].isdigit()]
    ages = [(r[3] - _oldest_stamp_ns(r[4])) / 1e6 for r in fresh]
    result = {
        "messages": len(rows),
        "seconds": (rows[-1][0] - rows[0][0]) / 1e9 if rows else 0.0,
        "rate_hz": (len(rows) - 1) / ((rows[-1][0] - rows[0][0]) / 1e9) if len(rows) > 1 else 0.0,
        "callback": _stats(callback, dt_ms),
        "dds_received": _stats(received, dt_ms),
        "dds_source": _stats(source, dt_ms),
        "fresh_actions": len(fresh),
        "labels_other": sorted({r[4] for r in rows if r not in fresh}),
        "source_image_age_max_ms": max(ages) if ages else float("nan"),
    }
    print(json.dumps(result), flush=True)
    return 0


def _oldest_stamp_ns(label: str) -> int:
    stamps = []
    for part in label.split(","):
        sec, _, frac = part.partition(".")
        stamps.append(int(sec) * 1_000_000_000 + int((frac + "000000000")[:9]))
    return min(stamps)


# ---------------------------------------------------------------- orchestrator


def _start(cmd: list[str], env: dict[str, str], log: Path, nice: int) -> subprocess.Popen[bytes]:
    def pre() -> None:
        if nice:
            os.nice(nice)

    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True, preexec_fn=pre
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def orchestrate(args: argparse.Namespace) -> int:
    model = make_reference_model(Path(args.model_dir) if args.model_dir else DEFAULT_MODEL)
    env = ros_env(args.domain)
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    node_cmd = [
        python, "-m", "dysl_ros.node.dysl_node", "--ros-args",
        "-p", f"model_dir:={model}", "-p", "autostart:=true", "-p", f"backend:={args.backend}",
        "-p", f"control_rate_hz:={args.rate}",
    ]  # fmt: skip
    for extra in args.param:
        node_cmd += ["-p", extra]
    me = [python, str(Path(__file__).resolve())]
    common = ["--rate", str(args.rate), "--duration", str(args.duration), "--warmup", str(args.warmup)]
    load = os.getloadavg()
    procs = [
        _start(node_cmd, env, logs / "node.log", args.node_nice),
        _start([*me, "--role", "camera", "--camera-hz", str(args.camera_hz), *common], env, logs / "camera.log", 0),
    ]
    controller_log = logs / "controller.log"
    fifo = ["--controller-fifo", str(args.controller_fifo)]
    controller = _start([*me, "--role", "controller", *common, *fifo], env, controller_log, args.controller_nice)
    try:
        controller.wait(timeout=args.duration + args.warmup + args.startup_timeout + 30)
    finally:
        _stop(controller)
        for proc in reversed(procs):
            _stop(proc)
    lines = controller_log.read_text().strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        print(f"controller produced no result; logs in {logs}", file=sys.stderr)
        return 1
    result = json.loads(lines[-1])
    result["config"] = {
        "backend": args.backend,
        "model_dir": str(model),
        "rate_hz": args.rate,
        "camera_hz": args.camera_hz,
        "node_nice": args.node_nice,
        "controller_nice": args.controller_nice,
        "controller_fifo": args.controller_fifo,
        "params": args.param,
        "loadavg_at_start": load,
        "loadavg_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    for key in ("dds_received", "callback", "dds_source"):
        s = result.get(key) or {}
        if s:
            print(
                f"{key:13s} n={int(s['n'])} period p50 {s['period_p50_ms']:.3f} ms p99 {s['period_p99_ms']:.3f} ms "
                f"max {s['period_max_ms']:.2f} ms | jitter p50 {s['jitter_p50_ms']:.3f} p99 {s['jitter_p99_ms']:.3f} "
                f"max {s['jitter_max_ms']:.2f} ms, {int(s['over_2ms'])} periods > 2 ms off"
            )
    print(
        f"rate {result['rate_hz']:.2f} Hz, fresh actions {result['fresh_actions']}/{result['messages']}, oldest "
        f"source image at reception {result['source_image_age_max_ms']:.1f} ms, load {load} -> {os.getloadavg()}"
    )
    print(json.dumps(result))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("orchestrate", "camera", "controller"), default="orchestrate")
    p.add_argument("--model-dir", default="", help=f"model directory; default: random reference model {DEFAULT_MODEL}")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--rate", type=float, default=50.0, help="control_rate_hz of the node")
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--duration", type=float, default=60.0, help="seconds recorded")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of actions ignored first")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--domain", type=int, default=150 + os.getpid() % 40, help="ROS_DOMAIN_ID (1..200)")
    p.add_argument("--node-nice", type=int, default=0, help="nice increment for the node (e.g. -5)")
    p.add_argument("--controller-nice", type=int, default=0, help="nice increment for the controller process")
    p.add_argument(
        "--controller-fifo",
        type=int,
        default=0,
        help="SCHED_FIFO priority of the controller process (as a real-time controller would run); 0: normal",
    )
    p.add_argument("-p", "--param", action="append", default=[], help="extra node parameter, key:=value")
    p.add_argument("--log-dir", default=str(Path(tempfile.gettempdir()) / "dysl_jitter_logs"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "camera":
        return run_camera(args)
    if args.role == "controller":
        return run_controller(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
