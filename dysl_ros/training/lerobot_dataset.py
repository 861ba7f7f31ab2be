"""LeRobotDataset, the format: its layout, names and limits, the mapping of its features to a model's
inputs, and the episode both sides pass (``RecordedEpisode``). ``lerobot_reader`` reads v3.0 (and
v2.1/v2.0), ``lerobot_writer`` writes v3.0.

Read and written with pyarrow and PyAV only, never the ``lerobot`` package (its torch, datasets and
hub dependencies are not wanted on a robot). The v3.0 layout::

    <root>/meta/info.json           codebase_version, fps, features (dtype, shape, names), data_path and
                                    video_path templates, chunks_size, totals
    <root>/meta/tasks.parquet       task text (pandas index "task") -> task_index
    <root>/meta/episodes/chunk-XXX/file-YYY.parquet
                                    one row per episode: episode_index, tasks, length, data/chunk_index,
                                    data/file_index, dataset_from_index, dataset_to_index and, per video
                                    feature K, videos/K/chunk_index, videos/K/file_index,
                                    videos/K/from_timestamp, videos/K/to_timestamp (+ stats/... columns)
    <root>/meta/stats.json          mean/std/min/max/count per feature
    <root>/data/chunk-XXX/file-YYY.parquet
                                    one row per frame of many episodes: the numeric features, timestamp,
                                    frame_index, episode_index, index, task_index; image features as
                                    struct<bytes, path>
    <root>/videos/K/chunk-XXX/file-YYY.mp4
                                    many episodes of camera K back to back; an episode's frame at row
                                    timestamp t is the video's frame at from_timestamp + t

v2.x keeps one parquet file and one video per episode (``episode_chunk``/``episode_index`` templates),
``meta/episodes.jsonl`` and ``meta/tasks.jsonl``; its videos start each episode at 0 s.

Written here: one file per kind (chunk-000/file-000), yuv420p H.264 (libx264) or AV1 (libsvtav1) at
high quality with a keyframe at every episode start (an episode decodes without its predecessor), or
PNG images inside the data parquet (lossless). libx264 cannot code odd sizes in yuv420p, so such frames
are padded by one replicated row/column; ``info.json`` keeps the true shape and the reader crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import numpy.typing as npt
import yaml

CODEBASE_VERSION = "v3.0"
READABLE_VERSIONS = ("v3.0", "v2.1", "v2.0")
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = EPISODES_DIR + "/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
LEGACY_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
LEGACY_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
MAPPING_FILE = "dysl_mapping.yaml"
CHUNKS_SIZE = 1000

CODECS: dict[str, str | None] = {"h264": "libx264", "av1": "libsvtav1", "images": None}
"""``codec`` argument -> PyAV encoder (None: PNG images in the data parquet, no videos)."""
class LeRobotFormatError(ValueError):
    """Names the file, key or episode that is wrong and what was expected."""


T = TypeVar("T")


def load_yaml_as(path: str | Path, parse: Callable[[Any], T], error: type[ValueError], what: str) -> T:
    """``parse`` of a YAML file's content; a file that cannot be read, or content ``parse`` refuses
    (with ``error``), is an ``error`` naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise error(f"{path} is not a readable {what}: {exc}") from exc
    try:
        return parse(data)
    except error as exc:
        raise error(f"{path}: {exc}") from exc


# Mapping ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetMapping:
    """Which dataset features feed which model inputs. YAML::

        cameras: {wrist: observation.images.wrist, top: observation.images.top}   # model camera -> feature key
        state: observation.state
        action: action

    (instructions always come from the dataset's tasks)."""

    cameras: dict[str, str]
    state: str = "observation.state"
    action: str = "action"

    @classmethod
    def load(cls, path: str | Path) -> DatasetMapping:
        return load_yaml_as(path, cls.from_dict, LeRobotFormatError, "YAML mapping")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetMapping:
        if not isinstance(data, Mapping):
            raise LeRobotFormatError(f"a dataset mapping must be a mapping, got {type(data).__name__}")
        allowed = ("cameras", "state", "action")
        unknown = sorted(str(key) for key in data if key not in allowed)
        if unknown:
            raise LeRobotFormatError(f"unknown mapping key(s) {unknown}: expected {list(allowed)}")
        if "cameras" not in data:
            raise LeRobotFormatError("mapping key 'cameras' is missing (model camera name -> feature key)")
        cameras = data["cameras"]
        if not isinstance(cameras, Mapping) or not cameras:
            raise LeRobotFormatError(f"'cameras' must map model camera names to feature keys, got {cameras!r}")
        for name, key in cameras.items():
            if not isinstance(name, str) or not isinstance(key, str) or not name or not key:
                raise LeRobotFormatError(f"'cameras': {name!r} -> {key!r} must be a non-empty name and key")
        fields = {}
        for name in ("state", "action"):
            if name in data:
                if not isinstance(data[name], str) or not data[name]:
                    raise LeRobotFormatError(f"{name!r} must be a feature key, got {data[name]!r}")
                fields[name] = data[name]
        return cls(cameras=dict(cameras), **fields)

    def to_dict(self) -> dict[str, Any]:
        return {"cameras": dict(self.cameras), "state": self.state, "action": self.action}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


# Episodes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedEpisode:
    index: int
    """The dataset's episode_index."""
    instruction: str
    """Its task text."""
    images: dict[str, npt.NDArray[np.uint8]]
    """Model camera name -> (T, H, W, 3) uint8 RGB, one frame per data row (decoded at the row's timestamp)."""
    state: npt.NDArray[np.float32]
    """(T, S)."""
    actions: npt.NDArray[np.float32]
    """(T, A)."""
    fps: float

    @property
    def proprio(self) -> npt.NDArray[np.float32]:
        """What training reads (``dataset.EpisodeLike``)."""
        return self.state

    @property
    def steps(self) -> int:
        return int(self.actions.shape[0])
