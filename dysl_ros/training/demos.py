"""Scripted-expert demonstrations on Meta-World MT10: ``dysl_train demos``, and their loader.

On disk (format ``dysl_demos/1``)::

    <out>/index.json
        {"format": "dysl_demos/1", "image_size": 128, "camera": "corner",
         "goal_marker_radius": 0.04, "action_noise": 0.3, "max_steps": 200, "seed": 0,
         "episodes": [{"file": "reach-v3__123456.npz", "task": "reach-v3",
                       "instruction": "reach the goal position", "seed": 123456,
                       "steps": 53, "success": true}, ...],
         "summary": {"reach-v3": {"episodes": 5, "successes": 5, "kept": 5, "frames": 260}, ...}}
    <out>/<task>__<seed>.npz       one episode, T steps (compressed npz):
        images   uint8   (T, S, S, 3)  RGB camera image of the state the action was taken in (upright)
        proprio  float32 (T, 4)        hand xyz (m) and gripper opening (0..1) in that state
        actions  float32 (T, 4)        the expert's action, clipped to [-1, 1]
        success  bool    (T,)          Meta-World's info["success"] after that action
        states   float32 (T, 39)       Meta-World's state vector in that state (hand, objects, goal);
                                       privileged, for training-time supervision only (optional:
                                       demonstrations recorded before 2026-12 lack it)

``goal_marker_radius``: the radius (m) the goal marker was drawn with (``dysl_ros.mt10.env``), null or
absent for Meta-World's own; evaluate a policy with the radius its demonstrations had.
``action_noise``: the standard deviation of the noise added to the executed hand actions (DART,
``record_episode``; the recorded ``actions`` are always the expert's clean ones), 0 or absent: none.
``summary`` counts per task: ``episodes`` run, ``successes`` of the expert among them, ``kept``
episodes written (only successful ones unless ``--keep-failures``) and their ``frames``.
``arm`` (absent: ``ee``): ``ee`` for Meta-World's end-effector control (proprio hand xyz + gripper,
actions the 4-D hand motion + gripper); ``joint`` for the Sawyer driven through joint position servos
(``mt10.joint_env``: proprio the seven arm joint positions + the two finger positions, (T, 9);
actions, (T, 8), per arm joint the expert's target minus the measured position, rad, then the gripper
command; training adds a chunk of them up from its first row, ``Episode.relative_actions``), with
``state_names``, ``action_names``, ``control_period_s`` and ``within_limits`` (true: the arm moved
within the Sawyer's velocity and acceleration limits, ``--within-limits``).

Episode ``i`` of task ``k`` (index in ``MT10_TASKS``) under ``--seed s`` gets the environment seed
``SeedSequence([s, k, i])``: the same demonstration whatever other tasks, episode counts or worker
counts are asked for. Its instruction is one of the task's phrasings, drawn from that seed too.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TextIO

import numpy as np
import numpy.typing as npt

from dysl_ros.motion import MotionLimiter, MotionState
from dysl_ros.mt10.env import MetaWorldTask, check_goal_marker_radius, make_env
from dysl_ros.mt10.joint_env import ACTION_NAMES as JOINT_ACTION_NAMES
from dysl_ros.mt10.joint_env import CONTROL_PERIOD_S, STATE_NAMES, JointSpaceTask
from dysl_ros.mt10.tasks import ACTION_DIM, ARMS, PROPRIO_DIM, episode_seed, parse_tasks, pick_instruction
from dysl_ros.training.settings import DemosSettings

FORMAT = "dysl_demos/1"
INDEX_FILE = "index.json"
ARRAYS = ("images", "proprio", "actions", "success")
ARM_DIMS: dict[str, tuple[int, int]] = {
    "ee": (PROPRIO_DIM, ACTION_DIM),
    "joint": (len(STATE_NAMES), len(JOINT_ACTION_NAMES)),
}
"""Per arm control (``ARMS``): (proprio, action) sizes of an episode's rows."""
JOINT_RELATIVE_ACTIONS = tuple(
    i for i, name in enumerate(JOINT_ACTION_NAMES) if i < len(STATE_NAMES) and STATE_NAMES[i] == name
)
"""Joint demonstrations: the arm joints' actions, each relative to the proprio column of the same index."""
STATE_DIM = 39
"""Meta-World v3's state vector: hand xyz, gripper, object 1 pos + quat, object 2 pos + quat, the
previous frame's 18 values, goal xyz."""


