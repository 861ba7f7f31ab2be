"""Training samples from demonstrations, preprocessed exactly as the runtime does.

A sample is one time step t of an episode: the observation at t goes through the node's own image
path (``dysl_ros.inputs.decode_image``: OpenCV resize) and ``dysl_ros.model.spec.preprocess``,
so a trained model sees at serving time the very tensors it was trained on. The target is the chunk
of actions ``t .. t+chunk_len-1``; past the episode's end it repeats the last action (the arm holds
still), and ``action_mask`` marks those padded entries with 0 so losses can leave them out.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dysl_ros.inputs import decode_image
from dysl_ros.model.observation_spec import ObservationSpec, as_spec, camera_images
from dysl_ros.model.spec import Observation, VLAConfig, preprocess

Batch = dict[str, Tensor]
PROPRIO_STD_FLOOR = 1e-2
"""A proprio dimension that barely moves in the demos (e.g. a gripper held shut) would otherwise be
scaled up so much that serving-time noise on it swamps every other input."""
ACTION_RANGE_TOLERANCE = 1e-5
ACTION_STD_FLOOR = 1e-3
"""Joint actions: an action dimension that barely moves is not scaled up past 1000×."""


class EpisodeLike(Protocol):
    """What training reads of a demonstration episode (``dysl_ros.training.demos.Episode``)."""

    @property
    def instruction(self) -> str: ...

    @property
    def images(self) -> npt.NDArray[Any] | Mapping[str, npt.NDArray[Any]]:
        """(T, H, W, 3) uint8 RGB: one array (a one-camera model), or camera name -> array."""
        ...

    @property
    def proprio(self) -> npt.NDArray[Any]:
        """(T, proprio_dim) raw proprio."""
        ...

    @property
    def actions(self) -> npt.NDArray[Any]:
        """(T, action_dim), already in [-1, 1]."""
        ...


SCENE_STATE_COLUMNS = (0, 1, 2, 4, 5, 6, 36, 37, 38)
"""Where things are, as columns of Meta-World's state vector: hand xyz, first object xyz, goal xyz.
The targets of bc's auxiliary scene loss (``dysl_train bc --scene-loss-weight``)."""


def scene_targets(episodes: Sequence[EpisodeLike]) -> list[npt.NDArray[np.float32]] | None:
    """Per episode, the ``SCENE_STATE_COLUMNS`` of its recorded states, standardised over all
    episodes; None when no episode records states. Raises when only some do."""
    states = [getattr(e, "states", None) for e in episodes]
    if all(s is None for s in states):
        return None
    if any(s is None for s in states):
        missing = sum(s is None for s in states)
        raise ValueError(f"{missing} of {len(states)} episodes record no states: re-record them with dysl_train demos")
    columns = [np.asarray(s, dtype=np.float64)[:, SCENE_STATE_COLUMNS] for s in states if s is not None]
    stacked = np.concatenate(columns)
    if not np.all(np.isfinite(stacked)):
        raise ValueError("demonstration states contain NaN or inf")
    mean, std = stacked.mean(axis=0), np.maximum(stacked.std(axis=0), 1e-3)
    return [((c - mean) / std).astype(np.float32) for c in columns]


def load_episodes(
    path: str | Path, spec: ObservationSpec | VLAConfig | None = None, mapping: str | Path | None = None
) -> list[EpisodeLike]:
    """Episodes of a demonstrations directory written by ``dysl_train demos`` (or several,
    comma-separated: ``demos.load_demo_dirs``), or of a LeRobotDataset directory (``meta/info.json``)
    whose features ``mapping`` maps to the model's inputs (default: the dataset's own
    ``dysl_mapping.yaml``), or of a rosbag2 recording read through the bag ``mapping``
    (``rosbag_dataset``). With ``spec``, a LeRobot dataset or a bag is checked against the model: its
    cameras, state and action sizes, and no episode shorter than the action horizon."""
    root = Path(str(path))
    if (root / "meta" / "info.json").is_file():
        return _lerobot_episodes(root, None if spec is None else as_spec(spec), mapping)
    from dysl_ros.training.rosbag_format import is_bag

    if is_bag(root):
        return _bag_episodes(root, None if spec is None else as_spec(spec), mapping)
    if mapping is not None:
        raise ValueError(f"--mapping is for LeRobot datasets; {path} is not one (no meta/info.json)")
    # Imported by name: the demos module is optional for everything else in this package.
    demos = importlib.import_module("dysl_ros.training.demos")
    episodes: list[EpisodeLike] = list(demos.load_demo_dirs(path).episodes)
    if not episodes:
        raise ValueError(f"{path} holds no demonstration episodes")
    return episodes


