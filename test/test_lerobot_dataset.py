"""LeRobotDataset v3.0 (and v2.1) read and written with pyarrow + PyAV: round trips, real demos, bad input."""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from dysl_ros.tools import train
from dysl_ros.training.demos import FORMAT, Episode, write_episode
from dysl_ros.training.lerobot_dataset import MAPPING_FILE, DatasetMapping, LeRobotFormatError, RecordedEpisode
from dysl_ros.training.lerobot_reader import LeRobotDataset, open_for_model
from dysl_ros.training.lerobot_writer import demos_to_lerobot, write_lerobot_dataset

FPS = 10.0
CAMERAS = {"wrist": (48, 64), "top": (30, 40)}
LENGTHS = (5, 9, 7)
TASKS = ("pick up the cube", "open the drawer", "pick up the cube")
MAPPING = DatasetMapping(cameras={"wrist": "observation.images.wrist", "top": "observation.images.top"})
MAX_MEAN_ERROR = 4.0
"""Grey levels: a lossy round trip at the writer's quality (yuv420p's halved chroma included)."""


def _frames(steps: int, height: int, width: int, phase: float) -> np.ndarray:
    """Smooth, moving pictures like a rendered scene (noise would measure only the codec's limits)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.empty((steps, height, width, 3), np.uint8)
    for t in range(steps):
        cx = width * (0.5 + 0.3 * np.sin(t / 4 + phase))
        blob = 180 * np.exp(-((xx - cx) ** 2 + (yy - height / 2) ** 2) / (2 * (width / 7) ** 2))
        out[t, ..., 0] = np.clip(40 + blob, 0, 255)
        out[t, ..., 1] = np.clip(30 + xx * 150 / width + 10 * t, 0, 255)
        out[t, ..., 2] = np.clip(200 - yy * 120 / height, 0, 255)
    return out


def _episodes() -> list[RecordedEpisode]:
    rng = np.random.default_rng(0)
    return [
        RecordedEpisode(
            index=100 + number,
            instruction=TASKS[number],
            images={name: _frames(steps, h, w, number + k) for k, (name, (h, w)) in enumerate(CAMERAS.items())},
            state=rng.normal(size=(steps, 8)).astype(np.float32),
            actions=rng.uniform(-1, 1, (steps, 7)).astype(np.float32),
            fps=FPS,
        )
        for number, steps in enumerate(LENGTHS)
    ]


def _write(root: Path, codec: str) -> Path:
    return write_lerobot_dataset(
        root, _episodes(), fps=FPS, codec=codec, robot_type="test_arm",
        state_names=[f"joint_{i}" for i in range(8)], action_names=[f"delta_{i}" for i in range(7)],
    )


def _mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _check_round_trip(root: Path, exact_images: bool) -> LeRobotDataset:
    dataset = LeRobotDataset(root, DatasetMapping.load(root / MAPPING_FILE), state_dim=8, action_dim=7)
    assert dataset.version == "v3.0" and dataset.fps == FPS and len(dataset) == 3
    assert dataset.episode_indices == [0, 1, 2]  # renumbered in the order written
    read = list(dataset)
    for written, got in zip(_episodes(), read, strict=True):
        assert got.instruction == written.instruction and got.fps == FPS and got.steps == written.steps
        assert got.state.dtype == np.float32 and np.array_equal(got.state, written.state)
        assert got.actions.dtype == np.float32 and np.array_equal(got.actions, written.actions)
        assert got.proprio is got.state
        assert set(got.images) == set(CAMERAS)
        for name, images in written.images.items():
            assert got.images[name].shape == images.shape and got.images[name].dtype == np.uint8
            if exact_images:
                assert np.array_equal(got.images[name], images), name
            else:
                assert _mean_error(got.images[name], images) < MAX_MEAN_ERROR, name
                # Each row got its own frame, not a neighbour's: the nearest written frame is the same one.
                errors = [[_mean_error(g, w) for w in images] for g in got.images[name]]
                assert list(np.argmin(errors, axis=1)) == list(range(len(images))), name
    # Decoding one episode alone (a seek into the middle of the shared video) gives the same frames.
    again = dataset.episode(2)
    assert all(np.array_equal(again.images[n], read[2].images[n]) for n in CAMERAS)
    return dataset


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


@pytest.mark.parametrize("codec", ["h264", "images", "av1"])
def test_round_trip(tmp_path: Path, codec: str) -> None:
    if codec == "av1" and not _encoder_available("libsvtav1"):
        pytest.skip("PyAV has no libsvtav1 encoder here")
    root = _write(tmp_path / "ds", codec)
    _check_round_trip(root, exact_images=codec == "images")

    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "test_arm"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(LENGTHS), 2)
    features = info["features"]
    names = [f"joint_{i}" for i in range(8)]
    assert features["observation.state"] == {"dtype": "float32", "shape": [8], "names": names}
    assert features["action"]["shape"] == [7]
    assert features["observation.images.top"]["shape"] == [30, 40, 3]
    assert features["observation.images.wrist"]["dtype"] == ("image" if codec == "images" else "video")
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pydict()
    assert dict(zip(tasks["task"], tasks["task_index"], strict=True)) == {TASKS[0]: 0, TASKS[1]: 1}

    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == list(LENGTHS)
    assert [e["dataset_from_index"] for e in episodes] == [0, 5, 14]
    assert [e["dataset_to_index"] for e in episodes] == [5, 14, 21]
    assert [e["tasks"] for e in episodes] == [[t] for t in TASKS]
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.column("index").to_pylist() == list(range(21))
    assert data.column("task_index").to_pylist() == [0] * 5 + [1] * 9 + [0] * 7
    if codec != "images":
        key = "videos/observation.images.wrist"
        assert [e[f"{key}/from_timestamp"] for e in episodes] == pytest.approx([0.0, 0.5, 1.4])
        assert [e[f"{key}/to_timestamp"] for e in episodes] == pytest.approx([0.5, 1.4, 2.1])
        assert (root / "videos/observation.images.top/chunk-000/file-000.mp4").is_file()
        with av.open(str(root / "videos/observation.images.top/chunk-000/file-000.mp4")) as container:
            assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    else:
        assert not (root / "videos").exists()

    stats = json.loads((root / "meta/stats.json").read_text())
    states = np.concatenate([e.state for e in _episodes()]).astype(np.float64)
    assert stats["observation.state"]["mean"] == pytest.approx(states.mean(axis=0).tolist())
    assert stats["observation.state"]["std"] == pytest.approx(states.std(axis=0).tolist())
    actions = np.concatenate([e.actions for e in _episodes()])
    assert stats["action"]["min"] == pytest.approx(actions.min(axis=0).tolist())
    assert np.shape(stats["observation.images.wrist"]["mean"]) == (3, 1, 1)
    assert DatasetMapping.load(root / MAPPING_FILE) == MAPPING


def test_odd_image_sizes_round_trip(tmp_path: Path) -> None:
    """libx264 codes yuv420p only at even sizes: odd ones are padded on writing and cropped on reading."""
    rng = np.random.default_rng(1)
    episode = RecordedEpisode(
        index=0, instruction="wave", images={"cam": _frames(4, 31, 45, 0.0)},
        state=rng.normal(size=(4, 2)).astype(np.float32), actions=rng.normal(size=(4, 2)).astype(np.float32), fps=FPS,
    )
    root = write_lerobot_dataset(tmp_path / "odd", [episode], fps=FPS)
    got = LeRobotDataset(root, DatasetMapping(cameras={"cam": "observation.images.cam"})).episode(0)
    assert got.images["cam"].shape == (4, 31, 45, 3)
    assert _mean_error(got.images["cam"], episode.images["cam"]) < MAX_MEAN_ERROR


def test_several_files_and_chunks(tmp_path: Path) -> None:
    """Episode 2's rows, video and episodes-table row in files of their own, as v3.0 allows."""
    root = _write(tmp_path / "ds", "h264")
    alone = write_lerobot_dataset(tmp_path / "alone", _episodes()[2:], fps=FPS, codec="h264")

    data_path = root / "data/chunk-000/file-000.parquet"
    data = pq.read_table(data_path)
    episode = np.asarray(data.column("episode_index"))
    pq.write_table(data.filter(pa.array(episode < 2)), data_path)
    (root / "data/chunk-001").mkdir()
    pq.write_table(data.filter(pa.array(episode == 2)), root / "data/chunk-001/file-000.parquet")
    for key in MAPPING.cameras.values():
        shutil.copy(alone / f"videos/{key}/chunk-000/file-000.mp4", root / f"videos/{key}/chunk-000/file-001.mp4")

    episodes_path = root / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(episodes_path).to_pylist()
    rows[2]["data/chunk_index"] = 1
    rows[2]["meta/episodes/file_index"] = 1
    for key in MAPPING.cameras.values():
        rows[2][f"videos/{key}/file_index"] = 1
        rows[2][f"videos/{key}/from_timestamp"] = 0.0
        rows[2][f"videos/{key}/to_timestamp"] = 0.7
    pq.write_table(pa.Table.from_pylist(rows[:2]), episodes_path)
    pq.write_table(pa.Table.from_pylist(rows[2:]), root / "meta/episodes/chunk-000/file-001.parquet")

    _check_round_trip(root, exact_images=False)


