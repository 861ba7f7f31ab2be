"""A log of what an arm's joints were commanded and did, update by update, and its figures.

The same keys as ``jtc_arm``'s ``.npz`` log, so ``motion_metrics.report_from_log`` reads either:
``joint_names``, ``time_ns`` (N), ``setpoint_positions`` / ``_velocities`` / ``_accelerations`` (N × J),
``positions`` / ``velocities`` (N × J, measured), ``handoff_indices`` (updates that first sampled a new
trajectory). Written by ``sim_bridge`` in its joint arm modes and by the in-process closed loop of a
joint-space model; ``summary`` condenses a report to the figures ``dysl_bench closed-loop`` prints, and
``plot_episode`` draws one episode's setpoints against the measured positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dysl_ros.sim.motion_metrics import JointLimits, MotionReport, report_from_log

SUMMARY_KEYS = (
    "max_acceleration_fd",
    "max_jerk_fd",
    "max_acceleration",
    "max_jerk",
    "tracking_error_max",
    "tracking_error_rms",
    "max_step",
)
"""The worst joint's value of each, over an episode (``summary``)."""
HIT_KEYS = ("position_hits", "velocity_hits", "acceleration_hits", "jerk_hits")


class JointLog:
    """Rows appended one controller update at a time (amortised growth, no list of arrays)."""

    def __init__(self, joint_names: Sequence[str], capacity: int = 4096) -> None:
        self.joint_names = tuple(joint_names)
        n = len(self.joint_names)
        self._time = np.zeros(capacity, dtype=np.int64)
        self._rows = np.zeros((5, capacity, n))  # setpoint p, v, a; measured p, v
        self._handoffs: list[int] = []
        self.size = 0

    def add(
        self, time_ns: int, positions: Any, velocities: Any, accelerations: Any, measured: Any,
        measured_velocities: Any, handoff: bool = False,
    ) -> None:
        if self.size == self._time.size:
            self._time = np.concatenate([self._time, np.zeros_like(self._time)])
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)], axis=1)
        self._time[self.size] = time_ns
        for row, values in enumerate((positions, velocities, accelerations, measured, measured_velocities)):
            self._rows[row, self.size] = values
        if handoff:
            self._handoffs.append(self.size)
        self.size += 1

    def as_dict(self) -> dict[str, npt.NDArray[Any]]:
        rows = self._rows[:, : self.size].copy()
        return {
            "joint_names": np.array(self.joint_names),
            "time_ns": self._time[: self.size].copy(),
            "setpoint_positions": rows[0],
            "setpoint_velocities": rows[1],
            "setpoint_accelerations": rows[2],
            "positions": rows[3],
            "velocities": rows[4],
            "handoff_indices": np.array(self._handoffs, dtype=np.int64),
        }


def report(
    log: Mapping[str, Any], limits: JointLimits | None = None, handoff_period_s: float | None = None
) -> MotionReport:
    return report_from_log(log, limits, handoff_period_s=handoff_period_s)


def summary(motion: MotionReport) -> dict[str, float]:
    """The worst joint's figure of each ``SUMMARY_KEYS``, and the limit hits summed over the joints."""
    figures: dict[str, float] = {key: motion.worst(key) for key in SUMMARY_KEYS}
    for key in HIT_KEYS:
        figures[key] = float(sum(getattr(joint, key) for joint in motion.joints))
    figures["nonfinite"] = float(sum(joint.nonfinite for joint in motion.joints))
    return figures


def combine(summaries: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Over episodes: the largest of each worst figure, the mean of the RMS tracking error, hits summed."""
    if not summaries:
        return {}
    out: dict[str, float] = {}
    for key in SUMMARY_KEYS:
        values = [s[key] for s in summaries]
        out[key] = float(np.mean(values)) if key == "tracking_error_rms" else float(np.max(values))
    for key in (*HIT_KEYS, "nonfinite"):
        out[key] = float(sum(s[key] for s in summaries))
    out["episodes"] = float(len(summaries))
    return out


def plot_episode(log: Mapping[str, Any], file: Path, title: str, joints: Sequence[int] | None = None) -> None:
    """Each joint's setpoint (the controller's command) and measured position over one episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(n) for n in log["joint_names"]]
    chosen = list(joints) if joints is not None else list(range(len(names)))
    time_ns = np.asarray(log["time_ns"], dtype=np.int64)
    t = (time_ns - time_ns[0]) * 1e-9 if time_ns.size else time_ns.astype(np.float64)
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 1.3 * len(chosen) + 0.8), sharex=True, squeeze=False)
    for ax, j in zip(axes[:, 0], chosen, strict=True):
        ax.plot(t, log["setpoint_positions"][:, j], color="tab:blue", linewidth=1.0, label="setpoint")
        ax.plot(t, log["positions"][:, j], color="tab:orange", linewidth=1.0, linestyle="--", label="measured")
        ax.set_ylabel(f"{names[j]}\nrad", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("s")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=110)
    plt.close(fig)
