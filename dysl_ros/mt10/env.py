"""One Meta-World MT10 (v3) task as this project's simulator: one camera, the scripted expert.

``make_env(task, seed)`` gives a small, deterministic episode API over a Meta-World v3 environment:

    env = make_env("pick-place-v3", seed=7)
    obs = env.reset()
    while True:
        image, proprio = env.render(), env.proprio(obs)      # what the VLA sees
        obs, success, done = env.step(env.expert_action(obs))
        if done:
            break

Choices, and why:

- Goal-observable environments (``ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE``): the scripted policies of
  ``metaworld.policies`` read the goal from the state vector. The VLA never sees that vector, only
  the image (where the goal is drawn as a small site marker), the instruction and ``proprio``.
- Determinism: the episode seed seeds Meta-World's own random goal/object placement
  (``seeded_rand_vec``), re-seeded before every reset, so ``reset()`` always restarts the same
  episode and ``reset(seed=other)`` switches episodes while reusing the loaded model and the
  OpenGL context (building those costs about 1 s, as long as a whole 100-step episode).
- Rendering: MuJoCo's OpenGL renderer offscreen, EGL by default (``MUJOCO_GL=egl``: Mesa's CPU
  rasteriser when there is no GPU, no display needed), with no shadows, no reflections and no
  multisample anti-aliasing: at 128x128 a frame takes about 10 ms on one core instead of about 110.
- Goal marker: Meta-World draws the goal as a site sphere of radius 2 cm, 2-3 pixels at 128x128
  (1 cm for peg-insert-side's hole). ``goal_marker_radius`` enlarges that sphere for the camera
  only (sites have no collision; success and the expert are unchanged), so a small image shows
  where the goal is. ``None`` keeps Meta-World's size. A policy must be evaluated with the radius
  its demonstrations were recorded with (demos record it in their index).
- Cameras whose up axis points below the horizon (Meta-World's ``corner`` cameras) give images
  upside down; they are rotated by 180 degrees, which is the physically right fix (a vertical
  flip alone would mirror the scene left to right).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import warnings
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from dysl_ros.mt10.tasks import INSTRUCTIONS, MT10_TASKS

DEFAULT_MAX_STEPS = 200
"""Episode limit: the scripted experts finish every MT10 task well within it (peg-insert-side, the
slowest, took up to 184 steps over 20 seeds; the others at most 95)."""

DEFAULT_POST_SUCCESS_STEPS = 8
"""Steps kept after the first success: one action chunk (chunk_len 8) of the expert holding the goal,
so chunks that end at the success are real actions rather than padding."""

DEFAULT_GOAL_MARKER_RADIUS: float | None = None
"""``dysl_train demos``' goal marker radius (metres); None: Meta-World's own 2 cm."""

Obs = npt.NDArray[np.float64]
"""Meta-World's 39-value state: hand xyz, gripper opening, objects, the previous frame's copy, goal."""


class MetaWorldTask:
    """One MT10 task with a rendered camera and its scripted expert. Build it with ``make_env``."""

    def __init__(
        self,
        task: str,
        seed: int,
        image_size: int = 128,
        camera: str = "corner",
        max_steps: int = DEFAULT_MAX_STEPS,
        post_success_steps: int = DEFAULT_POST_SUCCESS_STEPS,
        goal_marker_radius: float | None = DEFAULT_GOAL_MARKER_RADIUS,
    ) -> None:
        if task not in INSTRUCTIONS:
            raise ValueError(f"unknown task {task!r}: expected one of {', '.join(MT10_TASKS)}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if max_steps < 1 or post_success_steps < 0:
            raise ValueError(f"need max_steps >= 1 and post_success_steps >= 0, got {max_steps}, {post_success_steps}")
        _check_seed(seed)
        check_goal_marker_radius(goal_marker_radius)
        # EGL needs no display (Mesa renders on the CPU without a GPU). A value set by the user
        # (osmesa, glfw) wins. Set before importing mujoco so that its own Renderer, if anything
        # else in this process uses it, picks the same backend.
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
        from metaworld.policies import ENV_POLICY_MAP

        # The experts' gains exceed 1 on purpose (the env clips): the warning says so on every step.
        warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", module="metaworld")

        self.task = task
        self.seed = int(seed)
        self.image_size = image_size
        self.camera = camera
        self.max_steps = max_steps
        self.post_success_steps = post_success_steps
        # Typed as Any: the goal-observable classes replace __init__ at run time (seed=...), which
        # Meta-World's annotations cannot express.
        env_class: Any = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"]
        self._env: Any = env_class(seed=self.seed)
        for attribute in ("_freeze_rand_vec", "seeded_rand_vec", "max_path_length"):
            if not hasattr(self._env, attribute):
                raise RuntimeError(
                    f"this Meta-World version has no {attribute!r} on its environments; "
                    "dysl_ros needs metaworld 3.1 (see requirements.txt)"
                )
        # Our own limit decides when an episode ends; Meta-World's must not fire first.
        self._env.max_path_length = max(max_steps, int(self._env.max_path_length))
        expert_class: Any = ENV_POLICY_MAP[task]  # annotated as the abstract base class
        self._expert: Any = expert_class()

        self._mujoco: Any = mujoco
        self.goal_marker_radius = goal_marker_radius
        if goal_marker_radius is not None:
            # button-press-topdown draws no goal: the button is the target.
            goal_site = mujoco.mj_name2id(self._env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
            if goal_site >= 0:
                self._env.model.site_size[goal_site, 0] = goal_marker_radius
        self._camera = _OffscreenCamera(mujoco, self._env.model, self._env.data, camera, image_size, task)
        _LIVE_ENVS.add(self)

        self._steps = 0
        self._success_step: int | None = None
        self._episode_over = True

    # Episode -------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Start the episode of ``seed`` (default: this env's current seed) and return its first state."""
        if seed is not None:
            _check_seed(seed)
            self.seed = int(seed)
        env = self._env
        # Meta-World draws object and goal placement from env.np_random at reset when the random
        # vector is neither frozen nor globally seeded; seeding it here makes the episode a pure
        # function of the seed, whatever ran on this env before.
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.seed(self.seed)
        obs, _info = env.reset()
        # Meta-World moves the goal site after its last forward pass of the reset: without this the
        # first frame drew the previous episode's goal (70 pixels off at 128 px), so the first chunk
        # of every episode was planned, and every demonstration's first frame recorded, against it.
        self._mujoco.mj_forward(env.model, env.data)
        self._steps = 0
        self._success_step = None
        self._episode_over = False
        return np.asarray(obs, dtype=np.float64)

    def step(self, action: npt.ArrayLike) -> tuple[Obs, bool, bool]:
        """Apply one action (clipped to [-1, 1]); returns (state, success after it, episode over)."""
        if self._episode_over:
            raise RuntimeError("the episode is over (or was never started): call reset() first")
        act = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if act.shape != (4,):
            raise ValueError(f"an action has 4 values (hand dx, dy, dz, gripper), got {act.shape[0]}")
        obs, _reward, _terminated, _truncated, info = self._env.step(act)
        self._steps += 1
        success = bool(info["success"])
        if success and self._success_step is None:
            self._success_step = self._steps
        done = self._steps >= self.max_steps or (
            self._success_step is not None and self._steps >= self._success_step + self.post_success_steps
        )
        self._episode_over = done
        return np.asarray(obs, dtype=np.float64), success, done

    @property
    def steps(self) -> int:
        """Steps taken in this episode."""
        return self._steps

    @property
    def succeeded(self) -> bool:
        """Whether Meta-World reported success at any step of this episode."""
        return self._success_step is not None

    # Observation and expert ----------------------------------------------------------------------

    def render(self) -> npt.NDArray[np.uint8]:
        """The camera image of the current state: (S, S, 3) uint8 RGB, upright."""
        return self._camera.render(self._env.data)

    def arm_joints(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The Sawyer's seven arm joints (``right_j0`` .. ``right_j6``, first in the model): positions
        (rad) and velocities (rad/s). Here they follow the mocap weld; nothing commands them."""
        data = self._env.data
        return np.asarray(data.qpos[:7], dtype=np.float64).copy(), np.asarray(data.qvel[:7], dtype=np.float64).copy()

    @property
    def step_seconds(self) -> float:
        """Simulated time per ``step`` (Meta-World's frame skip times its physics step: 12.5 ms)."""
        return float(self._env.frame_skip * self._env.model.opt.timestep)

    @staticmethod
    def proprio(obs: Obs) -> npt.NDArray[np.float32]:
        """The VLA's proprio vector: hand xyz (m) and gripper opening (0 closed .. 1 open)."""
        return np.asarray(obs[0:4], dtype=np.float32).copy()

    def expert_action(self, obs: Obs) -> npt.NDArray[np.float32]:
        """The scripted expert's action for this state, clipped to the action space [-1, 1]."""
        action = self._expert.get_action(obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def close(self) -> None:
        """Free the GL context (the object cannot render afterwards). Safe to call twice."""
        self._camera.close()
        _LIVE_ENVS.discard(self)

    def __enter__(self) -> MetaWorldTask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _OffscreenCamera:
    """One fixed camera rendered offscreen into an (S, S, 3) uint8 array, fast settings applied.

    Not ``mujoco.Renderer``: that one takes its OpenGL backend from ``MUJOCO_GL`` as it was when
    ``mujoco`` was first imported (GLFW, which needs a display, if it was unset), so importing
    mujoco before this module broke headless rendering. Here the backend is chosen now.
    """

    def __init__(self, mujoco: Any, model: Any, data: Any, camera: str, size: int, task: str) -> None:
        self._mujoco = mujoco
        self._model = model
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if camera_id < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"no camera {camera!r} in {task}: cameras are {names}")
        # Fast rendering. Read when the render context is made, so set first: no multisample
        # anti-aliasing, no shadow map; the framebuffer at least as large as the image.
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 0
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), size)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), size)
        self._gl: Any = _gl_context_class()(size, size)
        self._gl.make_current()
        self._context: Any = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)  # no text drawn
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        _close_envs_before_gl_teardown()
        self._scene = mujoco.MjvScene(model, maxgeom=10_000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        # The skybox stays: it costs ~5 % and gives a plain background instead of black.
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = camera_id
        self._rect = mujoco.MjrRect(0, 0, size, size)
        self._pixels = np.empty((size, size, 3), dtype=np.uint8)
        mujoco.mj_forward(model, data)
        # A camera whose image-up axis points downwards in the world sees the scene upside down.
        # OpenGL reads rows bottom-up, which already flips vertically: the 180-degree turn left to
        # do is a left-right flip. An upright camera only needs the vertical flip.
        upside_down = float(data.cam_xmat[camera_id].reshape(3, 3)[2, 1]) < 0.0
        self._view = (slice(None), slice(None, None, -1)) if upside_down else (slice(None, None, -1), slice(None))

    def render(self, data: Any) -> npt.NDArray[np.uint8]:
        if self._context is None:
            raise RuntimeError("this environment was closed")
        mujoco = self._mujoco
        # Each environment has its own GL context; several can live in one process.
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self._model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._context)
        return np.ascontiguousarray(self._pixels[self._view])

    def close(self) -> None:
        if self._context is not None:
            self._gl.make_current()
            self._context.free()
            self._context = None
            self._gl.free()


