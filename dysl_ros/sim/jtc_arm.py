"""``jtc_arm``: a joint_trajectory_controller and the arm it drives, as one ROS 2 process for tests.

    ~/joint_trajectory (JointTrajectory) ──► TrajectoryFollower ──► LaggedArm ──► /joint_states (JointState)
                                             (500 Hz, jtc.py)       (first-order lag τ)

Run it as ``python -m dysl_ros.sim.jtc_arm [options] [--ros-args ...]``; with the default node name the
trajectory topic is ``/joint_trajectory_controller/joint_trajectory``, as ros2_control names it.

Time: the simulation advances in whole update periods of virtual time, step k at ``start + k·period`` of the
monotonic clock; each loop iteration runs every step that is due, then sleeps until the next one. Scheduling
jitter delays when a step is computed, never what it computes, and nothing drifts. The follower's clock is ROS
(system) time at start plus the same virtual time, so header stamps from another process compare as they would
on a robot. A trajectory is handed to the follower at the first step whose virtual time is not before its
arrival.

Both topics use ``SystemDefaultsQoS``, as JTC's subscription and joint_state_broadcaster's publisher do; on
Fast DDS that resolves to a best-effort reader and a reliable, transient-local writer (DDS defaults).

On SIGINT or SIGTERM (or after ``--duration``) it writes ``--log`` (``.npz``) and exits 0. Keys:

- ``joint_names``, ``distro``, ``start_state``, ``tau_s``, ``update_rate_hz``: the set-up.
- ``time_ns`` (N): the ROS time of each update; ``setpoint_positions`` / ``_velocities`` / ``_accelerations``
  (N × joints): the command it wrote (see ``jtc.Setpoint``); ``positions`` / ``velocities`` (N × joints): the
  arm's state it read. ``handoff_indices``: the updates that first sampled a newly received trajectory.
- Per received trajectory (M): ``trajectory_arrival_ns`` (ROS time of arrival), ``trajectory_stamp_ns``
  (header stamp), ``trajectory_update_index`` (the update it was handed over at), ``trajectory_rejection``
  (the reason, "" when accepted).
- ``nonfinite_received`` (values in received trajectories), ``nonfinite_setpoints`` (in the commands written),
  ``timeouts`` (``cmd_timeout`` holds), ``max_catch_up_steps`` (most steps one loop iteration ran).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_system_default
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from dysl_ros.sim.jtc import NS_PER_S, LaggedArm, Point, Trajectory, TrajectoryFollower, clock_pair
from dysl_ros.sim.rosenv import BackgroundSpinner

DEFAULT_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
NODE_NAME = "joint_trajectory_controller"


def _list(text: str) -> list[str]:
    return [item for item in text.replace(",", " ").split() if item]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jtc_arm", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--joints", type=_list, default=list(DEFAULT_JOINTS), help="the controller's joints, in order")
    parser.add_argument("--distro", choices=("humble", "jazzy"), default="humble", help="whose JTC rules to follow")
    parser.add_argument(
        "--start-state",
        choices=("measured", "desired"),
        default="measured",
        help="a new trajectory starts from the measured state (the default of both distros) or the last command "
        "(Humble open_loop_control / Jazzy interpolate_from_desired_state)",
    )
    parser.add_argument("--tau", type=float, default=0.05, help="the arm's first-order lag, s")
    parser.add_argument("--initial-positions", type=_list, default=None, help="the arm's start, one per joint (0)")
    parser.add_argument("--update-rate", type=float, default=500.0, help="controller update rate, Hz")
    parser.add_argument("--state-rate", type=float, default=100.0, help="joint state publish rate, Hz")
    parser.add_argument("--node-name", default=NODE_NAME, help="the node's name (the controller's)")
    parser.add_argument("--trajectory-topic", default="~/joint_trajectory", help="JointTrajectory input")
    parser.add_argument("--state-topic", default="/joint_states", help="JointState output")
    parser.add_argument("--cmd-timeout", type=float, default=0.0, help="JTC cmd_timeout, s (0: off)")
    parser.add_argument("--allow-partial-joints-goal", action="store_true", help="JTC allow_partial_joints_goal")
    parser.add_argument(
        "--allow-nonzero-velocity-at-trajectory-end",
        choices=("true", "false"),
        default=None,
        help="JTC's parameter (default: the distro's, Humble true, Jazzy false)",
    )
    parser.add_argument("--no-velocity-state", action="store_true", help="the controller reads positions only")
    parser.add_argument("--log", type=Path, default=None, help="write the run's log here (.npz) on exit")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: on a signal)")
    args = parser.parse_args(argv)
    if args.initial_positions is None:
        args.initial_positions = [0.0] * len(args.joints)
    args.initial_positions = [float(x) for x in args.initial_positions]
    if len(args.initial_positions) != len(args.joints):
        parser.error(f"--initial-positions has {len(args.initial_positions)} values for {len(args.joints)} joints")
    if not (args.update_rate > 0 and 0 < args.state_rate <= args.update_rate and args.tau > 0):
        parser.error("need update-rate > 0, 0 < state-rate <= update-rate and tau > 0")
    return args


def trajectory_from_msg(msg: Any) -> Trajectory:
    """A ``trajectory_msgs/JointTrajectory`` as ``jtc.Trajectory``."""
    points = [
        Point(
            point.time_from_start.sec * NS_PER_S + point.time_from_start.nanosec,
            np.array(point.positions, dtype=np.float64),
            np.array(point.velocities, dtype=np.float64),
            np.array(point.accelerations, dtype=np.float64),
            np.array(point.effort, dtype=np.float64),
        )
        for point in msg.points
    ]
    stamp = msg.header.stamp
    return Trajectory(tuple(msg.joint_names), points, stamp.sec * NS_PER_S + stamp.nanosec)


class _Rows:
    """A growing (rows × width) float array: a row a step, without a list of arrays."""

    def __init__(self, width: int, dtype: type = np.float64) -> None:
        self.data: npt.NDArray[Any] = np.zeros((4096, width), dtype=dtype)
        self.size = 0

    def add(self, row: Any) -> None:
        if self.size == self.data.shape[0]:
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.size] = row
        self.size += 1

    def array(self) -> npt.NDArray[Any]:
        return self.data[: self.size].copy()


class JtcArm(Node):
    """The ROS side: the trajectory subscription (arrivals queued with their monotonic time) and the joint
    state publisher. The simulation itself runs in ``run`` on the main thread."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.node_name)
        self.args = args
        self._arrivals: deque[tuple[int, Trajectory]] = deque()
        self._lock = threading.Lock()
        # SystemDefaultsQoS: what JTC subscribes and joint_state_broadcaster publishes with.
        qos = qos_profile_system_default
        self.create_subscription(JointTrajectory, args.trajectory_topic, self._on_trajectory, qos)
        self.state_pub = self.create_publisher(JointState, args.state_topic, qos)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        trajectory = trajectory_from_msg(msg)
        with self._lock:
            # Stamped under the lock: a step that already looked for arrivals ran at an earlier virtual time.
            self._arrivals.append((time.monotonic_ns(), trajectory))

    def take_arrived(self, until_monotonic_ns: int) -> list[tuple[int, Trajectory]]:
        """The trajectories that arrived up to ``until_monotonic_ns``, oldest first."""
        taken = []
        with self._lock:
            while self._arrivals and self._arrivals[0][0] <= until_monotonic_ns:
                taken.append(self._arrivals.popleft())
        return taken

    def publish_state(self, stamp_ns: int, positions: Any, velocities: Any) -> None:
        msg = JointState()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, NS_PER_S)
        msg.name = list(self.args.joints)
        msg.position = positions.tolist()
        msg.velocity = velocities.tolist()
        self.state_pub.publish(msg)

    def run(self, stop: threading.Event) -> dict[str, Any]:
        """Simulate until ``stop`` (or ``--duration``): the log's arrays."""
        args = self.args
        n = len(args.joints)
        follower = _follower(args)
        arm = LaggedArm(n, args.tau, args.initial_positions)
        follower.activate(arm.positions, arm.velocities)  # trajectories arriving before the first update count
        period_ns = follower.update_period_ns
        period_s = period_ns / NS_PER_S
        state_every = max(1, round(args.update_rate / args.state_rate))
        end_step = round(args.duration * NS_PER_S / period_ns) if args.duration > 0 else None

        times, handoffs = _Rows(1, np.int64), []
        set_p, set_v, set_a, arm_p, arm_v = (_Rows(n) for _ in range(5))
        arrivals: list[tuple[int, int, int, str]] = []  # arrival ns, stamp ns, update index, rejection
        max_catch_up = 0

        ros_start, mono_start = clock_pair(lambda: self.get_clock().now().nanoseconds)
        step = 0
        while not stop.is_set() and (end_step is None or step < end_step):
            due = (time.monotonic_ns() - mono_start) // period_ns
            if end_step is not None:
                due = min(due, end_step - 1)
            max_catch_up = max(max_catch_up, int(due - step + 1))
            while step <= due:
                virtual_mono = mono_start + step * period_ns
                now_ns = ros_start + step * period_ns
                for arrival, trajectory in self.take_arrived(virtual_mono):
                    reason = follower.receive(trajectory, now_ns)
                    arrivals.append((ros_start + arrival - mono_start, trajectory.stamp_ns, step, reason or ""))
                    if reason is not None:
                        self.get_logger().warning(f"trajectory rejected: {reason}")
                measured_p, measured_v = arm.positions, arm.velocities
                setpoint = follower.update(now_ns, measured_p, measured_v)
                times.add(now_ns)
                set_p.add(setpoint.positions)
                set_v.add(setpoint.velocities)
                set_a.add(setpoint.accelerations)
                arm_p.add(measured_p)
                arm_v.add(measured_v)
                if setpoint.handoff:
                    handoffs.append(step)
                if step % state_every == 0:  # joint_state_broadcaster: the state read in this update
                    self.publish_state(now_ns, measured_p, measured_v)
                arm.step(setpoint.positions, period_s)
                step += 1
            # Sleep to the next step; a signal sets ``stop`` and the loop ends within a period.
            delay_ns = mono_start + step * period_ns - time.monotonic_ns()
            if delay_ns > 0:
                time.sleep(delay_ns / NS_PER_S)

        setpoints = set_p.array()
        return {
            "joint_names": np.array(args.joints),
            "distro": np.array(args.distro),
            "start_state": np.array(args.start_state),
            "tau_s": np.array(args.tau),
            "update_rate_hz": np.array(args.update_rate),
            "time_ns": times.array().reshape(-1),
            "setpoint_positions": setpoints,
            "setpoint_velocities": set_v.array(),
            "setpoint_accelerations": set_a.array(),
            "positions": arm_p.array(),
            "velocities": arm_v.array(),
            "handoff_indices": np.array(handoffs, dtype=np.int64),
            "trajectory_arrival_ns": np.array([a[0] for a in arrivals], dtype=np.int64),
            "trajectory_stamp_ns": np.array([a[1] for a in arrivals], dtype=np.int64),
            "trajectory_update_index": np.array([a[2] for a in arrivals], dtype=np.int64),
            "trajectory_rejection": np.array([a[3] for a in arrivals], dtype=np.str_),
            "nonfinite_received": np.array(follower.nonfinite_received),
            "nonfinite_setpoints": np.array(int(np.count_nonzero(~np.isfinite(setpoints)))),
            "timeouts": np.array(follower.timeouts),
            "max_catch_up_steps": np.array(max_catch_up),
        }


