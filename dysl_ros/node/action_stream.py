"""Which action goes out on ``~/action`` at each control period.

A chunk computed from an image stamped ``t0`` schedules action k at ``t0 + k*dt`` (the same timing
as the published JointTrajectory). When a chunk arrives, the actions whose time passed during
inference are skipped; after that one action per period. Once the chunk runs out, or its image
is older than ``max_age_s``, no action from it goes out: ``on_stale`` decides (``hold`` repeats the
last published command, ``zero`` sends zeros).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class StreamAction:
    values: npt.NDArray[np.float64]
    fresh: bool
    """True when taken from a chunk whose image is younger than max_age_s."""
    index: int
    """Index in the chunk (-1 when stale)."""
    source_stamp: float
    """Stamp of the image behind the chunk (0.0 when stale)."""


class ActionSchedule:
    def __init__(self, dt: float, max_age_s: float, on_stale: str, action_dim: int) -> None:
        if on_stale not in ("hold", "zero"):
            raise ValueError(f"on_stale must be 'hold' or 'zero', got {on_stale!r}")
        self.dt = dt
        self.max_age_s = max_age_s
        self.on_stale = on_stale
        self._zero = np.zeros(action_dim)
        self._lock = threading.Lock()
        self._chunk: npt.NDArray[np.float64] | None = None
        self._stamp = 0.0
        self._next_index: int | None = None
        self._last: npt.NDArray[np.float64] | None = None

    def replace(self, stamp: float, chunk: npt.NDArray[np.float64]) -> None:
        with self._lock:
            self._chunk = np.array(chunk, dtype=np.float64)
            self._stamp = stamp
            self._next_index = None  # fixed by the first period that sees this chunk

    def clear(self) -> None:
        with self._lock:
            self._chunk = None
            self._next_index = None

    def elapsed_steps(self, stamp: float, now: float) -> int:
        """Actions of a chunk stamped ``stamp`` whose time has already passed at ``now``."""
        return max(0, math.floor((now - stamp) / self.dt + 1e-9))

    def next_action(self, now: float) -> StreamAction | None:
        """The action for the period starting at ``now``; None means publish nothing (hold with no
        action published yet)."""
        with self._lock:
            chunk = self._chunk
            if chunk is not None and now - self._stamp <= self.max_age_s:
                if self._next_index is None:
                    self._next_index = self.elapsed_steps(self._stamp, now)
                index = self._next_index
                if index < len(chunk):
                    self._next_index = index + 1
                    self._last = chunk[index]
                    return StreamAction(chunk[index].copy(), True, index, self._stamp)
            if self.on_stale == "zero":
                return StreamAction(self._zero.copy(), False, -1, 0.0)
            if self._last is None:
                return None
            return StreamAction(self._last.copy(), False, -1, 0.0)