class DemoFormatError(ValueError):
    """A demonstrations directory that is missing, incomplete or not in the ``dysl_demos/1`` format."""


@dataclass(frozen=True)
class Episode:
    task: str
    instruction: str
    seed: int
    images: npt.NDArray[np.uint8]
    """(T, S, S, 3) RGB."""
    proprio: npt.NDArray[np.float32]
    """(T, 4) hand xyz + gripper opening."""
    actions: npt.NDArray[np.float32]
    """(T, 4) in [-1, 1]."""
    success: npt.NDArray[np.bool_]
    """(T,) success after each action."""
    states: npt.NDArray[np.float32] | None = None
    """(T, 39) Meta-World's state vector, or None (older demonstrations). Never a model input: it
    is what the scene was, for auxiliary losses in training."""
    relative_actions: tuple[int, ...] = ()
    """Action columns recorded relative to the same row's proprio column (``arm`` joint: the seven arm
    joints, target minus measured); training's chunks integrate them (``dataset.action_chunk``)."""

    @property
    def steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())

    @property
    def file_name(self) -> str:
        return f"{self.task}__{self.seed}.npz"


@dataclass
class DemoSet:
    episodes: list[Episode]
    image_size: int
    camera: str
    summary: dict[str, dict[str, int]] = field(default_factory=dict)
    goal_marker_radius: float | None = None
    arm: str = "ee"

    def tasks(self) -> list[str]:
        return sorted({e.task for e in self.episodes})


# Writing and reading ------------------------------------------------------------------------------


