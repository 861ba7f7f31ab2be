"""Meta-World demonstrations (``dysl_train demos``) recorded as a robot's rosbag2, with its bag mapping.

    .venv/bin/python scripts/demos_to_rosbag.py --demos out/demos --out out/demos_bag --storage sqlite3

What a robot wired to dysl_node would have recorded, one episode after another: ``/camera/image_raw``
(sensor_msgs/Image rgb8, the demos' frames, stamped at capture), ``/joint_states`` (sensor_msgs/JointState
hand_x, hand_y, hand_z, gripper), ``/dysl_node/action`` (std_msgs/Float64MultiArray, the expert's
action 2 ms after its frame, labelled with the frame's stamp as dysl_node labels ``~/action``) and
``/instruction`` (std_msgs/String, 50 ms before each episode); episodes 0.5 s apart. Messages are
serialised by rclpy (Fast CDR, as rosbag2 records them) and written with rosbags' writer
(``--storage sqlite3``: Humble's default, or ``mcap``). ``--mapping-out`` (default OUT/../<OUT
name>_mapping.yaml) gets the bag mapping that reads it back (``dysl_train to-lerobot --rosbag``).

Used by docs/bring_your_model.md (the bag worked example) and test/test_rosbag.py (the round trip).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

T0_NS = 1_764_000_000_000_000_000
EPISODE_GAP_NS = 500_000_000
ACTION_DELAY_NS = 2_000_000
INSTRUCTION_LEAD_NS = 50_000_000
STATE_NAMES = ("hand_x", "hand_y", "hand_z", "gripper")
TOPICS = {"image": "/camera/image_raw", "state": "/joint_states", "action": "/dysl_node/action",
          "instruction": "/instruction"}


def demo_messages(demos: Any, fps: float = 20.0) -> list[tuple[str, str, int, Any]]:
    """(topic, type, receive time ns, rclpy message) of every message, in receive order."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String

    period = round(1e9 / fps)
    messages: list[tuple[str, str, int, Any]] = []
    start = T0_NS
    for episode in demos.episodes:
        messages.append((TOPICS["instruction"], "std_msgs/msg/String", start - INSTRUCTION_LEAD_NS,
                         String(data=episode.instruction)))
        height, width = episode.images.shape[1:3]
        for k in range(episode.steps):
            t = start + k * period
            stamp = Time(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)
            image = Image(height=height, width=width, encoding="rgb8", step=width * 3)
            image.header.stamp, image.header.frame_id = stamp, "camera"
            image.data = episode.images[k].tobytes()
            messages.append((TOPICS["image"], "sensor_msgs/msg/Image", t + 1_000_000, image))
            state = JointState(name=list(STATE_NAMES), position=[float(v) for v in episode.proprio[k]])
            state.header.stamp = stamp
            messages.append((TOPICS["state"], "sensor_msgs/msg/JointState", t + 500_000, state))
            action = Float64MultiArray(data=[float(v) for v in episode.actions[k]])
            label = f"{stamp.sec}.{stamp.nanosec:09d}"
            action.layout.dim = [MultiArrayDimension(label=label, size=len(action.data), stride=len(action.data))]
            messages.append((TOPICS["action"], "std_msgs/msg/Float64MultiArray", t + ACTION_DELAY_NS, action))
        start += episode.steps * period + EPISODE_GAP_NS
    messages.sort(key=lambda m: m[2])
    return messages


def bag_mapping(fps: float = 20.0) -> dict[str, Any]:
    """The bag mapping of these recordings: the camera as ``image`` (the reference model's)."""
    return {
        "fps": fps,
        "tolerance_ms": 10,
        "cameras": {"image": TOPICS["image"]},
        "state": {"topic": TOPICS["state"], "joints": list(STATE_NAMES)},
        "action": {"topic": TOPICS["action"]},
        "instruction": TOPICS["instruction"],
    }


def write_bag(messages: list[tuple[str, str, int, Any]], out: Path, storage: str) -> Path:
    """rosbags' rosbag2 writer (a directory: metadata.yaml + one .db3 or .mcap), rclpy's bytes."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(out, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        connections: dict[str, Any] = {}
        for topic, msgtype, log_ns, message in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[topic], log_ns, serialize_message(message))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--demos", required=True, help="demonstrations directory (dysl_train demos --out)")
    parser.add_argument("--out", required=True, help="bag directory to write (must not exist)")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="(default: sqlite3)")
    parser.add_argument("--fps", type=float, default=20.0, help="camera rate of the recording (default: 20)")
    parser.add_argument("--mapping-out", default=None, help="bag mapping file (default: beside OUT)")
    args = parser.parse_args(argv)
    from dysl_ros.training.demos import load_demo_dirs

    out = Path(args.out)
    if out.exists():
        print(f"demos_to_rosbag: {out} exists", file=sys.stderr)
        return 2
    demos = load_demo_dirs(args.demos)
    messages = demo_messages(demos, args.fps)
    write_bag(messages, out, args.storage)
    mapping = Path(args.mapping_out) if args.mapping_out else out.parent / f"{out.name}_mapping.yaml"
    mapping.write_text(yaml.safe_dump(bag_mapping(args.fps), sort_keys=False))
    print(f"{len(demos.episodes)} episode(s), {len(messages)} messages: {out} ({args.storage}); mapping {mapping}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
