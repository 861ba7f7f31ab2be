"""Write a LeRobotDataset v3.0 (``lerobot_dataset`` has the layout): one file per kind, H.264 or AV1
video with a keyframe at every episode start, or PNG images in the data parquet; stats and the
``dysl_mapping.yaml`` that reads it back. Also our Meta-World demonstrations as such a dataset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import av
import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from dysl_ros.training.lerobot_dataset import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    CODECS,
    DATA_PATH,
    EPISODES_PATH,
    INFO_PATH,
    MAPPING_FILE,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    DatasetMapping,
    LeRobotFormatError,
    RecordedEpisode,
)

_ENCODER_OPTIONS = {
    # Near-transparent quality: a lossy round trip must stay within a few grey levels.
    "h264": {"crf": "10", "preset": "medium"},
    "av1": {"crf": "12", "preset": "8"},
}
_FEATURE_CODEC_NAMES = {"h264": "h264", "av1": "av1"}
_INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


class _Stats:
    """Running min/max/mean/std per feature element, exact (sums in float64), mergeable."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: npt.NDArray[np.float64] | None = None
        self.sumsq: npt.NDArray[np.float64] | None = None
        self.min: npt.NDArray[np.float64] | None = None
        self.max: npt.NDArray[np.float64] | None = None

    def add(self, values: npt.NDArray[Any], axes: tuple[int, ...] = (0,), count: int | None = None) -> None:
        v = np.asarray(values, dtype=np.float64)
        parts = (v.sum(axis=axes), (v * v).sum(axis=axes), v.min(axis=axes), v.max(axis=axes))
        self._merge(int(v.shape[0]) if count is None else count, *parts)

    def merge(self, other: _Stats) -> None:
        if other.sum is not None and other.sumsq is not None and other.min is not None and other.max is not None:
            self._merge(other.count, other.sum, other.sumsq, other.min, other.max)

    def _merge(self, count: int, total: Any, sumsq: Any, low: Any, high: Any) -> None:
        if self.sum is None or self.sumsq is None or self.min is None or self.max is None:
            self.sum, self.sumsq, self.min, self.max = total, sumsq, low, high
        else:
            self.sum, self.sumsq = self.sum + total, self.sumsq + sumsq
            self.min, self.max = np.minimum(self.min, low), np.maximum(self.max, high)
        self.count += count

    def as_dict(self, elements: int, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        assert self.sum is not None and self.sumsq is not None and self.min is not None and self.max is not None
        mean = self.sum / elements
        std = np.sqrt(np.maximum(self.sumsq / elements - mean * mean, 0.0))

        def out(a: npt.NDArray[np.float64]) -> Any:
            return (a.reshape(shape) if shape else np.atleast_1d(a)).tolist()

        return {"min": out(self.min), "max": out(self.max), "mean": out(mean), "std": out(std), "count": [self.count]}


class _VideoWriter:
    """One camera's mp4: every episode's frames back to back, a keyframe at each episode start."""

    def __init__(self, path: Path, codec: str, fps: float, height: int, width: int) -> None:
        self.path = path
        self.height, self.width = height, width
        # libx264 codes yuv420p only at even sizes; SVT-AV1 pads internally and keeps the true size.
        self.pad = (height % 2, width % 2) if codec == "h264" else (0, 0)
        if codec == "av1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration per file otherwise
        path.parent.mkdir(parents=True, exist_ok=True)
        # faststart: the index precedes the frames, so a cut file still opens and shows what it lost.
        self.container = av.open(str(path), "w", container_options={"movflags": "faststart"})
        encoder = CODECS[codec]
        assert encoder is not None
        stream = self.container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1_000_000))
        assert isinstance(stream, av.VideoStream)
        self.stream = stream
        self.stream.width, self.stream.height = width + self.pad[1], height + self.pad[0]
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.gop_size = max(1, round(fps))  # a keyframe a second: cheap random access
        self.stream.options = dict(_ENCODER_OPTIONS[codec])
        self.frames = 0

    def add_episode(self, images: npt.NDArray[np.uint8]) -> tuple[float, int]:
        """Append an episode's frames; returns the index of its first frame and how many."""
        first = self.frames
        for number, image in enumerate(images):
            if any(self.pad):
                image = np.pad(image, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            if number == 0:
                frame.pict_type = av.video.frame.PictureType.I
            self.container.mux(self.stream.encode(frame))
            self.frames += 1
        return first, len(images)

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError):
            pass


