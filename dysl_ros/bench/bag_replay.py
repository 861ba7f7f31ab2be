"""A robot's rosbag2 played into dysl_node over ROS 2: ``dysl_bench replay``, a rehearsal with no robot.

    dysl_bench replay --bag my_bag --mapping bag_mapping.yaml --model-dir models/mine --json \\
        --plot out/replay.png
    dysl_bench replay ... --attach dysl_node      # into a node already running on this ROS_DOMAIN_ID

The bag is read through the reader of ``dysl_train to-lerobot --rosbag`` (dysl_ros.training.rosbag_dataset),
so a bag it cannot use is refused before anything starts, by topic and time. Then the mapping's camera,
joint-state and instruction topics are published at their recorded timing (``--rate 2``: twice as fast)
on the node's inputs: ``~/image`` (one camera) or ``~/<camera>/image`` (several; ``/compressed`` with
``--image-transport compressed``), ``~/joint_states``, ``~/instruction``. Each message as recorded
(JointState with every joint, in the recorded order), with its header stamp moved to now by the same
offset as its receive time, so the node judges image age and camera skew as on the robot; a
CompressedImage is decoded to rgb8 for a raw-transport node, a raw image sent as PNG for a compressed one.

What the node does is recorded: ``~/dysl_tick`` (per inference: tick and image-to-chunk latency, executed
layers, verification), ``~/action_chunk``, ``~/action`` (a stale period is a message labelled hold or
zero instead of its source image stamps) and ``/diagnostics``. Reported per episode (instruction to
instruction, as the bag's episodes) and overall: latency p50/p99, executed layers, verified ticks,
chunks, stale action periods; with ``--plot``, a PNG of them against bag time.

ROS environment: a node this command starts runs on a domain of its own (``--domain-id`` or a free one),
loopback only with the project's Fast DDS profile (``config/fastdds.xml``), as every ROS process of the
project; ``--attach`` needs ROS_DOMAIN_ID set to the node's domain, and this process then joins it with
the same loopback rules.

Exit status: 0 done, 1 the node failed or did not come up, 2 usage or a bag that cannot be used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from dysl_ros.bench import common
from dysl_ros.core.config import ConfigError
from dysl_ros.sim import rosenv
from dysl_ros.sim.report import Tick, percentile
from dysl_ros.wiring import DIAGNOSTICS_TOPIC

if TYPE_CHECKING:
    from dysl_ros.training.rosbag_dataset import BagDataset

PROG = "dysl_bench replay"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
INFERENCE_STATUS = "dysl_node: inference"
FRESH_LABEL_DIGITS = set("0123456789.,")


class ReplayError(RuntimeError):
    """The node failed, or did not come up: the message says which and shows its log."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="rosbag2 recording: bag directory, .db3 or .mcap file")
    parser.add_argument("--mapping", required=True, metavar="FILE", help="bag mapping (docs/bring_your_model.md)")
    parser.add_argument("--model-dir", required=True, help="the model the node serves (its cameras name the topics)")
    parser.add_argument("--attach", metavar="NODE", default=None,
                        help="replay into this running dysl_node (ROS_DOMAIN_ID set) instead of starting one")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed, 2 = twice as fast (default: 1)")
    parser.add_argument("--episodes", type=int, default=None, help="the bag's first N episodes (default: all)")
    parser.add_argument("--image-transport", choices=("raw", "compressed"), default="raw",
                        help="what the node subscribes to (its image_transport parameter; default: raw)")
    parser.add_argument("--backend", default="auto", help="started node: its backend parameter (default: auto)")
    parser.add_argument("--dense", action="store_true", help="started node: run every layer (the dense baseline)")
    parser.add_argument("--params-file", default=None, help="started node: a parameters file (ros__parameters)")
    parser.add_argument("--domain-id", type=int, default=None, help="started node: ROS domain (default: a free one)")
    parser.add_argument("--node-name", default="dysl_node", help="started node: its name (default: dysl_node)")
    parser.add_argument("--log", default=None, metavar="FILE",
                        help="started node: its log (default: replay_dysl_node.log beside --plot / --markdown, "
                        "else in the temporary directory)")
    parser.add_argument("--startup-timeout-s", type=float, default=120.0, help="for the node's topics (default: 120)")
    parser.add_argument("--drain-s", type=float, default=1.0,
                        help="after the last message: wait this long for the node's last ticks (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object, last line")
    parser.add_argument("--markdown", metavar="FILE", help="write the per-episode table (markdown) to FILE")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG: latency, executed layers, stale periods")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def node_camera_topic(cameras: Sequence[str], camera: str) -> str:
    """dysl_node's topic of ``camera`` (``dysl_node.camera_topic``: ``~/image`` for one camera,
    ``~/<camera>/image`` for several; not imported: offline code never imports the node)."""
    return "image" if len(cameras) == 1 else f"{camera}/image"


