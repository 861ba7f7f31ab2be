"""A rosbag2 recording as this package reads it: the bag mapping (YAML: which topic is which
camera, the state, the action, the instruction, and how episodes split), the message types each
role takes, and the bag's storage and CDR messages. ``rosbag_dataset`` reads episodes through it.

A YAML mapping (``--mapping bag_mapping.yaml``) says what is what::

    fps: 10                     # frames per second of the episodes (the dataset's)
    tolerance_ms: 50            # state, action and the other cameras: the message nearest each frame,
                                # within this (default: half a frame period)
    cameras:                    # model camera -> topic (sensor_msgs/Image or CompressedImage)
      front: /front/image_raw   # the first camera paces the frames (as the node's first camera paces ticks)
      wrist: /wrist/image_raw/compressed
    state:                      # sensor_msgs/JointState, joints by name as the node's state_joint_names
      topic: /joint_states      # (<joint>/velocity: the joint's velocity); extra joints, any order
      joints: [joint_0, joint_1, gripper]
    action:                     # trajectory_msgs/JointTrajectory (joints by name, as in force at the frame),
      topic: /arm/joint_trajectory   # std_msgs/Float64MultiArray (values as they are; dysl_node's ~/action)
      joints: [joint_0, joint_1, gripper]
    instruction: /instruction   # std_msgs/String: the episodes' task; each message starts an episode
    episodes: {split: instruction}  # or {split: gap, gap_s: 2.0}: a gap in the first camera's images
    time: header                # header stamps where a message has one (default), or receive: the bag's times
    typestore: humble           # for bags without message definitions: humble, iron, jazzy, kilted
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import numpy.typing as npt
import yaml

from dysl_ros.training.lerobot_dataset import LeRobotFormatError, load_yaml_as

if TYPE_CHECKING:
    pass

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
CAMERA_TYPES = (IMAGE, COMPRESSED_IMAGE)
ACTION_TYPES = (JOINT_TRAJECTORY, FLOAT64_ARRAY)
STOP_LABELS = frozenset({"hold", "zero", "final", "stop", "estop"})
"""``layout.dim[0].label`` of a ``~/action`` / ``~/commands`` message that is no policy action (dysl_node)."""
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
"""What image_transport's compressed plugin sends and the node decodes (``inputs.decode_compressed_image``)."""
TYPESTORES = ("humble", "iron", "jazzy", "kilted")
STORAGE_SUFFIXES = (".db3", ".mcap")
MAPPING_KEYS = ("fps", "tolerance_ms", "cameras", "state", "action", "instruction", "task", "episodes", "time",
                "typestore")


class BagFormatError(LeRobotFormatError):
    """A bag or mapping that cannot be used: names the topic and time, or the mapping key, and why.
    (A LeRobotFormatError, so every command that reports a bad dataset reports a bad bag.)"""


def is_bag(path: str | Path) -> bool:
    """A rosbag2 directory (``metadata.yaml``) or one sqlite3 / MCAP file."""
    path = Path(str(path))
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix in STORAGE_SUFFIXES
    )


