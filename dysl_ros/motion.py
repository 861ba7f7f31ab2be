"""Joint motion the controllers may be given: model targets in, a trajectory within the joint
limits out, continuous from one chunk to the next, and stops that ramp down. Pure numpy, no ROS:
the stream process plans and publishes, the node falls back on it when the stream is gone, and the
joint-space demonstration recorder moves its arm with it (``follow``), so that a model learns the
motion the node will let through.

A ``Plan`` is the commanded state every control period dt from ``start_ns``: positions, velocities
and the acceleration of each period. Between two states the acceleration is constant and
``p[j+1] = p[j] + (v[j] + v[j+1]) / 2 * dt``, which is exactly what joint_trajectory_controller's
cubic spline makes of two points with positions and velocities: the controller's setpoints between
the points stay within the same limits.

Each period, per joint (``MotionLimiter._step``):

    v_des = target velocity + the speed toward the target from which it can still stop on it
    v_des = within the speed from which the joint can still stop inside its position box
            (the position limits, narrowed to max_step around the measured position)
    v_des = within +-max_velocity
    v     = v + clip(v_des - v, +-max_acceleration * dt)      (and the jerk limit on the change)

A chunk is tracked until its last action or until its image passes ``max_image_age_ms``, whichever
comes first; then the plan brakes to rest at the acceleration limit. So every plan ends at rest, and
a controller left with the last one stops by itself. A new chunk's plan starts from the state the
current plan commands at its start time: position and velocity carry over, nothing steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dysl_ros.joint_limits import JointLimits

Array = npt.NDArray[np.float64]
MAX_PLAN_PERIODS = 2000
"""A plan longer than this is a bug (40 s at 50 Hz): refused rather than published."""
REST_EPSILON = 1e-9


@dataclass(frozen=True)
class MotionState:
    """Commanded joint state at ``t_ns`` (node clock)."""

    t_ns: int
    p: Array
    v: Array
    a: Array

    @classmethod
    def at_rest(cls, t_ns: int, positions: Array) -> MotionState:
        zeros = np.zeros(len(positions))
        return cls(t_ns, np.asarray(positions, dtype=np.float64).copy(), zeros, zeros.copy())


@dataclass(frozen=True)
class Plan:
    """States at ``start_ns + j * dt_ns`` for j = 0 .. n; ``a[j]`` is the acceleration over the
    period that ends at state j (``a[0]``: the start state's). The last state is at rest."""

    start_ns: int
    dt_ns: int
    p: Array
    """(n + 1, J)"""
    v: Array
    a: Array
    tracked: int
    """States 0 .. tracked follow the chunk; after that the plan brakes."""
    reason: str = ""
    """Why the plan exists: "" for a chunk, else the stop's label (stop, estop, final, ...)."""

    @property
    def end_ns(self) -> int:
        return self.start_ns + (len(self.p) - 1) * self.dt_ns

    def state_at(self, t_ns: int) -> MotionState:
        """The commanded state at any time: constant acceleration within a period; the start state
        before the plan, the rest state after it."""
        if t_ns <= self.start_ns:
            return MotionState(t_ns, self.p[0].copy(), self.v[0].copy(), self.a[0].copy())
        j, rest = divmod(t_ns - self.start_ns, self.dt_ns)
        if j >= len(self.p) - 1:
            last = len(self.p) - 1
            return MotionState(t_ns, self.p[last].copy(), np.zeros_like(self.v[last]), np.zeros_like(self.a[last]))
        tau = rest / 1e9
        acc = self.a[j + 1]
        return MotionState(t_ns, self.p[j] + self.v[j] * tau + 0.5 * acc * tau * tau, self.v[j] + acc * tau, acc.copy())


class MotionLimiter:
    """Plans within ``limits`` at the control period ``dt_ns``; ``max_step`` > 0 keeps every
    commanded position within that distance of the measured one given with the targets."""

    def __init__(self, limits: JointLimits, dt_ns: int, max_step: float = 0.0) -> None:
        self.limits = limits
        self.dt_ns = dt_ns
        self.dt = dt_ns / 1e9
        self.max_step = max_step
        self._a = limits.max_acceleration
        self._v = limits.max_velocity
        self._j = limits.max_jerk
        # Braking from v with jerk-limited deceleration needs about v*a/(2j) more than v^2/(2a).
        jerk = np.where(np.isfinite(self._j), self._j, 1.0)
        self._jerk_lead = np.where(np.isfinite(self._j), self._a / (2.0 * jerk), 0.0)

    # ------------------------------------------------------------------ plans

    def plan(
        self,
        start: MotionState,
        targets: Array,
        target_times_ns: npt.NDArray[np.int64],
        track_until_ns: int,
        measured: Array | None = None,
    ) -> Plan:
        """Follow ``targets`` (H, J) absolute joint positions due at ``target_times_ns`` from ``start``
        until ``track_until_ns``, then brake to rest. Non-finite targets raise ValueError."""
        targets = np.asarray(targets, dtype=np.float64)
        if not np.all(np.isfinite(targets)):
            raise ValueError("non-finite joint targets")
        low, high = self._box(measured)
        times = np.asarray(target_times_ns, dtype=np.int64)
        clipped = np.clip(targets, low, high)
        tracked = max(0, min(MAX_PLAN_PERIODS, math.ceil((track_until_ns - start.t_ns) / self.dt_ns)))
        p, v, a = [start.p.copy()], [start.v.copy()], [start.a.copy()]
        previous_target = self._target_at(clipped, times, start.t_ns)
        for j in range(1, tracked + 1):
            t = start.t_ns + j * self.dt_ns
            target = self._target_at(clipped, times, t)
            pn, vn, an = self._step(p[-1], v[-1], a[-1], target, (target - previous_target) / self.dt, low, high)
            previous_target = target
            p.append(pn)
            v.append(vn)
            a.append(an)
        self._brake(p, v, a, low, high)
        return Plan(start.t_ns, self.dt_ns, np.asarray(p), np.asarray(v), np.asarray(a), tracked)

    def follow(self, state: MotionState, target: Array, target_velocity: Array | None = None) -> MotionState:
        """One period from ``state`` toward ``target`` (absolute positions due at the period's end,
        moving at ``target_velocity``, default at rest), within the limits: a plan's step for targets
        given one period at a time."""
        low, high = self._box(None)
        goal = np.clip(np.asarray(target, dtype=np.float64), low, high)
        velocity = np.zeros_like(state.v) if target_velocity is None else np.asarray(target_velocity, dtype=np.float64)
        p, v, a = self._step(state.p, state.v, state.a, goal, velocity, low, high)
        return MotionState(state.t_ns + self.dt_ns, p, v, a)

    def stop(self, start: MotionState, reason: str) -> Plan:
        """From ``start`` to rest at the acceleration limit (within the position limits)."""
        low, high = self._box(None)
        p, v, a = [start.p.copy()], [start.v.copy()], [start.a.copy()]
        self._brake(p, v, a, low, high)
        return Plan(start.t_ns, self.dt_ns, np.asarray(p), np.asarray(v), np.asarray(a), 0, reason)

    def stop_duration_s(self, velocities: Array) -> float:
        """Time to brake from ``velocities`` at the acceleration (and jerk) limits, rounded up."""
        a, lead = self._a, self._jerk_lead
        return float(np.max(np.abs(velocities) / a + 2.0 * lead, initial=0.0)) + 2.0 * self.dt

    # ------------------------------------------------------------------ steps

    def _box(self, measured: Array | None) -> tuple[Array, Array]:
        low, high = self.limits.min_position.copy(), self.limits.max_position.copy()
        if measured is not None and self.max_step > 0:
            m = np.asarray(measured, dtype=np.float64)
            low, high = np.maximum(low, m - self.max_step), np.minimum(high, m + self.max_step)
        return low, high

    @staticmethod
    def _target_at(targets: Array, times: npt.NDArray[np.int64], t_ns: int) -> Array:
        if t_ns <= times[0]:
            return targets[0].copy()
        if t_ns >= times[-1]:
            return targets[-1].copy()
        k = int(np.searchsorted(times, t_ns, side="right")) - 1
        w = (t_ns - times[k]) / (times[k + 1] - times[k])
        return (1.0 - w) * targets[k] + w * targets[k + 1]

    def _stopping_speed(self, distance: Array, toward: Array) -> Array:
        """The largest speed a period from now from which the joint still stops within ``distance``:
        this period moves (v + v') / 2 * dt (``toward`` = v in the direction of the distance); braking
        from v' at the acceleration limit in whole periods moves at most v'^2 / (2a) + a dt^2 / 8 more
        (plus v' * a / (2j) with a jerk limit), and exactly v' dt / 2 for v' <= a dt (one period)."""
        a, lead = self._a, 0.5 * self.dt + self._jerk_lead
        slack = 0.125 * a * self.dt * self.dt
        room = np.maximum(distance - 0.5 * np.maximum(toward, 0.0) * self.dt, 0.0)
        bound = -a * lead + np.sqrt((a * lead) ** 2 + 2.0 * a * np.maximum(room - slack, 0.0))
        # Within a·dt of rest a stop takes one period and moves v'·dt/2: exact where the bound above,
        # rounded for many periods, would leave a dead zone of a·dt²/8 around every target (3 mrad at
        # 10 rad/s² and 50 ms, 0.1 rad at 300 rad/s²) in which a plan never closes in.
        one_period = np.where(self._jerk_lead > 0.0, 0.0, np.minimum(a * self.dt, room / self.dt))
        return np.maximum(bound, one_period)

    def _step(
        self, p: Array, v: Array, a: Array, target: Array, target_velocity: Array, low: Array, high: Array
    ) -> tuple[Array, Array, Array]:
        # Where this period would end with the target's velocity; close half the rest each period
        # (never faster than a stop on the target allows): no overshoot, no lag on a steady ramp.
        error = target - (p + 0.5 * (v + target_velocity) * self.dt)
        relative = (v - target_velocity) * np.sign(error)
        approach = np.minimum(np.abs(error) / self.dt, self._stopping_speed(np.abs(error), relative))
        desired = target_velocity + np.sign(error) * approach
        return self._limit(p, v, a, desired, low, high)

    def _limit(
        self, p: Array, v: Array, a: Array, desired: Array, low: Array, high: Array
    ) -> tuple[Array, Array, Array]:
        dt = self.dt
        up = np.where(np.isfinite(high), self._stopping_speed(high - p, v), np.inf)
        down = np.where(np.isfinite(low), self._stopping_speed(p - low, -v), np.inf)
        desired = np.clip(np.clip(desired, -down, up), -self._v, self._v)
        acc = np.clip((desired - v) / dt, -self._a, self._a)
        acc = np.clip(acc, a - self._j * dt, a + self._j * dt)  # jerk: inf where none is given
        vn = v + acc * dt
        pn = p + 0.5 * (v + vn) * dt
        return pn, vn, acc

    def _brake(self, p: list[Array], v: list[Array], a: list[Array], low: Array, high: Array) -> None:
        """Append states until every joint is at rest (velocity and acceleration zero)."""
        for _ in range(MAX_PLAN_PERIODS):
            if np.all(np.abs(v[-1]) <= REST_EPSILON) and np.all(np.abs(a[-1]) <= REST_EPSILON):
                return
            pn, vn, an = self._limit(p[-1], v[-1], a[-1], np.zeros_like(v[-1]), low, high)
            # The last period of a ramp lands exactly on zero instead of dithering around it.
            done = np.abs(vn) <= REST_EPSILON
            vn = np.where(done, 0.0, vn)
            if np.all(done) and np.all(np.abs(v[-1]) <= self._a * self.dt + REST_EPSILON):
                an = (vn - v[-1]) / self.dt
                pn = p[-1] + 0.5 * (v[-1] + vn) * self.dt
            p.append(pn)
            v.append(vn)
            a.append(an)
        raise RuntimeError("a stop did not come to rest within MAX_PLAN_PERIODS: the limits cannot stop it")


def check_command(values: Array, limits: JointLimits, velocities: bool = False, tolerance: float = 1e-6) -> str | None:
    """The last guard before a command reaches a controller: what is wrong with it, or None."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(limits.joints),):
        return f"{values.shape[0] if values.ndim else 0} values for {len(limits.joints)} joints"
    if not np.all(np.isfinite(values)):
        return "non-finite value"
    if velocities:
        over = np.abs(values) > limits.max_velocity * (1 + tolerance) + tolerance
        what = "velocity limit"
    else:
        over = (values < limits.min_position - tolerance) | (values > limits.max_position + tolerance)
        what = "position limit"
    if np.any(over):
        joint = limits.joints[int(np.argmax(over))]
        return f"joint {joint} beyond its {what}"
    return None
