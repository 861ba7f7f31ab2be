"""Which action goes out on ``~/action`` each control period, and when the node re-plans.

Pure logic, no ROS and no clocks of its own: dysl_node's stream process
(``dysl_ros/node/stream_process.py``) drives ``ActionQueue`` with a period counter and times, its
inference thread uses ``predict_executed_slice``, and ``dysl_bench closed-loop`` steps the same queue
once per environment step, so what the node executes can be measured offline.

Timing. A chunk computed from an image stamped ``s`` schedules its action k at ``s + k*dt`` (the
timing of the published JointTrajectory). Periods are numbered; period ``p`` is due at the nominal
time ``T_p``. The first period that sees a chunk fixes its index there, ``floor((T_p - s)/dt)``, so the
actions whose time passed while the image travelled and the model ran are dropped and the queue
stays time-aligned; after that the index advances by exactly one per period (no skip or repeat
when a period fires a little late).

Aggregation (``chunk_aggregation``). ``latest``: the newest chunk alone (the queue is replaced).
``weighted``: ACT-style temporal ensembling over the chunks that predicted the same period: with
those predictions ordered oldest first, i = 0, 1, ..., prediction i gets weight
``w_i = exp(-aggregation_decay * i)`` and the action is ``sum(w_i a_i) / sum(w_i)``. ``decay`` > 0
favours older predictions (smoother, ACT uses 0.01), < 0 newer ones (more reactive), 0 is the plain
mean. Only the newest chunk decides how long the queue lasts.

Staleness. An action is only ever computed from chunks whose image is at most ``max_age`` old at
the time it is published (the caller passes that time); a stale chunk drops out of an average, and
when the newest chunk is stale or used up nothing fresh goes out: ``on_stale`` ``hold`` repeats the
last command sent (nothing before the first one), ``zero`` sends zeros.

Two steps. ``plan_action`` chooses a period's action without recording it as sent, and
``commit_action`` records it; ``next_action`` does both. The stream plans, fills the message, then
checks the clock again just before the write: an action whose ``expires_ns`` has passed by then
(the process was preempted in between) is planned again for the later time and never written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

AGGREGATIONS = ("latest", "weighted")
MAX_AGGREGATION_DECAY = 10.0
"""|aggregation_decay| above this is refused (the node's parameter, the benchmark's flag)."""
ON_STALE = ("hold", "zero")
NS = 1_000_000_000


def stamp_label(stamp_ns: int) -> str:
    """An image stamp as exact decimal seconds, ``<sec>.<nanosec:09d>`` (the ``~/action`` label format)."""
    return f"{stamp_ns // NS}.{stamp_ns % NS:09d}"


def parse_stamp_label(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * NS + int((frac + "000000000")[:9])


def elapsed_steps(stamp_ns: int, now_ns: int, dt_ns: int) -> int:
    """Actions of a chunk stamped ``stamp_ns`` whose time has already passed at ``now_ns``."""
    return max(0, (now_ns - stamp_ns) // dt_ns)


def predicted_execution(chunk_len: int, elapsed: int, replan_threshold: int, latency_steps: int) -> slice:
    """The actions of a new chunk that the stream will really send, predicted when inference starts.

    ``elapsed``: index of the first action sent (the periods that passed since the image was taken,
    dropped). One action per period follows. The next inference starts right after the action
    leaving ``replan_threshold`` queued is sent (index ``chunk_len - replan_threshold - 1``, or the
    first one sent if that index has passed already), and its chunk takes over ``latency_steps``
    periods later (inference latency plus hand-over, rounded up to whole periods). So this chunk sends
    ``max(chunk_len - replan_threshold - 1 - elapsed, 0) + latency_steps`` actions, at least one and
    at most to its end; with ``replan_threshold`` 0 always to its end. Approximate: the next
    inference's latency (a verification re-run doubles it) decides the end, up to a period off.
    """
    start = min(max(elapsed, 0), chunk_len - 1)
    count = max(chunk_len - replan_threshold - 1 - start, 0) + max(latency_steps, 1)
    return slice(start, start + min(count, chunk_len - start))


def predict_executed_slice(
    *,
    stamp_ns: int,
    ros_now_ns: int,
    mono_now_ns: int,
    grid: tuple[int, int],
    latency_ns: int,
    chunk_len: int,
    replan_threshold: int,
) -> slice:
    """``predicted_execution`` for a chunk whose inference starts now (``ros_now_ns`` on the stamps'
    clock, ``mono_now_ns`` on CLOCK_MONOTONIC), expected to take ``latency_ns`` until the stream has
    it. ``grid`` = (base, dt) of the stream's periods (monotonic, period k due at base + k*dt): the
    chunk's first period is the first grid point after it arrives."""
    base, dt_ns = grid
    arrival = mono_now_ns + latency_ns
    first_period = base + -(-(arrival - base) // dt_ns) * dt_ns
    elapsed = elapsed_steps(stamp_ns, ros_now_ns + (first_period - mono_now_ns), dt_ns)
    return predicted_execution(chunk_len, elapsed, replan_threshold, -(-latency_ns // dt_ns))


@dataclass(frozen=True)
class StreamAction:
    values: npt.NDArray[np.float64]
    kind: str
    """``fresh`` (from chunks whose images are younger than max_age at publish time), ``hold`` or ``zero``."""
    sources: tuple[int, ...] = ()
    """Stamps (ns) of the images behind a fresh action, oldest first; () for hold/zero."""
    seq: int = -1
    """Sequence number of the newest chunk used (-1 when not fresh)."""
    index: int = -1
    """Index of the action in that chunk (-1 when not fresh)."""
    expires_ns: int | None = None
    """Fresh: when its oldest source image passes max_age (the action must be written before then);
    None for hold/zero."""

    @property
    def fresh(self) -> bool:
        return self.kind == "fresh"

    @property
    def label(self) -> str:
        """``layout.dim[0].label`` of the ``~/action`` message: comma-separated source image stamps
        (``<sec>.<nanosec>``, oldest first), or ``hold`` / ``zero``."""
        return ",".join(stamp_label(s) for s in self.sources) if self.fresh else self.kind


@dataclass
class _Chunk:
    seq: int
    stamp_ns: int
    actions: npt.NDArray[np.float64]
    offset: int | None = None  # index = period - offset, fixed by the first period that sees the chunk
    first_index: int = -1
    sent: int = 0  # periods in which it was the newest chunk behind a fresh action


@dataclass
class Streamed:
    """How much of a chunk really went out (reported when it is superseded or goes stale)."""

    seq: int
    first_index: int
    count: int


@dataclass
class ActionQueue:
    dt_ns: int
    max_age_ns: int
    on_stale: str
    action_dim: int
    aggregation: str = "latest"
    decay: float = 0.01
    _chunks: list[_Chunk] = field(default_factory=list)
    _last: npt.NDArray[np.float64] | None = None
    _finished: list[Streamed] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_stale not in ON_STALE:
            raise ValueError(f"on_stale must be one of {ON_STALE}, got {self.on_stale!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"chunk_aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.dt_ns <= 0 or self.max_age_ns <= 0 or not math.isfinite(self.decay):
            raise ValueError("dt and max_age must be > 0 and decay finite")

    # ------------------------------------------------------------------ input

    def push(self, seq: int, stamp_ns: int, actions: npt.ArrayLike) -> None:
        """A new chunk (its image stamp, (chunk_len, action_dim) actions). Older chunks stay only
        for ``weighted`` aggregation."""
        chunk = np.array(actions, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != self.action_dim or len(chunk) == 0:
            raise ValueError(f"chunk must be shaped (n, {self.action_dim}), got {chunk.shape}")
        if self._chunks and self.aggregation == "latest":
            for old in self._chunks:
                self._retire(old)
            self._chunks = []
        self._chunks.append(_Chunk(seq, stamp_ns, chunk))

    def clear(self) -> None:
        """Forget every chunk and the last command (deactivation)."""
        for chunk in self._chunks:
            self._retire(chunk)
        self._chunks = []
        self._last = None

    def take_finished(self) -> list[Streamed]:
        """Chunks that will send nothing more, with what they sent; each reported once."""
        finished, self._finished = self._finished, []
        return finished

    # ------------------------------------------------------------------ output

    def next_action(self, period: int, nominal_ns: int, publish_ns: int) -> StreamAction | None:
        """The action of period ``period``, due at ``nominal_ns`` and published at ``publish_ns`` (both
        on the image stamps' clock), recorded as sent. None: publish nothing (hold before any command
        was sent)."""
        action = self.plan_action(period, nominal_ns, publish_ns)
        if action is not None:
            self.commit_action(action)
        return action

    def plan_action(self, period: int, nominal_ns: int, publish_ns: int) -> StreamAction | None:
        """``next_action`` without recording it as sent: planning a period again for a later
        ``publish_ns`` (the write slipped) gives the action that is right at that time. Chunks that are
        used up or stale at ``publish_ns`` retire here; they stay so at any later time."""
        contributors: list[tuple[_Chunk, int]] = []
        for chunk in self._chunks:
            if chunk.offset is None:
                chunk.offset = period - elapsed_steps(chunk.stamp_ns, nominal_ns, self.dt_ns)
            index = period - chunk.offset
            if index < len(chunk.actions) and publish_ns - chunk.stamp_ns <= self.max_age_ns:
                contributors.append((chunk, index))
            else:
                self._retire(chunk)
        if not contributors or contributors[-1][0] is not self._chunks[-1]:
            # The newest chunk is used up or stale: the queue is empty, whatever older chunks hold.
            for chunk, _ in contributors:
                self._retire(chunk)
            self._chunks = []
            return self._stale()
        self._chunks = [c for c, _ in contributors]
        newest = self._chunks[-1]
        _, index = contributors[-1]
        if self.aggregation == "latest" or len(contributors) == 1:
            values = newest.actions[index].copy()
        else:
            weights = np.exp(-self.decay * np.arange(len(contributors)))
            stacked = np.stack([c.actions[i] for c, i in contributors])
            values = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
        sources = tuple(c.stamp_ns for c, _ in contributors)
        return StreamAction(values, "fresh", sources, newest.seq, index, min(sources) + self.max_age_ns)

    def commit_action(self, action: StreamAction) -> None:
        """Record a planned action as sent (the last command for ``hold``; the newest chunk's count)."""
        if not action.fresh:
            return
        newest = self._chunks[-1] if self._chunks else None
        if newest is None or newest.seq != action.seq:
            raise ValueError(f"action of chunk {action.seq} committed after the queue moved on (plan it again)")
        if newest.first_index < 0:
            newest.first_index = action.index
        newest.sent += 1
        self._last = action.values.copy()

    def remaining(self, period: int) -> int:
        """Fresh actions of the newest chunk still queued after period ``period`` (0 when none)."""
        if not self._chunks:
            return 0
        if self._chunks[-1].offset is None:  # not seen by a period yet
            return len(self._chunks[-1].actions)
        newest = self._chunks[-1]
        assert newest.offset is not None
        return max(0, len(newest.actions) - (period - newest.offset) - 1)

    @property
    def last_command(self) -> npt.NDArray[np.float64] | None:
        """The last action sent (what ``hold`` repeats), or None before the first."""
        return None if self._last is None else self._last.copy()

    @property
    def newest_seq(self) -> int:
        return self._chunks[-1].seq if self._chunks else -1

    def _stale(self) -> StreamAction | None:
        if self.on_stale == "zero":
            return StreamAction(np.zeros(self.action_dim), "zero")
        if self._last is None:
            return None
        return StreamAction(self._last.copy(), "hold")

    def _retire(self, chunk: _Chunk) -> None:
        self._finished.append(Streamed(chunk.seq, chunk.first_index, chunk.sent))
