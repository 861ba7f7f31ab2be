"""rosbag2 recordings as demonstrations: episodes of frames, state, actions and task from a robot's bag.

Read with rosbags (pure Python, no ROS install): sqlite3 (``.db3``, Humble's default) and MCAP
(Jazzy's and Kilted's), a bag directory (``metadata.yaml``) or one storage file. Message types come
from the bag's own definitions where it has them (MCAP, and sqlite3 from Iron on), else from the
``typestore`` the mapping names (default Humble's).

What is what comes from a YAML bag mapping (``rosbag_format``: cameras, state, action, instruction,
episode split, time source, typestore).

How frames are made, per episode (instruction ``k`` to instruction ``k+1``, or images between gaps): a
grid at ``fps`` from the first image of the first camera; each grid time takes that camera's image
nearest it within half a period, every other camera's image, the joint state and the action nearest it
within the tolerance. A grid time lacking any of them is dropped, and counted by reason; so are
messages that cannot be used (a JointState without every state joint, a ``~/action`` stop command
labelled hold/zero/final/stop/estop, images before the first instruction). Stamps: ``header.stamp``
for images, JointState and JointTrajectory (a zero stamp on the last two means "now": the receive
time), the receive time for String and Float64MultiArray.

Bad input is an error naming the topic and the time (seconds into the bag): a topic the bag lacks or of
another type, stamps going backwards on a topic, an image encoding or compression the node does not
take (``dysl_ros.inputs``), a bag that ends early (truncated) or does not open, an episode shorter than
``min_length`` (the model's action horizon).

Images are decoded exactly as ``dysl_node`` decodes them (``dysl_ros.inputs``), at their own size:
fitting to the model's cameras happens where the frames are used, as for a LeRobot dataset.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from dysl_ros.inputs import (
    CHANNELS,
    VELOCITY_SUFFIX,
    InputRejected,
    decode_compressed_image,
    decode_image,
    parse_instruction,
)
from dysl_ros.training.lerobot_dataset import RecordedEpisode
from dysl_ros.training.rosbag_format import (
    ACTION_TYPES,
    CAMERA_TYPES,
    COMPRESSED_FORMATS,
    IMAGE,
    JOINT_STATE,
    STOP_LABELS,
    STRING,
    BagFormatError,
    BagMapping,
    deserialize,
    is_bag,
    nearest,
    storage_name,
)

if TYPE_CHECKING:
    from dysl_ros.model.observation_spec import ObservationSpec

# Reading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BagEpisode(RecordedEpisode):
    """A RecordedEpisode with where it came from in the bag."""

    stamps_ns: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    """Model camera name -> (T,) the stamp of the image each frame took."""
    frame_ns: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    """(T,) the grid time of each frame."""


@dataclass(frozen=True)
class _Frame:
    t_ns: int
    images: dict[str, int]
    """Camera -> index into that camera's message list."""
    state: npt.NDArray[np.float64]
    action: npt.NDArray[np.float64]


@dataclass(frozen=True)
class EpisodePlan:
    """Where one episode lies in the bag, and the frames it is cut into."""

    index: int
    instruction: str
    begin_ns: int
    """Where the episode begins: its instruction (or its first image, episodes split by gap)."""
    start_ns: int
    """The first frame's time."""
    end_ns: int
    """The last frame's time."""
    frames: list[_Frame]