def _write_v21(root: Path, episodes: list[RecordedEpisode]) -> None:
    """A LeRobot v2.1 layout: a parquet file and an mp4 per episode, episodes.jsonl, tasks.jsonl.
    Camera "wrist" as a video, camera "top" as PNG images inside the parquet."""
    tasks = {text: number for number, text in enumerate(dict.fromkeys(e.instruction for e in episodes))}
    image_struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    total = 0
    for number, episode in enumerate(episodes):
        steps = episode.steps
        frame_index = np.arange(steps)
        png = [cv2.imencode(".png", image[:, :, ::-1])[1].tobytes() for image in episode.images["top"]]
        table = pa.table({
            "observation.state": pa.array(episode.state.tolist(), pa.list_(pa.float32())),
            "action": pa.array(episode.actions.tolist(), pa.list_(pa.float32())),
            "observation.images.top": pa.array([{"bytes": b, "path": None} for b in png], image_struct),
            "timestamp": pa.array((frame_index / FPS).astype(np.float32)),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(steps, number)),
            "index": pa.array(frame_index + total),
            "task_index": pa.array(np.full(steps, tasks[episode.instruction])),
        })
        path = root / f"data/chunk-000/episode_{number:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        video = root / f"videos/chunk-000/observation.images.wrist/episode_{number:06d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(video), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(int(FPS)))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.options = {"crf": "10"}
            for t, image in enumerate(episode.images["wrist"]):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = t
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        total += steps
    image_feature = {"shape": [30, 40, 3], "names": ["height", "width", "channel"]}
    info = {
        "codebase_version": "v2.1", "robot_type": "test_arm", "total_episodes": len(episodes), "total_frames": total,
        "total_tasks": len(tasks), "chunks_size": 1000, "fps": int(FPS), "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            "observation.images.wrist": {"dtype": "video", "shape": [48, 64, 3], "names": image_feature["names"]},
            "observation.images.top": {"dtype": "image", **image_feature},
            "observation.state": {"dtype": "float32", "shape": [8], "names": None},
            "action": {"dtype": "float32", "shape": [7], "names": None},
            **{name: {"dtype": "int64", "shape": [1], "names": None}
               for name in ("frame_index", "episode_index", "index", "task_index")},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        },
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": n, "tasks": [e.instruction], "length": e.steps}) + "\n"
        for n, e in enumerate(episodes)
    ))
    (root / "meta/tasks.jsonl").write_text("".join(
        json.dumps({"task_index": i, "task": t}) + "\n" for t, i in tasks.items()
    ))