def write_lerobot_dataset(
    root: str | Path,
    episodes: Iterable[RecordedEpisode],
    *,
    fps: float,
    camera_keys: Mapping[str, str] | None = None,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    codec: str = "h264",
    robot_type: str | None = None,
) -> Path:
    """Write ``episodes`` as a LeRobotDataset v3.0 at ``root`` (absent or empty) and return ``root``.

    Episodes are renumbered 0..N-1 in the order given (LeRobot looks its episodes table up by position);
    tasks are their instructions. Also writes ``root/dysl_mapping.yaml``: the ``DatasetMapping`` that
    reads the cameras back under their names. Everything is written to a temporary sibling and renamed
    into place, so a failure leaves nothing half-written at ``root``.
    """
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: choose from {list(CODECS)}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory: choose another output")
    root.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would stay on the renamed dataset; mkdir honours the umask.
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write(tmp, episodes, fps, camera_keys, state_names, action_names, codec, robot_type)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _write(
    root: Path,
    episodes: Iterable[RecordedEpisode],
    fps: float,
    camera_keys: Mapping[str, str] | None,
    state_names: Sequence[str] | None,
    action_names: Sequence[str] | None,
    codec: str,
    robot_type: str | None,
) -> None:
    writer = _DatasetWriter(root, fps, codec, camera_keys, state_names, action_names)
    try:
        for number, episode in enumerate(episodes):
            writer.add(number, episode)
        if writer.layout is None:
            raise ValueError("no episodes to write")
        writer.close_files()
    finally:
        writer.abort()
    writer.write_meta(robot_type)