def _gl_context_class() -> Any:
    backend = os.environ.get("MUJOCO_GL", "egl").strip().lower()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    elif backend in ("glfw", ""):
        from mujoco.glfw import GLContext
    else:
        raise ValueError(f"MUJOCO_GL={backend!r}: dysl_ros renders with egl (default), osmesa or glfw")
    return GLContext


_LIVE_ENVS: weakref.WeakSet[MetaWorldTask] = weakref.WeakSet()
_CLOSE_HOOK_REGISTERED = False


def _close_envs_before_gl_teardown() -> None:
    """At exit, free the GL contexts still open before MuJoCo's EGL module terminates the display.

    MuJoCo registers that termination with ``atexit`` when the first context is made; hooks run
    last-registered first, so this one (registered right after) runs before it. Without it, every
    environment left open prints an EGLError traceback when the interpreter exits.
    """
    global _CLOSE_HOOK_REGISTERED
    if not _CLOSE_HOOK_REGISTERED:
        _CLOSE_HOOK_REGISTERED = True
        atexit.register(_close_live_envs)


def _close_live_envs() -> None:
    for env in list(_LIVE_ENVS):
        env.close()


make_env = MetaWorldTask
"""``make_env(task, seed, image_size=128, camera="corner", max_steps=..., post_success_steps=...,
goal_marker_radius=...)``: an MT10 task ready to ``reset()``; the episode (goal and object
placement) is fixed by ``seed``."""