def test_v21_layout_reads(tmp_path: Path) -> None:
    written = _episodes()
    _write_v21(tmp_path, written)
    dataset = LeRobotDataset(tmp_path, MAPPING, state_dim=8, action_dim=7)
    assert dataset.version == "v2.1" and dataset.episode_indices == [0, 1, 2]
    for expected, got in zip(written, dataset, strict=True):
        assert got.instruction == expected.instruction
        assert np.array_equal(got.state, expected.state) and np.array_equal(got.actions, expected.actions)
        assert np.array_equal(got.images["top"], expected.images["top"])
        assert _mean_error(got.images["wrist"], expected.images["wrist"]) < MAX_MEAN_ERROR


def _demo_dir(root: Path, size: int = 32) -> Path:
    """Two tiny dysl_demos/1 episodes, as `dysl_train demos` writes them."""
    rng = np.random.default_rng(3)
    entries = []
    for seed, (steps, instruction) in enumerate([(6, "reach the goal position"), (4, "push the puck to the goal")]):
        task = "reach-v3" if seed == 0 else "push-v3"
        episode = Episode(
            task=task, instruction=instruction, seed=seed, images=_frames(steps, size, size, seed),
            proprio=rng.normal(size=(steps, 4)).astype(np.float32),
            actions=rng.uniform(-1, 1, (steps, 4)).astype(np.float32), success=np.zeros(steps, np.bool_),
        )
        write_episode(root, episode)
        entries.append({"file": episode.file_name, "task": task, "instruction": instruction, "seed": seed,
                        "steps": steps, "success": False})
    index = {"format": FORMAT, "image_size": size, "camera": "corner", "episodes": entries}
    (root / "index.json").write_text(json.dumps(index))
    return root


