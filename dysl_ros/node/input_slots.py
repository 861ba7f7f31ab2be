"""The node's latest-input slots: each camera's newest image, the instruction, the state and the
command joints' positions, written by the subscription callbacks and taken together by the
inference thread. No ROS here: the node decodes and validates, these only keep and check ages.

A tick is paced by the first camera: ``take`` waits for its next image, then (with several cameras)
up to ``max_camera_skew_ms`` for the others' frames of the same moment, and returns what the tick
sees, or None with the reason in ``waiting_for``.

The joint state a tick sees is the one of its image's moment: of the recent ``~/joint_states`` (a
joint_state_broadcaster publishes them at 100 Hz or more, an image arrives tens of ms after its
stamp), the one whose stamp lies nearest the image's, if within ``max_camera_skew_ms``; else (no
stamps, or another clock) the newest. A joint-space chunk is integrated from that state: the model's
deltas are relative to what it saw, and integrating them from a pose the arm reached later overshoots
by the motion in between.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt


@dataclass
class LatestImage:
    rgb: npt.NDArray[np.uint8]
    """The camera's (H, W, C), fitted to the model's size."""
    stamp: float
    stamp_ns: int
    stamp_msg: Any
    """The message's builtin_interfaces/Time."""
    received: float  # monotonic


class TickInputs(NamedTuple):
    """What one tick sees, taken together under the input lock."""

    image: LatestImage
    """The observation's oldest image: its stamp is the observation's."""
    images: dict[str, LatestImage]
    """Every camera's newest image."""
    instruction: str
    proprio: npt.NDArray[np.float64]
    joints: npt.NDArray[np.float64] | None
    """The command joints' positions measured with ``proprio`` (None without the wiring)."""
    joints_received: float = float("nan")
    """When those joint positions arrived (monotonic s)."""


STATE_HISTORY = 1024
"""Joint states kept for pairing with an image: 1 s at 1 kHz, more than ``max_image_age_ms`` allows."""


@dataclass(frozen=True)
class JointStateSample:
    stamp_ns: int
    """The message's header stamp (0: unstamped)."""
    proprio: npt.NDArray[np.float64]
    joints: npt.NDArray[np.float64] | None
    received: float  # monotonic


@dataclass
class Taken:
    inputs: TickInputs | None
    new_task: bool
    """An instruction came since the last take: the policy's continuity starts over."""
    waiting_for: str | None = ""
    """Why there are no inputs ("" when there are; None: stopped while waiting, nothing to say)."""
    skewed: bool = False
    stale: bool = False
    image_age_ms: float = float("nan")


