"""Training pipeline on CPU with a tiny model and synthetic demonstrations: the dataset's targets,
behaviour cloning, calibration and both stages of skip-aware distillation."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
import torch
from model_fixture import one_torch_thread

from dysl_ros.core.config import ConfigError
from dysl_ros.core.continuity import continuity_deltas, suggest_etas
from dysl_ros.core.exit_error import EXIT_MEASURES, RELATIVE_FLOOR, exit_error
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.checkpoint import ModelDirError, load_bundle, save_dysl, save_model
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import DySLModules
from dysl_ros.model.spec import Observation, VLAConfig, preprocess
from dysl_ros.mt10.env import model_goal_marker_radius
from dysl_ros.training import bc, calibrate, dataset, demos, distill, router
from dysl_ros.training.dataset import ChunkDataset, action_chunk, fit_normalisation
from dysl_ros.training.settings import (
    ETA_QUANTILE,
    BCSettings,
    CalibrateSettings,
    DistillSettings,
    RouterSettings,
)

TINY = VLAConfig(
    image_size=32, patch_size=16, instruction_tokens=16, hidden_size=32, num_layers=6, num_heads=2, ffn_size=64
)
PLAN = LayerPlan(num_layers=6, static_layers=(2, 5))  # gaps: 0,1 -> 2 and 3,4 -> 5


@dataclass
class Episode:
    """Shaped like dysl_ros.training.demos.Episode."""

    task: str
    instruction: str
    seed: int
    images: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    success: np.ndarray
    states: np.ndarray | None = None


def make_episode(seed: int, steps: int = 24, size: int = 32) -> Episode:
    """A hand moving toward a goal: the action is the clipped direction to it, the image shows the
    goal as a bright square, the instruction names one of two tasks."""
    rng = np.random.default_rng(seed)
    goal = rng.uniform(-0.5, 0.5, 3)
    hand = np.zeros((steps, 3))
    hand[0] = rng.uniform(-0.5, 0.5, 3)
    actions = np.zeros((steps, 4), dtype=np.float32)
    for t in range(steps):
        actions[t, :3] = np.clip(5.0 * (goal - hand[t]), -1.0, 1.0)
        actions[t, 3] = 1.0 if seed % 2 else -1.0
        if t + 1 < steps:
            hand[t + 1] = hand[t] + 0.05 * actions[t, :3]
    images = np.full((steps, size, size, 3), 40, dtype=np.uint8)
    row, col = (np.clip((goal[:2] + 0.5) * (size - 6), 0, size - 6)).astype(int)
    images[:, row : row + 6, col : col + 6] = 220
    proprio = np.concatenate([hand, np.full((steps, 1), 0.5 + 0.1 * (seed % 3))], axis=1).astype(np.float32)
    task = "reach" if seed % 2 else "push"
    # Meta-World's state layout: hand xyz + gripper at 0..3, an object at 4..6, the goal at 36..38.
    states = np.zeros((steps, 39), dtype=np.float32)
    states[:, :4] = proprio
    states[:, 4:7] = rng.uniform(-0.5, 0.5, 3)
    states[:, 36:39] = goal
    return Episode(task, f"{task} the target", seed, images, proprio, actions, np.zeros(steps, dtype=bool), states)


EPISODES = [make_episode(seed) for seed in range(6)]


@pytest.fixture(scope="module")
def demos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EPISODES as a demonstrations directory (dysl_demos/1), drawn with a 4 cm goal marker."""
    out = tmp_path_factory.mktemp("demos")
    for e in EPISODES:
        demos.write_episode(out, demos.Episode(**e.__dict__))
    index = {
        "format": demos.FORMAT, "image_size": 32, "camera": "corner", "goal_marker_radius": 0.04,
        "episodes": [{"file": f"{e.task}__{e.seed}.npz", "task": e.task, "instruction": e.instruction,
                      "seed": e.seed, "steps": len(e.actions), "success": False} for e in EPISODES],
    }
    (out / demos.INDEX_FILE).write_text(json.dumps(index))
    return out


def active_model(seed: int = 0) -> ReferenceVLA:
    """Random weights large enough that every layer changes the hidden states noticeably (an
    untrained model's std-0.02 layers are close to the identity, which leaves nothing to distil)."""
    torch.manual_seed(seed)
    model = ReferenceVLA(dataset.with_normalisation(TINY, EPISODES))
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.15)
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def first_last(values: list[float], n: int) -> tuple[float, float]:
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


# --------------------------------------------------------------------------------------------------
# Dataset