def is_stale_label(label: str) -> bool:
    """A ``~/action`` label that is not the action's source image stamps (hold, zero, final, ...)."""
    return not label or not set(label) <= FRESH_LABEL_DIGITS


# --------------------------------------------------------------------------------------------------
# The ROS side of this process


@dataclass
class Received:
    """What came back from the node, each item with its receive time (time.time_ns())."""

    ticks: list[tuple[int, Tick]] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    actions: list[tuple[int, str]] = field(default_factory=list)
    """(receive ns, layout label)."""
    diagnostics: list[dict[str, str]] = field(default_factory=list)


class Player:
    """One rclpy node: publishers on the node's inputs, subscriptions to what it sends."""

    def __init__(self, node_name: str, cameras: Sequence[str], transport: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Float64MultiArray, String
        from trajectory_msgs.msg import JointTrajectory

        self.lock = threading.Lock()
        self.received = Received()
        self.transport = transport
        self._rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("dysl_replay", context=self.context)
        sensor = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        deep = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        prefix = f"/{node_name}/"
        image_type = CompressedImage if transport == "compressed" else Image
        suffix = "/compressed" if transport == "compressed" else ""
        self.camera_topics = {c: prefix + node_camera_topic(cameras, c) + suffix for c in cameras}
        self.publishers: dict[str, Any] = {
            c: self.node.create_publisher(image_type, topic, sensor) for c, topic in self.camera_topics.items()
        }
        self.publishers["state"] = self.node.create_publisher(JointState, prefix + "joint_states", sensor)
        self.publishers["instruction"] = self.node.create_publisher(String, prefix + "instruction", latched)
        self.output_topics = [prefix + "dysl_tick", prefix + "action_chunk", prefix + "action"]
        self.node.create_subscription(DiagnosticStatus, prefix + "dysl_tick", self._on_tick, deep)
        self.node.create_subscription(JointTrajectory, prefix + "action_chunk", self._on_chunk, deep)
        self.node.create_subscription(Float64MultiArray, prefix + "action", self._on_action, deep)
        self.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        self.classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
                        "sensor_msgs/msg/JointState": JointState, "std_msgs/msg/String": String}
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self.node)
        self._spinner = rosenv.BackgroundSpinner(executor, "replay_ros")

    def _on_tick(self, msg: Any) -> None:
        tick = Tick.from_values({kv.key: kv.value for kv in msg.values})
        with self.lock:
            self.received.ticks.append((time.time_ns(), tick))

    def _on_chunk(self, _msg: Any) -> None:
        with self.lock:
            self.received.chunks.append(time.time_ns())

    def _on_action(self, msg: Any) -> None:
        label = str(msg.layout.dim[0].label) if msg.layout.dim else ""
        with self.lock:
            self.received.actions.append((time.time_ns(), label))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == INFERENCE_STATUS:
                with self.lock:
                    self.received.diagnostics.append({kv.key: kv.value for kv in status.values})

    def ready(self) -> bool:
        """Every input has the node's subscription and every output a publisher (an active node)."""
        inputs = all(p.get_subscription_count() > 0 for p in self.publishers.values())
        return inputs and all(self.node.count_publishers(topic) > 0 for topic in self.output_topics)

    def publish(
        self, role: str, msgtype: str, raw: bytes, offset_ns: int, rate: float, base_ns: int
    ) -> tuple[int, int] | None:
        """The recorded message on ``role``'s topic, its stamp moved to now's time line (the offset of
        ``offset_ns`` to the stamp, divided by ``rate``, from ``base_ns``); returns an image's (new,
        recorded) stamps in ns, else None."""
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, self.classes[msgtype])
        stamps = None
        header = getattr(msg, "header", None)
        if header is not None:
            old = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
            if old > 0:
                new = base_ns + int((old - offset_ns) / rate)
                header.stamp.sec, header.stamp.nanosec = divmod(new, 1_000_000_000)
                stamps = (new, old)
        if role in self.camera_topics:
            msg = transcode(msg, msgtype, self.transport)
        self.publishers[role].publish(msg)
        return stamps if role in self.camera_topics else None

    def close(self) -> None:
        self._spinner.stop()
        self.node.destroy_node()
        self.context.try_shutdown()