def _lerobot_episodes(root: Path, spec: ObservationSpec | None, mapping: str | Path | None) -> list[EpisodeLike]:
    from dysl_ros.training.lerobot_reader import open_for_model

    mapping_file = None if mapping is None else Path(mapping)
    dataset = open_for_model(root, mapping_file, spec, 1 if spec is None else spec.horizon)
    episodes: list[EpisodeLike] = list(dataset)
    if not episodes:
        raise ValueError(f"{root} holds no episodes")
    return episodes


def _bag_episodes(root: Path, spec: ObservationSpec | None, mapping: str | Path | None) -> list[EpisodeLike]:
    from dysl_ros.training.rosbag_dataset import open_bag

    dataset = open_bag(root, mapping, spec, progress=True)
    for line in dataset.summary_lines():
        print(line, file=sys.stderr)
    return list(dataset)


def fit_normalisation(episodes: Sequence[EpisodeLike], semantics: str = "ee_deltas") -> dict[str, tuple[float, ...]]:
    """VLAConfig normalisation fields fitted on the demos.

    Proprio: per-dimension mean and standard deviation (floored). Actions: for end-effector actions
    (``semantics`` ``ee_deltas``) identity scale and offset, because Meta-World actions already lie in
    [-1, 1], the range the DySL thresholds are tuned for; actions outside it mean that assumption is
    wrong, so they are an error, not silently rescaled. Joint actions (radians, whatever their range)
    get their own mean and standard deviation (floored at ``ACTION_STD_FLOOR``).
    """
    if not episodes:
        raise ValueError("no episodes to fit the normalisation on")
    proprio = np.concatenate([np.asarray(e.proprio, dtype=np.float64) for e in episodes])
    actions = np.concatenate([np.asarray(e.actions, dtype=np.float64) for e in episodes])
    if not (np.all(np.isfinite(proprio)) and np.all(np.isfinite(actions))):
        raise ValueError("demonstrations contain NaN or inf in proprio or actions")
    action_dim = actions.shape[1]
    std = np.maximum(proprio.std(axis=0), PROPRIO_STD_FLOOR)
    if semantics != "ee_deltas":
        return {
            "proprio_mean": tuple(float(v) for v in proprio.mean(axis=0)),
            "proprio_std": tuple(float(v) for v in std),
            "action_scale": tuple(float(v) for v in np.maximum(actions.std(axis=0), ACTION_STD_FLOOR)),
            "action_offset": tuple(float(v) for v in actions.mean(axis=0)),
        }
    worst = float(np.abs(actions).max())
    if worst > 1.0 + ACTION_RANGE_TOLERANCE:
        raise ValueError(
            f"demonstration actions reach |a| = {worst:.4g}; the policy's action space is [-1, 1] "
            "(clip them when recording the demos)"
        )
    return {
        "proprio_mean": tuple(float(v) for v in proprio.mean(axis=0)),
        "proprio_std": tuple(float(v) for v in std),
        "action_scale": (1.0,) * action_dim,
        "action_offset": (0.0,) * action_dim,
    }


def with_normalisation(config: VLAConfig, episodes: Sequence[EpisodeLike]) -> VLAConfig:
    fitted = fit_normalisation(episodes, config.action_semantics)
    return dataclasses.replace(config, **fitted)  # type: ignore[arg-type]


class ChunkDataset(Dataset[Batch]):
    """Every time step of every episode. Items: the embed's inputs as ``preprocess`` returns them,
    without the batch axis (one per camera, e.g. ``image`` (3,S,S) float32; ``instruction`` (L,)
    int64; ``proprio`` (S,) float32), ``actions`` (horizon, A) float32 normalised targets,
    ``action_mask`` (horizon,) float32 (1 = real); with ``scene=True`` also ``scene`` (9,) float32:
    standardised ``SCENE_STATE_COLUMNS`` (training only). ``episode`` () int64: the item's episode,
    an index into ``episodes`` (per-episode labels)."""

    def __init__(self, episodes: Sequence[EpisodeLike], spec: ObservationSpec | VLAConfig, scene: bool = False) -> None:
        self.episodes = list(episodes)
        self.spec = as_spec(spec)
        self.scene = scene_targets(self.episodes) if scene else None
        if scene and self.scene is None:
            raise ValueError("the scene targets need demonstrations that record states (re-record them with "
                             "dysl_train demos)")
        index: list[tuple[int, int]] = []
        for number, episode in enumerate(self.episodes):
            steps = _check_episode(number, episode, self.spec)
            index.extend((number, t) for t in range(steps))
        if not index:
            raise ValueError("no time steps in the given episodes")
        self.index = np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> Batch:
        number, t = (int(v) for v in self.index[item])
        episode = self.episodes[number]
        images = {}
        for name, frames in camera_images(self.spec, episode.images).items():
            camera = self.spec.camera(name)
            frame = np.ascontiguousarray(frames[t], dtype=np.uint8)
            height, width = frame.shape[:2]
            # The node's decoder, so fitting (filter choice included) matches serving bit for bit.
            images[name] = decode_image(
                "rgb8", height, width, width * 3, frame.tobytes(), (camera.height, camera.width), camera.fit,
                camera.channels,
            )
        inputs = preprocess(self.spec, Observation(images, episode.instruction, np.asarray(episode.proprio[t])))
        chunk, mask = episode_chunk(episode, t, self.spec.horizon)
        sample = {name: torch.from_numpy(value[0]) for name, value in inputs.items()}
        sample.update(
            actions=torch.from_numpy(self.spec.action_normalisation.normalise(chunk)),
            action_mask=torch.from_numpy(mask),
            episode=torch.tensor(number, dtype=torch.int64),
        )
        if self.scene is not None:
            sample["scene"] = torch.from_numpy(self.scene[number][t])
        return sample