class _DatasetWriter:
    """One dataset being written: the data parquet and the videos grow an episode at a time; the
    episodes table, tasks, stats, info and mapping are written once every episode is in."""

    def __init__(
        self, root: Path, fps: float, codec: str, camera_keys: Mapping[str, str] | None,
        state_names: Sequence[str] | None, action_names: Sequence[str] | None,
    ) -> None:
        self.root, self.fps, self.codec = root, fps, codec
        self.names = (camera_keys, state_names, action_names)
        self.layout: _Layout | None = None
        self.videos: dict[str, _VideoWriter] = {}
        self.data_writer: Any = None
        self.episode_rows: list[dict[str, Any]] = []
        self.tasks: dict[str, int] = {}
        self.totals: dict[str, _Stats] = {}
        self.frames = 0

    def add(self, number: int, episode: RecordedEpisode) -> None:
        """Episode ``number``'s rows, frames, episodes-table row and stats."""
        layout = self._layout(episode)
        steps = layout.check(episode, number)
        columns = self._columns(layout, episode, number, steps)
        row: dict[str, Any] = {
            "episode_index": number,
            "tasks": [episode.instruction],
            "length": steps,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + steps,
        }
        stats = {
            layout.state_key: _stats_of(episode.state),
            layout.action_key: _stats_of(episode.actions),
            **{name: _stats_of(columns[name].to_numpy()[:, None]) for name in _INDEX_COLUMNS},
        }
        for name, key in layout.keys.items():
            images = episode.images[name]
            stats[key] = _image_stats(images)
            if self.codec == "images":
                columns[key] = pa.array([{"bytes": _png(image), "path": None} for image in images], _IMAGE_STRUCT)
            else:
                first, count = self.videos[name].add_episode(images)
                row[f"videos/{key}/chunk_index"] = 0
                row[f"videos/{key}/file_index"] = 0
                row[f"videos/{key}/from_timestamp"] = first / self.fps
                row[f"videos/{key}/to_timestamp"] = (first + count) / self.fps
        self._write_rows(pa.table(columns))
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        for key, value in stats.items():
            shape = (3, 1, 1) if key in layout.keys.values() else None
            pixels = steps * layout.pixels(key)
            for stat, numbers in value.as_dict(pixels if shape else value.count, shape).items():
                row[f"stats/{key}/{stat}"] = numbers
            self.totals.setdefault(key, _Stats()).merge(value)
        self.episode_rows.append(row)
        self.frames += steps

    def _layout(self, episode: RecordedEpisode) -> _Layout:
        """The layout the first episode sets (and its video files), checked against the later ones."""
        if self.layout is None:
            self.layout = _Layout.of(episode, *self.names)
            if self.codec != "images":
                for name, key in self.layout.keys.items():
                    height, width = self.layout.sizes[name]
                    path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                    self.videos[name] = _VideoWriter(path, self.codec, self.fps, height, width)
        return self.layout

    def _columns(self, layout: _Layout, episode: RecordedEpisode, number: int, steps: int) -> dict[str, Any]:
        """The data parquet's numeric columns of one episode."""
        task_index = self.tasks.setdefault(episode.instruction, len(self.tasks))
        frame_index = np.arange(steps, dtype=np.int64)
        return {
            layout.state_key: _fixed_list(episode.state, layout.state_dim),
            layout.action_key: _fixed_list(episode.actions, layout.action_dim),
            "timestamp": pa.array((frame_index / self.fps).astype(np.float32)),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(steps, number, np.int64)),
            "index": pa.array(frame_index + self.frames),
            "task_index": pa.array(np.full(steps, task_index, np.int64)),
        }

    def _write_rows(self, table: Any) -> None:
        if self.data_writer is None:
            path = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.data_writer = pq.ParquetWriter(str(path), table.schema, compression="snappy")
        self.data_writer.write_table(table)

    def close_files(self) -> None:
        """Every video finished (its trailer written)."""
        for video in self.videos.values():
            video.close()
        self.videos.clear()

    def abort(self) -> None:
        """Whatever is still open closed: videos left unfinished, the data parquet complete."""
        for video in self.videos.values():
            video.abort()
        self.videos.clear()
        if self.data_writer is not None:
            self.data_writer.close()
            self.data_writer = None

    def write_meta(self, robot_type: str | None) -> None:
        """The episodes table, tasks, stats, info.json and the mapping that reads the cameras back."""
        layout = self.layout
        assert layout is not None
        root = self.root
        episodes = pa.Table.from_pylist(self.episode_rows)
        _write_parquet(root / EPISODES_PATH.format(chunk_index=0, file_index=0), episodes)
        _write_tasks(root / TASKS_PATH, self.tasks)
        stats_json = {}
        for key, value in self.totals.items():
            image = key in layout.keys.values()
            stats_json[key] = value.as_dict(
                value.count * layout.pixels(key) if image else value.count, (3, 1, 1) if image else None
            )
        _write_json(root / STATS_PATH, stats_json)
        info = layout.info(self.fps, self.codec, robot_type, len(self.episode_rows), self.frames, len(self.tasks))
        _write_json(root / INFO_PATH, info)
        DatasetMapping(cameras=dict(layout.keys), state=layout.state_key, action=layout.action_key).save(
            root / MAPPING_FILE
        )