# Mapping ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BagMapping:
    """Which topics feed which model inputs, and how frames are made (the module docstring)."""

    cameras: dict[str, str]
    state_topic: str
    state_joints: tuple[str, ...]
    action_topic: str
    action_joints: tuple[str, ...] = ()
    """JointTrajectory: the joints by name, in this order; () takes the message's order."""
    instruction_topic: str | None = None
    task: str | None = None
    """The task text when the bag has no instruction topic (``episodes: {split: gap}`` only)."""
    fps: float = 10.0
    tolerance_ms: float | None = None
    split: str = "instruction"
    gap_s: float | None = None
    time: str = "header"
    typestore: str = "humble"

    @property
    def tolerance_ns(self) -> int:
        ms = self.tolerance_ms if self.tolerance_ms is not None else 500.0 / self.fps
        return round(ms * 1e6)

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.fps)

    @classmethod
    def load(cls, path: str | Path) -> BagMapping:
        return load_yaml_as(path, cls.from_dict, BagFormatError, "YAML bag mapping")

    @classmethod
    def from_dict(cls, data: Any) -> BagMapping:
        if not isinstance(data, Mapping):
            raise BagFormatError(f"a bag mapping must be a mapping, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in MAPPING_KEYS)
        if unknown:
            raise BagFormatError(f"unknown bag mapping key(s) {unknown}: expected some of {list(MAPPING_KEYS)}")
        for key in ("cameras", "state", "action"):
            if key not in data:
                raise BagFormatError(f"bag mapping key {key!r} is missing")
        cameras = data["cameras"]
        if not isinstance(cameras, Mapping) or not cameras or not all(
            isinstance(k, str) and k and isinstance(v, str) and v.startswith("/") for k, v in cameras.items()
        ):
            raise BagFormatError(f"'cameras' must map model camera names to topics (/...), got {cameras!r}")
        state_topic, state_joints = _topic_and_joints(data["state"], "state", require_joints=True)
        action_topic, action_joints = _topic_and_joints(data["action"], "action", require_joints=False)
        instruction = data.get("instruction")
        task = data.get("task")
        if instruction is not None and not (isinstance(instruction, str) and instruction.startswith("/")):
            raise BagFormatError(f"'instruction' must be a topic (/...), got {instruction!r}")
        if task is not None and not (isinstance(task, str) and task.strip()):
            raise BagFormatError(f"'task' must be a non-empty text, got {task!r}")
        fps = _positive(data.get("fps", 10.0), "fps")
        tolerance = data.get("tolerance_ms")
        if tolerance is not None:
            tolerance = _positive(tolerance, "tolerance_ms")
        episodes = data.get("episodes", {"split": "instruction"})
        if not isinstance(episodes, Mapping) or set(episodes) - {"split", "gap_s"}:
            raise BagFormatError(
                f"'episodes' must be {{split: instruction}} or {{split: gap, gap_s: S}}, got {episodes!r}"
            )
        split = episodes.get("split", "instruction")
        gap_s = episodes.get("gap_s")
        if split == "instruction":
            if instruction is None:
                raise BagFormatError("episodes split by instruction need an 'instruction' topic")
            if gap_s is not None:
                raise BagFormatError("'gap_s' is for episodes: {split: gap}")
        elif split == "gap":
            gap_s = _positive(gap_s, "episodes.gap_s")
            if instruction is None and task is None:
                raise BagFormatError("episodes split by gap need an 'instruction' topic or a 'task' text")
        else:
            raise BagFormatError(f"episodes.split must be 'instruction' or 'gap', got {split!r}")
        time = data.get("time", "header")
        if time not in ("header", "receive"):
            raise BagFormatError(f"'time' must be 'header' or 'receive', got {time!r}")
        typestore = data.get("typestore", "humble")
        if typestore not in TYPESTORES:
            raise BagFormatError(f"'typestore' must be one of {list(TYPESTORES)}, got {typestore!r}")
        return cls(
            cameras=dict(cameras), state_topic=state_topic, state_joints=state_joints, action_topic=action_topic,
            action_joints=action_joints, instruction_topic=instruction, task=task, fps=fps, tolerance_ms=tolerance,
            split=split, gap_s=gap_s, time=time, typestore=typestore,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"fps": self.fps}
        if self.tolerance_ms is not None:
            data["tolerance_ms"] = self.tolerance_ms
        data["cameras"] = dict(self.cameras)
        data["state"] = {"topic": self.state_topic, "joints": list(self.state_joints)}
        data["action"] = {"topic": self.action_topic, **({"joints": list(self.action_joints)}
                                                          if self.action_joints else {})}
        if self.instruction_topic is not None:
            data["instruction"] = self.instruction_topic
        if self.task is not None:
            data["task"] = self.task
        data["episodes"] = {"split": self.split, **({"gap_s": self.gap_s} if self.gap_s is not None else {})}
        data["time"], data["typestore"] = self.time, self.typestore
        return data

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _topic_and_joints(value: Any, role: str, require_joints: bool) -> tuple[str, tuple[str, ...]]:
    if not isinstance(value, Mapping) or set(value) - {"topic", "joints"} or "topic" not in value:
        raise BagFormatError(f"{role!r} must be {{topic: /..., joints: [...]}}, got {value!r}")
    topic, joints = value["topic"], value.get("joints")
    if not isinstance(topic, str) or not topic.startswith("/"):
        raise BagFormatError(f"{role}.topic must be a topic (/...), got {topic!r}")
    if joints is None and not require_joints:
        return topic, ()
    if not isinstance(joints, list) or not joints or not all(isinstance(j, str) and j for j in joints):
        raise BagFormatError(f"{role}.joints must be a non-empty list of joint names, got {joints!r}")
    if len(set(joints)) != len(joints):
        raise BagFormatError(f"{role}.joints names a joint twice: {joints}")
    return topic, tuple(joints)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BagFormatError(f"{name!r} must be a positive number, got {value!r}")
    return float(value)


def storage_name(path: Path) -> str:
    if path.is_file():
        return "mcap" if path.suffix == ".mcap" else "sqlite3"
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())
        return str(info["rosbag2_bagfile_information"]["storage_identifier"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "rosbag2"


def deserialize(typestore: Any, raw: bytes | memoryview, msgtype: str, where: str) -> tuple[Any, int]:
    """rosbags' CDR deserialiser, and how many bytes followed the message.

    rosbags' ``deserialize_cdr`` rejects a message followed by more than 3 bytes. A robot's rosbag2
    stores what its rmw serialised: Fast CDR (rmw_fastrtps, rclpy's ``serialize_message``) sizes the
    buffer by its estimate, so a JointState or JointTrajectory may end in tens of bytes that belong to
    no field (and its alignment padding is not zeroed). Such a message is read with the same
    deserialiser without that check: every field of the bag's type is read, and what follows is
    counted, not used."""
    from rosbags.serde import SerdeError

    try:
        return typestore.deserialize_cdr(raw, msgtype), 0
    except SerdeError as exc:
        if "size mismatch" not in str(exc):
            raise BagFormatError(f"{where}: {msgtype} does not deserialize: {exc}") from exc
    msgdef = typestore.get_msgdef(msgtype)
    function = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    message, position = function(raw[4:], 0, msgdef.cls, typestore)
    return message, len(raw) - 4 - position


def nearest(times: npt.NDArray[np.int64], t: int, tolerance: int, lo: int = 0, hi: int | None = None) -> int:
    """Index of the element of sorted ``times[lo:hi]`` nearest ``t`` if within ``tolerance``, else -1: how
    a frame takes the state, action or other camera's message the mapping's tolerance allows."""
    hi = len(times) if hi is None else int(hi)
    lo = int(lo)
    if hi <= lo:
        return -1
    k = int(np.searchsorted(times[lo:hi], t)) + lo
    best, gap = -1, tolerance + 1
    for j in (k - 1, k):
        if lo <= j < hi and abs(int(times[j]) - t) < gap:
            best, gap = j, abs(int(times[j]) - t)
    return best
