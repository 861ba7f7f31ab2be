"""The closed-loop benchmark's joint side: a joint-space model on the joint-driven Sawyer, in process,
and the joint motion figures that every wiring reports (``dysl_bench closed-loop``, ``--wiring``).

``JointExecution`` turns each chunk of a joint-space model into what the arm is sent (joint targets
and the gripper command, as ``dysl_node``'s joint output does) and steps the servos toward them with
the setpoints logged at a controller's rate (``joint_log``); ``motion_table`` renders the figures of
``joint_log.summary`` per variant. No torch here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError
from dysl_ros.sim.params import ARMS as BRIDGE_ARMS

WIRINGS = ("inprocess", *BRIDGE_ARMS)
"""``--wiring``: in this process, or over ROS 2 with sim_bridge in one of its arm modes."""

MOTION_RATE_HZ = 500.0
"""The setpoints are logged every other 1 kHz physics tick: a controller's update rate."""
MOTION_HEADER = (
    "| wiring | variant | largest acceleration, rad/s² (setpoint, finite differences) | largest jerk, rad/s³ "
    "| limit hits (position / velocity / acceleration) | tracking error max / RMS, rad | episodes |\n"
    "|---|---|---:|---:|---:|---:|---:|"
)

Array = npt.NDArray[Any]


def add_wiring_arguments(parser: argparse.ArgumentParser) -> None:
    """``dysl_bench closed-loop``'s flags of the arm: ``--wiring`` (over ROS 2: ``ros_loop``), ``--ros-out``,
    ``--motion-plot``."""
    parser.add_argument(
        "--wiring", choices=WIRINGS, default="inprocess",
        help="inprocess (default): the model acts on the simulator in this process (Meta-World's end effector, "
        "or the joint servos for a joint-space model); ee, jtc, forward: over ROS 2, sim_bridge in that arm mode "
        "and dysl_node as two processes per variant (dense, dysl only), in real time",
    )
    parser.add_argument(
        "--ros-out", metavar="DIR",
        help="--wiring ee|jtc|forward: each variant's run (the demo's results.json, logs, plots) goes to DIR/<variant> "
        "(default: out/bench/ros_<wiring>)",
    )
    parser.add_argument(
        "--motion-plot", metavar="FILE",
        help="joint-space models: write a PNG of one episode's joint setpoints and measured positions "
        "(the first task's first episode, dysl if run, else the first variant)",
    )


def model_arm(semantics: str) -> str:
    """Which simulator arm a model drives: ``joint`` for joint-space actions, else ``ee``."""
    from dysl_ros.joint_wiring import JOINT_SEMANTICS

    return "joint" if semantics in JOINT_SEMANTICS else "ee"


