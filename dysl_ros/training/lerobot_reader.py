"""Read a local LeRobotDataset (v3.0, v2.1, v2.0) episode by episode, through a ``DatasetMapping``,
as the model's cameras, state and actions (``lerobot_dataset`` has the layout). pyarrow and PyAV only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import av
import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from dysl_ros.training.lerobot_dataset import (
    CHUNKS_SIZE,
    DATA_PATH,
    EPISODES_DIR,
    INFO_PATH,
    LEGACY_DATA_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_TASKS_PATH,
    LEGACY_VIDEO_PATH,
    MAPPING_FILE,
    READABLE_VERSIONS,
    TASKS_PATH,
    VIDEO_PATH,
    DatasetMapping,
    LeRobotFormatError,
    RecordedEpisode,
)

if TYPE_CHECKING:
    from dysl_ros.model.observation_spec import ObservationSpec


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



# Files --------------------------------------------------------------------------------------------


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


