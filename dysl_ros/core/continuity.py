"""Trajectory continuity (paper Eq. 1) and the post-skip verification trigger.

    C_t = -(1/k) * sum_{j=t-k+1..t} ||A_j - A_{j-1}||_2

over the last k action differences in execution order. Smooth free-space motion gives C_t near 0;
grasping, releasing and corrections break continuity and push C_t down. With action chunks each
inference appends the actions it will execute, and the change dC_t = C_t - C_{t-1} is taken once per
inference.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


class NonFiniteActions(ValueError):
    """A chunk with NaN or inf: the tick that made it must not be executed (nor enter the history)."""


@dataclass(frozen=True)
class ContinuityReading:
    continuity: float
    """C_t after this inference's actions."""
    delta: float
    """C_t - C_{t-1}; 0.0 on the first inference (no previous reading)."""


@dataclass(frozen=True)
class MonitorState:
    """A ContinuityMonitor's whole state (``snapshot`` / ``restore``)."""

    actions: tuple[FloatArray, ...]
    last_continuity: float | None
    last_delta: float | None


class ContinuityMonitor:
    """Holds the last k+1 executed/planned actions and the previous C value.

    ``preview`` computes the reading a chunk would give without changing state (post-skip
    verification needs it before deciding which chunk to keep); ``push`` commits; ``restore`` of an
    earlier ``snapshot`` takes back pushes whose actions were never executed.
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._actions: deque[FloatArray] = deque(maxlen=k + 1)
        self._last_continuity: float | None = None
        self._last_delta: float | None = None

    @property
    def last_delta(self) -> float | None:
        """dC of the previous inference (None before the first)."""
        return self._last_delta

    @property
    def last_continuity(self) -> float | None:
        return self._last_continuity

    def reset(self) -> None:
        self._actions.clear()
        self._last_continuity = None
        self._last_delta = None

    def snapshot(self) -> MonitorState:
        return MonitorState(tuple(self._actions), self._last_continuity, self._last_delta)

    def restore(self, state: MonitorState) -> None:
        self._actions = deque(state.actions, maxlen=self.k + 1)
        self._last_continuity = state.last_continuity
        self._last_delta = state.last_delta

    def preview(self, actions: npt.ArrayLike) -> ContinuityReading:
        window = list(self._actions) + list(_as_rows(actions))
        continuity = _continuity(window[-(self.k + 1) :])
        delta = 0.0 if self._last_continuity is None else continuity - self._last_continuity
        return ContinuityReading(continuity, delta)

    def push(self, actions: npt.ArrayLike) -> ContinuityReading:
        reading = self.preview(actions)
        self._actions.extend(_as_rows(actions))
        self._last_continuity = reading.continuity
        self._last_delta = reading.delta
        return reading


def is_first_drop(delta: float, previous_delta: float | None, eta_verify: float) -> bool:
    """Post-skip verification fires on the first step of a continuity drop:
    dC_t < -eta_v while dC_{t-1} >= -eta_v (no previous reading counts as no drop)."""
    previous = 0.0 if previous_delta is None else previous_delta
    return delta < -eta_verify and previous >= -eta_verify


def _as_rows(actions: npt.ArrayLike) -> list[FloatArray]:
    array = np.asarray(actions, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"actions must be shaped (n, action_dim) with n >= 1, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise NonFiniteActions("actions contain NaN or inf")
    return list(array)


def _continuity(window: list[FloatArray]) -> float:
    # With fewer than k+1 actions seen, average the differences there are (none: perfectly smooth).
    if len(window) < 2:
        return 0.0
    steps = np.diff(np.stack(window), axis=0)
    return -float(np.linalg.norm(steps, axis=1).mean())


def continuity_deltas(trajectories: Sequence[npt.ArrayLike], k: int, actions_per_inference: int) -> FloatArray:
    """dC_t of every inference when each trajectory's actions are executed ``actions_per_inference``
    at a time (as the node re-plans), first inference of each trajectory excluded (its dC is 0 by
    definition). Feed it the demonstrations' normalised actions to see how continuity moves on this
    task suite before choosing eta."""
    if actions_per_inference < 1:
        raise ValueError(f"actions_per_inference must be >= 1, got {actions_per_inference}")
    deltas: list[float] = []
    for trajectory in trajectories:
        actions = np.asarray(trajectory, dtype=np.float64)
        monitor = ContinuityMonitor(k)
        for start in range(0, len(actions), actions_per_inference):
            reading = monitor.push(actions[start : start + actions_per_inference])
            if start:
                deltas.append(reading.delta)
    return np.asarray(deltas, dtype=np.float64)


def suggest_etas(deltas: npt.ArrayLike, eta_quantile: float = 0.5, verify_quantile: float = 0.9) -> tuple[float, float]:
    """(eta, eta_verify) from observed dC_t: eta = the ``eta_quantile`` of |dC| (allow points move on
    changes larger than the typical one), eta_verify = the ``verify_quantile`` of the drops' size
    (-dC where dC < 0), so verification only fires on the sharpest drops."""
    values = np.asarray(deltas, dtype=np.float64)
    drops = -values[values < 0]
    if values.size == 0 or drops.size == 0:
        raise ValueError("need at least one continuity drop to suggest thresholds")
    if not (0.0 < eta_quantile < 1.0 and 0.0 < verify_quantile < 1.0):
        raise ValueError("quantiles must lie in (0, 1)")
    eta = float(np.quantile(np.abs(values), eta_quantile))
    eta_verify = max(eta, float(np.quantile(drops, verify_quantile)))
    return eta, eta_verify
