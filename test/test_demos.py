"""Meta-World demonstrations: the environment wrapper, generation with worker processes, the loader.

These render for real (MuJoCo offscreen, EGL on the CPU): a short episode limit keeps them quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dysl_ros.model.spec import VLAConfig, tokenize
from dysl_ros.mt10.env import make_env
from dysl_ros.mt10.tasks import INSTRUCTIONS, MT10_TASKS, episode_seed, parse_tasks
from dysl_ros.tools import train
from dysl_ros.training.demos import (
    FORMAT,
    DemoFormatError,
    DemoSet,
    Episode,
    generate_demos,
    load_demo_dirs,
    load_demos,
    write_episode,
)
from dysl_ros.training.settings import DemosSettings

TASK = "reach-v3"
MAX_STEPS = 70  # the reach expert succeeds in 33-60 steps: episodes end on success + 8 steps
SIZE = 64


def small(episodes: int, **settings: Any) -> DemosSettings:
    """Demos of TASK at the tests' image size, one worker unless said."""
    return DemosSettings(**{"tasks": TASK, "episodes_per_task": episodes, "workers": 1, "image_size": SIZE, **settings})


@pytest.fixture(scope="module")
def demos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demos")
    summary = generate_demos(out, small(2, seed=0, workers=2, max_steps=MAX_STEPS, keep_failures=True), progress=False)
    assert summary[TASK]["episodes"] == 2 and summary[TASK]["kept"] == 2
    return out


def test_tasks_and_instructions() -> None:
    assert len(MT10_TASKS) == 10 and set(INSTRUCTIONS) == set(MT10_TASKS)
    limit = VLAConfig().instruction_tokens
    seen: set[str] = set()
    for task, phrasings in INSTRUCTIONS.items():
        assert len(phrasings) >= 3 and len(set(phrasings)) == len(phrasings), task
        for text in phrasings:
            # Nothing cut off by the model's byte tokenizer, and no phrasing shared between tasks.
            assert len(text.encode()) <= limit and (tokenize(text, limit) != 256).sum() == len(text), text
            assert text not in seen
            seen.add(text)
    assert parse_tasks("all") == list(MT10_TASKS)
    assert parse_tasks("push-v3, reach-v3") == ["reach-v3", "push-v3"]
    with pytest.raises(ValueError, match="unknown task"):
        parse_tasks("reach-v2")