def transcode(msg: Any, msgtype: str, transport: str) -> Any:
    """A recorded camera message as a node of ``transport`` takes it: a CompressedImage decoded to
    rgb8 for ``raw``, an Image sent as PNG (lossless) for ``compressed``; else as it is."""
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    from dysl_ros.inputs import decode_compressed_image, decode_image

    if transport == "raw" and msgtype == "sensor_msgs/msg/CompressedImage":
        rgb = decode_compressed_image(msg.format, msg.data, None)
        out = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
        out.header, out.data = msg.header, rgb.tobytes()
        return out
    if transport == "compressed" and msgtype == "sensor_msgs/msg/Image":
        rgb = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, None)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
        if not ok:
            raise ValueError(f"PNG encoding failed for a {rgb.shape} image")
        packet = CompressedImage(format="png")
        packet.header, packet.data = msg.header, png.tobytes()
        return packet
    return msg


# --------------------------------------------------------------------------------------------------
# Figures


def episode_figures(
    dataset: BagDataset, played: int, received: Received, stamps: StampIndex, to_bag_ns: Any,
    control_rate_hz: float | None, end_ns: int,
) -> list[dict[str, Any]]:
    """Per played episode: what the node did while its messages played. A tick belongs to the episode
    of its image (by the image's recorded stamp), an action or chunk to the episode playing when it
    arrived (the last one ends with the last message played, ``end_ns``)."""
    plans = dataset.plans[:played]
    begins = [p.begin_ns for p in plans]

    def which(bag_ns: int) -> int:
        return -1 if bag_ns > end_ns else int(np.searchsorted(begins, bag_ns, side="right")) - 1

    rows = []
    for plan in plans:
        ticks = [t for _, t in received.ticks if which(stamps.recorded(t.image_stamp)) == plan.index]
        actions = [label for at, label in received.actions if which(to_bag_ns(at)) == plan.index]
        chunks = sum(1 for at in received.chunks if which(to_bag_ns(at)) == plan.index)
        stale = sum(1 for label in actions if is_stale_label(label))
        rows.append({
            "index": plan.index,
            "instruction": plan.instruction,
            "start_s": round((plan.begin_ns - dataset.start_ns) * 1e-9, 6),
            **_tick_figures(ticks),
            "chunks": chunks,
            "actions": len(actions),
            "stale_action_periods": stale,
            "stale_s": stale / control_rate_hz if control_rate_hz else math.nan,
        })
    return rows