def write_episode(out_dir: str | Path, episode: Episode, arm: str = "ee") -> Path:
    """Write one episode as ``<out_dir>/<task>__<seed>.npz`` (atomically) and return its path."""
    _check_arrays(
        episode.images, episode.proprio, episode.actions, episode.success, f"episode {episode.file_name}",
        ARM_DIMS[arm],
    )
    _check_states(episode.states, episode.steps, f"episode {episode.file_name}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / episode.file_name
    # Written under a temporary name and renamed, so an interrupted run never leaves a torn file.
    tmp = path.with_name(path.name + ".tmp")
    arrays: dict[str, npt.NDArray[Any]] = {
        "images": episode.images, "proprio": episode.proprio, "actions": episode.actions, "success": episode.success,
    }
    if episode.states is not None:
        arrays["states"] = episode.states
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    os.replace(tmp, path)
    return path


def load_demo_dirs(spec: str | Path | Sequence[str | Path]) -> DemoSet:
    """One demonstrations directory, or several (a list, or comma-separated) read as one set.

    Several must be drawn alike (image size, camera, goal marker); an episode in more than one of
    them (same task and seed, e.g. a run with more episodes per task) counts once.
    """
    paths: list[str | Path]
    if isinstance(spec, str):
        paths = [part.strip() for part in spec.split(",") if part.strip()]
    elif isinstance(spec, Path):
        paths = [spec]
    else:
        paths = list(spec)
    if not paths:
        raise DemoFormatError("no demonstrations directory given")
    sets = [load_demos(path) for path in paths]
    first = sets[0]
    if len(sets) == 1:
        return first
    drawn = (first.image_size, first.camera, first.goal_marker_radius, first.arm)
    for path, other in zip(paths[1:], sets[1:], strict=True):
        if (other.image_size, other.camera, other.goal_marker_radius, other.arm) != drawn:
            raise DemoFormatError(
                f"{path} is drawn differently from {paths[0]}: image size, camera, goal marker, arm "
                f"{(other.image_size, other.camera, other.goal_marker_radius, other.arm)} vs {drawn}"
            )
    episodes: list[Episode] = []
    seen: set[tuple[str, int]] = set()
    for demo_set in sets:
        for episode in demo_set.episodes:
            if (episode.task, episode.seed) not in seen:
                seen.add((episode.task, episode.seed))
                episodes.append(episode)
    return DemoSet(episodes=episodes, image_size=first.image_size, camera=first.camera,
                   goal_marker_radius=first.goal_marker_radius, arm=first.arm)


def load_demos(path: str | Path) -> DemoSet:
    """Read a demonstrations directory (or its ``index.json``); every file is checked against the index."""
    root = Path(path)
    index_path = root if root.name == INDEX_FILE else root / INDEX_FILE
    root = index_path.parent
    if not index_path.is_file():
        raise DemoFormatError(
            f"no demonstrations at {root}: {index_path} is missing (make them with `dysl_train demos --out {root}`)"
        )
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DemoFormatError(f"{index_path} is not readable JSON: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise DemoFormatError(f"{index_path}: format is {found!r}, expected {FORMAT!r}")
    image_size = _field(index, "image_size", int, index_path)
    camera = _field(index, "camera", str, index_path)
    goal_marker_radius = index.get("goal_marker_radius")
    try:
        check_goal_marker_radius(goal_marker_radius)
    except ValueError as exc:
        raise DemoFormatError(f"{index_path}: {exc}") from exc
    entries = _field(index, "episodes", list, index_path)
    arm = index.get("arm", "ee")
    if arm not in ARMS:
        raise DemoFormatError(f"{index_path}: arm must be one of {ARMS}, got {arm!r}")
    summary = index.get("summary", {})
    if not isinstance(summary, dict):
        raise DemoFormatError(f"{index_path}: 'summary' must be an object")

    episodes = []
    for number, entry in enumerate(entries):
        where = f"{index_path} episode {number}"
        if not isinstance(entry, dict):
            raise DemoFormatError(f"{where}: must be an object, got {type(entry).__name__}")
        file_name = _field(entry, "file", str, where)
        steps = _field(entry, "steps", int, where)
        file_path = root / file_name
        if Path(file_name).name != file_name:
            raise DemoFormatError(f"{where}: file {file_name!r} must be a plain name inside {root}")
        if not file_path.is_file():
            raise DemoFormatError(f"{where}: {file_path} is missing")
        try:
            with np.load(file_path, allow_pickle=False) as data:
                missing = [name for name in ARRAYS if name not in data.files]
                if missing:
                    raise DemoFormatError(f"{file_path}: missing array(s) {missing}")
                images, proprio, actions, success = (data[name] for name in ARRAYS)
                states = data["states"] if "states" in data.files else None
        except DemoFormatError:
            raise
        except (OSError, ValueError) as exc:
            raise DemoFormatError(f"{file_path} is not a readable npz file: {exc}") from exc
        _check_arrays(images, proprio, actions, success, str(file_path), ARM_DIMS[arm])
        _check_states(states, actions.shape[0], str(file_path))
        if images.shape[1] != image_size:
            raise DemoFormatError(f"{file_path}: images are {images.shape[1]} px, the index says {image_size}")
        if actions.shape[0] != steps:
            raise DemoFormatError(f"{file_path}: {actions.shape[0]} steps, the index says {steps}")
        episodes.append(
            Episode(
                task=_field(entry, "task", str, where),
                instruction=_field(entry, "instruction", str, where),
                seed=_field(entry, "seed", int, where),
                images=images,
                proprio=proprio,
                actions=actions,
                success=success,
                states=states,
                relative_actions=JOINT_RELATIVE_ACTIONS if arm == "joint" else (),
            )
        )
    return DemoSet(
        episodes=episodes, image_size=image_size, camera=camera, summary=summary,
        goal_marker_radius=None if goal_marker_radius is None else float(goal_marker_radius), arm=arm,
    )


def _field(data: Mapping[str, Any], name: str, kind: type, where: object) -> Any:
    if name not in data:
        raise DemoFormatError(f"{where}: missing {name!r}")
    value = data[name]
    # bool is an int in Python; a flag where a count belongs is a broken index, not a 0 or 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DemoFormatError(f"{where}: {name!r} must be {kind.__name__}, got {value!r}")
    return value


def _check_arrays(
    images: Any, proprio: Any, actions: Any, success: Any, where: str, dims: tuple[int, int] = ARM_DIMS["ee"]
) -> None:
    steps = actions.shape[0] if getattr(actions, "ndim", 0) >= 1 else -1
    expected = (
        ("images", images, np.uint8, (steps, None, None, 3)),
        ("proprio", proprio, np.float32, (steps, dims[0])),
        ("actions", actions, np.float32, (steps, dims[1])),
        ("success", success, np.bool_, (steps,)),
    )
    for name, array, dtype, shape in expected:
        if not isinstance(array, np.ndarray) or array.dtype != dtype:
            found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise DemoFormatError(f"{where}: {name} must be {np.dtype(dtype).name}, got {found}")
        if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape, strict=True)):
            raise DemoFormatError(f"{where}: {name} has shape {array.shape}, expected {shape} (None = any)")
    if steps < 1:
        raise DemoFormatError(f"{where}: an episode needs at least one step")
    if images.shape[1] != images.shape[2]:
        raise DemoFormatError(f"{where}: images must be square, got {images.shape[1:3]}")