def model_goal_marker_radius(model_dir: str | os.PathLike[str]) -> float | None:
    """The goal marker radius a model's demonstrations were drawn with (``train_args.json``, written
    by ``dysl_train bc``); None (Meta-World's) when it records none, as models trained before it did."""
    path = os.path.join(model_dir, "train_args.json")
    try:
        with open(path) as f:
            radius = json.load(f).get("goal_marker_radius")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} is not a readable JSON object: {exc}") from exc
    check_goal_marker_radius(radius)
    return None if radius is None else float(radius)


def goal_marker_radius_arg(text: str) -> float | None:
    """argparse type for ``--goal-marker-radius``: metres, or ``none`` for Meta-World's own marker."""
    if text.strip().lower() == "none":
        return None
    try:
        radius = float(text)
        check_goal_marker_radius(radius)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a radius in (0, 0.2] metres or 'none', got {text!r}") from None
    return radius


def check_goal_marker_radius(radius: float | None) -> None:
    """Raise ValueError unless ``radius`` is None or a length in (0, 0.2] metres."""
    if radius is None:
        return
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0.0 < float(radius) <= 0.2:
        raise ValueError(f"goal_marker_radius must be None or in (0, 0.2] metres, got {radius!r}")


def _check_seed(seed: int) -> None:
    # Meta-World seeds numpy's generators, which take 0 <= seed < 2**32 without complaint.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