def test_env_is_deterministic_and_renders_upright() -> None:
    with make_env(TASK, seed=3, image_size=SIZE, max_steps=5) as env:
        first = env.reset()
        image = env.render()
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.std() > 10
        proprio = env.proprio(first)
        assert proprio.dtype == np.float32 and proprio.shape == (4,)
        action = env.expert_action(first)
        assert action.dtype == np.float32 and action.shape == (4,) and np.abs(action).max() <= 1.0
        done = False
        for _ in range(5):
            assert not done
            _obs, _success, done = env.step(action)
        assert done and env.steps == 5
        with pytest.raises(RuntimeError, match="reset"):
            env.step(action)
        other = env.reset(seed=4)
        assert not np.array_equal(other, first)  # another seed places goal and objects elsewhere
        again = env.reset(seed=3)
        np.testing.assert_array_equal(again, first)
        np.testing.assert_array_equal(env.render(), image)
        # The camera looks at the table from above: the top rows are background, the table is below.
        assert image[: SIZE // 8].std() < image[SIZE // 2 :].std()


def test_first_frame_shows_this_episodes_goal() -> None:
    """After an episode of one seed, the first frame of the next is exactly that of a fresh
    environment: Meta-World moves the goal site after its last forward pass of the reset, and the
    first frame used to draw the previous episode's goal."""
    with make_env(TASK, seed=3, image_size=SIZE) as used, make_env(TASK, seed=4, image_size=SIZE) as fresh:
        used.reset()
        for _ in range(3):
            used.step(np.zeros(4))
        used.reset(seed=4)
        fresh.reset()
        np.testing.assert_array_equal(used.render(), fresh.render())
        # And it is the frame of the state itself: nothing changes when MuJoCo recomputes it.
        first = fresh.render()
        fresh._mujoco.mj_forward(fresh._env.model, fresh._env.data)
        np.testing.assert_array_equal(fresh.render(), first)


def test_action_noise_moves_the_arm_off_the_expert_path_with_clean_labels(tmp_path: Path) -> None:
    """DART: the executed actions carry noise, the recorded labels are the expert's for the states
    actually reached (Meta-World's experts read only the state vector), and an episode is still a pure
    function of its seed."""
    noisy, again, clean = tmp_path / "noisy", tmp_path / "again", tmp_path / "clean"
    common: dict[str, Any] = dict(seed=0, max_steps=20, keep_failures=True)
    generate_demos(noisy, small(1, action_noise=0.3, **common), progress=False)
    generate_demos(again, small(1, action_noise=0.3, **common), progress=False)
    generate_demos(clean, small(1, **common), progress=False)
    assert json.loads((noisy / "index.json").read_text())["action_noise"] == 0.3
    (episode,), (repeat,), (plain,) = (load_demos(d).episodes for d in (noisy, again, clean))
    assert episode.seed == plain.seed and episode.states is not None
    np.testing.assert_array_equal(episode.proprio, repeat.proprio)
    assert not np.allclose(episode.proprio[1:, :3], plain.proprio[1:, :3], atol=1e-4)  # off the clean path
    with make_env(TASK, seed=episode.seed, image_size=SIZE) as env:
        labels = np.stack([env.expert_action(state.astype(np.float64)) for state in episode.states])
    np.testing.assert_allclose(episode.actions, labels, atol=1e-5)
    with pytest.raises(ValueError, match="action_noise"):
        generate_demos(tmp_path / "bad", small(1, action_noise=-0.1, **common), progress=False)


def test_goal_marker_radius_changes_the_picture_only() -> None:
    with make_env(TASK, seed=3, image_size=SIZE) as plain, make_env(
        TASK, seed=3, image_size=SIZE, goal_marker_radius=0.05
    ) as marked:
        obs = plain.reset()
        np.testing.assert_array_equal(marked.reset(), obs)
        np.testing.assert_array_equal(marked.expert_action(obs), plain.expert_action(obs))
        changed = np.any(plain.render() != marked.render(), axis=-1)
        # A 5 cm sphere instead of 2 cm: a blob of pixels around the goal, not the whole picture.
        assert 4 <= changed.sum() <= SIZE * SIZE // 20
        action = plain.expert_action(obs)
        np.testing.assert_array_equal(marked.step(action)[0], plain.step(action)[0])


def test_bad_env_arguments() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        make_env("reach-v2", seed=0)
    with pytest.raises(ValueError, match="seed"):
        make_env(TASK, seed=-1)
    with pytest.raises(ValueError, match="no camera"):
        make_env(TASK, seed=0, camera="nope")
    for radius in (0.0, -0.01, 0.5):
        with pytest.raises(ValueError, match="goal_marker_radius"):
            make_env(TASK, seed=0, goal_marker_radius=radius)


def test_demos_round_trip(demos_dir: Path) -> None:
    index = json.loads((demos_dir / "index.json").read_text())
    assert index["format"] == FORMAT and index["image_size"] == SIZE and index["camera"] == "corner"
    assert index["goal_marker_radius"] is None  # Meta-World's own marker, the default
    demos = load_demos(demos_dir)
    assert demos.goal_marker_radius is None
    assert isinstance(demos, DemoSet) and demos.image_size == SIZE and len(demos.episodes) == 2
    assert [e.seed for e in demos.episodes] == [episode_seed(0, TASK, i) for i in range(2)]
    for entry, episode in zip(index["episodes"], demos.episodes, strict=True):
        steps = episode.steps
        assert 1 <= steps <= MAX_STEPS and entry["steps"] == steps
        assert episode.task == TASK and episode.instruction in INSTRUCTIONS[TASK]
        assert episode.images.shape == (steps, SIZE, SIZE, 3) and episode.images.dtype == np.uint8
        assert episode.proprio.shape == (steps, 4) and episode.proprio.dtype == np.float32
        assert episode.actions.shape == (steps, 4) and episode.actions.dtype == np.float32
        assert episode.success.shape == (steps,) and episode.success.dtype == np.bool_
        # Meta-World's state rides along for training-time supervision: hand and gripper are the proprio,
        # the goal (last three values) stays put during a reach episode.
        assert episode.states is not None and episode.states.shape == (steps, 39)
        assert episode.states.dtype == np.float32
        assert np.array_equal(episode.states[:, :4], episode.proprio)
        assert np.allclose(episode.states[:, 36:], episode.states[0, 36:])
        assert np.abs(episode.actions).max() <= 1.0
        assert not np.array_equal(episode.images[0], episode.images[-1])  # the arm moved
        assert np.abs(np.diff(episode.proprio[:, :3], axis=0)).max() > 1e-3
        assert entry["success"] == bool(episode.success.any())
        assert not episode.success[0]  # nothing succeeds on the first step
    # Within 70 steps the reach expert succeeds; the episode ends 8 steps after it does.
    assert all(e.succeeded for e in demos.episodes)
    assert index["summary"][TASK] == {"episodes": 2, "successes": 2, "kept": 2, "frames": sum(
        e.steps for e in demos.episodes)}
    # Loading the index file itself works too.
    assert len(load_demos(demos_dir / "index.json").episodes) == 2


def test_same_seed_same_data_different_seed_different_data(demos_dir: Path, tmp_path: Path) -> None:
    reference = load_demos(demos_dir).episodes
    # One worker instead of two: other process, other env reuse order, the same data.
    again = tmp_path / "again"
    generate_demos(again, small(2, seed=0, max_steps=MAX_STEPS, keep_failures=True), progress=False)
    for a, b in zip(reference, load_demos(again).episodes, strict=True):
        assert (a.seed, a.instruction) == (b.seed, b.instruction)
        for name in ("images", "proprio", "actions", "success"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)

    # Another run seed: other episodes. max_steps=5 is too short to succeed, so by default nothing is kept.
    other = tmp_path / "other"
    summary = generate_demos(other, small(1, seed=1, max_steps=5), progress=False)
    assert summary[TASK] == {"episodes": 1, "successes": 0, "kept": 0, "frames": 0}
    assert load_demos(other).episodes == []
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_demos(other, small(1, seed=1, max_steps=5), progress=False)
    generate_demos(other, small(1, seed=1, max_steps=5, keep_failures=True), overwrite=True, progress=False)
    (episode,) = load_demos(other).episodes
    assert episode.seed != reference[0].seed and episode.steps == 5 and not episode.succeeded
    # The hand always starts at the same place; the goal (drawn in the image) and so the expert's moves differ.
    assert not np.array_equal(episode.images[0], reference[0].images[0])
    assert not np.array_equal(episode.actions, reference[0].actions[:5])

    # The goal marker's radius is recorded, and changes the pictures, not the episode.
    marked = tmp_path / "marked"
    generate_demos(marked, small(1, seed=1, max_steps=5, keep_failures=True, goal_marker_radius=0.04), progress=False)
    marked_set = load_demos(marked)
    assert marked_set.goal_marker_radius == 0.04
    np.testing.assert_array_equal(marked_set.episodes[0].actions, episode.actions)
    assert not np.array_equal(marked_set.episodes[0].images, episode.images)


def test_several_directories_read_as_one_set(demos_dir: Path, tmp_path: Path) -> None:
    # Episodes 0..2 of the same run seed: the first two are the fixture's, so they count once.
    more = tmp_path / "more"
    generate_demos(more, small(3, seed=0, max_steps=MAX_STEPS, keep_failures=True), progress=False)
    merged = load_demo_dirs(f"{demos_dir},{more}")
    assert [e.seed for e in merged.episodes] == [episode_seed(0, TASK, i) for i in range(3)]
    assert len(load_demo_dirs([demos_dir]).episodes) == 2
    # Pictures drawn otherwise do not mix.
    other = _copy_demos(demos_dir, tmp_path / "other_size")
    index = json.loads((other / "index.json").read_text())
    (other / "index.json").write_text(json.dumps({**index, "goal_marker_radius": 0.04}))
    with pytest.raises(DemoFormatError, match="drawn differently"):
        load_demo_dirs([demos_dir, other])
    with pytest.raises(DemoFormatError, match="no demonstrations directory"):
        load_demo_dirs(" , ")


def _copy_demos(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_bad_index_is_a_clear_error(demos_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DemoFormatError, match=r"missing .*dysl_train demos"):
        load_demos(tmp_path / "nothing_here")

    broken = _copy_demos(demos_dir, tmp_path / "broken")
    index_path = broken / "index.json"
    good = json.loads(index_path.read_text())

    index_path.write_text("{not json")
    with pytest.raises(DemoFormatError, match="not readable JSON"):
        load_demos(broken)

    for change, message in (
        ({"format": "something/9"}, "format"),
        ({"image_size": "128"}, "'image_size' must be int"),
        ({"episodes": [{**good["episodes"][0], "file": "gone.npz"}]}, "gone.npz is missing"),
        ({"episodes": [{**good["episodes"][0], "steps": 999}]}, "the index says 999"),
        ({"episodes": [{**good["episodes"][0], "file": "../x.npz"}]}, "plain name"),
        ({"episodes": [{k: v for k, v in good["episodes"][0].items() if k != "task"}]}, "missing 'task'"),
        ({"image_size": 32}, "the index says 32"),
        ({"goal_marker_radius": -1.0}, "goal_marker_radius must be None or in"),
    ):
        index_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(DemoFormatError, match=message):
            load_demos(broken)

    # An episode file with the wrong dtype is refused too.
    index_path.write_text(json.dumps(good))
    first = broken / good["episodes"][0]["file"]
    with np.load(first) as data:
        arrays = {name: data[name] for name in data.files}
    np.savez(first, **{**arrays, "actions": arrays["actions"].astype(np.float64)})
    with pytest.raises(DemoFormatError, match="actions must be float32"):
        load_demos(broken)
    first.write_bytes(b"not a zip")
    with pytest.raises(DemoFormatError, match="not a readable npz"):
        load_demos(broken)


def test_write_episode_checks_arrays(tmp_path: Path) -> None:
    steps = 3
    episode = Episode(
        task=TASK, instruction="reach the goal position", seed=1,
        images=np.zeros((steps, 8, 8, 3), np.uint8), proprio=np.zeros((steps, 4), np.float32),
        actions=np.zeros((steps, 4), np.float32), success=np.zeros(steps, np.bool_),
    )
    assert write_episode(tmp_path, episode).name == f"{TASK}__1.npz"
    with pytest.raises(DemoFormatError, match="proprio has shape"):
        write_episode(tmp_path, Episode(**{**episode.__dict__, "proprio": np.zeros((2, 4), np.float32)}))
    with pytest.raises(DemoFormatError, match=r"states must be float32 \(3, 39\)"):
        write_episode(tmp_path, Episode(**{**episode.__dict__, "states": np.zeros((3, 38), np.float32)}))


def test_demonstrations_without_states_still_load(tmp_path: Path) -> None:
    """Directories recorded before states were kept load with ``states`` None; a torn states array
    in a file is a clear error."""
    steps = 2
    episode = Episode(
        task=TASK, instruction="reach the goal position", seed=5,
        images=np.zeros((steps, 8, 8, 3), np.uint8), proprio=np.zeros((steps, 4), np.float32),
        actions=np.zeros((steps, 4), np.float32), success=np.zeros(steps, np.bool_),
    )
    write_episode(tmp_path, episode)
    index = {"format": FORMAT, "image_size": 8, "camera": "corner", "episodes": [
        {"file": episode.file_name, "task": TASK, "instruction": episode.instruction, "seed": 5, "steps": steps,
         "success": False}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert load_demos(tmp_path).episodes[0].states is None

    arrays = {name: getattr(episode, name) for name in ("images", "proprio", "actions", "success")}
    np.savez_compressed(tmp_path / episode.file_name, **arrays, states=np.zeros((steps, 39), np.float64))
    with pytest.raises(DemoFormatError, match="states must be float32"):
        load_demos(tmp_path)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train.main(["demos", "--out", str(tmp_path), "--tasks", "reach-v2"]) == 2
    assert "unknown task" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["demos", "--out", str(tmp_path), "--goal-marker-radius", "0.5"])
    assert "in (0, 0.2] metres or 'none', got '0.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        train.main(["nonsense"])
    assert exit_info.value.code == 2