def _check_states(states: Any, steps: int, where: str) -> None:
    if states is None:
        return
    if not isinstance(states, np.ndarray) or states.dtype != np.float32 or states.shape != (steps, STATE_DIM):
        found = (states.dtype, states.shape) if isinstance(states, np.ndarray) else type(states).__name__
        raise DemoFormatError(f"{where}: states must be float32 ({steps}, {STATE_DIM}), got {found}")


# Generating ---------------------------------------------------------------------------------------


def record_episode(env: MetaWorldTask, seed: int, instruction: str, action_noise: float = 0.0) -> Episode:
    """Run the scripted expert for one episode of ``env``'s task, recording what the VLA sees and does.

    ``action_noise`` > 0 (DART): the arm executes the expert's action plus Gaussian noise of that
    standard deviation on the hand's dx, dy, dz (not the gripper), while the recorded label stays the
    expert's clean action for the state reached. The policy then sees states off the expert's exact
    path, with the correction to make there. Without it, every episode runs on a straight line from
    the same start, so the hand's position alone tells which way the goal lies: the policy learned to
    keep going the way it went, and one wrong first chunk sent it astray for good. The noise is drawn
    from the episode seed, so an episode stays a pure function of it.
    """
    rng = np.random.default_rng([seed, 7])
    obs = env.reset(seed)
    images, proprio, actions, success, states = [], [], [], [], []
    while True:
        # The frame, proprio and action of a row all belong to the state before the action.
        images.append(env.render())
        proprio.append(env.proprio(obs))
        states.append(obs)
        action = env.expert_action(obs)
        actions.append(action)
        executed = action.copy()
        if action_noise > 0:
            executed[:3] += rng.normal(0.0, action_noise, 3).astype(np.float32)
        obs, succeeded, done = env.step(executed)
        success.append(succeeded)
        if done:
            break
    return _stacked(env.task, instruction, seed, images, proprio, actions, success, states)


def sawyer_limiter() -> MotionLimiter:
    """The Sawyer's position, velocity and acceleration limits (``sim.sawyer``, as sim_bridge's URDF and
    joint_limits parameters give them to dysl_node), planned at the control period."""
    from dysl_ros.sim.sawyer import planner_limits

    return MotionLimiter(planner_limits(), round(CONTROL_PERIOD_S * 1e9))


def record_joint_episode(env: JointSpaceTask, seed: int, instruction: str, action_noise: float = 0.0,
                         limiter: MotionLimiter | None = None) -> Episode:
    """``record_episode`` for the Sawyer driven through its joints (``mt10.joint_env``): each row's
    proprio is the measured joint state (``STATE_NAMES``), its action the expert's joint targets minus
    the measured arm positions, then the gripper command. With ``action_noise`` the arm executes the
    targets of the expert's hand motion plus noise (DART, as in ``record_episode``); the label stays the
    clean one for the state reached.

    With ``limiter`` the targets are where the limiter gets in one period from the commanded state
    toward the expert's (``MotionLimiter.follow``, with the expert's own step as the target velocity):
    the expert's inverse kinematics asks for several rad/s near its singular poses (button-press-topdown's
    press), which no arm within its limits makes; the expert closes the loop on what the arm did."""
    rng = np.random.default_rng([seed, 7])
    obs = env.reset(seed)
    images, proprio, actions, success, states = [], [], [], [], []
    commanded = MotionState.at_rest(0, env.joint_positions()) if limiter is not None else None
    previous: npt.NDArray[np.float64] | None = None  # the expert's last executed targets
    done = False
    while not done:
        images.append(env.render())
        proprio.append(env.proprio())
        states.append(obs)
        noise = rng.normal(0.0, action_noise, 3) if action_noise > 0 else None
        targets, gripper, executed = env.expert(obs, noise)
        if limiter is not None and commanded is not None:
            velocity = None if previous is None else (executed - previous) / CONTROL_PERIOD_S
            previous = executed
            targets = limiter.follow(commanded, targets, velocity).p
            commanded = limiter.follow(commanded, executed, velocity)
            executed = commanded.p
        actions.append(np.append(targets - env.joint_positions(), gripper).astype(np.float32))
        obs, succeeded, done = env.step(executed, gripper)
        success.append(succeeded)
    return _stacked(env.task, instruction, seed, images, proprio, actions, success, states)