@dataclass
class _Seen:
    """What one pass over a bag's messages collects (``BagDataset._read_messages``)."""

    current: tuple[str, int]
    """The topic and receive time of the message read last (what a truncated bag's error names)."""
    states: list[tuple[int, npt.NDArray[np.float64]]] = field(default_factory=list)
    actions: list[tuple[int, int, Any]] = field(default_factory=list)
    """(receive ns, stamp ns, message)."""
    instructions: list[tuple[int, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    last: dict[str, int] = field(default_factory=dict)
    """Topic -> the stamp of its last message used."""


@dataclass
class _Camera:
    """One camera's topic in the bag, with the stamp and log time of each of its messages."""

    topic: str
    msgtype: str
    stamps: list[int] = field(default_factory=list)
    logs: list[int] = field(default_factory=list)


class BagDataset:
    """A rosbag2 recording read through a ``BagMapping``: the same interface as ``LeRobotDataset``
    (``episode_indices``, ``episode(i)``, iteration, ``fps``, ``version``), plus what was dropped.

    The constructor reads every message once (images' stamps only) and plans the episodes; ``episode``
    reads and decodes the images of one episode."""

    def __init__(
        self,
        path: str | Path,
        mapping: BagMapping,
        *,
        state_dim: int | None = None,
        action_dim: int | None = None,
        min_length: int = 1,
        progress: bool = False,
    ) -> None:
        self.path = Path(str(path))
        self.mapping = mapping
        self.fps = mapping.fps
        self.min_length = int(min_length)
        self.dropped: Counter[str] = Counter()
        """Grid times left out, by reason."""
        self.skipped: Counter[str] = Counter()
        """Messages not used, by reason."""
        self.trailing: Counter[str] = Counter()
        """Topic -> messages followed by bytes outside their CDR fields (Fast CDR's buffer; ``_deserialize``)."""
        if not self.path.exists():
            raise BagFormatError(f"no bag at {self.path}")
        if not is_bag(self.path):
            raise BagFormatError(
                f"{self.path} is not a rosbag2 recording: a directory with metadata.yaml, or a .db3 or .mcap file"
            )
        for role, joints, dim in (("state", mapping.state_joints, state_dim),
                                  ("action", mapping.action_joints, action_dim)):
            if dim is not None and joints and len(joints) != dim:
                raise BagFormatError(f"the mapping's {role} has {len(joints)} joints {list(joints)}, the model's "
                                     f"{role} is {dim}-D")
        self.state_dim, self.action_dim = state_dim, action_dim
        self.topics: dict[str, dict[str, Any]] = {}
        self.start_ns = 0
        self.storage = ""
        self._cameras: dict[str, _Camera] = {}
        self.plans: list[EpisodePlan] = self._scan(progress)
        self.version = f"rosbag2 ({self.storage})"
        self.episode_indices: list[int] = [p.index for p in self.plans]

    # Scanning ---------------------------------------------------------------------------------

    def open_reader(self) -> Any:
        """An open rosbags ``AnyReader`` of the bag (close it after use)."""
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        store = get_typestore(Stores[f"ROS2_{self.mapping.typestore.upper()}"])
        try:
            reader = AnyReader([self.path], default_typestore=store)
            reader.open()
        except Exception as exc:  # rosbags' reader and storage errors have no common base
            raise BagFormatError(f"{self.path}: the bag does not open (truncated or not a rosbag2?): {exc}") from exc
        return reader

    def where(self, topic: str, t_ns: int) -> str:
        """A topic and a time as errors name them: seconds into the bag, and the absolute stamp."""
        return f"{topic} at {(t_ns - self.start_ns) * 1e-9:.3f} s into the bag (t = {t_ns * 1e-9:.6f})"

    def _connections(self, reader: Any) -> dict[str, Any]:
        """The mapping's topics -> their connections, types checked."""
        have: dict[str, Any] = {}
        for connection in reader.connections:
            have.setdefault(connection.topic, connection)
        wanted: list[tuple[str, str, tuple[str, ...]]] = [
            *((topic, f"camera {name!r}", CAMERA_TYPES) for name, topic in self.mapping.cameras.items()),
            (self.mapping.state_topic, "the state", (JOINT_STATE,)),
            (self.mapping.action_topic, "the action", ACTION_TYPES),
        ]
        if self.mapping.instruction_topic is not None:
            wanted.append((self.mapping.instruction_topic, "the instruction", (STRING,)))
        found = {}
        for topic, role, types in wanted:
            connection = have.get(topic)
            if connection is None:
                listed = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(have.items()))
                raise BagFormatError(f"{self.path}: {role} topic {topic} is not in the bag (its topics: {listed})")
            if connection.msgtype not in types:
                raise BagFormatError(
                    f"{self.path}: {role} topic {topic} carries {connection.msgtype}, expected {' or '.join(types)}"
                )
            found[topic] = connection
        return found

    def _scan(self, progress: bool) -> list[EpisodePlan]:
        mapping = self.mapping
        reader = self.open_reader()
        try:
            self.storage = storage_name(self.path)
            connections = self._connections(reader)
            self.start_ns = int(reader.start_time)
            self._cameras = {
                name: _Camera(topic, connections[topic].msgtype) for name, topic in mapping.cameras.items()
            }
            seen = self._read_messages(reader, connections, progress)
            for topic, connection in connections.items():
                expected = int(connection.msgcount or 0)
                self.topics[topic] = {"type": connection.msgtype, "messages": seen.counts[topic]}
                if expected and seen.counts[topic] < expected:
                    raise BagFormatError(
                        f"{self.path}: {topic} has {seen.counts[topic]} messages, the bag's index says {expected}; "
                        f"it ends after {self.where(*seen.current)} (truncated bag)"
                    )
        finally:
            reader.close()
        for name, camera in self._cameras.items():
            if not camera.stamps:
                raise BagFormatError(f"{self.path}: camera {name!r} topic {camera.topic} has no message")
        if not seen.states:
            raise BagFormatError(f"{self.path}: no usable JointState on {mapping.state_topic} (state joints "
                                 f"{list(mapping.state_joints)})")
        action_times, action_values = self._action_timeline(seen.actions)
        return self._plan(seen.states, action_times, action_values, seen.instructions)

    def _read_messages(self, reader: Any, connections: Mapping[str, Any], progress: bool) -> _Seen:
        """One pass over the mapping's topics: every message checked and sorted into its timeline."""
        from tqdm import tqdm

        seen = _Seen(current=("", self.start_ns))
        bar = tqdm(total=sum(c.msgcount for c in connections.values()) or None, desc="bag: scan", unit="msg",
                   disable=not progress, dynamic_ncols=True)
        try:
            for connection, log_ns, raw in reader.messages(connections=list(connections.values())):
                seen.current = (connection.topic, log_ns)
                seen.counts[connection.topic] += 1
                bar.update(1)
                self._take(reader.typestore, connection, log_ns, raw, seen)
        except BagFormatError:
            raise
        except Exception as exc:  # storage errors mid-file: sqlite3, MCAP, decompression
            raise BagFormatError(
                f"{self.path}: reading stopped after {self.where(*seen.current)}: truncated or corrupt bag ({exc})"
            ) from exc
        finally:
            bar.close()
        return seen

    def _take(self, typestore: Any, connection: Any, log_ns: int, raw: Any, seen: _Seen) -> None:
        """One message: deserialised, its stamp checked against its topic's last, filed by role."""
        mapping, topic = self.mapping, connection.topic
        msg, trailing = deserialize(typestore, raw, connection.msgtype, self.where(topic, log_ns))
        if trailing:
            self.trailing[topic] += 1
        stamp = self._stamp(msg, log_ns, connection.msgtype, topic)
        values = self._state(msg, topic, log_ns) if topic == mapping.state_topic else None
        # Stamps must grow on a topic, among the messages used (a JointState lacking the
        # state joints may come from another driver with its own clock).
        if topic != mapping.state_topic or values is not None:
            if stamp < seen.last.get(topic, -1):
                raise BagFormatError(
                    f"{self.where(topic, log_ns)}: stamp {stamp * 1e-9:.6f} is earlier than the "
                    f"previous message's {seen.last[topic] * 1e-9:.6f} on that topic (unsorted stamps)"
                )
            seen.last[topic] = stamp
        cameras = [name for name, camera_topic in mapping.cameras.items() if camera_topic == topic]
        if cameras:
            self._check_image(msg, connection.msgtype, topic, log_ns)
            for name in cameras:
                self._cameras[name].stamps.append(stamp)
                self._cameras[name].logs.append(log_ns)
        if values is not None:
            seen.states.append((stamp, values))
        if topic == mapping.action_topic:
            seen.actions.append((log_ns, stamp, msg))
        if topic == mapping.instruction_topic:
            try:
                text = parse_instruction(str(msg.data).encode())
            except InputRejected as exc:
                raise BagFormatError(f"{self.where(topic, log_ns)}: {exc}") from exc
            seen.instructions.append((log_ns, text))

    def _stamp(self, msg: Any, log_ns: int, msgtype: str, topic: str) -> int:
        """The message's time: its header stamp (images; JointState/JointTrajectory when set), else the
        receive time."""
        header = getattr(msg, "header", None)
        if self.mapping.time == "receive" or header is None:
            return log_ns
        stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        if stamp <= 0:
            if msgtype in CAMERA_TYPES:
                raise BagFormatError(
                    f"{self.where(topic, log_ns)}: the image's header.stamp is zero (dysl_node rejects unstamped "
                    "images); with `time: receive` in the mapping the bag's receive times are used instead"
                )
            return log_ns  # a zero stamp on a command or state means "now"
        return stamp

    def _check_image(self, msg: Any, msgtype: str, topic: str, log_ns: int) -> None:
        if msgtype == IMAGE:
            if msg.encoding not in CHANNELS:
                raise BagFormatError(
                    f"{self.where(topic, log_ns)}: image encoding {msg.encoding!r} is not one dysl_node takes "
                    f"({', '.join(sorted(CHANNELS))})"
                )
        else:
            text = str(msg.format).lower()
            if "compresseddepth" in text or not any(f in text for f in COMPRESSED_FORMATS):
                raise BagFormatError(
                    f"{self.where(topic, log_ns)}: compressed image format {msg.format!r} is not one dysl_node takes "
                    "(JPEG or PNG, as image_transport's compressed plugin sends them)"
                )

    def _state(self, msg: Any, topic: str, log_ns: int) -> npt.NDArray[np.float64] | None:
        names = list(msg.name)
        index = {name: i for i, name in enumerate(names)}
        wanted = self.mapping.state_joints
        joints = [name.removesuffix(VELOCITY_SUFFIX) for name in wanted]
        if any(j not in index for j in joints):
            self.skipped["joint_states without every state joint"] += 1
            return None
        values = []
        for name, joint in zip(wanted, joints, strict=True):
            source = msg.velocity if name.endswith(VELOCITY_SUFFIX) else msg.position
            if len(source) != len(names):
                self.skipped["joint_states with fewer positions/velocities than names"] += 1
                return None
            values.append(float(source[index[joint]]))
        array = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            self.skipped["joint_states with NaN or inf"] += 1
            return None
        return array

    def _action_timeline(
        self, messages: list[tuple[int, int, Any]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(times, values) of the commanded actions. A JointTrajectory's points count from its stamp
        (+ time_from_start) until the next trajectory's stamp replaces them; a Float64MultiArray is
        one action at its receive time."""
        topic = self.mapping.action_topic
        samples: list[tuple[int, npt.NDArray[np.float64]]] = []
        width = len(self.mapping.action_joints) or None
        trajectories: list[tuple[int, list[tuple[int, npt.NDArray[np.float64]]]]] = []
        for log_ns, stamp, msg in messages:
            if hasattr(msg, "points"):
                points = self._trajectory_points(msg, stamp, topic, log_ns)
                if points:
                    trajectories.append((stamp, points))
                continue
            dims = list(msg.layout.dim)
            label = str(dims[0].label) if dims else ""
            if label in STOP_LABELS:
                self.skipped[f"action messages labelled {label!r} (no policy action)"] += 1
                continue
            values = np.asarray(msg.data, dtype=np.float64)
            samples.append((log_ns, values))
        trajectories.sort(key=lambda item: item[0])
        for number, (_, points) in enumerate(trajectories):
            until = trajectories[number + 1][0] if number + 1 < len(trajectories) else None
            kept = [(t, v) for t, v in points if until is None or t < until]
            self.skipped["trajectory points replaced by a newer trajectory"] += len(points) - len(kept)
            samples += kept
        if not samples:
            raise BagFormatError(f"{self.path}: no usable action on {topic}")
        samples.sort(key=lambda item: item[0])
        width = width or len(samples[0][1])
        for t, values in samples:
            if len(values) != width:
                raise BagFormatError(
                    f"{self.where(topic, t)}: the action has {len(values)} values, expected {width} (the first "
                    "action's, or the mapping's action joints)"
                )
        if self.action_dim is not None and width != self.action_dim:
            raise BagFormatError(f"{topic}: actions have {width} values, the model's action is {self.action_dim}-D")
        times = np.asarray([t for t, _ in samples], dtype=np.int64)
        return times, np.stack([v for _, v in samples])

    def _trajectory_points(
        self, msg: Any, stamp: int, topic: str, log_ns: int
    ) -> list[tuple[int, npt.NDArray[np.float64]]]:
        names = list(msg.joint_names)
        joints = self.mapping.action_joints
        if joints:
            index = {name: i for i, name in enumerate(names)}
            missing = [j for j in joints if j not in index]
            if missing:
                self.skipped["trajectories without every action joint"] += 1
                return []
            order = [index[j] for j in joints]
        else:
            order = list(range(len(names)))
        points = []
        for point in msg.points:
            positions = np.asarray(point.positions, dtype=np.float64)
            if len(positions) != len(names):
                self.skipped["trajectory points without a position per joint"] += 1
                continue
            offset = int(point.time_from_start.sec) * 1_000_000_000 + int(point.time_from_start.nanosec)
            points.append((stamp + offset, positions[order]))
        return points

    # Planning ---------------------------------------------------------------------------------

    def _episode_bounds(self, instructions: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
        """(from ns, to ns, instruction) of each episode, before frames are placed."""
        mapping = self.mapping
        if mapping.split == "instruction":
            if not instructions:
                raise BagFormatError(
                    f"{self.path}: no instruction on {mapping.instruction_topic}; episodes start at instructions "
                    "(or split them by a gap: episodes: {split: gap, gap_s: S})"
                )
            bounds = []
            for number, (t, text) in enumerate(instructions):
                end = instructions[number + 1][0] if number + 1 < len(instructions) else 2**63 - 1
                bounds.append((t, end, text))
            pacing = self._cameras[next(iter(mapping.cameras))]
            early = sum(1 for s in pacing.stamps if s < instructions[0][0])
            if early:
                self.dropped["images before the first instruction"] += early
            return bounds
        assert mapping.gap_s is not None
        stamps = np.asarray(self._cameras[next(iter(mapping.cameras))].stamps, dtype=np.int64)
        cuts = np.flatnonzero(np.diff(stamps) > int(mapping.gap_s * 1e9)) + 1
        starts = [0, *cuts.tolist()]
        ends = [*cuts.tolist(), len(stamps)]
        bounds = []
        for first, stop in zip(starts, ends, strict=True):
            begin = int(stamps[first])
            before = [text for t, text in instructions if t <= begin]
            task = before[-1] if before else mapping.task
            if task is None:
                raise BagFormatError(
                    f"{self.where(self._cameras[next(iter(mapping.cameras))].topic, begin)}: an episode starts "
                    f"with no instruction before it on {mapping.instruction_topic} (give 'task' in the mapping)"
                )
            bounds.append((begin, int(stamps[stop - 1]) + 1, task))
        return bounds

    def _plan(
        self,
        states: list[tuple[int, npt.NDArray[np.float64]]],
        action_times: npt.NDArray[np.int64],
        action_values: npt.NDArray[np.float64],
        instructions: list[tuple[int, str]],
    ) -> list[EpisodePlan]:
        mapping = self.mapping
        period, tolerance = mapping.period_ns, mapping.tolerance_ns
        state_times = np.asarray([t for t, _ in states], dtype=np.int64)
        state_values = np.stack([v for _, v in states])
        names = list(mapping.cameras)
        pacing = np.asarray(self._cameras[names[0]].stamps, dtype=np.int64)
        others = {name: np.asarray(self._cameras[name].stamps, dtype=np.int64) for name in names[1:]}
        plans: list[EpisodePlan] = []
        for begin, end, text in self._episode_bounds(instructions):
            inside = np.flatnonzero((pacing >= begin) & (pacing < end))
            if len(inside) == 0:
                continue  # an instruction with no image after it: nothing to learn from
            first, last = int(pacing[inside[0]]), int(pacing[inside[-1]])
            frames = []
            for k in range((last - first) // period + 1):
                t = first + k * period
                chosen = {names[0]: nearest(pacing, t, period // 2, inside[0], inside[-1] + 1)}
                for name, stamps in others.items():
                    chosen[name] = nearest(stamps, t, tolerance)
                missing = [name for name, i in chosen.items() if i < 0]
                state = nearest(state_times, t, tolerance)
                action = nearest(action_times, t, tolerance)
                if missing:
                    self.dropped[f"no image of camera {missing[0]!r} near the frame"] += 1
                elif state < 0:
                    self.dropped["no joint state near the frame"] += 1
                elif action < 0:
                    self.dropped["no action near the frame"] += 1
                else:
                    frames.append(_Frame(t, chosen, state_values[state], action_values[action]))
            index = len(plans)
            if len(frames) < max(self.min_length, 1):
                where = self.where(self._cameras[names[0]].topic, first)
                raise BagFormatError(
                    f"episode {index} ({text!r}, from {where}): {len(frames)} frames at {mapping.fps:g} fps, shorter "
                    f"than {self.min_length} (the model's action horizon)"
                )
            plans.append(EpisodePlan(index, text, begin, frames[0].t_ns, frames[-1].t_ns, frames))
        if not plans:
            raise BagFormatError(f"{self.path}: no episode has a frame (images of {names[0]!r} after an instruction)")
        return plans

    # Episodes ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.plans)

    def __iter__(self) -> Iterator[BagEpisode]:
        for index in self.episode_indices:
            yield self.episode(index)

    @property
    def frames(self) -> int:
        return sum(len(p.frames) for p in self.plans)

    def episode(self, index: int) -> BagEpisode:
        """Episode ``index``: its images read from the bag and decoded as dysl_node decodes them."""
        if not 0 <= index < len(self.plans):
            raise KeyError(f"episode {index} is not in {self.path} (its {len(self.plans)} episodes: 0..{len(self)-1})")
        plan = self.plans[index]
        wanted: dict[str, dict[int, list[int]]] = {}  # topic -> camera message index -> frame numbers
        low, high = 2**63 - 1, 0
        for number, frame in enumerate(plan.frames):
            for name, i in frame.images.items():
                camera = self._cameras[name]
                wanted.setdefault(name, {}).setdefault(i, []).append(number)
                low, high = min(low, camera.logs[i]), max(high, camera.logs[i])
        decoded: dict[str, list[npt.NDArray[np.uint8] | None]] = {
            name: [None] * len(plan.frames) for name in self.mapping.cameras
        }
        positions = {name: self._log_positions(name, low) for name in self.mapping.cameras}
        reader = self.open_reader()
        try:
            by_topic = {c.topic: c for c in reader.connections}
            connections = [by_topic[topic] for topic in dict.fromkeys(self.mapping.cameras.values())]
            current = ("", low)
            try:
                for connection, log_ns, raw in reader.messages(connections=connections, start=low, stop=high + 1):
                    current = (connection.topic, log_ns)
                    for name, topic in self.mapping.cameras.items():
                        if topic != connection.topic:
                            continue
                        i = positions[name]
                        positions[name] += 1
                        if i not in wanted[name]:
                            continue
                        msg, _ = deserialize(reader.typestore, raw, connection.msgtype, self.where(topic, log_ns))
                        image = self._decode(msg, connection.msgtype, topic, log_ns)
                        for number in wanted[name][i]:
                            decoded[name][number] = image
            except BagFormatError:
                raise
            except Exception as exc:
                raise BagFormatError(
                    f"{self.path}: reading stopped after {self.where(*current)}: truncated or corrupt bag ({exc})"
                ) from exc
        finally:
            reader.close()
        images = {}
        for name, frames in decoded.items():
            lost = [n for n, f in enumerate(frames) if f is None]
            if lost:
                raise BagFormatError(f"{self.path}: episode {index}: {len(lost)} image(s) of {name!r} could not be "
                                     "read back (the bag changed since it was scanned?)")
            shapes = {f.shape for f in frames if f is not None}
            if len(shapes) != 1:
                raise BagFormatError(f"{self.mapping.cameras[name]}: episode {index} has images of several sizes "
                                     f"{sorted(shapes)}")
            images[name] = np.stack([f for f in frames if f is not None])
        return BagEpisode(
            index=index,
            instruction=plan.instruction,
            images=images,
            state=np.stack([f.state for f in plan.frames]).astype(np.float32),
            actions=np.stack([f.action for f in plan.frames]).astype(np.float32),
            fps=self.fps,
            stamps_ns={
                name: np.asarray([self._cameras[name].stamps[f.images[name]] for f in plan.frames], np.int64)
                for name in self.mapping.cameras
            },
            frame_ns=np.asarray([f.t_ns for f in plan.frames], np.int64),
        )

    def _log_positions(self, name: str, low: int) -> int:
        """The index of the camera's first message received at or after ``low`` (reading starts there)."""
        return int(np.searchsorted(np.asarray(self._cameras[name].logs, dtype=np.int64), low, side="left"))

    def _decode(self, msg: Any, msgtype: str, topic: str, log_ns: int) -> npt.NDArray[np.uint8]:
        try:
            if msgtype == IMAGE:
                return decode_image(msg.encoding, int(msg.height), int(msg.width), int(msg.step), msg.data, None)
            return decode_compressed_image(str(msg.format), msg.data, None)
        except InputRejected as exc:
            raise BagFormatError(f"{self.where(topic, log_ns)}: {exc}") from exc

    # Reports ----------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What was read, made and left out (``dysl_train to-lerobot --json``)."""
        return {
            "bag": str(self.path),
            "storage": self.storage,
            "fps": self.fps,
            "tolerance_ms": self.mapping.tolerance_ns / 1e6,
            "topics": self.topics,
            "episodes": [
                {"index": p.index, "instruction": p.instruction, "frames": len(p.frames),
                 "start_s": round((p.start_ns - self.start_ns) * 1e-9, 6),
                 "end_s": round((p.end_ns - self.start_ns) * 1e-9, 6)}
                for p in self.plans
            ],
            "frames": self.frames,
            "dropped_frames": dict(self.dropped),
            "skipped_messages": dict(self.skipped),
            "messages_with_trailing_bytes": dict(self.trailing),
        }

    def summary_lines(self) -> list[str]:
        lines = [
            f"{self.path} ({self.storage}): {len(self.plans)} episode(s), {self.frames} frames at {self.fps:g} fps, "
            f"state/action/cameras within {self.mapping.tolerance_ns / 1e6:g} ms of each frame"
        ]
        lines += [f"  episode {p.index}: {len(p.frames)} frames, {(p.start_ns - self.start_ns) * 1e-9:.3f}.."
                  f"{(p.end_ns - self.start_ns) * 1e-9:.3f} s, {p.instruction!r}" for p in self.plans]
        for what, counter in (("dropped frames", self.dropped), ("unused messages", self.skipped)):
            if counter:
                lines.append(f"  {what}: " + "; ".join(f"{n} {reason}" for reason, n in counter.most_common()))
            else:
                lines.append(f"  {what}: none")
        if self.trailing:
            lines.append("  read despite bytes after their CDR fields (Fast CDR's buffer): "
                         + "; ".join(f"{n} on {topic}" for topic, n in self.trailing.most_common()))
        return lines


def open_bag(
    path: str | Path, mapping_file: str | Path | None, spec: ObservationSpec | None = None, min_length: int = 1,
    progress: bool = False,
) -> BagDataset:
    """The bag at ``path`` read through ``mapping_file`` for a model (``spec``: its cameras must be mapped,
    its state and action sizes match, no episode shorter than its horizon)."""
    if mapping_file is None:
        raise BagFormatError(
            f"{path} is a rosbag2 recording: give --mapping FILE, a YAML bag mapping of topics to the model's "
            "cameras, state and action (docs/bring_your_model.md)"
        )
    mapping = BagMapping.load(mapping_file)
    if spec is None:
        return BagDataset(path, mapping, min_length=min_length, progress=progress)
    cameras = [c.name for c in spec.cameras]
    missing = [name for name in cameras if name not in mapping.cameras]
    if missing:
        raise BagFormatError(
            f"{mapping_file}: the model's camera(s) {missing} have no topic (the model's cameras: {cameras}; the "
            f"mapping's: {sorted(mapping.cameras)})"
        )
    # Only the model's cameras, in the mapping's order (its first camera paces the frames).
    used = {name: topic for name, topic in mapping.cameras.items() if name in cameras}
    mapping = dataclasses.replace(mapping, cameras=used)
    return BagDataset(
        path, mapping, state_dim=spec.state_dim, action_dim=spec.action_dim,
        min_length=max(min_length, spec.horizon), progress=progress,
    )


def bag_to_lerobot(
    dataset: BagDataset, out: str | Path, *, codec: str = "h264", progress: bool = False,
    robot_type: str | None = None,
) -> Path:
    """``dataset``'s episodes as a LeRobotDataset v3.0 at ``out`` (with its dysl_mapping.yaml): camera
    ``c`` as ``observation.images.c``, the state and actions named after the mapping's joints."""
    from tqdm import tqdm

    from dysl_ros.training.lerobot_writer import write_lerobot_dataset

    episodes: Sequence[int] = dataset.episode_indices
    recorded = (dataset.episode(i) for i in tqdm(episodes, desc="bag: episodes", unit="ep", disable=not progress,
                                                dynamic_ncols=True))
    first = dataset.plans[0].frames[0]
    state_names = list(dataset.mapping.state_joints)
    action_names = list(dataset.mapping.action_joints) or [f"action_{i}" for i in range(len(first.action))]
    return write_lerobot_dataset(
        out, recorded, fps=dataset.fps,
        camera_keys={name: f"observation.images.{name}" for name in dataset.mapping.cameras},
        state_names=state_names, action_names=action_names, codec=codec, robot_type=robot_type,
    )