class JointExecution:
    """A joint-space model in the joint-driven simulator, in process: each chunk's actions become joint
    targets (``dysl_ros.joint_wiring``: clamped to the model's action range first, integrated from the joints
    measured with the observation for deltas and velocities, then kept within the arm's position
    limits) plus the gripper command; each step the servos' setpoint moves linearly to the next target
    (``JointSpaceTask.step``), every setpoint logged at the controller rate for the motion figures."""

    def __init__(self, spec: Any) -> None:
        from dysl_ros.joint_wiring import wire_joints
        from dysl_ros.mt10.joint_env import ARM_JOINTS, CONTROL_PERIOD_S, GRIPPER_ACTION

        wiring = wire_joints(spec.action_semantics, spec.action_names, ARM_JOINTS, ())
        if wiring is None or GRIPPER_ACTION not in spec.action_names:
            raise ConfigError(f"a joint-space model needs actions named {list(ARM_JOINTS)} and {GRIPPER_ACTION!r}, "
                              f"got {list(spec.action_names)}")
        self.wiring = wiring
        self.dt = CONTROL_PERIOD_S
        self.gripper = list(spec.action_names).index(GRIPPER_ACTION)
        bounds = spec.action_bounds()
        self.low = None if bounds is None else np.asarray(bounds[0], dtype=np.float64)
        self.high = None if bounds is None else np.asarray(bounds[1], dtype=np.float64)

    def executable(self, actions: Array, measured: Array) -> Array:
        """(H, 8): per action, the seven joint targets (rad) and the gripper command."""
        from dysl_ros.sim.sawyer import LOWER, UPPER

        values = np.asarray(actions, dtype=np.float64)
        if self.low is not None and self.high is not None:
            values = np.clip(values, self.low, self.high)
        positions, _velocities = self.wiring.joint_chunks(values, measured, self.dt)
        positions = np.clip(positions, LOWER, UPPER)
        out: Array = np.concatenate([positions, values[:, [self.gripper]]], axis=1)
        return out

    @staticmethod
    def recorder() -> Any:
        """An empty ``JointLog`` of the arm's joints."""
        from dysl_ros.mt10.joint_env import ARM_JOINTS
        from dysl_ros.sim.joint_log import JointLog

        return JointLog(ARM_JOINTS)

    def step(self, env: Any, values: Array, log: Any) -> tuple[Any, bool, bool]:
        """One control period toward ``values``' targets, logged every other physics tick (500 Hz, a
        controller's rate): the setpoint, its slope, and the measured joints."""
        from dysl_ros.mt10.joint_env import PHYSICS_DT_S, TICKS_PER_PERIOD

        start = env.setpoint
        goal = np.where(np.isfinite(values[:7]), values[:7], start)
        slope = (goal - start) / self.dt
        zeros = np.zeros(7)
        for tick in range(1, TICKS_PER_PERIOD + 1):
            setpoint = start + (goal - start) * (tick / TICKS_PER_PERIOD)
            if tick % 2 == 0:
                log.add(round(env.time_s / PHYSICS_DT_S) * 1_000_000, setpoint, slope, zeros,
                        env.joint_positions(), env.joint_velocities())
            env.physics_step(setpoint, float(values[7]))
        result: tuple[Any, bool, bool] = env.end_step()
        return result


def episode_motion(recorder: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """An episode's ``joint_log.summary`` against the Sawyer's limits, and its log."""
    from dysl_ros.sim import joint_log
    from dysl_ros.sim.sawyer import motion_limits

    log: dict[str, Any] = recorder.as_dict()
    return joint_log.summary(joint_log.report(log, motion_limits())), log


def combine(summaries: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Several episodes' motion summaries as one (``joint_log.combine``)."""
    from dysl_ros.sim.joint_log import combine as combine_logs

    return combine_logs(summaries)


def motion_row(wiring: str, variant: str, m: Mapping[str, float]) -> str:
    hits = f"{m['position_hits']:.0f} / {m['velocity_hits']:.0f} / {m['acceleration_hits']:.0f}"
    return (f"| {wiring} | `{variant}` | {m['max_acceleration_fd']:.3g} | {m['max_jerk_fd']:.3g} | {hits} | "
            f"{m['tracking_error_max']:.3g} / {m['tracking_error_rms']:.2g} | {m['episodes']:.0f} |")


def motion_table(report: Mapping[str, Any]) -> str:
    """Joint motion per variant (joint arms): the worst joint's largest setpoint acceleration and jerk
    over every episode, limit hits summed over the updates and joints, tracking error."""
    wiring = str(report.get("wiring", "inprocess"))
    lines = [f"Joint motion at the arm (updates at {report.get('motion_rate_hz', MOTION_RATE_HZ):g} Hz, limits of "
             "dysl_ros/sim/sawyer.py):", "", MOTION_HEADER]
    for name, v in report["variants"].items():
        if "motion" in v:
            lines.append(motion_row(wiring, name, v["motion"]))
    return "\n".join(lines)


def plot_motion(results: Sequence[Any], file: str, model_name: str) -> bool:
    """The plot of one logged episode's joint setpoints and positions (dysl's if it ran, else the first
    logged); False when no episode was logged."""
    from dysl_ros.sim.joint_log import plot_episode

    logged = [r for r in results if r.log is not None]
    if not logged:
        return False
    shown = next((r for r in logged if r.variant == "dysl"), logged[0])
    plot_episode(shown.log, Path(file),
                 f"{model_name}, in process: {shown.variant}, {shown.task} seed {shown.seed} "
                 f"({'success' if shown.success else 'failure'}), setpoints at {MOTION_RATE_HZ:g} Hz")
    return True