def _stacked(task: str, instruction: str, seed: int, images: list[Any], proprio: list[Any], actions: list[Any],
             success: list[bool], states: list[Any]) -> Episode:
    """An episode from its recorded rows."""
    return Episode(
        task=task,
        instruction=instruction,
        seed=seed,
        images=np.stack(images),
        proprio=np.stack(proprio).astype(np.float32),
        actions=np.stack(actions).astype(np.float32),
        success=np.asarray(success, dtype=np.bool_),
        states=np.stack(states).astype(np.float32),
    )


@dataclass(frozen=True)
class _Job:
    task: str
    seed: int
    out_dir: str
    image_size: int
    camera: str
    max_steps: int
    post_success_steps: int
    keep_failures: bool
    goal_marker_radius: float | None
    action_noise: float
    arm: str = "ee"
    within_limits: bool = False


# Per worker process: one environment (model + GL context) per task, reused across its episodes.
_WORKER_ENVS: dict[tuple[str, int, str, int, int, float | None, str], Any] = {}


def _worker_init() -> None:
    # Each worker is one core's worth of rendering: Mesa's rasteriser threads would only contend
    # (measured at 128 px: 116 frames/s with one thread vs 83 with the default).
    os.environ.setdefault("LP_NUM_THREADS", "1")
    os.environ.setdefault("MUJOCO_GL", "egl")


def _run_job(job: _Job) -> dict[str, Any]:
    try:
        key = (job.task, job.image_size, job.camera, job.max_steps, job.post_success_steps, job.goal_marker_radius,
               job.arm)
        env = _WORKER_ENVS.get(key)
        if env is None:
            make = JointSpaceTask if job.arm == "joint" else make_env
            env = make(
                job.task, job.seed, job.image_size, job.camera,
                max_steps=job.max_steps, post_success_steps=job.post_success_steps,
                goal_marker_radius=job.goal_marker_radius,
            )
            _WORKER_ENVS[key] = env
        started = time.perf_counter()
        instruction = pick_instruction(job.task, job.seed)
        if isinstance(env, JointSpaceTask):
            limiter = sawyer_limiter() if job.within_limits else None
            episode = record_joint_episode(env, job.seed, instruction, job.action_noise, limiter)
        else:
            episode = record_episode(env, job.seed, instruction, job.action_noise)
        seconds = time.perf_counter() - started
        kept = episode.succeeded or job.keep_failures
        if kept:
            write_episode(job.out_dir, episode, job.arm)
    except Exception as exc:
        # Re-raised in the parent: say which episode, the worker's traceback is not shown there.
        raise RuntimeError(f"{job.task} seed {job.seed}: {type(exc).__name__}: {exc}") from exc
    return {
        "file": episode.file_name if kept else None,
        "task": job.task,
        "instruction": episode.instruction,
        "seed": job.seed,
        "steps": episode.steps,
        "success": episode.succeeded,
        "seconds": seconds,
    }