@dataclass
class _Layout:
    """The feature layout the first episode sets; every later episode must match it."""

    keys: dict[str, str]
    """Camera name -> feature key."""
    sizes: dict[str, tuple[int, int]]
    state_dim: int
    action_dim: int
    state_names: list[str]
    action_names: list[str]
    state_key: str = "observation.state"
    action_key: str = "action"

    @classmethod
    def of(
        cls,
        episode: RecordedEpisode,
        camera_keys: Mapping[str, str] | None,
        state_names: Sequence[str] | None,
        action_names: Sequence[str] | None,
    ) -> _Layout:
        keys = {}
        for name in episode.images:
            if camera_keys is not None and name not in camera_keys:
                raise ValueError(f"camera {name!r} has no feature key in camera_keys {dict(camera_keys)}")
            keys[name] = camera_keys[name] if camera_keys is not None else f"observation.images.{name}"
        reserved = {"observation.state", "action", *_INDEX_COLUMNS}
        for name, key in keys.items():
            if "/" in key or key in reserved or list(keys.values()).count(key) > 1:
                raise ValueError(
                    f"camera {name!r}: feature key {key!r} must be unique, without '/', not one of {sorted(reserved)}"
                )
        sizes = {}
        for name, images in episode.images.items():
            if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
                raise LeRobotFormatError(f"episode 0 camera {name!r}: images must be (T, H, W, 3) uint8")
            sizes[name] = (int(images.shape[1]), int(images.shape[2]))
        state_dim = int(np.shape(episode.state)[-1]) if np.ndim(episode.state) == 2 else -1
        action_dim = int(np.shape(episode.actions)[-1]) if np.ndim(episode.actions) == 2 else -1
        if state_dim < 1 or action_dim < 1:
            raise LeRobotFormatError(
                f"episode 0: state and actions must be (T, S) and (T, A) arrays, got shapes "
                f"{np.shape(episode.state)} and {np.shape(episode.actions)}"
            )
        names = []
        for role, given, dim in (("state", state_names, state_dim), ("action", action_names, action_dim)):
            listed = list(given) if given is not None else [f"{role}_{i}" for i in range(dim)]
            if len(listed) != dim:
                raise ValueError(f"{len(listed)} {role} names {listed} for {dim}-D {role}s")
            names.append(listed)
        return cls(keys, sizes, state_dim, action_dim, names[0], names[1])

    def check(self, episode: RecordedEpisode, number: int) -> int:
        where = f"episode {number} (index {episode.index}, {episode.instruction!r})"
        steps = int(np.shape(episode.actions)[0]) if np.ndim(episode.actions) == 2 else 0
        if steps < 1:
            raise LeRobotFormatError(
                f"{where}: needs at least one step, actions have shape {np.shape(episode.actions)}"
            )
        if not isinstance(episode.instruction, str) or not episode.instruction:
            raise LeRobotFormatError(f"{where}: the instruction (its task) must be a non-empty string")
        for role, array, dim in (
            ("state", episode.state, self.state_dim),
            ("actions", episode.actions, self.action_dim),
        ):
            if not isinstance(array, np.ndarray) or array.shape != (steps, dim):
                raise LeRobotFormatError(f"{where}: {role} has shape {np.shape(array)}, expected ({steps}, {dim})")
            bad = np.argwhere(~np.isfinite(array))
            if len(bad):
                raise LeRobotFormatError(f"{where}: {role} is not finite at frame {int(bad[0][0])}")
        if set(episode.images) != set(self.keys):
            raise LeRobotFormatError(
                f"{where}: cameras {sorted(episode.images)}, the first episode had {sorted(self.keys)}"
            )
        for name, (height, width) in self.sizes.items():
            images = episode.images[name]
            if (
                not isinstance(images, np.ndarray)
                or images.dtype != np.uint8
                or images.shape != (steps, height, width, 3)
            ):
                raise LeRobotFormatError(
                    f"{where}: camera {name!r} images are {np.shape(images)} {getattr(images, 'dtype', '')}, "
                    f"expected ({steps}, {height}, {width}, 3) uint8"
                )
        return steps

    def pixels(self, key: str) -> int:
        for name, camera_key in self.keys.items():
            if camera_key == key:
                return self.sizes[name][0] * self.sizes[name][1]
        return 1

    def info(
        self, fps: float, codec: str, robot_type: str | None, episodes: int, frames: int, tasks: int
    ) -> dict[str, Any]:
        features: dict[str, Any] = {}
        for name, key in self.keys.items():
            height, width = self.sizes[name]
            feature: dict[str, Any] = {
                "dtype": "image" if codec == "images" else "video",
                "shape": [height, width, 3],
                "names": ["height", "width", "channels"],
            }
            if codec != "images":
                pad = (height % 2, width % 2) if codec == "h264" else (0, 0)
                feature["info"] = {
                    "video.height": height + pad[0],
                    "video.width": width + pad[1],
                    "video.codec": _FEATURE_CODEC_NAMES[codec],
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": _json_number(fps),
                    "video.channels": 3,
                    "has_audio": False,
                }
            features[key] = feature
        features[self.state_key] = {"dtype": "float32", "shape": [self.state_dim], "names": self.state_names}
        features[self.action_key] = {"dtype": "float32", "shape": [self.action_dim], "names": self.action_names}
        features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for name in ("frame_index", "episode_index", "index", "task_index"):
            features[name] = {"dtype": "int64", "shape": [1], "names": None}
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": episodes,
            "total_frames": frames,
            "total_tasks": tasks,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": _json_number(fps),
            "splits": {"train": f"0:{episodes}"},
            "data_path": DATA_PATH,
            "video_path": None if codec == "images" else VIDEO_PATH,
            "features": features,
        }