class StampIndex:
    """Replayed image stamp -> recorded stamp, looked up by a tick's ``image_stamp`` (read as a float
    by ``Tick``: ~0.2 µs off at today's times, so the nearest within 2 µs)."""

    def __init__(self, stamps: Mapping[int, int]) -> None:
        self.replayed = np.sort(np.fromiter(stamps, dtype=np.int64, count=len(stamps)))
        self.stamps = dict(stamps)

    def recorded(self, seconds: float) -> int:
        """The recorded stamp (ns), or -1 when no replayed image had this stamp."""
        if not len(self.replayed) or not math.isfinite(seconds):
            return -1
        target = round(seconds * 1e9)
        k = int(np.searchsorted(self.replayed, target))
        near = [j for j in (k - 1, k) if 0 <= j < len(self.replayed)]
        best = int(self.replayed[min(near, key=lambda j: abs(int(self.replayed[j]) - target))])
        return self.stamps[best] if abs(best - target) <= 2_000 else -1


def _tick_figures(ticks: Sequence[Tick]) -> dict[str, Any]:
    layers = [t.executed_layers for t in ticks if math.isfinite(t.executed_layers)]
    return {
        "ticks": len(ticks),
        "tick_ms_p50": percentile([t.tick_ms for t in ticks], 50),
        "tick_ms_p99": percentile([t.tick_ms for t in ticks], 99),
        "image_to_chunk_ms_p50": percentile([t.image_to_chunk_ms for t in ticks], 50),
        "image_to_chunk_ms_p99": percentile([t.image_to_chunk_ms for t in ticks], 99),
        "executed_layers_mean": float(np.mean(layers)) if layers else math.nan,
        "executed_layers_p99": percentile(layers, 99),
        "verified": sum(1 for t in ticks if t.verified),
    }


