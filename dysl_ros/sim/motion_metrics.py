"""How an arm would feel a command stream: per joint, the steps, velocities, accelerations and jerks of the
setpoints a trajectory controller wrote, their hits against the joint limits, the tracking error of the arm,
and the jumps where one trajectory handed over to the next.

Input is a log sampled once per controller update (``jtc_arm``'s ``.npz``, or any arrays of the same shape):
update times, the setpoints' positions / velocities / accelerations, and the arm's measured positions.
Derivatives are taken two ways: by finite differences of the commanded positions at the update rate (what a
position-commanded drive receives) and from the sampled velocities and accelerations (what the spline says).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits in the log's joint order; ``inf`` (or ±inf positions) where a joint has none."""

    lower: Array
    upper: Array
    velocity: Array
    acceleration: Array
    jerk: Array

    @classmethod
    def make(
        cls,
        n: int,
        lower: Sequence[float] | float = -np.inf,
        upper: Sequence[float] | float = np.inf,
        velocity: Sequence[float] | float = np.inf,
        acceleration: Sequence[float] | float = np.inf,
        jerk: Sequence[float] | float = np.inf,
    ) -> JointLimits:
        def per_joint(values: Sequence[float] | float) -> Array:
            return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).copy()

        return cls(per_joint(lower), per_joint(upper), per_joint(velocity), per_joint(acceleration), per_joint(jerk))


@dataclass(frozen=True)
class JointMotion:
    """One joint's figures over a log (units of the joint: rad or m, per s, s², s³)."""

    joint: str
    max_step: float
    """Largest |Δp| of the setpoint from one update to the next."""
    max_velocity_fd: float
    max_acceleration_fd: float
    max_jerk_fd: float
    """Finite differences of the commanded positions."""
    max_velocity: float
    max_acceleration: float
    max_jerk: float
    """From the sampled velocities and accelerations (jerk: their finite difference)."""
    position_hits: int
    velocity_hits: int
    acceleration_hits: int
    jerk_hits: int
    """Updates where the setpoint (either way of differentiating) is beyond the limit plus the tolerance."""
    tracking_error_max: float
    tracking_error_rms: float
    """Setpoint − measured position at each update."""
    max_handoff_jump: float
    """Largest |Δp| across an update where a new trajectory was first sampled."""
    handoff_bound: float
    """v_max · control period: the most a hand-off may move the setpoint within one update."""
    handoffs_over_bound: int
    nonfinite: int
    """Non-finite setpoint values."""


@dataclass(frozen=True)
class MotionReport:
    joints: list[JointMotion]
    updates: int
    period_s: float
    handoffs: int

    def worst(self, name: str) -> float:
        """The largest value of figure ``name`` over the joints (e.g. ``"max_jerk_fd"``)."""
        return float(max(getattr(joint, name) for joint in self.joints))

    def as_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "period_s": self.period_s,
            "handoffs": self.handoffs,
            "joints": [asdict(joint) for joint in self.joints],
        }

    def markdown(self, columns: Sequence[str] | None = None) -> str:
        """A markdown table, one row per joint (``columns``: a subset of ``JointMotion``'s fields)."""
        names = list(columns) if columns is not None else [f.name for f in fields(JointMotion)]
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        for joint in self.joints:
            cells = []
            for name in names:
                value = getattr(joint, name)
                cells.append(value if isinstance(value, str) else f"{value:.4g}")
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        return "\n".join(lines)


def _rate(values: Array, times_s: Array) -> tuple[Array, Array]:
    """Finite difference of ``values`` (rows: updates) over ``times_s``: (rates, the midpoints' times)."""
    dt = np.diff(times_s)[:, None]
    return np.diff(values, axis=0) / dt, 0.5 * (times_s[1:] + times_s[:-1])


def _max_abs(values: Array) -> Array:
    """Per column; 0 for no rows; NaN where a column has one."""
    if values.shape[0] == 0:
        return np.zeros(values.shape[1])
    return np.max(np.abs(values), axis=0)


def _hits(values: Array, limit: Array, rel_tol: float) -> Mask:
    """Per row and column: |value| beyond the limit by more than ``rel_tol`` of it."""
    if values.shape[0] == 0:
        return np.zeros((0, values.shape[1]), dtype=bool)
    return np.abs(values) > limit * (1.0 + rel_tol)


def _check_log(t: Array, p: Array, v: Array, a: Array, q: Array, names: int) -> None:
    if not (t.shape == (p.shape[0],) and v.shape == a.shape == q.shape == p.shape and names == p.shape[1]):
        raise ValueError(
            f"shapes disagree: times {t.shape}, setpoints {p.shape} {v.shape} {a.shape}, measured {q.shape}, "
            f"{names} joint names"
        )
    if p.shape[0] >= 2 and not np.all(np.diff(t) > 0.0):
        raise ValueError("times_s must be strictly increasing")


def _limit_hits(
    p: Array, velocity: tuple[Array, Array], acceleration: tuple[Array, Array], jerk: tuple[Array, Array],
    limits: JointLimits, rel_tol: float, position_tol: float,
) -> tuple[Mask, Mask, Mask, Mask]:
    """Per update and joint, a position, velocity, acceleration and jerk limit hit: an update's own
    sample or a finite difference ending at it (each difference counted once). Each of ``velocity``,
    ``acceleration`` and ``jerk`` is (sampled, finite difference)."""
    position_hits: Mask = (p < limits.lower - position_tol) | (p > limits.upper + position_tol)
    velocity_hits = _hits(velocity[0], limits.velocity, rel_tol)
    velocity_hits[1:] |= _hits(velocity[1], limits.velocity, rel_tol)
    acceleration_hits = _hits(acceleration[0], limits.acceleration, rel_tol)
    acceleration_hits[2:] |= _hits(acceleration[1], limits.acceleration, rel_tol)
    jerk_hits = np.zeros(p.shape, dtype=bool)
    jerk_hits[1:] |= _hits(jerk[0], limits.jerk, rel_tol)
    jerk_hits[3:] |= _hits(jerk[1], limits.jerk, rel_tol)
    return position_hits, velocity_hits, acceleration_hits, jerk_hits


