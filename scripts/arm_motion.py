"""What an arm feels from dysl_node: the figures of docs/results.md ("Arm safety").

dysl_node drives a simulated 7-joint arm through joint_trajectory_controller's sampling rules
(dysl_ros.sim.jtc_arm: Humble or Jazzy, the measured or the desired start state, a first-order lag
at 500 Hz) over DDS, with a tiny random joint-position model (every chunk a new random target: the
hardest case for hand-offs), cameras at 15 Hz and a new instruction every --instruction-period s.
Per run and joint: the largest setpoint step, acceleration and jerk, limit hits and hand-off jumps
(dysl_ros.sim.motion_metrics). Then the faults, each with its time to the stop command and to rest.

    .venv/bin/python scripts/arm_motion.py --duration 60 --out out/arm_motion
    .venv/bin/python scripts/arm_motion.py --duration 60 --before-src /tmp/before --out out/arm_motion_before

``--before-src``: a source tree of an earlier commit (``git archive <commit> dysl_ros config | tar -x
-C DIR``) whose node runs instead, for the before figures. The harness and fixtures come from test/
(the same ones test/test_arm_safety.py runs), so this script runs from the repository with the dev venv.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

import conftest  # noqa: E402,F401  the loopback DDS environment, before any rclpy context
from arm_loop import (  # noqa: E402
    STOP_TABLE_HEADER,
    Stop,
    arm_loop,
    enable,
    lifecycle,
    lost_windows,
    make_arm_model,
    motion,
    stop_after,
    stream_pid,
)
from lifecycle_msgs.msg import Transition  # noqa: E402

COLUMNS = [
    "joint", "max_step", "max_velocity_fd", "max_acceleration_fd", "max_jerk_fd", "position_hits",
    "velocity_hits", "acceleration_hits", "max_handoff_jump", "handoff_bound", "handoffs_over_bound",
    "tracking_error_max",
]
RULES = (("humble", "measured"), ("jazzy", "desired"))


def closed_loop(root: Path, model: Path, distro: str, rule: str, seconds: float, period: float,
                before_src: Path | None) -> tuple[str, dict[str, object], dict[str, object]]:
    with arm_loop(root, model, distro, rule, node_src=before_src) as loop:
        loop.wait_serving()
        loop.record_sent()
        begin = time.time_ns()
        loop.feed(seconds, instruction_period_s=period)
        end = time.time_ns()
        diag = loop.fresh_diag()
        log = loop.stop_arm()
        sent = [s for s in loop.sent.messages if begin <= s < end]
    report = motion(log, begin, end)
    lost = lost_windows(log, sent, begin)
    worst = {name: report.worst(name) for name in COLUMNS[1:] if name != "handoff_bound"}
    summary = {"handoffs": report.handoffs, "updates": report.updates, "sent": len(sent), "lost": len(lost), **worst}
    note = (f"{len(sent)} trajectories sent, {report.handoffs} hand-offs, {len(lost)} trajectories the controller "
            "never got (its subscription is best effort, depth 1)\n")
    return note + "\n" + report.markdown(COLUMNS), summary, diag


def faults(root: Path, model: Path) -> list[Stop]:
    """The faults in three sessions (the node is gone after SIGTERM, kill -9 and the stream's kill)."""
    stops: list[Stop] = []
    brake = 0.6
    with arm_loop(root / "faults_a", model, "humble", "measured") as loop:
        loop.wait_serving()
        loop.feed(3.0)
        t = time.time_ns()
        time.sleep(0.4 + brake + 0.3)
        back = time.time_ns()
        loop.feed(2.0)
        estop = time.time_ns()
        enable(loop, False)
        loop.feed(1.5)
        estop_end = time.time_ns()
        enable(loop, True)
        loop.feed(2.0)
        deactivate = time.time_ns()
        lifecycle(loop, Transition.TRANSITION_DEACTIVATE)
        lifecycle(loop, Transition.TRANSITION_ACTIVATE)
        loop.feed(1.0)
        quiet = time.time_ns()
        loop.instruct()
        loop.feed(2.0)
        term = time.time_ns()
        os.killpg(loop.node.pid, signal.SIGTERM)
        loop.node.wait(timeout=20.0)
        time.sleep(0.3)
        log = loop.stop_arm()
    stops += [
        stop_after(log, "camera stops (image older than max_image_age_ms = 400 ms)", t, back),
        stop_after(log, "e-stop (~/enable false)", estop, estop_end),
        stop_after(log, "deactivate", deactivate, quiet),
        stop_after(log, "SIGTERM", term),
    ]
    with arm_loop(root / "faults_b", model, "jazzy", "desired", node_may_die=True) as loop:
        loop.wait_serving()
        loop.feed(3.0)
        t = time.time_ns()
        os.kill(loop.node.pid, signal.SIGKILL)
        time.sleep(2.0)
        log = loop.stop_arm()
    stops.append(stop_after(log, "kill -9 of the node (the stream process stops the arm)", t))
    with arm_loop(root / "faults_c", model, "jazzy", "desired") as loop:
        loop.wait_serving()
        loop.feed(3.0)
        t = time.time_ns()
        os.kill(stream_pid(loop), signal.SIGKILL)
        time.sleep(2.0)
        log = loop.stop_arm()
    stops.append(stop_after(log, "kill -9 of the stream process (the node stops the arm)", t))
    with arm_loop(root / "faults_d", model, "humble", "desired") as loop:
        loop.wait_serving()
        loop.feed(3.0)
        t = time.time_ns()
        os.kill(loop.node.pid, signal.SIGINT)
        loop.node.wait(timeout=20.0)
        time.sleep(0.3)
        log = loop.stop_arm()
    stops.append(stop_after(log, "SIGINT", t))
    return stops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of each closed-loop run")
    parser.add_argument("--instruction-period", type=float, default=10.0, help="seconds between instructions")
    parser.add_argument("--before-src", type=Path, default=None, help="run this source tree's node instead")
    parser.add_argument("--no-faults", action="store_true", help="only the closed-loop runs")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "arm_motion")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = make_arm_model(args.out / "model")
    lines = [f"# dysl_node through a JTC: {args.duration:g} s per run, node from "
             f"{args.before_src or 'this tree'}\n"]
    summary: dict[str, object] = {}
    for distro, rule in RULES:
        table, worst, diag = closed_loop(
            args.out / f"{distro}_{rule}", model, distro, rule, args.duration, args.instruction_period, args.before_src
        )
        lines += [f"## {distro}, {rule} start state\n", table, ""]
        summary[f"{distro}_{rule}"] = {"worst": worst, "trajectories_late": diag.get("trajectories_late")}
        print(f"{distro} {rule}: {json.dumps(worst)}", flush=True)
    if not args.no_faults and args.before_src is None:
        stops = faults(args.out / "faults", model)
        lines += ["## Faults\n", STOP_TABLE_HEADER, *(stop.row() for stop in stops), ""]
        summary["faults"] = {s.fault: {"to_stop_command_ms": s.to_stop_command_ms, "to_rest_ms": s.to_rest_ms}
                             for s in stops}
    text = "\n".join(lines)
    (args.out / "report.md").write_text(text)
    print(text)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