def generate_demos(
    out_dir: str | Path,
    settings: DemosSettings,
    *,
    overwrite: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
) -> dict[str, dict[str, int]]:
    """Record ``settings.episodes_per_task`` expert episodes of each task into ``out_dir`` with
    ``settings.workers`` processes; write ``index.json``, print a per-task table and return the
    index's ``summary``."""
    s = settings
    task_list = parse_tasks(s.tasks)
    out = Path(out_dir)
    index_path = out / INDEX_FILE
    if index_path.exists() and not overwrite:
        raise FileExistsError(f"{index_path} exists: choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        _Job(task, episode_seed(s.seed, task, i), str(out), s.image_size, s.camera, s.max_steps,
             s.post_success_steps, s.keep_failures, s.goal_marker_radius, float(s.action_noise), s.arm,
             s.within_limits)
        for task in task_list
        for i in range(s.episodes_per_task)
    ]
    started = time.perf_counter()
    results = _run_jobs(jobs, s.workers, progress)
    wall = time.perf_counter() - started
    summary = summarise(results, task_list)
    _write_index(index_path, s, results, summary)
    print(format_summary(summary), file=stream or sys.stdout)
    steps = sum(r["steps"] for r in results)
    busy = sum(r["seconds"] for r in results)
    print(
        f"{len(results)} episodes, {steps} steps in {wall:.1f} s with {min(s.workers, len(jobs))} worker(s): "
        f"{steps / max(busy, 1e-9):.1f} rendered steps/s per worker; index: {index_path}",
        file=stream or sys.stdout,
    )
    return summary


def _run_jobs(jobs: Sequence[_Job], workers: int, progress: bool) -> list[dict[str, Any]]:
    """Every job's result, in the jobs' order (not in the order the workers finished them)."""
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    # Spawned, not forked: a worker starts with no inherited OpenGL or thread state of the parent.
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs)), initializer=_worker_init) as pool:
        bar = tqdm(total=len(jobs), desc="demos", unit="ep", disable=not progress, file=sys.stderr)
        try:
            for result in pool.imap_unordered(_run_job, jobs):
                results.append(result)
                bar.update(1)
                bar.set_postfix(ok=sum(r["success"] for r in results), refresh=False)
        finally:
            bar.close()
    order = {(job.task, job.seed): n for n, job in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["task"], r["seed"])])
    return results


def _write_index(
    index_path: Path, s: DemosSettings, results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
) -> None:
    index = {
        "format": FORMAT,
        "image_size": s.image_size,
        "camera": s.camera,
        "goal_marker_radius": s.goal_marker_radius,
        "action_noise": float(s.action_noise),
        **({"arm": s.arm, "state_names": list(STATE_NAMES), "action_names": list(JOINT_ACTION_NAMES),
            "control_period_s": CONTROL_PERIOD_S, "within_limits": s.within_limits} if s.arm == "joint" else {}),
        "max_steps": s.max_steps,
        "post_success_steps": s.post_success_steps,
        "seed": s.seed,
        "episodes": [{k: r[k] for k in ("file", "task", "instruction", "seed", "steps", "success")}
                     for r in results if r["file"] is not None],
        "summary": summary,
    }
    tmp = index_path.with_name(INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, index_path)


def summarise(results: Iterable[Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, dict[str, int]]:
    summary = {task: {"episodes": 0, "successes": 0, "kept": 0, "frames": 0} for task in tasks}
    for r in results:
        row = summary[r["task"]]
        row["episodes"] += 1
        row["successes"] += int(r["success"])
        if r["file"] is not None:
            row["kept"] += 1
            row["frames"] += int(r["steps"])
    return summary


def format_summary(summary: Mapping[str, Mapping[str, int]]) -> str:
    lines = [f"{'task':<26}{'episodes':>9}{'kept':>7}{'frames':>8}{'expert success':>18}"]
    totals = {"episodes": 0, "successes": 0, "kept": 0, "frames": 0}
    for task, row in summary.items():
        for key in totals:
            totals[key] += row[key]
        lines.append(_summary_line(task, row))
    lines.append(_summary_line("all", totals))
    return "\n".join(lines)


def _summary_line(name: str, row: Mapping[str, int]) -> str:
    rate = row["successes"] / row["episodes"] if row["episodes"] else 0.0
    return (
        f"{name:<26}{row['episodes']:>9}{row['kept']:>7}{row['frames']:>8}"
        f"{row['successes']:>10}/{row['episodes']:<5} {rate:>4.0%}"
    )