def episode_chunk(
    episode: EpisodeLike, t: int, chunk_len: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``action_chunk`` of an episode at step t, with its ``relative_actions`` (demos' joint arms; none
    for other sources)."""
    relative: Sequence[int] = getattr(episode, "relative_actions", ())
    return action_chunk(np.asarray(episode.actions, dtype=np.float32), t, chunk_len, episode.proprio, relative)


def action_chunk(
    actions: npt.NDArray[np.float32],
    t: int,
    chunk_len: int,
    proprio: npt.NDArray[Any] | None = None,
    relative: Sequence[int] = (),
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``actions[t : t+chunk_len]``, padded by repeating the last action, and its 1/0 mask.

    ``relative``: action columns each recorded as a target minus its own row's ``proprio`` column of
    the same index (joint demonstrations: the target minus the measured joint). A chunk of deltas is
    added up from the pose measured with its observation (dysl_node, the bench), so its labels must
    add up to the recorded targets from row t's pose: row t's action as recorded, then each step from
    one row's target to the next (padding: no step). Labelled row by row instead, a chunk counts the
    arm's tracking lag once per row and runs ahead of the demonstration (a 4-action chunk of the joint
    demos by 20-30 % of its motion)."""
    real = np.asarray(actions[t : t + chunk_len], dtype=np.float64)
    pad = chunk_len - len(real)
    chunk = np.concatenate([real, np.repeat(np.asarray(actions[-1:], dtype=np.float64), pad, axis=0)])
    if relative:
        if proprio is None:
            raise ValueError("relative action columns need the episode's proprio")
        columns = list(relative)
        targets = real[:, columns] + np.asarray(proprio[t : t + len(real)], dtype=np.float64)[:, columns]
        steps = np.zeros((chunk_len, len(columns)))
        steps[0] = real[0, columns]
        steps[1 : len(real)] = np.diff(targets, axis=0)
        chunk[:, columns] = steps
    mask = np.zeros(chunk_len, dtype=np.float32)
    mask[: len(real)] = 1.0
    return chunk.astype(np.float32), mask


def _check_episode(number: int, episode: EpisodeLike, spec: ObservationSpec) -> int:
    proprio, actions = episode.proprio, episode.actions
    steps = len(actions)
    where = f"episode {number} ({episode.instruction!r})"
    try:
        cameras = camera_images(spec, episode.images)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    for name, images in cameras.items():
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{where}: camera {name} images must be (T, H, W, 3) uint8 RGB, got {images.shape} {images.dtype}"
            )
        if len(images) != steps:
            raise ValueError(f"{where}: camera {name} has {len(images)} images for {steps} actions")
    if proprio.shape != (steps, spec.state_dim) or actions.shape != (steps, spec.action_dim):
        raise ValueError(
            f"{where}: proprio {proprio.shape} / actions {actions.shape} do not fit the model "
            f"(T, {spec.state_dim}) / (T, {spec.action_dim})"
        )
    return steps


def to_device(batch: Mapping[str, Tensor], device: torch.device) -> Batch:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def model_inputs(batch: Mapping[str, Tensor], spec: ObservationSpec) -> tuple[Tensor, ...]:
    """The embed's arguments from a batch, in the model's input order."""
    return tuple(batch[name] for name in spec.input_names)


def endless(loader: DataLoader[Batch], sampler: object | None = None, start_epoch: int = 0) -> Iterator[Batch]:
    """Batches forever, epoch after epoch (``set_epoch`` reshuffles a DistributedSampler)."""
    epoch = start_epoch
    while True:
        set_epoch = getattr(sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        produced = False
        for batch in loader:
            produced = True
            yield batch
        if not produced:
            raise ValueError("the data loader produced no batch: fewer samples than one batch?")
        epoch += 1