def markdown_table(report: Mapping[str, Any]) -> str:
    lines = [
        "| episode | instruction | ticks | tick ms p50 / p99 | image to chunk ms p50 / p99 | executed layers "
        "mean / p99 | verified | chunks | stale action periods |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*report["episodes"], {"index": "all", "instruction": "", **report["overall"]}]
    for row in rows:
        lines.append(
            f"| {row['index']} | {row['instruction']} | {row['ticks']} | {row['tick_ms_p50']:.2f} / "
            f"{row['tick_ms_p99']:.2f} | {row['image_to_chunk_ms_p50']:.2f} / {row['image_to_chunk_ms_p99']:.2f} | "
            f"{row['executed_layers_mean']:.2f} / {row['executed_layers_p99']:.0f} | {row['verified']} | "
            f"{row['chunks']} | {row['stale_action_periods']} |"
        )
    return "\n".join(lines)


def plot_replay(
    report: Mapping[str, Any], series: Mapping[str, Any], file: Path
) -> None:
    """Three panels against bag time: tick and image-to-chunk latency per tick, executed layers per
    tick, stale action periods; episodes shaded, with their instructions."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]})
    t, tick_ms, chunk_ms, layers = (
        np.asarray(series[k], dtype=float) for k in ("t", "tick_ms", "chunk_ms", "layers")
    )
    axes[0].plot(t, tick_ms, ".", markersize=4, label="tick (inference)")
    axes[0].plot(t, chunk_ms, ".", markersize=4, label="image to chunk")
    axes[0].set_ylabel("ms")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].plot(t, layers, ".", markersize=4, color="tab:red")
    if report.get("num_layers"):
        axes[1].axhline(report["num_layers"], color="grey", linestyle=":", linewidth=0.8)
        axes[1].set_ylim(0, report["num_layers"] + 1)
    axes[1].set_ylabel("executed layers")
    stale = np.asarray(series["stale_t"], dtype=float)
    axes[2].plot(stale, np.ones_like(stale), "|", color="tab:orange", markersize=12)
    axes[2].set_yticks([])
    axes[2].set_ylabel("stale")
    axes[2].set_xlabel("bag time (s)")
    ends = [e["start_s"] for e in report["episodes"][1:]] + [series["end_s"]]
    for number, (episode, end) in enumerate(zip(report["episodes"], ends, strict=True)):
        for ax in axes:
            ax.axvspan(episode["start_s"], end, color="0.93" if number % 2 else "0.85", zorder=0)
        axes[0].annotate(str(episode["instruction"])[:40], (episode["start_s"], 1.0),
                         xycoords=("data", "axes fraction"), xytext=(2, -10), textcoords="offset points", fontsize=7)
    fig.suptitle(f"Replay of {Path(report['bag']).name} at {report['rate']:g}x: {report['overall']['ticks']} ticks, "
                 f"{report['overall']['stale_action_periods']} stale action periods", fontsize=10)
    common.save_figure(fig, file, dpi=110)


# --------------------------------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace) -> int:
    try:
        return common.exit_status(PROG, _run, args)
    except ReplayError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _check(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.rate) and args.rate > 0):
        raise ConfigError(f"--rate must be > 0, got {args.rate}")
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.drain_s < 0 or args.startup_timeout_s <= 0:
        raise ConfigError("--drain-s must be >= 0 and --startup-timeout-s > 0")
    if args.attach is not None and "ROS_DOMAIN_ID" not in os.environ:
        raise ConfigError("--attach: set ROS_DOMAIN_ID to the running node's domain")


@dataclass
class _Played:
    """One replay into a node: which node, and what it sent back, with the clocks that map it to the bag."""

    node: str
    started: bool
    """This command started the node (else it attached to a running one)."""
    domain: int
    received: Received
    base_ns: int
    offset_ns: int
    end_ns: int
    stamps: Any
    published: Any
    wall: float

    def to_bag_ns(self, wall_ns: int, rate: float) -> int:
        return self.offset_ns + int((wall_ns - self.base_ns) * rate)


def _run(args: argparse.Namespace) -> int:
    from dysl_ros.model.checkpoint import ModelDirError, load_spec
    from dysl_ros.training.rosbag_dataset import open_bag

    _check(args)
    try:
        spec = load_spec(args.model_dir)
    except ModelDirError as exc:
        raise ConfigError(str(exc)) from exc
    dataset = open_bag(args.bag, args.mapping, spec, progress=not args.no_progress)
    for line in dataset.summary_lines():
        print(line, file=sys.stderr)
    played = min(args.episodes or len(dataset.plans), len(dataset.plans))
    stop_ns = dataset.plans[played].begin_ns if played < len(dataset.plans) else None
    run = _replay(args, dataset, [c.name for c in spec.cameras], stop_ns)
    report, series = _report(args, dataset, played, run)
    table = markdown_table(report)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(f"### Replay of `{dataset.path}` at {args.rate:g}x\n\n{table}\n")
    if args.plot:
        plot_replay(report, series, Path(args.plot))
    print(table)
    print(f"{played} episode(s) replayed at {args.rate:g}x in {run.wall:.1f} s into {run.node}")
    if args.json:
        print(json.dumps(report))
    return EXIT_OK


def _replay(args: argparse.Namespace, dataset: BagDataset, cameras: list[str], stop_ns: int | None) -> _Played:
    """The bag played into the node (started here on a domain of its own, or ``--attach``ed)."""
    started = args.attach is None
    name = args.node_name if started else args.attach
    domain = rosenv.claim_domain_id(args.domain_id) if started else int(os.environ["ROS_DOMAIN_ID"])
    env = rosenv.ros_environment(domain)
    rosenv.apply(env)  # this process's participant: the same domain and loopback rules
    proc: subprocess.Popen[bytes] | None = None
    log = Path(args.log) if args.log else _default_log(args)
    if started:
        proc = rosenv.start_process(_node_command(args, name, dataset), env, log)
        print(f"{PROG}: started {name} on ROS domain {domain} (log {log})", file=sys.stderr)
    player = Player(name, cameras, args.image_transport)
    try:
        _wait_ready(player, proc, log, args.startup_timeout_s)
        base_ns, offset_ns, end_ns, stamps, published, wall = _play(args, dataset, player, stop_ns)
        time.sleep(args.drain_s)
        _wait_diagnostics(player, proc, log)
        if proc is not None and proc.poll() is not None:
            raise ReplayError(f"{name} exited with {proc.returncode} during the replay:\n{rosenv.log_tail(log)}")
    finally:
        player.close()
        if proc is not None:
            rosenv.stop_process(proc)
    with player.lock:
        received = player.received
    return _Played(name, started, domain, received, base_ns, offset_ns, end_ns, stamps, published, wall)


def _report(
    args: argparse.Namespace, dataset: BagDataset, played: int, run: _Played
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's figures, and the series its plot draws."""
    received, end_ns = run.received, run.end_ns

    def to_bag_ns(wall_ns: int) -> int:
        return run.to_bag_ns(wall_ns, args.rate)

    control = float(received.diagnostics[-1].get("action_rate_hz", "nan")) if received.diagnostics else math.nan
    control_rate = _control_rate(args, received)
    index = StampIndex(run.stamps)
    episodes = episode_figures(dataset, played, received, index, to_bag_ns, control_rate, end_ns)
    all_ticks = [t for _, t in received.ticks]
    stale = [at for at, label in received.actions if is_stale_label(label) and to_bag_ns(at) <= end_ns]
    stale_after = sum(1 for at, label in received.actions if is_stale_label(label) and to_bag_ns(at) > end_ns)
    report: dict[str, Any] = {
        "bag": str(dataset.path),
        "storage": dataset.storage,
        "mapping": str(args.mapping),
        "model_dir": str(args.model_dir),
        "node": run.node,
        "started_node": run.started,
        "domain_id": run.domain,
        "rate": args.rate,
        "image_transport": args.image_transport,
        "num_layers": _num_layers(args.model_dir),
        "published": run.published,
        "wall_s": run.wall,
        "episodes": episodes,
        "overall": {
            **_tick_figures(all_ticks),
            "chunks": len(received.chunks),
            "actions": len(received.actions),
            "stale_action_periods": len(stale),
            "stale_s": len(stale) / control_rate if control_rate else math.nan,
            "stale_action_periods_after_the_bag": stale_after,
        },
        "control_rate_hz": control_rate,
        "measured_action_rate_hz": control,
        "diagnostics": received.diagnostics[-1] if received.diagnostics else {},
    }
    start = dataset.start_ns
    series = {
        "t": [(index.recorded(t.image_stamp) - start) * 1e-9 for t in all_ticks],
        "tick_ms": [t.tick_ms for t in all_ticks],
        "chunk_ms": [t.image_to_chunk_ms for t in all_ticks],
        "layers": [t.executed_layers for t in all_ticks],
        "stale_t": [(to_bag_ns(at) - start) * 1e-9 for at in stale],
        "end_s": (end_ns - start) * 1e-9,
    }
    return report, series


def _default_log(args: argparse.Namespace) -> Path:
    for option in (args.plot, args.markdown):
        if option:
            return Path(option).parent / "replay_dysl_node.log"
    import tempfile

    return Path(tempfile.gettempdir()) / f"dysl_replay_{os.getpid()}_dysl_node.log"


def _node_command(args: argparse.Namespace, name: str, dataset: BagDataset) -> list[str]:
    command = [sys.executable, "-m", "dysl_ros.node.dysl_node", "--ros-args", "-r", f"__node:={name}"]
    if args.params_file:
        command += ["--params-file", str(args.params_file)]
    params: dict[str, str] = {
        "model_dir": str(Path(args.model_dir).resolve()),
        "autostart": "true",
        "backend": args.backend,
        "dense": str(bool(args.dense)).lower(),
        "image_transport": args.image_transport,
        "state_joint_names": "[" + ",".join(dataset.mapping.state_joints) + "]",
    }
    for key, value in params.items():
        command += ["-p", f"{key}:={value}"]
    return command


def _wait_ready(player: Player, proc: subprocess.Popen[bytes] | None, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not player.ready():
        if proc is not None and proc.poll() is not None:
            raise ReplayError(f"the node exited with {proc.returncode} before it served:\n{rosenv.log_tail(log)}")
        if time.monotonic() > deadline:
            where = f"\n{rosenv.log_tail(log)}" if proc is not None else " (is it active, on this ROS_DOMAIN_ID?)"
            raise ReplayError(f"the node's topics did not appear within {timeout_s:g} s{where}")
        time.sleep(0.05)


def _play(
    args: argparse.Namespace, dataset: BagDataset, player: Player, stop_ns: int | None
) -> tuple[int, int, int, dict[int, int], dict[str, int], float]:
    """Publish the bag's camera, state and instruction messages at their recorded times (scaled by
    --rate). Returns the wall-clock base (ns), the bag time it stands for, the bag time of the last
    message played, replayed image stamp -> recorded stamp, messages published per role, and the
    seconds it took."""
    from tqdm import tqdm

    from dysl_ros.training.rosbag_format import BagFormatError

    mapping = dataset.mapping
    roles: dict[str, list[str]] = {}
    for camera, topic in mapping.cameras.items():
        roles.setdefault(topic, []).append(camera)
    roles.setdefault(mapping.state_topic, []).append("state")
    if mapping.instruction_topic is not None:
        roles.setdefault(mapping.instruction_topic, []).append("instruction")
    stamps: dict[int, int] = {}
    published: dict[str, int] = {}
    reader = dataset.open_reader()
    try:
        connections = [c for c in reader.connections if c.topic in roles]
        total = sum(int(dataset.topics.get(c.topic, {}).get("messages", 0)) for c in connections)
        bar = tqdm(total=total or None, desc="replay", unit="msg", file=sys.stderr, disable=args.no_progress,
                   dynamic_ncols=True)
        offset_ns: int | None = None
        last_ns = dataset.start_ns
        base_ns = time.time_ns()
        started = time.monotonic()
        try:
            for connection, log_ns, raw in reader.messages(connections=connections, stop=stop_ns):
                if offset_ns is None:
                    offset_ns, base_ns, started = log_ns, time.time_ns(), time.monotonic()
                last_ns = log_ns
                due = started + (log_ns - offset_ns) * 1e-9 / args.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                for role in roles[connection.topic]:
                    try:
                        pair = player.publish(role, connection.msgtype, bytes(raw), offset_ns, args.rate, base_ns)
                    except ValueError as exc:  # InputRejected: an image the node would not take
                        raise BagFormatError(f"{dataset.where(connection.topic, log_ns)}: {exc}") from exc
                    if pair is not None:
                        stamps[pair[0]] = pair[1]
                    published[role] = published.get(role, 0) + 1
                bar.update(1)
        finally:
            bar.close()
    finally:
        reader.close()
    return base_ns, offset_ns or dataset.start_ns, last_ns, stamps, published, time.monotonic() - started


def _wait_diagnostics(player: Player, proc: subprocess.Popen[bytes] | None, log: Path, timeout_s: float = 5.0) -> None:
    """One more /diagnostics after the replay: the node's counters include its end."""
    with player.lock:
        seen = len(player.received.diagnostics)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with player.lock:
            if len(player.received.diagnostics) > seen:
                return
        if proc is not None and proc.poll() is not None:
            return
        time.sleep(0.05)


def _control_rate(args: argparse.Namespace, received: Received) -> float | None:
    """The node's control rate (its stale period is one action period), from its diagnostics."""
    for values in reversed(received.diagnostics):
        period = values.get("action_period_p50_ms")
        try:
            ms = float(period) if period is not None else math.nan
        except ValueError:
            continue
        if math.isfinite(ms) and ms > 0:
            return 1000.0 / ms
    return None


def _num_layers(model_dir: str) -> int | None:
    from dysl_ros.model.checkpoint import ModelDirError, load_dims

    try:
        return int(load_dims(model_dir).num_layers)
    except ModelDirError:
        return None