def test_demos_to_lerobot(tmp_path: Path) -> None:
    from dysl_ros.training.demos import load_demo_dirs

    demos = load_demo_dirs(_demo_dir(tmp_path / "demos"))
    (tmp_path / "lerobot").mkdir()  # an empty directory is fine to write into
    root = demos_to_lerobot(tmp_path / "demos", tmp_path / "lerobot")
    umask = os.umask(0)
    os.umask(umask)
    assert root.stat().st_mode & 0o777 == 0o777 & ~umask  # not a private temporary directory's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos", "lerobot"]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["fps"] == 20 and info["robot_type"] == "sawyer"
    assert info["features"]["observation.state"]["names"] == ["hand_x", "hand_y", "hand_z", "gripper"]
    assert info["features"]["action"]["names"] == ["hand_dx", "hand_dy", "hand_dz", "gripper"]
    mapping = DatasetMapping.load(root / MAPPING_FILE)
    assert mapping.cameras == {"image": "observation.images.image"}
    dataset = LeRobotDataset(root, mapping, state_dim=4, action_dim=4)
    for expected, got in zip(demos.episodes, dataset, strict=True):
        assert got.instruction == expected.instruction
        assert np.array_equal(got.proprio, expected.proprio) and np.array_equal(got.actions, expected.actions)
        assert _mean_error(got.images["image"], expected.images) < MAX_MEAN_ERROR