def _image_stats(images: npt.NDArray[np.uint8]) -> _Stats:
    """Per-channel stats in [0, 1] (LeRobot's convention), a few frames at a time to bound memory."""
    stats = _Stats()
    for start in range(0, len(images), 16):
        block = images[start : start + 16]
        stats.add(block.reshape(-1, 3) / 255.0, count=len(block))
    return stats


def _stats_of(values: npt.NDArray[Any]) -> _Stats:
    stats = _Stats()
    stats.add(values)
    return stats


def _fixed_list(matrix: npt.NDArray[np.float32], dim: int) -> Any:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def _png(image: npt.NDArray[np.uint8]) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {image.shape}")
    return bytes(encoded.tobytes())


def _write_tasks(path: Path, tasks: Mapping[str, int]) -> None:
    """tasks.parquet as pandas (and so LeRobot) reads it: the task text is the index, named "task"."""
    table = pa.table(
        {"task_index": pa.array(list(tasks.values()), pa.int64()), "task": pa.array(list(tasks), pa.string())}
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    _write_parquet(path, table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}))


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)



# Files --------------------------------------------------------------------------------------------


def _write_parquet(path: Path, table: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path), compression="snappy")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")



# Meta-World demonstrations ------------------------------------------------------------------------


def demos_to_lerobot(
    demo_dirs: str | Path | Sequence[str | Path], out: str | Path, *, codec: str = "h264", fps: float = 20.0
) -> Path:
    """Our Meta-World demonstrations (``dysl_train demos``) -> a LeRobotDataset v3.0 at ``out``.

    Camera "image", the 4-D hand/gripper proprio as observation.state, the 4-D expert actions; tasks
    are the episodes' instructions. Meta-World's privileged states and success flags are not carried.
    """
    from dysl_ros.training.demos import load_demo_dirs

    demos = load_demo_dirs(demo_dirs)
    if not demos.episodes:
        raise LeRobotFormatError(f"{demo_dirs} holds no demonstration episodes")
    recorded = (
        RecordedEpisode(
            index=number,
            instruction=e.instruction,
            images={"image": e.images},
            state=e.proprio,
            actions=e.actions,
            fps=fps,
        )
        for number, e in enumerate(demos.episodes)
    )
    return write_lerobot_dataset(
        out,
        recorded,
        fps=fps,
        camera_keys={"image": "observation.images.image"},
        state_names=("hand_x", "hand_y", "hand_z", "gripper"),
        action_names=("hand_dx", "hand_dy", "hand_dz", "gripper"),
        codec=codec,
        robot_type="sawyer",
    )
