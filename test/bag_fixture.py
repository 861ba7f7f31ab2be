"""rosbag2 recordings for tests, written by something other than the reader under test.

- ``write_db3``: rosbag2's sqlite3 storage as ROS 2 Humble's recorder leaves it (``metadata.yaml``
  version 5 beside ``<name>_0.db3``, schema version 3: no message definitions in the bag), each
  message serialised by rclpy's ``serialize_message`` (Fast CDR, the robot's rmw): its JointState and
  JointTrajectory carry the alignment padding of empty float64 sequences that a strict CDR reader
  (rosbags' own ``deserialize_cdr``) rejects.
- ``write_mcap``: one MCAP file as Jazzy's and Kilted's recorders store it (``ros2msg`` schemas, ``cdr``
  channels), the schemas built from the .msg files of the installed ROS message packages, each
  message encoded either by mcap-ros2-support's own CDR encoder or by rclpy (Fast CDR bytes).

Neither uses rosbags: a bug shared by its writer and its reader could not hide here.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "string", "wstring",
}
SEPARATOR = "=" * 80


@dataclass(frozen=True)
class Record:
    """One message of a recording: its topic, type (``pkg/msg/Name``), the bag's receive time in ns
    and the rclpy message."""

    topic: str
    msgtype: str
    log_ns: int
    message: Any


def _share_dirs() -> list[Path]:
    import sys

    prefixes = [*os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep), sys.prefix]
    return [Path(p) / "share" for p in prefixes if p]


def _msg_file(package: str, name: str) -> Path:
    for share in _share_dirs():
        path = share / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{package}/msg/{name}.msg in none of {_share_dirs()}")


def _dependencies(package: str, text: str) -> list[tuple[str, str]]:
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, rest = line.split(None, 1)
        if "=" in rest.split()[0] or re.match(r"^[A-Z0-9_]+\s*=", rest):
            continue  # a constant
        kind = re.sub(r"\[.*\]$", "", kind).split("<=")[0]
        if kind in PRIMITIVES:
            continue
        owner, _, name = kind.rpartition("/")
        found.append((owner or package, name))
    return found


def msgdef(msgtype: str) -> str:
    """The ``ros2msg`` text of ``pkg/msg/Name``: its .msg file, then each type it uses once, each
    after a separator line and ``MSG: pkg/Name`` (as rosbag2's MCAP storage writes them)."""
    package, _, name = msgtype.split("/")
    main = _msg_file(package, name).read_text()
    parts, seen = [main], set()
    todo = _dependencies(package, main)
    while todo:
        owner, dep = todo.pop(0)
        if (owner, dep) in seen:
            continue
        seen.add((owner, dep))
        text = _msg_file(owner, dep).read_text()
        parts.append(f"{SEPARATOR}\nMSG: {owner}/{dep}\n{text}")
        todo += _dependencies(owner, text)
    return "\n".join(parts)


def write_db3(bag_dir: Path, records: Sequence[Record]) -> Path:
    """A Humble rosbag2 directory: ``metadata.yaml`` + ``<dir name>_0.db3``; returns ``bag_dir``."""
    from rclpy.serialization import serialize_message

    bag_dir.mkdir(parents=True)
    db_name = f"{bag_dir.name}_0.db3"
    topics: dict[str, tuple[int, str]] = {}
    counts: dict[str, int] = {}
    connection = sqlite3.connect(bag_dir / db_name)
    try:
        connection.executescript(
            "CREATE TABLE schema(schema_version INTEGER PRIMARY KEY,ros_distro TEXT NOT NULL);"
            "INSERT INTO schema(schema_version, ros_distro) VALUES (3, 'humble');"
            "CREATE TABLE metadata(id INTEGER PRIMARY KEY,metadata_version INTEGER NOT NULL,metadata TEXT NOT NULL);"
            "CREATE TABLE topics(id INTEGER PRIMARY KEY,name TEXT NOT NULL,type TEXT NOT NULL,"
            "serialization_format TEXT NOT NULL,offered_qos_profiles TEXT NOT NULL);"
            "CREATE TABLE messages(id INTEGER PRIMARY KEY,topic_id INTEGER NOT NULL,timestamp INTEGER NOT NULL,"
            " data BLOB NOT NULL);"
            "CREATE INDEX timestamp_idx ON messages (timestamp ASC);"
        )
        for record in records:
            if record.topic not in topics:
                topic_id = len(topics) + 1
                topics[record.topic] = (topic_id, record.msgtype)
                connection.execute(
                    "INSERT INTO topics(id, name, type, serialization_format, offered_qos_profiles) "
                    "VALUES (?, ?, ?, 'cdr', '')",
                    (topic_id, record.topic, record.msgtype),
                )
            counts[record.topic] = counts.get(record.topic, 0) + 1
            connection.execute(
                "INSERT INTO messages(topic_id, timestamp, data) VALUES (?, ?, ?)",
                (topics[record.topic][0], record.log_ns, serialize_message(record.message)),
            )
        connection.commit()
    finally:
        connection.close()
    start = min(r.log_ns for r in records)
    duration = max(r.log_ns for r in records) - start
    info = {
        "rosbag2_bagfile_information": {
            "version": 5,
            "storage_identifier": "sqlite3",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": len(records),
            "topics_with_message_count": [
                {
                    "topic_metadata": {"name": name, "type": msgtype, "serialization_format": "cdr",
                                       "offered_qos_profiles": ""},
                    "message_count": counts[name],
                }
                for name, (_, msgtype) in topics.items()
            ],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [db_name],
            "files": [
                {"path": db_name, "starting_time": {"nanoseconds_since_epoch": start},
                 "duration": {"nanoseconds": duration}, "message_count": len(records)}
            ],
        }
    }
    (bag_dir / "metadata.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    return bag_dir


def as_plain(message: Any) -> Any:
    """An rclpy message as dicts and lists, for mcap-ros2-support's encoder."""
    if hasattr(message, "get_fields_and_field_types"):
        return {name: as_plain(getattr(message, name)) for name in message.get_fields_and_field_types()}
    if isinstance(message, (list, tuple)):
        return [as_plain(v) for v in message]
    if hasattr(message, "typecode"):  # array.array
        return bytes(message) if message.typecode == "B" else message.tolist()
    if hasattr(message, "tolist"):  # numpy
        return message.tolist()
    return message


def write_mcap(path: Path, records: Sequence[Record], encoder: str = "mcap_ros2") -> Path:
    """One ``.mcap`` file; ``encoder``: ``mcap_ros2`` (its own CDR encoder) or ``rclpy`` (Fast CDR bytes
    written as they are, as rosbag2 records them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        if encoder == "mcap_ros2":
            from mcap_ros2.writer import Writer

            writer = Writer(stream)
            schemas = {}
            for record in records:
                if record.msgtype not in schemas:
                    schemas[record.msgtype] = writer.register_msgdef(record.msgtype, msgdef(record.msgtype))
                writer.write_message(record.topic, schemas[record.msgtype], as_plain(record.message),
                                     log_time=record.log_ns, publish_time=record.log_ns)
            writer.finish()
        elif encoder == "rclpy":
            from mcap.writer import Writer as McapWriter
            from rclpy.serialization import serialize_message

            raw = McapWriter(stream)
            raw.start(profile="ros2", library="dysl_ros tests")
            channels: dict[str, int] = {}
            schema_ids: dict[str, int] = {}
            for record in records:
                if record.msgtype not in schema_ids:
                    schema_ids[record.msgtype] = raw.register_schema(
                        name=record.msgtype, encoding="ros2msg", data=msgdef(record.msgtype).encode()
                    )
                if record.topic not in channels:
                    channels[record.topic] = raw.register_channel(
                        topic=record.topic, message_encoding="cdr", schema_id=schema_ids[record.msgtype]
                    )
                raw.add_message(channels[record.topic], log_time=record.log_ns, data=serialize_message(record.message),
                                publish_time=record.log_ns)
            raw.finish()
        else:
            raise ValueError(encoder)
    return path


# A robot's recording ------------------------------------------------------------------------------

T0_NS = 1_764_000_000_000_000_000
"""The recording's first camera capture (2025-11-24, system time as a robot's clock has it)."""
STATE_JOINTS = (*(f"joint_{i}" for i in range(7)), "gripper")
"""The model's state, by name (byom_fixture.STATE_NAMES)."""
COMMAND_JOINTS = (*(f"joint_{i}" for i in range(6)), "gripper")
"""The joints commanded (byom_fixture.JOINTS: POSITION_SPEC's actions)."""
EXTRA_JOINTS = ("base_yaw", "camera_tilt", "wheel_left")
FRONT_HW = (30, 40)
WRIST_HW = (20, 24)
CAMERA_HZ = 20
STATE_HZ = 50
COMMAND_PERIOD_NS = 100_000_000
"""A trajectory every 100 ms, four points 50 ms apart: each replaces the last two of its predecessor."""
LATENCY_NS = 5_000_000
"""Capture to the recorder (an image's log time is its stamp plus this)."""
WRIST_SKEW_NS = 3_000_000
"""The wrist camera captures 3 ms after the front one."""


def state_value(joint: str, t_ns: int) -> float:
    """The measured position of ``joint`` at ``t_ns`` (smooth, distinct per joint)."""
    k = (STATE_JOINTS + EXTRA_JOINTS).index(joint)
    s = (t_ns - T0_NS) * 1e-9
    return 0.3 * math.sin(1.7 * s + 0.5 * k) + 0.05 * k


def command_value(joint: str, t_ns: int) -> float:
    """The commanded position of ``joint`` for time ``t_ns`` (within the model's action range ±1.5)."""
    k = COMMAND_JOINTS.index(joint)
    s = (t_ns - T0_NS) * 1e-9
    return 0.8 * math.cos(1.3 * s + 0.4 * k) + 0.1 * k


def frame_image(camera: str, number: int, hw: tuple[int, int]) -> Any:
    """Camera ``camera``'s frame ``number`` (global), RGB uint8: gradients that move, plus mild noise."""
    import numpy as np

    h, w = hw
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng([("front", "wrist").index(camera), number])
    base = np.stack([(x * 5 + number * 7) % 256, (y * 9 + number * 3) % 256, ((x + y) * 4) % 256], axis=-1)
    noise = rng.integers(0, 12, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@dataclass
class Scenario:
    """A recording and what it holds: the records (log time order) and, per camera, the frames and
    their stamps; the episodes' (start, end) capture times and instructions."""

    records: list[Record]
    frames: dict[str, list[tuple[int, Any]]]
    """Camera -> [(header stamp ns, RGB image as sent)] (the wrist: as its JPEG decodes)."""
    episodes: list[tuple[int, int, str]]


def robot_scenario(
    episodes: int = 2, seconds: float = 1.2, gap_s: float = 0.5, command: str = "trajectory", jpeg_quality: int = 90,
) -> Scenario:
    """Two cameras (front: sensor_msgs/Image rgb8 at 20 Hz; wrist: CompressedImage JPEG at 20 Hz, 3 ms
    later), JointState at 50 Hz of the state joints plus extra ones in a shuffled order that changes
    every message, an instruction 50 ms before each episode, and commands: ``trajectory``
    (JointTrajectory chunks of the command joints, shuffled, 10 Hz) or ``array`` (dysl_node's
    ``~/action`` Float64MultiArray at 50 Hz, the first 3 of each episode labelled ``hold``)."""
    import cv2
    import numpy as np
    from builtin_interfaces.msg import Duration, Time
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    def stamp(t_ns: int) -> Time:
        return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)

    rng = np.random.default_rng(7)
    instructions = ("put the red block in the bowl", "open the top drawer", "stack the cups")
    records: list[Record] = []
    frames: dict[str, list[tuple[int, Any]]] = {"front": [], "wrist": []}
    spans = []
    number = 0
    camera_period = 1_000_000_000 // CAMERA_HZ
    for e in range(episodes):
        start = T0_NS + int(e * (seconds + gap_s) * 1e9)
        end = start + int(seconds * 1e9)
        text = instructions[e % len(instructions)]
        spans.append((start, end, text))
        records.append(Record("/instruction", "std_msgs/msg/String", start - 50_000_000, String(data=text)))
        for t in range(start, end, camera_period):
            front = frame_image("front", number, FRONT_HW)
            msg = Image(height=FRONT_HW[0], width=FRONT_HW[1], encoding="rgb8", step=FRONT_HW[1] * 3)
            msg.header.stamp, msg.header.frame_id = stamp(t), "front_camera"
            msg.data = front.tobytes()
            records.append(Record("/front/image_raw", "sensor_msgs/msg/Image", t + LATENCY_NS, msg))
            frames["front"].append((t, front))
            wrist = frame_image("wrist", number, WRIST_HW)
            ok, jpeg = cv2.imencode(".jpg", wrist[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            assert ok
            packet = CompressedImage(format="rgb8; jpeg compressed bgr8")
            packet.header.stamp, packet.header.frame_id = stamp(t + WRIST_SKEW_NS), "wrist_camera"
            packet.data = jpeg.tobytes()
            records.append(Record("/wrist/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                                  t + WRIST_SKEW_NS + LATENCY_NS, packet))
            decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1]
            frames["wrist"].append((t + WRIST_SKEW_NS, np.ascontiguousarray(decoded)))
            number += 1
        for t in range(start, end + 200_000_000, 1_000_000_000 // STATE_HZ):
            names = list(STATE_JOINTS + EXTRA_JOINTS)
            rng.shuffle(names)
            js = JointState(name=names, position=[state_value(n, t) for n in names],
                            velocity=[0.01 * i for i in range(len(names))])
            js.header.stamp = stamp(t)
            records.append(Record("/joint_states", "sensor_msgs/msg/JointState", t + 1_000_000, js))
        if command == "trajectory":
            for t in range(start, end + 200_000_000, COMMAND_PERIOD_NS):
                names = list(COMMAND_JOINTS)
                rng.shuffle(names)
                traj = JointTrajectory(joint_names=names)
                traj.header.stamp = stamp(t)
                for k in range(4):
                    at = t + k * 50_000_000
                    traj.points.append(JointTrajectoryPoint(
                        positions=[command_value(n, at) for n in names],
                        time_from_start=Duration(sec=0, nanosec=k * 50_000_000),
                    ))
                records.append(Record("/arm/joint_trajectory", "trajectory_msgs/msg/JointTrajectory",
                                      t + 2_000_000, traj))
        elif command == "array":
            for k, t in enumerate(range(start, end + 200_000_000, 1_000_000_000 // STATE_HZ)):
                label = "hold" if k < 3 else f"{t // 1_000_000_000}.{t % 1_000_000_000:09d}"
                array = Float64MultiArray(data=[command_value(n, t) for n in COMMAND_JOINTS])
                array.layout.dim = [MultiArrayDimension(label=label, size=len(COMMAND_JOINTS),
                                                        stride=len(COMMAND_JOINTS))]
                records.append(Record("/dysl_node/action", "std_msgs/msg/Float64MultiArray", t, array))
        else:
            raise ValueError(command)
    records.sort(key=lambda r: r.log_ns)
    return Scenario(records, frames, spans)


def bag_mapping(command: str = "trajectory", fps: float = 10.0) -> dict[str, Any]:
    """The bag mapping of ``robot_scenario``'s recording."""
    action: dict[str, Any] = (
        {"topic": "/arm/joint_trajectory", "joints": list(COMMAND_JOINTS)} if command == "trajectory"
        else {"topic": "/dysl_node/action"}
    )
    return {
        "fps": fps,
        "tolerance_ms": 15,
        "cameras": {"front": "/front/image_raw", "wrist": "/wrist/image_raw/compressed"},
        "state": {"topic": "/joint_states", "joints": list(STATE_JOINTS)},
        "action": action,
        "instruction": "/instruction",
    }