def test_chunk_dataset_pads_with_last_action_and_masks() -> None:
    actions = np.arange(5 * 4, dtype=np.float32).reshape(5, 4) / 20.0
    episode = make_episode(0, steps=5)
    episode.actions = actions
    data = ChunkDataset([episode], TINY)
    assert len(data) == 5

    item = data[3]
    expected = np.concatenate([actions[3:5], np.repeat(actions[4:5], 6, axis=0)])
    assert torch.equal(item["actions"], torch.from_numpy(expected))
    assert item["action_mask"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert data[0]["action_mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert torch.equal(data[0]["actions"][4:], torch.from_numpy(np.repeat(actions[4:5], 4, axis=0)))

    # Inputs are exactly the runtime's preprocessing of the same observation.
    inputs = preprocess(TINY, Observation(episode.images[3], episode.instruction, episode.proprio[3]))
    for key in ("image", "instruction", "proprio"):
        assert torch.equal(item[key], torch.from_numpy(inputs[key][0]))


def test_action_chunk_longer_than_episode_and_exact_fit() -> None:
    actions = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    chunk, mask = action_chunk(actions, 1, 3)
    assert np.array_equal(chunk, np.repeat(actions[1:], 3, axis=0))
    assert mask.tolist() == [1, 0, 0]
    chunk, mask = action_chunk(actions, 0, 2)
    assert np.array_equal(chunk, actions) and mask.tolist() == [1, 1]


def test_joint_chunks_add_up_to_the_recorded_targets_from_the_observed_pose() -> None:
    # An arm that lags its target (as a position servo does): each row's action is its target minus
    # the joints measured at that row. The node adds a chunk's deltas up from the pose measured with
    # the observation; the labels must land on the recorded targets, lag counted once.
    steps, lag = 12, 0.03
    targets = np.cumsum(np.full((steps, 2), 0.1), axis=0)  # due at the end of each row's period
    measured = np.vstack([np.zeros((1, 2)), targets[:-1] - lag])
    proprio = np.hstack([measured, np.ones((steps, 1))])  # a third state column, not an action's base
    actions = np.hstack([targets - measured, np.full((steps, 1), 0.5)])  # the third action: a gripper
    for t in (0, 3, 8):
        chunk, mask = action_chunk(actions, t, 6, proprio, relative=(0, 1))
        real = int(mask.sum())
        np.testing.assert_allclose(measured[t] + np.cumsum(chunk[:real, :2], axis=0), targets[t : t + real], atol=1e-6)
        assert np.all(chunk[real:, :2] == 0.0)  # padding holds the last target
        np.testing.assert_allclose(chunk[:, 2], 0.5)  # absolute columns as recorded
    row_by_row, _ = action_chunk(actions, 3, 6)
    assert measured[3, 0] + row_by_row[:, 0].sum() > targets[8, 0] + 4 * lag - 1e-6  # what training did before


def test_dataset_resizes_like_the_node() -> None:
    episode = make_episode(1, steps=3, size=64)
    item = ChunkDataset([episode], TINY)[2]
    resized = cv2.resize(episode.images[2], (32, 32), interpolation=cv2.INTER_AREA)
    expected = preprocess(TINY, Observation(resized, episode.instruction, episode.proprio[2]))["image"][0]
    assert torch.equal(item["image"], torch.from_numpy(expected))


def test_dataset_rejects_mismatched_episode() -> None:
    episode = make_episode(0, steps=4)
    episode.proprio = episode.proprio[:, :3]
    with pytest.raises(ValueError, match="proprio"):
        ChunkDataset([episode], TINY)


def test_fit_normalisation() -> None:
    norm = fit_normalisation(EPISODES)
    proprio = np.concatenate([e.proprio for e in EPISODES]).astype(np.float64)
    assert norm["proprio_mean"] == pytest.approx(proprio.mean(axis=0).tolist())
    assert norm["proprio_std"] == pytest.approx(np.maximum(proprio.std(axis=0), dataset.PROPRIO_STD_FLOOR).tolist())
    assert norm["action_scale"] == (1.0,) * 4 and norm["action_offset"] == (0.0,) * 4
    bad = make_episode(0, steps=3)
    bad.actions = bad.actions * 2.0
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fit_normalisation([bad])


# --------------------------------------------------------------------------------------------------
# Behaviour cloning


def test_bc_reduces_loss_logs_saves_and_is_deterministic(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = dict(steps=40, batch_size=16, lr=3e-3, device="cpu", seed=3, log_every=1)
    model = bc.train_bc(EPISODES, TINY, BCSettings(**kwargs), out_dir=tmp_path / "a")
    log = [json.loads(line) for line in (tmp_path / "a" / bc.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 41))
    first, last = first_last([r["loss"] for r in log], 5)
    assert last < 0.7 * first, (first, last)

    bundle = load_bundle(tmp_path / "a")  # fp16 checkpoint with the fitted normalisation
    assert bundle.model.config.proprio_mean == pytest.approx(fit_normalisation(EPISODES)["proprio_mean"])
    assert json.loads((tmp_path / "a" / bc.PROVENANCE_FILE).read_text())["seed"] == 3

    again = bc.train_bc(EPISODES, TINY, BCSettings(**kwargs), out_dir=None)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_bc_scene_loss_learns_the_goal_and_leaves_the_model_unchanged(tmp_path: Path) -> None:
    """The auxiliary heads learn where the goal square is, from the vision tokens and from the
    action queries; what is saved is the plain policy (same tensors as a run without the heads)."""
    kwargs: dict[str, Any] = dict(steps=60, batch_size=16, lr=3e-3, device="cpu", seed=3, log_every=1)
    model = bc.train_bc(EPISODES, TINY, BCSettings(scene_loss_weight=1.0, **kwargs), out_dir=tmp_path / "scene")
    log = [json.loads(line) for line in (tmp_path / "scene" / bc.LOG_FILE).read_text().splitlines()]
    for readout in ("scene_loss_vision", "scene_loss_queries"):
        first, last = first_last([r[readout] for r in log], 5)
        assert last < 0.8 * first, (readout, first, last)
    first, last = first_last([r["loss"] for r in log], 5)
    assert last < 0.7 * first, (first, last)
    plain = ReferenceVLA(TINY)
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert load_bundle(tmp_path / "scene").model.state_dict().keys() == plain.state_dict().keys()
    assert json.loads((tmp_path / "scene" / bc.PROVENANCE_FILE).read_text())["scene_loss_weight"] == 1.0

    targets = dataset.scene_targets(EPISODES)
    assert targets is not None and len(targets) == len(EPISODES)
    stacked = np.concatenate(targets)
    assert stacked.shape[1] == len(dataset.SCENE_STATE_COLUMNS)
    assert np.allclose(stacked.mean(axis=0), 0.0, atol=1e-5)  # standardised over the demos

    without = [Episode(**{**e.__dict__, "states": None}) for e in EPISODES]
    with pytest.raises(ConfigError, match="record states"):
        bc.train_bc(without, TINY, BCSettings(scene_loss_weight=1.0, **kwargs), out_dir=None)
    with pytest.raises(ConfigError, match="2 of 6 episodes record no states"):
        bc.train_bc(without[:2] + EPISODES[2:], TINY, BCSettings(scene_loss_weight=1.0, **kwargs), out_dir=None)
    with pytest.raises(ConfigError, match="scene_loss_weight"):
        bc.train_bc(EPISODES, TINY, BCSettings(scene_loss_weight=-1.0, **kwargs), out_dir=None)


def _chunk_error(model: ReferenceVLA, skip_from: int | None = None) -> float:
    """Mean L1 error of the chunk on the demos; with ``skip_from``, layers skip_from..L-2 skipped."""
    loader = torch.utils.data.DataLoader(ChunkDataset(EPISODES, model.config), batch_size=64)
    errors = []
    with torch.no_grad():
        for batch in loader:
            x = model.embed(*dataset.model_inputs(batch, model.spec))
            kept = model.layers if skip_from is None else [*model.layers[:skip_from], model.layers[-1]]
            for layer in kept:
                x = layer(x)
            errors.append(float(bc.masked_l1(model.head(x), batch["actions"], batch["action_mask"])))
    return float(np.mean(errors))


def test_bc_skip_loss_makes_the_stack_tolerate_skipping() -> None:
    """With the skip loss, leaving out the middle layers costs far less than for the same run without it."""
    kwargs: dict[str, Any] = dict(steps=200, batch_size=16, lr=3e-3, device="cpu", seed=3, log_every=50)
    dense = bc.train_bc(EPISODES, TINY, BCSettings(**kwargs), out_dir=None)
    tolerant = bc.train_bc(EPISODES, TINY, BCSettings(skip_loss_weight=1.0, skip_min_layer=1, **kwargs), out_dir=None)
    assert tolerant.state_dict().keys() == dense.state_dict().keys()  # nothing added to the served model
    for skip_from in (1, 2):
        dense_cost = _chunk_error(dense, skip_from) - _chunk_error(dense)
        tolerant_cost = _chunk_error(tolerant, skip_from) - _chunk_error(tolerant)
        assert dense_cost > 0.02 and tolerant_cost < 0.5 * dense_cost, (skip_from, dense_cost, tolerant_cost)
    with pytest.raises(ConfigError, match=r"skip_min_layer must lie in 1\.\.4"):
        bc.train_bc(EPISODES, TINY, BCSettings(skip_loss_weight=1.0, skip_min_layer=5, **kwargs), out_dir=None)
    for bad_max in (0, 5):  # below the min layer, or past L-2
        with pytest.raises(ConfigError, match=r"skip_max_layer must lie in 2\.\.4 \(skip_min_layer to L-2\), got"):
            bad = BCSettings(skip_loss_weight=1.0, skip_min_layer=2, skip_max_layer=bad_max, **kwargs)
            bc.train_bc(EPISODES, TINY, bad, out_dir=None)
    with pytest.raises(ConfigError, match="skip_loss_weight"):
        bc.train_bc(EPISODES, TINY, BCSettings(skip_loss_weight=float("nan"), **kwargs), out_dir=None)


def test_bc_skip_adapters_train_with_the_backbone_and_are_not_served(tmp_path: Path) -> None:
    """--skip-adapters: the skip loss goes through per-exit adapters that learn (they start as the
    identity) and are dropped from the served model; they need the skip loss."""
    kwargs: dict[str, Any] = dict(steps=120, batch_size=16, lr=3e-3, device="cpu", seed=3, log_every=20)
    adapted = BCSettings(skip_loss_weight=1.0, skip_min_layer=1, skip_adapters=True, **kwargs)
    model = bc.train_bc(EPISODES, TINY, adapted, out_dir=tmp_path)
    plain = bc.train_bc(EPISODES, TINY, BCSettings(skip_loss_weight=1.0, skip_min_layer=1, **kwargs), out_dir=None)
    assert model.state_dict().keys() == plain.state_dict().keys()
    log = [json.loads(line) for line in (tmp_path / bc.LOG_FILE).read_text().splitlines()]
    assert log[-1]["skip_loss"] < 0.7 * log[0]["skip_loss"], log
    assert json.loads((tmp_path / bc.PROVENANCE_FILE).read_text())["skip_adapters"] is True
    # The adapters changed the skip loss's gradient: the same seed without them trains another backbone.
    ours, theirs = model.state_dict(), plain.state_dict()
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ConfigError, match="skip_adapters trains adapters for the skip loss"):
        bc.train_bc(EPISODES, TINY, BCSettings(skip_adapters=True, **kwargs), out_dir=None)


def test_smoothest_frames_pick_the_chunks_that_move_least() -> None:
    # Three frames of 3 actions (2-D): still, a straight line at 0.1 per step, and a gripper flip.
    actions = torch.tensor([
        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        [[0.0, 0.0], [0.1, 0.0], [0.2, 0.0]],
        [[0.0, -1.0], [0.0, 1.0], [0.0, 1.0]],
    ])
    mask = torch.ones(3, 3)
    torch.testing.assert_close(bc.chunk_roughness(actions, mask), torch.tensor([0.0, 0.1, 1.0]))
    assert bc.smoothest_frames(actions, mask, 0.5).tolist() == [True, True, False]  # ceil(1.5) = 2
    assert bc.smoothest_frames(actions, mask, 0.1).tolist() == [True, False, False]
    # Padding: the flip lies past the last real action of frame 2, so it no longer counts.
    padded = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(bc.chunk_roughness(actions, padded), torch.tensor([0.0, 0.1, 0.0]))


def test_bc_skip_loss_on_the_smoothest_frames_only() -> None:
    """--skip-loss-smooth-share: a share below 1 changes what the skip loss trains (another backbone
    from the same seed), leaves the served model's parameters as they are, and is range-checked."""
    kwargs: dict[str, Any] = dict(steps=30, batch_size=16, lr=3e-3, device="cpu", seed=3, log_every=10,
                                  skip_loss_weight=1.0, skip_min_layer=1)
    every = bc.train_bc(EPISODES, TINY, BCSettings(**kwargs), out_dir=None)
    smooth = bc.train_bc(EPISODES, TINY, BCSettings(skip_smooth_share=0.5, **kwargs), out_dir=None)
    ours, theirs = smooth.state_dict(), every.state_dict()
    assert ours.keys() == theirs.keys()
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"skip_smooth_share must lie in \(0, 1\]"):
            bc.train_bc(EPISODES, TINY, BCSettings(skip_smooth_share=bad, **kwargs), out_dir=None)


def test_bc_stops_at_time_limit_and_resumes(tmp_path: Path, demos_dir: Path) -> None:
    config_json = tmp_path / "config.json"
    TINY.save(config_json)
    args = argparse.Namespace(
        demos=str(demos_dir), out=str(tmp_path / "m"), steps=6, batch_size=8, lr=1e-3, device="cpu", seed=0,
        config_json=str(config_json), log_every=1, time_limit_s=0.0,
    )
    assert bc.main_bc(args) == bc.INCOMPLETE_EXIT_CODE  # a zero limit stops after the first step
    state = torch.load(tmp_path / "m" / bc.STATE_FILE, weights_only=True)
    assert state["step"] == 1
    assert load_bundle(tmp_path / "m").model.config.num_layers == TINY.num_layers  # a usable checkpoint meanwhile

    args.time_limit_s, args.resume = None, True
    assert bc.main_bc(args) == 0
    log = [json.loads(line) for line in (tmp_path / "m" / bc.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert not (tmp_path / "m" / bc.STATE_FILE).exists()  # complete: nothing left to resume or to ship

    args.steps = 7  # a different schedule cannot continue another run's state
    args.time_limit_s, args.resume, args.out = 0.0, False, str(tmp_path / "n")
    assert bc.main_bc(args) == bc.INCOMPLETE_EXIT_CODE
    args.steps, args.resume, args.time_limit_s = 8, True, None
    assert bc.main_bc(args) == 2


def test_bc_init_from_starts_at_the_trained_models_loss(tmp_path: Path, demos_dir: Path) -> None:
    kwargs: dict[str, Any] = dict(batch_size=16, lr=3e-3, device="cpu", seed=3, log_every=1)
    bc.train_bc(EPISODES, TINY, BCSettings(steps=40, **kwargs), out_dir=tmp_path / "first")
    trained = [json.loads(line)["loss"] for line in (tmp_path / "first" / bc.LOG_FILE).read_text().splitlines()]

    args = argparse.Namespace(demos=str(demos_dir), out=str(tmp_path / "second"), steps=3, batch_size=16, lr=1e-4,
                              device="cpu", seed=4, log_every=1, init_from=str(tmp_path / "first"))
    assert bc.main_bc(args) == 0
    log = [json.loads(line)["loss"] for line in (tmp_path / "second" / bc.LOG_FILE).read_text().splitlines()]
    # The second phase starts where the first ended, far below a fresh model's first losses.
    assert log[0] < 0.5 * trained[0], (log[0], trained[0])
    provenance = json.loads((tmp_path / "second" / bc.PROVENANCE_FILE).read_text())
    assert provenance["init_from"] == str(tmp_path / "first")
    # How the demos were drawn goes with the model: evaluation draws the goal the same way.
    assert (provenance["camera"], provenance["goal_marker_radius"]) == ("corner", 0.04)
    assert model_goal_marker_radius(tmp_path / "second") == 0.04

    args.config_json, args.out = "config.json", str(tmp_path / "third")  # the architecture comes from init_from
    assert bc.main_bc(args) == 2
    args.config_json, args.init_from = None, str(tmp_path / "missing")
    assert bc.main_bc(args) == 2


DDP_SCRIPT = """
import sys
sys.path.insert(0, {test_dir!r})
from test_training import EPISODES, TINY
from dysl_ros.training.bc import train_bc
from dysl_ros.training.settings import BCSettings
settings = BCSettings(steps=4, batch_size=8, lr=1e-3, device="cpu", seed=0, log_every=2)
train_bc(EPISODES, TINY, settings, out_dir=sys.argv[1])
"""


def test_bc_data_parallel_under_torchrun_on_cpu(tmp_path: Path) -> None:
    """Two gloo ranks: the DDP path (process group, DistributedSampler, rank-0-only output) runs."""
    script = tmp_path / "ddp_bc.py"
    script.write_text(DDP_SCRIPT.format(test_dir=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(script), str(tmp_path / "model")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "model" / bc.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # one log, written by rank 0 only
    assert json.loads((tmp_path / "model" / bc.PROVENANCE_FILE).read_text())["world_size"] == 2
    assert load_bundle(tmp_path / "model").model.config.num_layers == TINY.num_layers


def test_warmup_cosine_schedule() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = bc.warmup_cosine(optimizer, steps=20, warmup_steps=4)
    lrs = []
    for _ in range(20):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[-1] == pytest.approx(bc.MIN_LR_RATIO, abs=0.02)


def test_random_shift_moves_images_within_pad() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    shifted = bc.random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    assert torch.equal(bc.random_shift(images, 0, torch.Generator()), images)


# --------------------------------------------------------------------------------------------------
# Calibration


def test_calibrate_writes_plan_with_last_layer_static_and_plot(tmp_path: Path) -> None:
    save_model(active_model(), tmp_path, dtype=torch.float32)
    settings = CalibrateSettings(static_ratio=0.34, batches=2, batch_size=8, device="cpu")
    plan = calibrate.calibrate_model_dir(tmp_path, EPISODES, settings)
    assert plan.static_layers[-1] == TINY.num_layers - 1 and len(plan.static_layers) == 2
    assert plan.similarities is not None and len(plan.similarities) == TINY.num_layers
    assert LayerPlan.load(tmp_path / "layer_plan.json") == plan
    assert (tmp_path / calibrate.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bundle = load_bundle(tmp_path)
    assert bundle.plan == plan and bundle.dysl_config is not None and bundle.dysl_config.static_ratio == 0.34
    # eta / eta_verify come from the demonstrations' continuity changes, 4 actions per inference.
    deltas = continuity_deltas([e.actions for e in EPISODES], bundle.dysl_config.k, 4)
    assert (bundle.dysl_config.eta, bundle.dysl_config.eta_verify) == suggest_etas(
        deltas, eta_quantile=ETA_QUANTILE
    )
    assert 0 < bundle.dysl_config.eta <= bundle.dysl_config.eta_verify
    assert bundle.dysl_config.eta > suggest_etas(deltas, eta_quantile=0.5)[0]  # the quantile is honoured


# --------------------------------------------------------------------------------------------------
# Distillation


def test_stage1_reduces_adapter_loss() -> None:
    history: list[dict[str, Any]] = []
    distill.distill(active_model(), PLAN, EPISODES, tiny_distill(30, 0, ), history=history)
    losses = [r["loss"] for r in history if r["stage"] == 1]
    assert len(losses) == 30
    first, last = first_last(losses, 5)
    assert last < 0.7 * first, (first, last)


def test_stage1_targets_are_the_static_layer_inputs() -> None:
    model = active_model()
    modules = DySLModules(TINY.hidden_size, PLAN)
    batch = next(iter(distill.sample_loader(EPISODES, model, 4, 0, torch.device("cpu"))))
    states = distill.dense_states(model, batch)
    # Zero-initialised adapters are the identity: the loss is then how far each gap moves x_i.
    expected = sum(
        torch.nn.functional.mse_loss(states[i], states[gap.static]) for gap in PLAN.gaps for i in gap.dynamic_layers
    )
    assert distill.stage1_loss(model, modules, PLAN, batch).item() == pytest.approx(float(expected), rel=1e-5)


def test_stage2_reduces_its_loss() -> None:
    history: list[dict[str, Any]] = []
    distill.distill(active_model(), PLAN, EPISODES, tiny_distill(0, 40, lam=0.02), history=history)
    losses = [r["loss"] for r in history if r["stage"] == 2]
    first, last = first_last(losses, 8)
    assert last < 0.8 * first, (first, last)


def test_mixed_forward_with_p_zero_is_the_dense_model() -> None:
    model = active_model()
    modules = DySLModules(TINY.hidden_size, PLAN)
    for i in PLAN.dynamic_layers:
        last = modules.controller(i).net[-1]
        assert isinstance(last, torch.nn.Linear)
        torch.nn.init.constant_(last.bias, -1e4)  # p = sigmoid(-1e4) = 0
    batch = next(iter(distill.sample_loader(EPISODES, model, 4, 0, torch.device("cpu"))))
    with torch.no_grad():
        chunk, decisions = distill.mixed_forward(model, modules, PLAN, batch, [0, 4])
        dense = model(*dataset.model_inputs(batch, model.spec))
    assert [(s, i) for s, i, _ in decisions] == [(2, 0), (5, 4)]
    assert torch.allclose(chunk, dense, atol=1e-6)


def test_larger_lambda_raises_skip_probability() -> None:
    probe = [next(iter(distill.sample_loader(EPISODES, active_model(), 16, 7, torch.device("cpu"))))]
    means = {}
    for lam in (0.0, 1.0):
        model = active_model()
        modules = distill.distill(model, PLAN, EPISODES, tiny_distill(5, 20, lam=lam))
        means[lam] = distill.mean_skip_probability(model, modules, PLAN, probe)
    assert means[1.0] > means[0.0] + 0.2, means


def test_harmonic_sampling_frequencies() -> None:
    plan = LayerPlan(num_layers=6, static_layers=(4, 5))  # gap 0: layers 0-3; gap 1: empty
    rng = np.random.default_rng(123)
    draws = 20000
    counts = np.zeros(4)
    for _ in range(draws):
        first, second = distill.sample_skip_layers(plan, rng)
        assert second is None
        assert first is not None
        counts[first] += 1
    expected = np.array([1.0, 1 / 2, 1 / 3, 1 / 4])
    expected = expected / expected.sum() * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, (counts, expected)  # chi-square, 3 degrees of freedom, p = 0.001
    assert np.all(np.diff(counts) < 0)  # earlier layers more often


def test_backbone_unchanged_by_distillation() -> None:
    model = active_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = distill.distill(model, PLAN, EPISODES, tiny_distill(3, 3, lam=0.1, batch_size=8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.parameters())
    assert not modules.training


def test_one_stage_runs_stage_two_loss_for_all_steps() -> None:
    history: list[dict[str, Any]] = []
    settings = tiny_distill(3, 4, lam=0.1, batch_size=8, one_stage=True)
    distill.distill(active_model(), PLAN, EPISODES, settings, history=history)
    assert [r["stage"] for r in history] == [2] * 7


def tiny_distill(stage1_steps: int, stage2_steps: int, **settings: Any) -> DistillSettings:
    """Distillation settings for the tiny model on the CPU."""
    return DistillSettings(stage1_steps, stage2_steps, **{"batch_size": 16, "lr": 1e-2, "device": "cpu", **settings})


def with_exit_errors(stage1_steps: int, batch_size: int, seed: int, measure: str = "absolute") -> tuple[
    ReferenceVLA, DySLModules, dict[str, torch.Tensor], list[torch.Tensor], dict[int, torch.Tensor]
]:
    """A model, stage-1 modules, one batch, its dense states and every dynamic layer's exit errors."""
    model = active_model()
    modules = distill.distill(model, PLAN, EPISODES, tiny_distill(stage1_steps, 0, batch_size=min(batch_size, 16)))
    batch = next(iter(distill.sample_loader(EPISODES, model, batch_size, seed, torch.device("cpu"))))
    with torch.no_grad():
        states = distill.dense_states(model, batch)
        errors = distill.exit_errors(model, modules, PLAN, states, model.head(states[-1]).float(), measure)
    return model, modules, batch, states, errors


@pytest.mark.parametrize("measure", EXIT_MEASURES)
def test_exit_errors_are_the_oracles_measure(measure: str) -> None:
    """Stage 3's labels come from the same jump as dysl_bench's oracle_exit: adapter, then the dense
    stack from the gap's static layer on, measured alike."""
    from dysl_ros.backends.torch_backend import TorchBackend
    from dysl_ros.bench.variants import OracleExitBackend

    model, modules, batch, _, errors = with_exit_errors(5, 3, 0, measure)
    assert sorted(errors) == list(PLAN.dynamic_layers)
    oracle = OracleExitBackend(TorchBackend(model, modules), PLAN, 0.0, measure=measure)
    for sample in range(3):
        inputs = {key: batch[key][sample : sample + 1].numpy() for key in ("image", "instruction", "proprio")}
        x = oracle.embed(inputs)
        for gap in PLAN.gaps:
            for i in gap.dynamic_layers:
                assert oracle.exit_error(i, x) == pytest.approx(float(errors[i][sample]), rel=1e-4, abs=1e-6)
                x = oracle.run_layers(i, i + 1, x)
            x = oracle.run_layers(gap.static, gap.static + 1, x)


def test_stage3_fits_the_controllers_to_the_exit_error_and_nothing_else() -> None:
    model, modules, _, states, errors = with_exit_errors(10, 16, 3)
    adapters = {k: v.clone() for k, v in modules.adapters.state_dict().items()}
    tolerance = float(torch.cat(list(errors.values())).median())  # half the labels positive
    history: list[dict[str, Any]] = []
    settings = tiny_distill(0, 0, stage3_steps=60, exit_tolerance=tolerance)
    fitted = distill.distill(model, PLAN, EPISODES, settings, history=history, modules=modules)
    losses = [r["loss"] for r in history if r["stage"] == 3]
    assert len(losses) == 60 and [r["stage"] for r in history] == [3] * 60
    first, last = first_last(losses, 10)
    assert last < 0.8 * first, (first, last)
    assert all(torch.equal(adapters[k], v) for k, v in fitted.adapters.state_dict().items())
    # The fitted controllers say "skip" more often where the jump lands within the tolerance.
    with torch.no_grad():
        p = torch.cat([fitted.controller(i)(states[i]) for i in PLAN.dynamic_layers])
    label = torch.cat([errors[i] <= tolerance for i in PLAN.dynamic_layers])
    assert 0 < int(label.sum()) < len(label)
    assert float(p[label].mean()) > float(p[~label].mean()) + 0.1
    with pytest.raises(ConfigError, match="exit tolerance"):
        distill.distill(model, PLAN, EPISODES, tiny_distill(0, 0, stage3_steps=1))


def test_exit_error_absolute_and_relative() -> None:
    """One definition for numpy (the bench's oracle) and torch (stage 3): the relative error is the
    absolute one over the dense chunk's mean |action|, floored so a still arm cannot divide by zero."""
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(3, 8, 4))
    dense[2] *= 1e-4  # a nearly still arm
    chunk = dense + rng.normal(scale=0.05, size=dense.shape)
    absolute = np.abs(chunk - dense).mean(axis=(1, 2))
    scale = np.maximum(np.abs(dense).mean(axis=(1, 2)), RELATIVE_FLOOR)
    for measure, expected in (("absolute", absolute), ("relative", absolute / scale)):
        assert np.allclose(exit_error(chunk, dense, measure), expected)
        assert np.allclose(exit_error(torch.from_numpy(chunk), torch.from_numpy(dense), measure).numpy(), expected)
    # The same deviation counts 10x more against a chunk a tenth the size; the floor caps the still arm's.
    deviation, small = chunk[0] - dense[0], 0.1 * dense[0]
    assert exit_error(small + deviation, small, "relative") == pytest.approx(
        10 * exit_error(dense[0] + deviation, dense[0], "relative"))
    assert exit_error(chunk[2], dense[2], "relative") == pytest.approx(absolute[2] / RELATIVE_FLOOR)
    with pytest.raises(ValueError, match="exit measure"):
        exit_error(chunk, dense, "squared")
    with pytest.raises(ConfigError, match="exit_measure must be one of"):
        tiny_distill(0, 0, stage3_steps=1, exit_tolerance=0.1, exit_measure="squared")


def test_stage3_task_tolerances_label_each_tasks_frames_by_their_own() -> None:
    """--task-exit-tolerance: a task at inf has every exit labelled "skip", so its frames' controllers
    learn to skip, while the other task's keep the shared tolerance's labels."""
    model, modules, _, _, errors = with_exit_errors(10, 16, 3)
    tolerance = float(torch.cat(list(errors.values())).quantile(0.2))  # mostly "run" labels
    tasks = [episode.task for episode in EPISODES]
    per_episode = distill.episode_tolerances(EPISODES, tolerance, {"reach": float("inf")})
    assert [math.isinf(v) for v in per_episode.tolist()] == [t == "reach" for t in tasks]
    assert all(v == pytest.approx(tolerance) for v, t in zip(per_episode.tolist(), tasks, strict=True) if t == "push")
    history: list[dict[str, Any]] = []
    settings = tiny_distill(0, 0, stage3_steps=60, exit_tolerance=tolerance, task_exit_tolerance=("reach=inf",))
    fitted = distill.distill(model, PLAN, EPISODES, settings, history=history, modules=modules)
    loader = distill.sample_loader(EPISODES, model, 64, 5, torch.device("cpu"))
    p_by_task: dict[str, list[float]] = {"reach": [], "push": []}
    with torch.no_grad():
        for batch in itertools.islice(loader, 3):
            states = distill.dense_states(model, batch)
            p = torch.stack([fitted.controller(i)(states[i]) for i in PLAN.dynamic_layers]).mean(dim=0)
            for value, episode in zip(p.tolist(), batch["episode"].tolist(), strict=True):
                p_by_task[tasks[episode]].append(value)
    assert np.mean(p_by_task["reach"]) > np.mean(p_by_task["push"]) + 0.2, p_by_task
    with pytest.raises(ConfigError, match="lack"):
        distill.episode_tolerances(EPISODES, tolerance, {"pick-place": 0.1})
    with pytest.raises(ConfigError, match="> 0"):
        distill.episode_tolerances(EPISODES, None, {"reach": 0.1})  # push frames would have no tolerance
    given = tiny_distill(0, 0, task_exit_tolerance=("reach=inf", " push = 0.02"))
    assert given.task_tolerances() == {"reach": float("inf"), "push": 0.02}
    for bad in ("reach", "=0.1", "reach=fast"):
        with pytest.raises(ConfigError, match="TASK=T"):
            tiny_distill(0, 0, task_exit_tolerance=(bad,)).task_tolerances()
    with pytest.raises(ConfigError, match="finite"):
        settings = tiny_distill(0, 0, stage3_steps=1, exit_tolerance=tolerance, task_exit_tolerance=("reach=inf",),
                                stage3_weighting="margin")
        distill.distill(model, PLAN, EPISODES, settings, modules=modules)


def test_stage3_margin_weighting_weighs_each_frame_by_its_distance_from_the_tolerance() -> None:
    model, modules, batch, states, errors = with_exit_errors(5, 8, 1)
    with torch.no_grad():
        tolerance = float(torch.cat(list(errors.values())).median())
        expected = []
        for i, error in errors.items():
            logits = modules.controller(i).logits(states[i])
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, (error <= tolerance).float(), reduction="none")
            expected.append((bce * (error - tolerance).abs() / tolerance).mean())
        loss, _, _ = distill.stage3_loss(model, modules, PLAN, batch, tolerance, "margin")
        plain, _, _ = distill.stage3_loss(model, modules, PLAN, batch, tolerance)
    assert float(loss) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)
    assert float(loss) != pytest.approx(float(plain), rel=1e-3)
    with pytest.raises(ConfigError, match="weighting"):
        distill.stage3_loss(model, modules, PLAN, batch, tolerance, "squared")


def test_adapter_init_identity_or_random() -> None:
    x = torch.randn(2, 5, TINY.hidden_size)
    for init, identity in (("identity", True), ("random", False)):
        settings = tiny_distill(0, 0, lam=0.1, batch_size=8, adapter_init=init)
        modules = distill.distill(active_model(), PLAN, EPISODES, settings)
        for layer in PLAN.dynamic_layers:
            with torch.no_grad():
                assert torch.allclose(modules.adapter(layer)(x), x) == identity, (init, layer)
    with pytest.raises(ConfigError, match="adapter_init"):
        distill.distill(active_model(), PLAN, EPISODES, tiny_distill(0, 0, lam=0.1, batch_size=8, adapter_init="zeros"))


# --------------------------------------------------------------------------------------------------
# Command-line entry points (the synthetic episodes as a demos directory)


def test_cli_bc_calibrate_distill(tmp_path: Path, demos_dir: Path, capsys: Any) -> None:
    model_dir = tmp_path / "model"
    config_json = tmp_path / "config.json"
    TINY.save(config_json)
    args = argparse.Namespace(
        demos=str(demos_dir), out=str(model_dir), steps=5, batch_size=8, lr=1e-3, device="cpu", seed=0,
        config_json=str(config_json), log_every=1,
    )
    assert bc.main_bc(args) == 0
    assert (model_dir / "model.safetensors").is_file()

    args = argparse.Namespace(
        model_dir=str(model_dir), demos=str(demos_dir), static_ratio=0.34, batches=1, batch_size=8, device="cpu", seed=0
    )
    assert calibrate.main_calibrate(args) == 0
    assert "static [" in capsys.readouterr().out

    variant = model_dir / "variants" / "lam0.01"
    distill_args: dict[str, Any] = {
        "model_dir": str(model_dir), "demos": str(demos_dir), "lam": 0.01, "stage1_steps": 2, "stage2_steps": 2,
        "one_stage": False, "device": "cpu", "seed": 0, "batch_size": 8, "modules_out": str(variant),
    }
    # The default module widths hold more than 2 % of this tiny backbone: refused before training.
    assert distill.main_distill(argparse.Namespace(**distill_args)) == 2
    assert "budget" in capsys.readouterr().err

    distill_args.update(adapter_bottleneck=1, controller_hidden=1)
    assert distill.main_distill(argparse.Namespace(**distill_args)) == 0
    bundle = load_bundle(model_dir, variant)
    assert bundle.has_dysl and bundle.dysl_config is not None
    assert bundle.plan == load_bundle(model_dir).plan  # the calibrated plan
    assert round(bundle.dysl_config.static_ratio * TINY.num_layers) == len(bundle.plan.static_layers)  # type: ignore[union-attr]
    report = json.loads((variant / distill.DISTILL_REPORT_FILE).read_text())
    assert report["parameters"]["ratio"] <= 0.02 and report["lambda"] == 0.01
    assert not (model_dir / "dysl_modules.safetensors").exists()  # the model dir's own modules: untouched
    assert not (variant / "model.safetensors").exists()  # a modules dir never copies the backbone

    # The no-static ablation: only the last layer static.
    no_static = model_dir / "variants" / "no_static"
    distill_args.update(modules_out=str(no_static), plan="last-layer-only")
    assert distill.main_distill(argparse.Namespace(**distill_args)) == 0
    bundle = load_bundle(model_dir, no_static)
    assert bundle.plan is not None and bundle.plan.static_layers == (TINY.num_layers - 1,)
    assert bundle.dysl_config is not None and round(bundle.dysl_config.static_ratio * TINY.num_layers) == 1
    assert json.loads((no_static / distill.DISTILL_REPORT_FILE).read_text())["plan"] == "last-layer-only"
    assert bundle.dysl_config.skip_threshold == 0.5  # the model dir's
    # --skip-threshold goes into the variant's dysl.json; out of (0, 1] it is refused.
    distill_args.update(modules_out=str(model_dir / "variants" / "t04"), plan="calibrated", skip_threshold=0.4)
    assert distill.main_distill(argparse.Namespace(**distill_args)) == 0
    assert load_bundle(model_dir, model_dir / "variants" / "t04").dysl_config.skip_threshold == 0.4  # type: ignore[union-attr]
    distill_args.update(skip_threshold=1.5)
    assert distill.main_distill(argparse.Namespace(**distill_args)) == 2
    assert "skip_threshold must lie in (0, 1]" in capsys.readouterr().err
    del distill_args["skip_threshold"]
    # Stage 3 alone, continuing from the lambda-0.01 modules: the adapters stay, the controllers move.
    fitted = model_dir / "variants" / "stage3"
    stage3_args = {**distill_args, "modules_out": str(fitted), "modules_from": str(variant), "stage1_steps": 0,
                   "stage2_steps": 0, "stage3_steps": 3, "exit_tolerance": 0.05}
    for key in ("adapter_bottleneck", "controller_hidden", "plan"):
        stage3_args.pop(key)
    assert distill.main_distill(argparse.Namespace(**stage3_args)) == 0
    before, after = load_bundle(model_dir, variant).modules, load_bundle(model_dir, fitted).modules
    assert before is not None and after is not None
    adapters, controllers = after.adapters.state_dict(), after.controllers.state_dict()
    assert all(torch.equal(v, adapters[k]) for k, v in before.adapters.state_dict().items())
    assert not all(torch.equal(v, controllers[k]) for k, v in before.controllers.state_dict().items())
    report = json.loads((fitted / distill.DISTILL_REPORT_FILE).read_text())
    assert report["stage3_steps"] == 3 and report["exit_tolerance"] == 0.05 and report["modules_from"] == str(variant)
    assert 0.0 <= report["final_label_rate"] <= 1.0
    assert distill.main_distill(argparse.Namespace(**{**stage3_args, "plan": "last-layer-only"})) == 2
    assert "--modules-from continues" in capsys.readouterr().err
    assert distill.main_distill(argparse.Namespace(**{**stage3_args, "exit_tolerance": 0.0})) == 2
    assert "exit tolerance" in capsys.readouterr().err
    # A modules dir that holds a model is refused (it would mix two models' files).
    distill_args.update(modules_out=str(tmp_path / "model"), plan="calibrated")
    assert distill.main_distill(argparse.Namespace(**distill_args)) == 0  # the model dir itself is fine
    other = tmp_path / "other"
    save_model(active_model(), other, dtype=torch.float32)
    distill_args.update(modules_out=str(other))
    assert distill.main_distill(argparse.Namespace(**distill_args)) == 2
    assert "holds a model" in capsys.readouterr().err

    # The per-layer router goes to <model dir>/variants/router by default.
    router_args = argparse.Namespace(
        model_dir=str(model_dir), demos=str(demos_dir), lam=0.01, stage1_steps=2, stage2_steps=2, device="cpu", seed=0,
        batch_size=8, adapter_bottleneck=1, controller_hidden=1,
    )
    assert router.main_router(router_args) == 0
    bundle = load_bundle(model_dir, model_dir / "variants" / "router")
    assert bundle.plan == LayerPlan.last_layer_only(TINY.num_layers) and bundle.modules is not None
    assert set(bundle.modules.adapters) == {str(i) for i in range(TINY.num_layers - 1)}
    report = json.loads((model_dir / "variants" / "router" / distill.DISTILL_REPORT_FILE).read_text())
    assert report["kind"] == "router" and report["parameters"]["ratio"] <= 0.02
    router_args.modules_out = str(model_dir)
    assert router.main_router(router_args) == 2
    assert "would replace DySL's" in capsys.readouterr().err


def test_calibrate_drops_modules_of_another_plan(tmp_path: Path) -> None:
    model = active_model()
    save_model(model, tmp_path, dtype=torch.float32)
    old = LayerPlan(num_layers=6, static_layers=(0, 5))
    save_dysl(tmp_path, old, DySLModules(TINY.hidden_size, old))
    settings = CalibrateSettings(static_ratio=0.34, batches=1, batch_size=8, device="cpu")
    plan = calibrate.calibrate_model_dir(tmp_path, EPISODES, settings)
    bundle = load_bundle(tmp_path)  # loads: no modules left that would not fit the new plan
    assert bundle.plan == plan
    assert (bundle.modules is None) == (plan.static_layers != old.static_layers)


# --------------------------------------------------------------------------------------------------
# The per-layer router baseline


def test_router_stage1_targets_are_the_next_layer_inputs() -> None:
    model = active_model()
    modules = DySLModules(TINY.hidden_size, router.router_plan(TINY.num_layers))
    batch = next(iter(distill.sample_loader(EPISODES, model, 4, 0, torch.device("cpu"))))
    states = distill.dense_states(model, batch)
    expected = sum(torch.nn.functional.mse_loss(states[i], states[i + 1]) for i in range(TINY.num_layers - 1))
    assert router.router_stage1_loss(model, modules, batch).item() == pytest.approx(float(expected), rel=1e-5)


def test_router_training_reduces_both_losses() -> None:
    history: list[dict[str, Any]] = []
    settings = RouterSettings(30, 40, lam=0.02, batch_size=16, lr=1e-2, device="cpu")
    router.train_router(active_model(), EPISODES, settings, history=history)
    stage1 = [r["loss"] for r in history if r["stage"] == 1]
    stage2 = [r["loss"] for r in history if r["stage"] == 2]
    assert len(stage1) == 30 and len(stage2) == 40
    first, last = first_last(stage1, 5)
    assert last < 0.7 * first, (first, last)
    first, last = first_last(stage2, 8)
    assert last < 0.8 * first, (first, last)


def test_router_forward_with_p_zero_is_the_dense_model_and_penalty_counts_layers() -> None:
    model = active_model()
    modules = DySLModules(TINY.hidden_size, router.router_plan(TINY.num_layers))
    with torch.no_grad():
        for controller in modules.controllers.values():
            controller.net[-1].weight.zero_()
            controller.net[-1].bias.fill_(-30.0)  # p ~ 0: every layer runs
    batch = next(iter(distill.sample_loader(EPISODES, model, 4, 0, torch.device("cpu"))))
    with torch.no_grad():
        chunk, ps = router.router_forward(model, modules, batch)
        dense = model.head(distill.dense_states(model, batch)[-1])
        terms = router.router_stage2_loss(model, modules, batch, lam=0.5)
    assert len(ps) == TINY.num_layers - 1
    torch.testing.assert_close(chunk, dense, atol=1e-5, rtol=1e-5)
    assert terms.task == pytest.approx(0.0, abs=1e-5)
    assert terms.penalty == pytest.approx(TINY.num_layers - 1, rel=1e-4)  # sum over routed layers of (1 - p)


def test_calibrate_spreads_or_takes_the_static_layers_and_distill_follows(tmp_path: Path) -> None:
    save_model(active_model(), tmp_path, dtype=torch.float32)
    settings = CalibrateSettings(static_ratio=0.17, batches=1, batch_size=8, device="cpu", max_gap=2)
    plan = calibrate.calibrate_model_dir(tmp_path, EPISODES, settings)
    assert all(len(gap) <= 2 for gap in plan.gaps) and plan.rule == "lowest_similarity, max_gap 2"
    bundle = load_bundle(tmp_path)
    assert bundle.plan is not None and bundle.plan.rule == plan.rule and bundle.dysl_config is not None
    assert round(bundle.dysl_config.static_ratio * 6) == len(plan.static_layers)  # what the runtime checks
    small = tiny_distill(1, 1, lam=0.01, batch_size=8, adapter_bottleneck=1, controller_hidden=1)
    distill.distill_model_dir(tmp_path, EPISODES, small)
    # A plan edited by hand: the old plan's modules no longer fit, distill replaces them (no load error).
    LayerPlan.explicit(6, [1, 3, 5], plan.similarities).save(tmp_path / "layer_plan.json")
    with pytest.raises(ModelDirError, match="another layer plan"):
        load_bundle(tmp_path)
    distill.distill_model_dir(tmp_path, EPISODES, small)
    assert load_bundle(tmp_path).has_dysl
    with pytest.raises(ConfigError, match="not both"):
        CalibrateSettings(batches=1, device="cpu", static_layers="2,5", max_gap=2)