def test_cli_to_lerobot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demos = _demo_dir(tmp_path / "demos")
    out = tmp_path / "out"
    assert train.main(["to-lerobot", "--demos", f"{demos},{demos}", "--out", str(out), "--codec", "images"]) == 0
    assert str(out) in capsys.readouterr().out
    dataset = LeRobotDataset(out, DatasetMapping.load(out / MAPPING_FILE))
    assert len(dataset) == 2  # the same directory twice counts once
    assert dataset.info["features"]["observation.images.image"]["dtype"] == "image"
    # An existing dataset is not overwritten; a missing demos directory is a clear error.
    assert train.main(["to-lerobot", "--demos", str(demos), "--out", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert train.main(["to-lerobot", "--demos", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "index.json is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["to-lerobot", "--demos", str(demos), "--out", str(tmp_path / "o3"), "--codec", "vp9"])
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_cli_demos_format_lerobot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dysl_train demos --format lerobot` records npz into a temporary sibling of OUT, converts, cleans up.
    (The recording itself is stubbed: Meta-World rendering is too slow for a unit test.)"""
    import dysl_ros.training.demos as demos_module

    recorded: list[Path] = []

    def fake_generate(out_dir: str | Path, *args: Any, **kwargs: Any) -> dict[str, dict[str, int]]:
        recorded.append(Path(out_dir))
        _demo_dir(Path(out_dir))
        return {"reach-v3": {"episodes": 1, "successes": 1, "kept": 1, "frames": 6}}

    monkeypatch.setattr(demos_module, "generate_demos", fake_generate)
    out = tmp_path / "data" / "lerobot"
    argv = ["demos", "--out", str(out), "--tasks", "reach-v3", "--format", "lerobot", "--codec", "images"]
    assert train.main(argv) == 0
    assert len(recorded) == 1 and recorded[0].parent == out.parent and not recorded[0].exists()
    assert [p.name for p in out.parent.iterdir()] == ["lerobot"]
    assert len(LeRobotDataset(out, DatasetMapping.load(out / MAPPING_FILE), state_dim=4, action_dim=4)) == 2
    # OUT holds a dataset now: refused before recording anything, replaced with --overwrite.
    assert train.main(argv) == 2 and len(recorded) == 1
    assert train.main([*argv, "--overwrite"]) == 0 and len(recorded) == 2
    assert [p.name for p in out.parent.iterdir()] == ["lerobot"]


# Bad input ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h264_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("lerobot") / "ds", "h264")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_camera_key(h264_root: Path) -> None:
    mapping = DatasetMapping(cameras={"wrist": "observation.images.wrist", "side": "observation.images.side"})
    with pytest.raises(LeRobotFormatError, match=r"camera 'side' maps to feature 'observation.images.side'.*"
                       r"observation.images.top.*observation.images.wrist"):
        LeRobotDataset(h264_root, mapping)
    with pytest.raises(LeRobotFormatError, match=r"camera 'wrist' maps to feature 'action' of dtype 'float32'"):
        LeRobotDataset(h264_root, DatasetMapping(cameras={"wrist": "action"}))


def test_a_model_reads_only_its_cameras(h264_root: Path, tmp_path: Path) -> None:
    """Training and the offline benchmark open a dataset alike: the dataset may record more cameras
    than the model looks at; a model camera the mapping lacks is named."""
    from dysl_ros.model.observation_spec import CameraSpec, ObservationSpec

    def spec(*cameras: str) -> ObservationSpec:
        return ObservationSpec(
            cameras=tuple(CameraSpec(name, 32, 32) for name in cameras),
            state_names=tuple(f"joint_{i}" for i in range(8)), action_names=tuple(f"delta_{i}" for i in range(7)),
            horizon=5,
        )

    dataset = open_for_model(h264_root, None, spec("wrist"), min_length=5)
    assert list(dataset.episode(dataset.episode_indices[0]).images) == ["wrist"]
    with pytest.raises(LeRobotFormatError, match=r"the model's camera\(s\) \['side'\] have no dataset feature"):
        open_for_model(h264_root, None, spec("wrist", "side"))
    with pytest.raises(LeRobotFormatError, match=r"no dataset mapping at .*: give --mapping FILE"):
        open_for_model(h264_root, tmp_path / "nowhere.yaml", spec("wrist"))
    with pytest.raises(LeRobotFormatError, match="shorter than the minimum 6"):
        list(open_for_model(h264_root, None, spec("wrist"), min_length=6))


def test_wrong_dimensions(h264_root: Path) -> None:
    with pytest.raises(LeRobotFormatError, match=r"state feature 'observation.state' is 8-D, the model expects 4-D"):
        LeRobotDataset(h264_root, MAPPING, state_dim=4)
    with pytest.raises(LeRobotFormatError, match=r"action feature 'action' is 7-D, the model expects 4-D"):
        LeRobotDataset(h264_root, MAPPING, state_dim=8, action_dim=4)
    with pytest.raises(LeRobotFormatError, match=r"the state feature 'observation.joints' is not in the dataset"):
        LeRobotDataset(h264_root, DatasetMapping(cameras=MAPPING.cameras, state="observation.joints"))


def test_nan_action(h264_root: Path, tmp_path: Path) -> None:
    root = _copy(h264_root, tmp_path / "ds")
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    actions = np.asarray(table.column("action").to_pylist(), np.float32)
    actions[5 + 3, 2] = np.nan  # episode 1, frame 3
    column = pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), 7)
    pq.write_table(table.set_column(table.column_names.index("action"), "action", column), path)
    dataset = LeRobotDataset(root, MAPPING)
    dataset.episode(0)
    with pytest.raises(LeRobotFormatError, match=r"episode 1: 'action' is nan at frame 3 \(dimension 2\)"):
        dataset.episode(1)
    # The writer refuses them too.
    bad = _episodes()[0]
    bad.actions[1, 0] = np.inf
    with pytest.raises(LeRobotFormatError, match=r"episode 0.*actions is not finite at frame 1"):
        write_lerobot_dataset(tmp_path / "out", [bad], fps=FPS)
    assert not (tmp_path / "out").exists()


def test_episode_shorter_than_min_length(h264_root: Path) -> None:
    dataset = LeRobotDataset(h264_root, MAPPING, min_length=6)
    with pytest.raises(LeRobotFormatError, match=r"episode 0: 5 frames, shorter than the minimum 6"):
        dataset.episode(0)
    assert dataset.episode(1).steps == 9
    with pytest.raises(KeyError, match="episode 7 is not in"):
        dataset.episode(7)


def test_truncated_video(h264_root: Path, tmp_path: Path) -> None:
    root = _copy(h264_root, tmp_path / "ds")
    video = root / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 6 // 10])
    dataset = LeRobotDataset(root, MAPPING)
    with pytest.raises(LeRobotFormatError, match=r"episode 2 camera 'wrist'.*file-000.mp4 has \d decodable frames "
                       r"for the episode's 7 rows"):
        dataset.episode(2)
    video.write_bytes(data[:100])
    with pytest.raises(LeRobotFormatError, match=r"episode 0 camera 'wrist'.*file-000.mp4"):
        dataset.episode(0)
    video.unlink()
    with pytest.raises(LeRobotFormatError, match=r"video .*file-000.mp4 is missing"):
        dataset.episode(0)


def test_image_column_that_does_not_decode(tmp_path: Path) -> None:
    root = _write(tmp_path / "ds", "images")
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    key = "observation.images.top"
    cells: list[dict[str, Any]] = table.column(key).to_pylist()
    cells[6] = {"bytes": b"not a png", "path": None}  # episode 1, frame 1
    column = pa.array(cells, table.schema.field(key).type)
    pq.write_table(table.set_column(table.column_names.index(key), key, column), path)
    dataset = LeRobotDataset(root, MAPPING)
    with pytest.raises(LeRobotFormatError, match=r"episode 1 camera 'top'.*at frame 1 does not decode"):
        dataset.episode(1)


def test_mapping_keys() -> None:
    with pytest.raises(LeRobotFormatError, match=r"unknown mapping key\(s\) \['image'\]"):
        DatasetMapping.from_dict({"cameras": {"wrist": "observation.images.wrist"}, "image": "x"})
    with pytest.raises(LeRobotFormatError, match="'cameras' is missing"):
        DatasetMapping.from_dict({"state": "observation.state"})
    with pytest.raises(LeRobotFormatError, match="'cameras' must map"):
        DatasetMapping.from_dict({"cameras": ["observation.images.wrist"]})
    mapping = DatasetMapping.from_dict({"cameras": {"wrist": "observation.images.wrist"}, "state": "observation.q"})
    assert mapping.action == "action" and mapping.state == "observation.q"


def test_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("cameras: {wrist: observation.images.wrist}\nstate: observation.state\naction: action\n")
    assert DatasetMapping.load(path) == DatasetMapping(cameras={"wrist": "observation.images.wrist"})
    path.write_text("cameras: {wrist: observation.images.wrist}\nactions: action\n")
    with pytest.raises(LeRobotFormatError, match=r"mapping.yaml: unknown mapping key\(s\) \['actions'\]"):
        DatasetMapping.load(path)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(LeRobotFormatError, match=r"no LeRobot dataset at .*meta/info.json is missing"):
        LeRobotDataset(tmp_path, MAPPING)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text(json.dumps({"codebase_version": "v1.6", "fps": 10, "features": {}}))
    with pytest.raises(LeRobotFormatError, match=r"codebase_version 'v1.6' is not supported"):
        LeRobotDataset(tmp_path, MAPPING)
