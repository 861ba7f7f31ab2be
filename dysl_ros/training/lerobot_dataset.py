"""LeRobotDataset as a source of demonstrations: read v3.0 (and v2.1/v2.0), write v3.0.

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

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import av
import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import yaml

if TYPE_CHECKING:
    from dysl_ros.model.observation_spec import ObservationSpec

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
_ENCODER_OPTIONS = {
    # Near-transparent quality: a lossy round trip must stay within a few grey levels.
    "h264": {"crf": "10", "preset": "medium"},
    "av1": {"crf": "12", "preset": "8"},
}
_FEATURE_CODEC_NAMES = {"h264": "h264", "av1": "av1"}
_INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


class LeRobotFormatError(ValueError):
    """Names the file, key or episode that is wrong and what was expected."""


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
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise LeRobotFormatError(f"{path} is not a readable YAML mapping: {exc}") from exc
        try:
            return cls.from_dict(data)
        except LeRobotFormatError as exc:
            raise LeRobotFormatError(f"{path}: {exc}") from exc

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


@dataclass(frozen=True)
class _EpisodeRef:
    """Where one episode's rows and frames are, from the episodes table."""

    index: int
    length: int
    data_file: Path
    videos: dict[str, tuple[Path, float]]
    """Feature key -> (mp4 file, the episode's from_timestamp in it)."""
    tasks: list[str] = field(default_factory=list)


# Reading ------------------------------------------------------------------------------------------