class InputSlots:
    def __init__(
        self, cameras: tuple[str, ...], max_camera_skew_ms: float, max_image_age_ms: float, needs_joints: bool
    ) -> None:
        self.cameras = cameras
        self.max_skew_ns = max_camera_skew_ms * 1e6
        self.max_age_s = max_image_age_ms / 1000.0
        self.needs_joints = needs_joints
        self.lock = threading.Lock()
        self._new_image = threading.Condition(self.lock)
        self._images: dict[str, LatestImage] = {}
        self._fresh = False  # the first camera sent an image since the last take
        self._instruction: str | None = None
        self._new_task = False
        self._states: deque[JointStateSample] = deque(maxlen=STATE_HISTORY)  # oldest first

    # ------------------------------------------------------------------ writers (callbacks)

    def put_image(self, camera: str, image: LatestImage) -> None:
        with self._new_image:
            self._images[camera] = image
            if camera == self.cameras[0]:  # the first camera paces the ticks
                self._fresh = True
            self._new_image.notify_all()  # a take may be waiting for another camera's frame too

    def put_instruction(self, text: str) -> None:
        """Every instruction message starts a new episode, even with the same words (the next episode
        of a task often reuses its phrasing)."""
        with self.lock:
            self._instruction = text
            self._new_task = True

    def put_state(
        self, values: npt.NDArray[np.float64], joints: npt.NDArray[np.float64] | None, stamp_ns: int = 0
    ) -> None:
        with self.lock:
            self._states.append(JointStateSample(stamp_ns, values, joints, time.monotonic()))

    def new_episode(self) -> None:
        """Continuity starts over at the next take (the arm was stopped in between)."""
        with self.lock:
            self._new_task = True

    def activate(self, keep_instruction: bool) -> None:
        """Never act on an image from before activation; without ``keep_instruction`` wait for a new one."""
        with self.lock:
            self._images, self._fresh = {}, False
            if not keep_instruction:
                self._instruction = None

    def superseded(self) -> bool:
        """An instruction came since the last take (the chunk in hand plans the previous task)."""
        with self.lock:
            return self._new_task

    def wake(self) -> None:
        with self._new_image:
            self._new_image.notify_all()

    # ------------------------------------------------------------------ the inference thread

    def take(self, stop: threading.Event, now_s: Callable[[], float]) -> Taken:
        """Wait for a new image of the first camera (or ``stop``); what the tick sees, or why not.
        ``now_s``: the node's clock (s), for the image's age."""
        with self._new_image:
            while not self._fresh and not stop.is_set():
                self._new_image.wait(timeout=0.1)
            fresh, self._fresh = self._fresh, False
            if fresh and len(self.cameras) > 1:
                self._await_cameras_in_step(stop)
            images = dict(self._images)
            instruction = self._instruction
            new_task, self._new_task = self._new_task, False
            oldest = min((latest.stamp_ns for latest in images.values()), default=0)
            paired = self._paired_states(oldest)
        if not fresh:
            return Taken(None, new_task, None)
        missing = [c for c in self.cameras if c not in images]
        if missing:
            return Taken(None, new_task, f"image from camera {missing[0]}")
        first = images[self.cameras[0]]
        for camera in self.cameras[1:]:
            skew_ms = abs(images[camera].stamp_ns - first.stamp_ns) / 1e6
            if skew_ms > self.max_skew_ns / 1e6:
                return Taken(None, new_task, f"camera {camera} in step ({skew_ms:.0f} ms from {self.cameras[0]})",
                             skewed=True)
        image = min(images.values(), key=lambda latest: latest.stamp_ns)
        if instruction is None:
            return Taken(None, new_task, "instruction")
        proprio, joints, newest, newest_joints = paired
        if proprio is None or newest is None or time.monotonic() - newest.received > self.max_age_s:
            return Taken(None, new_task, "joint_states")
        if self.needs_joints and (
            joints is None or newest_joints is None or time.monotonic() - newest_joints.received > self.max_age_s
        ):
            return Taken(None, new_task, "joint_states with the command joints")
        age_ms = (now_s() - image.stamp) * 1000.0
        if age_ms > self.max_age_s * 1000.0:
            return Taken(None, new_task, "fresh image", stale=True, image_age_ms=age_ms)
        measured, received = (joints.joints, joints.received) if joints is not None else (None, float("nan"))
        inputs = TickInputs(image, images, instruction, proprio.proprio, measured, received)
        return Taken(inputs, new_task, image_age_ms=age_ms)

    def _paired_states(
        self, stamp_ns: int
    ) -> tuple[JointStateSample | None, JointStateSample | None, JointStateSample | None, JointStateSample | None]:
        """(Lock held.) The joint states of the image's moment: (any state, one with the command joints),
        each the one stamped nearest ``stamp_ns`` within max_camera_skew_ms, else the newest (unstamped
        states, or stamps on another clock); then the newest state and the newest with the command
        joints. One scan from the newest back, which ends once the stamps have passed the window and
        the newest with joints is known: a tick copies nothing and reads a few dozen states, not the
        whole history."""
        nearest: JointStateSample | None = None
        nearest_joints: JointStateSample | None = None
        newest_joints: JointStateSample | None = None
        best = best_joints = float("inf")
        for state in reversed(self._states):
            has_joints = state.joints is not None
            if has_joints and newest_joints is None:
                newest_joints = state
            distance = abs(state.stamp_ns - stamp_ns)
            if distance <= self.max_skew_ns:
                if distance < best:
                    nearest, best = state, distance
                if has_joints and distance < best_joints:
                    nearest_joints, best_joints = state, distance
            elif state.stamp_ns < stamp_ns and newest_joints is not None:
                break  # older and older from here on
        newest = self._states[-1] if self._states else None
        return nearest or newest, nearest_joints or newest_joints, newest, newest_joints

    def _await_cameras_in_step(self, stop: threading.Event) -> None:
        """(Lock held.) The other cameras' frames of the same moment often land just after the first
        camera's, which paces the ticks: wait up to max_camera_skew_ms for a camera whose newest image
        is older than the first camera's by more than that, instead of skipping the tick."""
        deadline = time.monotonic() + self.max_skew_ns / 1e9

        def behind() -> bool:
            first = self._images.get(self.cameras[0])
            return first is not None and any(
                c in self._images and first.stamp_ns - self._images[c].stamp_ns > self.max_skew_ns
                for c in self.cameras[1:]
            )

        while behind() and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._new_image.wait(timeout=left)