def motion_report(
    times_s: Sequence[float] | Array,
    setpoint_positions: Array,
    setpoint_velocities: Array,
    setpoint_accelerations: Array,
    measured_positions: Array,
    joint_names: Sequence[str],
    handoff_indices: Sequence[int] | Array = (),
    limits: JointLimits | None = None,
    rel_tol: float = 1e-3,
    position_tol: float = 1e-6,
    handoff_period_s: float | None = None,
) -> MotionReport:
    """The figures of a log of ``len(times_s)`` updates (arrays: updates × joints). Give times from the
    start of the log: absolute ROS times in float seconds keep only about 0.5 µs, which the jerk amplifies.

    A limit is hit where a value exceeds it by more than ``rel_tol`` of the limit (positions: by more than
    ``position_tol``); velocity, acceleration and jerk count an update when either way of differentiating
    exceeds. A hand-off at index k compares |p[k] − p[k−1]| with v_max times ``handoff_period_s`` (the
    sender's control period; default the median update period).
    """
    t, p, v, a, q = (np.asarray(x, dtype=np.float64) for x in (
        times_s, setpoint_positions, setpoint_velocities, setpoint_accelerations, measured_positions))
    n_updates, n = p.shape
    _check_log(t, p, v, a, q, len(joint_names))
    limits = limits if limits is not None else JointLimits.make(n)
    period_s = float(np.median(np.diff(t))) if n_updates >= 2 else float("nan")

    velocity_fd, mid_t = _rate(p, t)
    acceleration_fd, mid_t = _rate(velocity_fd, mid_t)
    jerk_fd, _ = _rate(acceleration_fd, mid_t)
    jerk_sampled, _ = _rate(a, t)
    steps = np.abs(np.diff(p, axis=0))

    position_hits, velocity_hits, acceleration_hits, jerk_hits = _limit_hits(
        p, (v, velocity_fd), (a, acceleration_fd), (jerk_sampled, jerk_fd), limits, rel_tol, position_tol
    )

    error = p - q
    handoffs = np.asarray(handoff_indices, dtype=np.int64)
    handoffs = handoffs[handoffs >= 1]
    jumps = np.abs(p[handoffs] - p[handoffs - 1]) if handoffs.size else np.zeros((0, n))
    bound = limits.velocity * (handoff_period_s if handoff_period_s is not None else period_s)

    rows = []
    max_step, max_v_fd, max_a_fd = _max_abs(steps), _max_abs(velocity_fd), _max_abs(acceleration_fd)
    max_j_fd, max_v, max_a, max_j = _max_abs(jerk_fd), _max_abs(v), _max_abs(a), _max_abs(jerk_sampled)
    max_jump = _max_abs(jumps)
    rms = np.sqrt(np.mean(error**2, axis=0)) if n_updates else np.zeros(n)
    for j, name in enumerate(joint_names):
        rows.append(
            JointMotion(
                joint=name,
                max_step=float(max_step[j]),
                max_velocity_fd=float(max_v_fd[j]),
                max_acceleration_fd=float(max_a_fd[j]),
                max_jerk_fd=float(max_j_fd[j]),
                max_velocity=float(max_v[j]),
                max_acceleration=float(max_a[j]),
                max_jerk=float(max_j[j]),
                position_hits=int(np.count_nonzero(position_hits[:, j])),
                velocity_hits=int(np.count_nonzero(velocity_hits[:, j])),
                acceleration_hits=int(np.count_nonzero(acceleration_hits[:, j])),
                jerk_hits=int(np.count_nonzero(jerk_hits[:, j])),
                tracking_error_max=float(_max_abs(error)[j]),
                tracking_error_rms=float(rms[j]),
                max_handoff_jump=float(max_jump[j]),
                handoff_bound=float(bound[j]),
                handoffs_over_bound=int(np.count_nonzero(jumps[:, j] > bound[j] * (1.0 + rel_tol))),
                nonfinite=int(np.count_nonzero(~np.isfinite(p[:, j]))),
            )
        )
    return MotionReport(rows, n_updates, period_s, int(handoffs.size))


def report_from_log(
    log: Mapping[str, Any],
    limits: JointLimits | None = None,
    rel_tol: float = 1e-3,
    handoff_period_s: float | None = None,
) -> MotionReport:
    """``motion_report`` of a ``jtc_arm`` log (``np.load(path)``)."""
    time_ns = np.asarray(log["time_ns"], dtype=np.int64)
    # From the start: absolute ROS times in float seconds would lose the microseconds.
    return motion_report(
        (time_ns - time_ns[:1]).astype(np.float64) * 1e-9,
        log["setpoint_positions"],
        log["setpoint_velocities"],
        log["setpoint_accelerations"],
        log["positions"],
        [str(name) for name in log["joint_names"]],
        log["handoff_indices"],
        limits,
        rel_tol,
        handoff_period_s=handoff_period_s,
    )
