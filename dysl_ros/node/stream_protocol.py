"""The messages between dysl_node and its action-stream process (stream_process.py), and the
stream's configuration. Over a socket pair (``multiprocessing.connection`` framing, pickled):

    node -> stream   Configure once (or Stop, when the node's configure failed), then Chunk,
                     SetActive, SetEnabled, StopMotion, Heartbeat, Stop
    stream -> node   Ready, Ack (of a SetActive: after the final stop came to rest; of a
                     SetEnabled), Replan when the queue of chunk ``seq`` falls to
                     ``replan_threshold`` (or it runs out or goes stale), Streamed when a chunk will
                     send no more, Grid once (period k is due at base + k*dt, monotonic), Adopted
                     with each joint plan, Stats about every 0.1 s.

The stream follows the node's clock (image stamps): ``clock_offset_ns`` = node clock - system clock,
sent with every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dysl_ros.motion import Plan
from dysl_ros.node.joint_output import JointConfig

SPIN_NS = 1_000_000
"""The stream sleeps until this long before a deadline, then spins: wake-up latency stays out of the period."""


@dataclass(frozen=True)
class StreamConfig:
    topic: str
    """Fully resolved ``~/action`` name of the node."""
    node_name: str
    namespace: str
    dt_ns: int
    max_age_ns: int
    on_stale: str
    action_dim: int
    replan_threshold: int
    aggregation: str
    decay: float
    priority: int
    """SCHED_FIFO priority 1-99; 0: normal scheduling."""
    joints: JointConfig | None = None
    """The arm's controllers (``~/joint_trajectory``, ``~/commands``), or None when not wired."""
    watchdog_ns: int = 0
    """Brake when the node's heartbeat is this late (0: only when the node's socket closes)."""


# Node -> stream.
class Configure(NamedTuple):
    config: StreamConfig


class Chunk(NamedTuple):
    seq: int
    stamp_ns: int
    actions: npt.NDArray[np.float64]
    clock_offset_ns: int
    """Node clock - system clock: the stream follows the node's clock (image stamps)."""
    targets: npt.NDArray[np.float64] | None = None
    """(chunk_len, joints) absolute joint positions of the same actions, when the joints are wired."""
    measured: npt.NDArray[np.float64] | None = None
    """The command joints' positions the observation saw (ramp-in start, max_step centre)."""
    measured_ns: int = 0
    """When they were measured (node clock): compared with what the plans commanded then."""


class SetActive(NamedTuple):
    active: bool
    token: int
    final_action: npt.NDArray[np.float64] | None = None
    """Deactivating: one last safe ``~/action`` to publish before stopping (None: none). The joints
    brake to rest (label ``final``) before the Ack."""


class SetEnabled(NamedTuple):
    """``~/enable``: False brakes the joints (``estop``) and drops chunks until True again."""

    enabled: bool
    token: int


class StopMotion(NamedTuple):
    """Brake the joints now (the model keeps failing); chunks that follow plan again."""

    reason: str


class Heartbeat(NamedTuple):
    pass


class Stop(NamedTuple):
    pass


# Stream -> node.
class Ready(NamedTuple):
    scheduling: str


class Ack(NamedTuple):
    token: int


class Replan(NamedTuple):
    seq: int


class Streamed(NamedTuple):
    seq: int
    first_index: int
    sent: int
    """How many of the chunk's actions went out, from ``first_index`` on."""


class Grid(NamedTuple):
    base_ns: int
    dt_ns: int


class Adopted(NamedTuple):
    """A joint plan the stream follows now: the node brakes from it if the stream dies."""

    plan: Plan


class Stats(NamedTuple):
    values: dict[str, float]
    motion: str = ""
    """Joint output: "" (none wired), idle, tracking, braking (<reason>), at rest, disabled."""


ToStream = Configure | Chunk | SetActive | SetEnabled | StopMotion | Heartbeat | Stop
ToNode = Ready | Ack | Replan | Streamed | Grid | Adopted | Stats
STREAM_MAIN = "import sys; from dysl_ros.node.stream_process import main; sys.exit(main())"
"""How the process starts: through the module's import name (not ``-m``, which would run it as
``__main__``), so that the messages above unpickle as the same classes on both sides."""