def _follower(args: argparse.Namespace) -> TrajectoryFollower:
    """The JTC's trajectory follower as the flags configure it."""
    nonzero_end = args.allow_nonzero_velocity_at_trajectory_end
    return TrajectoryFollower(
        args.joints,
        distro=args.distro,
        start_state=args.start_state,
        update_rate_hz=args.update_rate,
        allow_partial_joints_goal=args.allow_partial_joints_goal,
        allow_nonzero_velocity_at_trajectory_end=None if nonzero_end is None else nonzero_end == "true",
        cmd_timeout=args.cmd_timeout,
        has_velocity_state=not args.no_velocity_state,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(remove_ros_args(argv)[1:])
    # Signals end the simulation loop, which then writes the log; rclpy must not shut the context first.
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = JtcArm(args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = BackgroundSpinner(executor, "jtc_arm_executor", poll_s=0.05)
    log: dict[str, Any] = {}
    try:
        node.get_logger().info(
            f"following {args.distro} JTC rules ({args.start_state} start) for {len(args.joints)} joints at "
            f"{args.update_rate:g} Hz, tau {args.tau:g} s"
        )
        log = node.run(stop)
        rejected = int(np.count_nonzero(log["trajectory_rejection"] != ""))
        node.get_logger().info(
            f"stopped after {log['time_ns'].size} updates: {log['trajectory_rejection'].size} trajectories "
            f"({rejected} rejected), {log['handoff_indices'].size} hand-offs, "
            f"most steps in one iteration {int(log['max_catch_up_steps'])}"
        )
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.log, **log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