class LeRobotDataset:
    """A local LeRobotDataset (v3.0, v2.1 or v2.0), read episode by episode through ``mapping``.

    The constructor checks the metadata (so a wrong mapping or model size fails before any decoding);
    ``episode`` decodes one episode's rows and frames and checks them.
    """

    def __init__(
        self,
        root: str | Path,
        mapping: DatasetMapping,
        *,
        state_dim: int | None = None,
        action_dim: int | None = None,
        min_length: int = 1,
    ) -> None:
        self.root = Path(root)
        self.mapping = mapping
        self.min_length = int(min_length)
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise LeRobotFormatError(f"no LeRobot dataset at {self.root}: {info_path} is missing")
        info = _read_json(info_path)
        if not isinstance(info, dict):
            raise LeRobotFormatError(f"{info_path}: must be a JSON object")
        self.info: dict[str, Any] = info
        version = info.get("codebase_version")
        if version not in READABLE_VERSIONS:
            raise LeRobotFormatError(
                f"{info_path}: codebase_version {version!r} is not supported (readable: {list(READABLE_VERSIONS)})"
            )
        self.version: str = str(version)
        fps = info.get("fps")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise LeRobotFormatError(f"{info_path}: 'fps' must be a positive number, got {fps!r}")
        self.fps: float = float(fps)
        features = info.get("features")
        if not isinstance(features, dict):
            raise LeRobotFormatError(f"{info_path}: 'features' must be an object of feature key -> description")
        self.features: dict[str, Any] = features
        self._check_mapping(info_path, state_dim, action_dim)
        self.tasks: dict[int, str] = self._load_tasks()
        refs = self._load_episodes_v3() if self.version == "v3.0" else self._load_episodes_v2()
        self._episodes = {ref.index: ref for ref in refs}
        self.episode_indices: list[int] = sorted(self._episodes)
        self._table_cache: tuple[Path, Any, dict[int, npt.NDArray[np.intp]]] | None = None

    # Metadata ---------------------------------------------------------------------------------

    def _check_mapping(self, info_path: Path, state_dim: int | None, action_dim: int | None) -> None:
        have = sorted(self.features)
        visual = sorted(
            k for k, v in self.features.items() if isinstance(v, dict) and v.get("dtype") in ("video", "image")
        )
        for camera, key in self.mapping.cameras.items():
            if key not in self.features:
                raise LeRobotFormatError(
                    f"{info_path}: camera {camera!r} maps to feature {key!r}, which the dataset does not have "
                    f"(its image/video features: {visual}; all features: {have})"
                )
            spec = self.features[key]
            if not isinstance(spec, dict) or spec.get("dtype") not in ("video", "image"):
                raise LeRobotFormatError(
                    f"{info_path}: camera {camera!r} maps to feature {key!r} of dtype "
                    f"{spec.get('dtype') if isinstance(spec, dict) else spec!r}, expected 'video' or 'image' "
                    f"(image/video features: {visual})"
                )
            _image_hw(spec, key, info_path)
        for role, key, expected in (
            ("state", self.mapping.state, state_dim),
            ("action", self.mapping.action, action_dim),
        ):
            if key not in self.features:
                raise LeRobotFormatError(
                    f"{info_path}: the {role} feature {key!r} is not in the dataset (features: {have})"
                )
            dim = _vector_dim(self.features[key], key, info_path)
            if expected is not None and dim != expected:
                raise LeRobotFormatError(
                    f"{info_path}: {role} feature {key!r} is {dim}-D, the model expects {expected}-D"
                )

    def _template(self, name: str, default: str) -> str:
        value = self.info.get(name) or default
        if not isinstance(value, str):
            raise LeRobotFormatError(f"{self.root / INFO_PATH}: {name!r} must be a path template, got {value!r}")
        return value

    def _format(self, template_name: str, default: str, where: str, **values: Any) -> Path:
        template = self._template(template_name, default)
        try:
            return self.root / template.format(**values)
        except (KeyError, IndexError, ValueError) as exc:
            raise LeRobotFormatError(
                f"{where}: info.json {template_name!r} {template!r} does not format with {sorted(values)}: {exc}"
            ) from exc

    def _load_tasks(self) -> dict[int, str]:
        if self.version == "v3.0":
            path = self.root / TASKS_PATH
            table = _read_parquet(path)
            names = table.column_names
            text_column = next((c for c in ("task", "__index_level_0__") if c in names), None)
            if text_column is None:
                # pandas writes the index under its own name; its metadata says which column that is.
                index_columns = _pandas_index_columns(table)
                text_column = next((c for c in index_columns if isinstance(c, str) and c in names), None)
            if text_column is None or "task_index" not in names:
                raise LeRobotFormatError(
                    f"{path}: expected columns 'task' (or the pandas index) and 'task_index', found {names}"
                )
            texts = table.column(text_column).to_pylist()
            indices = table.column("task_index").to_pylist()
            return {int(i): str(t) for i, t in zip(indices, texts, strict=True)}
        path = self.root / LEGACY_TASKS_PATH
        tasks = {}
        for number, row in enumerate(_read_jsonl(path)):
            if not isinstance(row.get("task_index"), int) or not isinstance(row.get("task"), str):
                raise LeRobotFormatError(f"{path} line {number + 1}: expected 'task_index' (int) and 'task' (str)")
            tasks[row["task_index"]] = row["task"]
        return tasks

    def _video_keys(self) -> list[str]:
        keys = [k for k in self.mapping.cameras.values() if self.features[k].get("dtype") == "video"]
        return list(dict.fromkeys(keys))

    def _load_episodes_v3(self) -> list[_EpisodeRef]:
        files = sorted((self.root / EPISODES_DIR).glob("*/*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{self.root / EPISODES_DIR}: no episodes parquet files (chunk-*/file-*.parquet)")
        refs = []
        for path in files:
            table = _read_parquet(path, skip_prefix="stats/")
            required = ["episode_index", "length", "data/chunk_index", "data/file_index"]
            for key in self._video_keys():
                required += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
            missing = [c for c in required if c not in table.column_names]
            if missing:
                raise LeRobotFormatError(f"{path}: missing column(s) {missing}")
            for row in table.to_pylist():
                index = int(row["episode_index"])
                where = f"{path} episode {index}"
                videos = {}
                for key in self._video_keys():
                    video = self._format(
                        "video_path",
                        VIDEO_PATH,
                        where,
                        video_key=key,
                        chunk_index=int(row[f"videos/{key}/chunk_index"]),
                        file_index=int(row[f"videos/{key}/file_index"]),
                    )
                    videos[key] = (video, float(row[f"videos/{key}/from_timestamp"]))
                data = self._format(
                    "data_path",
                    DATA_PATH,
                    where,
                    chunk_index=int(row["data/chunk_index"]),
                    file_index=int(row["data/file_index"]),
                )
                tasks = [str(t) for t in row.get("tasks") or []]
                refs.append(_EpisodeRef(index, int(row["length"]), data, videos, tasks))
        return refs

    def _load_episodes_v2(self) -> list[_EpisodeRef]:
        path = self.root / LEGACY_EPISODES_PATH
        chunks_size = self.info.get("chunks_size", CHUNKS_SIZE)
        if isinstance(chunks_size, bool) or not isinstance(chunks_size, int) or chunks_size < 1:
            raise LeRobotFormatError(
                f"{self.root / INFO_PATH}: 'chunks_size' must be a positive int, got {chunks_size!r}"
            )
        refs = []
        for number, row in enumerate(_read_jsonl(path)):
            index, length = row.get("episode_index"), row.get("length")
            if not isinstance(index, int) or not isinstance(length, int):
                raise LeRobotFormatError(f"{path} line {number + 1}: expected 'episode_index' and 'length' (int)")
            where = f"{path} episode {index}"
            chunk = index // chunks_size
            videos = {
                key: (
                    self._format(
                        "video_path", LEGACY_VIDEO_PATH, where, episode_chunk=chunk, video_key=key, episode_index=index
                    ),
                    0.0,
                )
                for key in self._video_keys()
            }
            data = self._format("data_path", LEGACY_DATA_PATH, where, episode_chunk=chunk, episode_index=index)
            refs.append(_EpisodeRef(index, length, data, videos, [str(t) for t in row.get("tasks") or []]))
        return refs

    # Episodes ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.episode_indices)

    def __iter__(self) -> Iterator[RecordedEpisode]:
        for index in self.episode_indices:
            yield self.episode(index)

    def episode(self, index: int) -> RecordedEpisode:
        """Episode ``index`` (the dataset's episode_index), decoding that episode's frames only."""
        ref = self._episodes.get(index)
        if ref is None:
            shown = ", ".join(str(i) for i in self.episode_indices[:10]) + (", ..." if len(self) > 10 else "")
            raise KeyError(f"episode {index} is not in {self.root} (its {len(self)} episodes: {shown})")
        where = f"{self.root} episode {index}"
        table = self._rows(ref, where)
        rows = table.num_rows
        if rows != ref.length:
            raise LeRobotFormatError(f"{where}: {rows} rows in {ref.data_file}, the episodes table says {ref.length}")
        if rows < max(self.min_length, 1):
            raise LeRobotFormatError(
                f"{where}: {rows} frames, shorter than the minimum {self.min_length} (the model's action horizon)"
            )
        frame_index = table.column("frame_index").to_numpy().astype(np.int64)
        state = self._matrix(table, self.mapping.state, where, frame_index)
        actions = self._matrix(table, self.mapping.action, where, frame_index)
        if "timestamp" in table.column_names:
            timestamps = _column_numpy(table, "timestamp", where).astype(np.float64)
        else:
            timestamps = frame_index / self.fps
        instruction = self._instruction(table, ref, where)
        images: dict[str, npt.NDArray[np.uint8]] = {}
        for camera, key in self.mapping.cameras.items():
            spec = self.features[key]
            hw = _image_hw(spec, key, self.root / INFO_PATH)
            if spec.get("dtype") == "video":
                video, start = ref.videos[key]
                images[camera] = _decode_video(
                    video, start + timestamps, hw, self.fps, f"{where} camera {camera!r} ({key})"
                )
            else:
                images[camera] = self._decode_images(table, key, hw, f"{where} camera {camera!r}", frame_index)
        return RecordedEpisode(
            index=index,
            instruction=instruction,
            images=images,
            state=state,
            actions=actions,
            fps=self.fps,
        )

    def _rows(self, ref: _EpisodeRef, where: str) -> Any:
        """The episode's rows of its data file, in frame order. The file is read and indexed once and kept
        while episodes come from it (a v3.0 file holds many)."""
        if self._table_cache is None or self._table_cache[0] != ref.data_file:
            if not ref.data_file.is_file():
                raise LeRobotFormatError(f"{where}: data file {ref.data_file} is missing")
            try:
                schema = pq.read_schema(ref.data_file)
            except (OSError, pa.ArrowException) as exc:
                raise LeRobotFormatError(f"{where}: {ref.data_file} is not a readable parquet file: {exc}") from exc
            image_keys = [k for k in self.mapping.cameras.values() if self.features[k].get("dtype") == "image"]
            wanted = ["episode_index", "frame_index", self.mapping.state, self.mapping.action, *image_keys]
            missing = [c for c in wanted if c not in schema.names]
            if missing:
                raise LeRobotFormatError(f"{where}: {ref.data_file} lacks column(s) {missing} (has {schema.names})")
            optional = [c for c in ("timestamp", "task_index") if c in schema.names]
            table = _read_parquet(ref.data_file, columns=list(dict.fromkeys(wanted + optional)))
            episodes = _column_numpy(table, "episode_index", where).astype(np.int64)
            order = np.lexsort((_column_numpy(table, "frame_index", where), episodes))
            values, starts = np.unique(episodes[order], return_index=True)
            bounds = [*starts.tolist(), len(order)]
            rows = {int(v): order[bounds[i] : bounds[i + 1]] for i, v in enumerate(values)}
            self._table_cache = (ref.data_file, table, rows)
        _, table, rows = self._table_cache
        return table.take(pa.array(rows.get(ref.index, np.zeros(0, np.int64))))

    def _matrix(self, table: Any, key: str, where: str, frame_index: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        dim = _vector_dim(self.features[key], key, self.root / INFO_PATH)
        column = table.column(key).combine_chunks()
        if column.null_count:
            raise LeRobotFormatError(f"{where}: {key!r} has {column.null_count} null row(s)")
        if (
            pa.types.is_list(column.type)
            or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)
        ):
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != dim).any():
                bad = int(np.flatnonzero(lengths != dim)[0])
                raise LeRobotFormatError(
                    f"{where}: {key!r} at frame {int(frame_index[bad])} has {int(lengths[bad])} values, "
                    f"info.json says {dim}"
                )
            values = column.flatten().to_numpy(zero_copy_only=False)
        elif dim == 1 and (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            values = column.to_numpy(zero_copy_only=False)
        else:
            raise LeRobotFormatError(f"{where}: {key!r} is stored as {column.type}, expected a list of {dim} numbers")
        matrix = np.asarray(values, dtype=np.float32).reshape(len(column), dim)
        finite = np.isfinite(matrix)
        if not finite.all():
            row, col = (int(v) for v in np.argwhere(~finite)[0])
            raise LeRobotFormatError(
                f"{where}: {key!r} is {matrix[row, col]} at frame {int(frame_index[row])} (dimension {col}); "
                "demonstrations must be finite"
            )
        return matrix

    def _instruction(self, table: Any, ref: _EpisodeRef, where: str) -> str:
        if "task_index" in table.column_names:
            task_index = int(_column_numpy(table, "task_index", where)[0])
            if task_index not in self.tasks:
                raise LeRobotFormatError(f"{where}: task_index {task_index} is not in the dataset's tasks")
            return self.tasks[task_index]
        if ref.tasks:
            return ref.tasks[0]
        raise LeRobotFormatError(f"{where}: no task_index column and no tasks in the episodes table")

    def _decode_images(
        self, table: Any, key: str, hw: tuple[int, int], where: str, frame_index: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.uint8]:
        import cv2

        frames = np.empty((table.num_rows, *hw, 3), np.uint8)
        for row, value in enumerate(table.column(key).to_pylist()):
            data = value.get("bytes") if isinstance(value, dict) else value
            if data is None and isinstance(value, dict) and value.get("path"):
                path = Path(value["path"])
                data = (path if path.is_absolute() else self.root / path).read_bytes()
            image = None
            if isinstance(data, (bytes, bytearray)):
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise LeRobotFormatError(
                    f"{where}: {key!r} at frame {int(frame_index[row])} does not decode as an image"
                )
            if image.shape[:2] != hw:
                raise LeRobotFormatError(
                    f"{where}: {key!r} at frame {int(frame_index[row])} is {image.shape[1]}x{image.shape[0]}, "
                    f"info.json says {hw[1]}x{hw[0]}"
                )
            frames[row] = image[:, :, ::-1]
        return frames


def open_for_model(
    root: Path, mapping_file: Path | None, spec: ObservationSpec | None, min_length: int = 1
) -> LeRobotDataset:
    """The dataset at ``root`` read through ``mapping_file`` (default: its own dysl_mapping.yaml) for a
    model: only the spec's cameras are decoded (a dataset may record more than the model looks at),
    its state and actions checked against the spec's sizes before any frame is decoded. Without a
    spec (a model yet to be shaped), every mapped camera."""
    if not root.is_dir():
        raise LeRobotFormatError(f"{root} is not a directory (a LeRobotDataset)")
    mapping_file = mapping_file if mapping_file is not None else root / MAPPING_FILE
    if not mapping_file.is_file():
        raise LeRobotFormatError(
            f"no dataset mapping at {mapping_file}: give --mapping FILE, a YAML mapping the model's cameras, state "
            "and action to the dataset's feature keys (docs/bring_your_model.md)"
        )
    mapping = DatasetMapping.load(mapping_file)
    if spec is None:
        return LeRobotDataset(root, mapping, min_length=min_length)
    cameras = [c.name for c in spec.cameras]
    missing = [name for name in cameras if name not in mapping.cameras]
    if missing:
        raise LeRobotFormatError(
            f"{mapping_file}: the model's camera(s) {missing} have no dataset feature (the model's cameras: "
            f"{cameras}; the mapping's: {sorted(mapping.cameras)})"
        )
    used = DatasetMapping({name: mapping.cameras[name] for name in cameras}, mapping.state, mapping.action)
    return LeRobotDataset(
        root, used, state_dim=spec.state_dim, action_dim=spec.action_dim, min_length=min_length
    )


def _decode_video(
    path: Path, wanted: npt.NDArray[np.float64], hw: tuple[int, int], fps: float, where: str
) -> npt.NDArray[np.uint8]:
    """The frames of ``path`` at the times ``wanted`` (s), each within half a frame, cropped to ``hw``."""
    if not path.is_file():
        raise LeRobotFormatError(f"{where}: video {path} is missing")
    tolerance = 0.5 / fps
    order = np.argsort(wanted, kind="stable")
    times = wanted[order]
    frames = np.empty((len(wanted), *hw, 3), np.uint8)
    filled = np.zeros(len(wanted), dtype=bool)
    start, end = float(times[0]) - tolerance, float(times[-1]) + tolerance
    problem = ""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise LeRobotFormatError(f"{where}: video {path} does not open (truncated or not a video?): {exc}") from exc
    with container:
        if not container.streams.video:
            raise LeRobotFormatError(f"{where}: video {path} has no video stream (truncated or not a video?)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            if start > 0 and stream.time_base is not None:
                # Lands on the keyframe at or before the episode's first frame.
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    continue
                if t > end:
                    break
                if t < start:
                    continue
                k = int(np.searchsorted(times, t))
                best = min((j for j in (k - 1, k) if 0 <= j < len(times)), key=lambda j: abs(times[j] - t))
                if abs(times[best] - t) <= tolerance and not filled[best]:
                    image = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
                    frames[order[best]] = _crop(image, hw, path, where)
                    filled[best] = True
        except av.FFmpegError as exc:
            problem = f" (decoding stopped: {exc})"
    found = int(filled.sum())
    if found < len(wanted):
        raise LeRobotFormatError(
            f"{where}: video {path} has {found} decodable frames for the episode's {len(wanted)} rows "
            f"(timestamps {times[0]:.3f}..{times[-1]:.3f} s); truncated?{problem}"
        )
    return frames


def _crop(image: npt.NDArray[np.uint8], hw: tuple[int, int], path: Path, where: str) -> npt.NDArray[np.uint8]:
    height, width = image.shape[:2]
    # One extra row/column is the padding an odd size needs in yuv420p (see the module docstring).
    if not (hw[0] <= height <= hw[0] + 1 and hw[1] <= width <= hw[1] + 1):
        raise LeRobotFormatError(f"{where}: video {path} frames are {width}x{height}, info.json says {hw[1]}x{hw[0]}")
    return image[: hw[0], : hw[1]]


# Writing ------------------------------------------------------------------------------------------


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
    layout: _Layout | None = None
    videos: dict[str, _VideoWriter] = {}
    data_writer: Any = None
    episode_rows: list[dict[str, Any]] = []
    tasks: dict[str, int] = {}
    totals: dict[str, _Stats] = {}
    frames = 0
    try:
        for number, episode in enumerate(episodes):
            if layout is None:
                layout = _Layout.of(episode, camera_keys, state_names, action_names)
                if codec != "images":
                    for name, key in layout.keys.items():
                        height, width = layout.sizes[name]
                        path = root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                        videos[name] = _VideoWriter(path, codec, fps, height, width)
            steps = layout.check(episode, number)
            task_index = tasks.setdefault(episode.instruction, len(tasks))
            frame_index = np.arange(steps, dtype=np.int64)
            columns: dict[str, Any] = {
                layout.state_key: _fixed_list(episode.state, layout.state_dim),
                layout.action_key: _fixed_list(episode.actions, layout.action_dim),
                "timestamp": pa.array((frame_index / fps).astype(np.float32)),
                "frame_index": pa.array(frame_index),
                "episode_index": pa.array(np.full(steps, number, np.int64)),
                "index": pa.array(frame_index + frames),
                "task_index": pa.array(np.full(steps, task_index, np.int64)),
            }
            row: dict[str, Any] = {
                "episode_index": number,
                "tasks": [episode.instruction],
                "length": steps,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": frames,
                "dataset_to_index": frames + steps,
            }
            stats = {
                layout.state_key: _stats_of(episode.state),
                layout.action_key: _stats_of(episode.actions),
                **{name: _stats_of(columns[name].to_numpy()[:, None]) for name in _INDEX_COLUMNS},
            }
            for name, key in layout.keys.items():
                images = episode.images[name]
                stats[key] = _image_stats(images)
                if codec == "images":
                    columns[key] = pa.array([{"bytes": _png(image), "path": None} for image in images], _IMAGE_STRUCT)
                else:
                    first, count = videos[name].add_episode(images)
                    row[f"videos/{key}/chunk_index"] = 0
                    row[f"videos/{key}/file_index"] = 0
                    row[f"videos/{key}/from_timestamp"] = first / fps
                    row[f"videos/{key}/to_timestamp"] = (first + count) / fps
            table = pa.table(columns)
            if data_writer is None:
                path = root / DATA_PATH.format(chunk_index=0, file_index=0)
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(str(path), table.schema, compression="snappy")
            data_writer.write_table(table)
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            for key, value in stats.items():
                shape = (3, 1, 1) if key in layout.keys.values() else None
                pixels = steps * layout.pixels(key)
                for stat, numbers in value.as_dict(pixels if shape else value.count, shape).items():
                    row[f"stats/{key}/{stat}"] = numbers
                totals.setdefault(key, _Stats()).merge(value)
            episode_rows.append(row)
            frames += steps
        if layout is None:
            raise ValueError("no episodes to write")
        for video in videos.values():
            video.close()
        videos.clear()
    finally:
        for video in videos.values():
            video.abort()
        if data_writer is not None:
            data_writer.close()

    _write_parquet(root / EPISODES_PATH.format(chunk_index=0, file_index=0), pa.Table.from_pylist(episode_rows))
    _write_tasks(root / TASKS_PATH, tasks)
    stats_json = {}
    for key, value in totals.items():
        image = key in layout.keys.values()
        stats_json[key] = value.as_dict(
            value.count * layout.pixels(key) if image else value.count, (3, 1, 1) if image else None
        )
    _write_json(root / STATS_PATH, stats_json)
    info = layout.info(fps, codec, robot_type, len(episode_rows), frames, len(tasks))
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeRobotFormatError(f"{path} is not readable JSON: {exc}") from exc


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LeRobotFormatError(f"{path} is missing")
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LeRobotFormatError(f"{path} is not readable: {exc}") from exc
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LeRobotFormatError(f"{path} line {number + 1} is not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise LeRobotFormatError(f"{path} line {number + 1}: expected an object")
        rows.append(row)
    return rows


def _read_parquet(path: Path, columns: Sequence[str] | None = None, skip_prefix: str | None = None) -> Any:
    if not path.is_file():
        raise LeRobotFormatError(f"{path} is missing")
    try:
        if skip_prefix is not None:
            columns = [n for n in pq.read_schema(path).names if not n.startswith(skip_prefix)]
        return pq.read_table(str(path), columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as exc:
        raise LeRobotFormatError(f"{path} is not a readable parquet file: {exc}") from exc


def _pandas_index_columns(table: Any) -> list[Any]:
    metadata = table.schema.metadata or {}
    try:
        return list(json.loads(metadata[b"pandas"]).get("index_columns", []))
    except (KeyError, ValueError, AttributeError):
        return []


def _column_numpy(table: Any, name: str, where: str) -> npt.NDArray[Any]:
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise LeRobotFormatError(f"{where}: column {name!r} has null values")
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _vector_dim(spec: Any, key: str, where: object) -> int:
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not isinstance(shape, (list, tuple)) or len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
        raise LeRobotFormatError(f"{where}: feature {key!r} must have a 1-D shape [n], got {shape!r}")
    return int(shape[0])


def _image_hw(spec: Mapping[str, Any], key: str, where: object) -> tuple[int, int]:
    """(height, width) of an image/video feature; v2.0 ports sometimes list the shape channels-first."""
    shape = spec.get("shape")
    names = spec.get("names") or []
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise LeRobotFormatError(f"{where}: feature {key!r} must have a shape [height, width, 3], got {shape!r}")
    if isinstance(names, (list, tuple)) and len(names) == 3 and names[0] in ("channels", "channel"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


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
