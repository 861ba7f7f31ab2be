"""dysl_node driving a simulated 7-joint arm through joint_trajectory_controller's rules, over DDS.

Three processes on a ROS domain of their own: ``dysl_node`` (a tiny random joint-position model of
one's own, arm_fixture's limits), ``dysl_ros.sim.jtc_arm`` (a JTC that samples trajectories as
ros2_control does, Humble or Jazzy, measured or desired start state, driving an arm with a
first-order lag at 500 Hz and publishing its joint states), and this process: two cameras at
15 Hz and the instruction, changed every ``instruction_period_s``. Random weights make every chunk a
new random target: the hardest case for hand-offs and limits. Used by test_arm_safety.py (short
runs) and scripts/arm_motion.py (the 60 s runs of docs/results.md).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arm_fixture
import numpy as np
from byom_fixture import JOINTS, POSITION_SPEC, make_imported_model
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import LATCHED_QOS, PYTHON, SENSOR_QOS, RosSession, ros_process, ros_session, unique_domain_id
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from dysl_ros.model.observation_spec import Normalisation
from dysl_ros.sim.motion_metrics import JointLimits, MotionReport, report_from_log

ARM_SPEC = dataclasses.replace(
    POSITION_SPEC,
    state_names=JOINTS,
    state_normalisation=Normalisation("mean_std", (0.0,) * len(JOINTS), (0.5,) * len(JOINTS)),
)
"""The arm's joint positions in, absolute joint positions out (the model's range +-1.5 is wider
than the arm's limits: the limits must do the bounding)."""
RATE_HZ = 50.0
DT_S = 1.0 / RATE_HZ
CAMERA_HZ = 15.0
INSTRUCTIONS = ("put the red block in the bowl", "open the top drawer", "push the button", "reach the goal")
METRIC_LIMITS = JointLimits.make(
    len(JOINTS), arm_fixture.LOWER, arm_fixture.UPPER, arm_fixture.VELOCITY, arm_fixture.ACCELERATION
)


def make_arm_model(root: Path, head: Any = None) -> Path:
    return make_imported_model(root, "qwen2", spec=ARM_SPEC, **({"head": head} if head is not None else {}))


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class ArmLoop:
    """A running loop: the node, the arm, and this process's camera and probes."""

    ros: RosSession
    name: str
    node: Any
    arm: Any
    root: Path
    domain: int
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    instruction_index: int = 0

    def __post_init__(self) -> None:
        ns = f"/{self.name}"
        self.cameras = {c.name: self.ros.publisher(Image, f"{ns}/{c.name}/image", SENSOR_QOS) for c in ARM_SPEC.cameras}
        self.instruction_pub = self.ros.publisher(String, f"{ns}/instruction", LATCHED_QOS)
        # No probe on the controller topics yet: the stream plans once anything subscribes there, and
        # a probe matched before the arm's controller would have it plan for nobody (record_sent).
        self.sent: Any = None
        self.diagnostics = self.ros.subscribe(
            DiagnosticArray, "/diagnostics", 10,
            lambda m: ({"_message": m.status[0].message, **{kv.key: kv.value for kv in m.status[0].values}}
                       if m.status and m.status[0].name == "dysl_node: inference" else None),
        )

    # ------------------------------------------------------------------ inputs

    def instruct(self, text: str | None = None) -> None:
        if text is None:
            text = INSTRUCTIONS[self.instruction_index % len(INSTRUCTIONS)]
            self.instruction_index += 1
        self.instruction_pub.publish(String(data=text))

    def frame(self) -> int:
        stamp = self.ros.node.get_clock().now().to_msg()
        for camera in ARM_SPEC.cameras:
            pixels = self.rng.integers(0, 256, (camera.height, camera.width, 3), dtype=np.uint8)
            msg = Image(encoding="rgb8", height=camera.height, width=camera.width, step=camera.width * 3,
                        data=pixels.tobytes())
            msg.header.stamp = stamp
            self.cameras[camera.name].publish(msg)
        return stamp_ns(stamp)

    def feed(self, seconds: float, instruction_period_s: float = 0.0) -> int:
        """Camera frames at 15 Hz for ``seconds`` (a new instruction every ``instruction_period_s``);
        returns the last frame's stamp."""
        end = time.monotonic() + seconds
        next_instruction = time.monotonic() + instruction_period_s if instruction_period_s > 0 else float("inf")
        last = 0
        while time.monotonic() < end:
            last = self.frame()
            if time.monotonic() >= next_instruction:
                self.instruct()
                next_instruction += instruction_period_s
            time.sleep(1.0 / CAMERA_HZ)
        return last

    # ------------------------------------------------------------------ observations

    def diag(self) -> dict[str, str]:
        messages = [m for m in self.diagnostics.messages if m is not None]
        return messages[-1] if messages else {}

    def fresh_diag(self, timeout: float = 5.0) -> dict[str, str]:
        seen = len(self.diagnostics)
        arrived = self.ros.wait_until(lambda: len(self.diagnostics) > seen and bool(self.diag()), timeout)
        assert arrived, "no diagnostics"
        return self.diag()

    def record_sent(self) -> None:
        """From now on, the header stamp of every trajectory the node sends (once the arm listens)."""
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.sent = self.ros.subscribe(
            JointTrajectory, f"/{self.name}/joint_trajectory", reliable, lambda m: stamp_ns(m.header.stamp)
        )
        assert self.ros.wait_until(lambda: self.sent.subscription.get_publisher_count() > 0, 10.0)
        settle = time.monotonic() + 0.3  # the writer's side matches last; keep the arm moving meanwhile
        while time.monotonic() < settle:
            self.frame()
            time.sleep(1.0 / CAMERA_HZ)

    def wait_serving(self, timeout: float = 90.0) -> None:
        """Frames until the node has published chunks and the stream follows a plan."""

        def serving() -> bool:
            self.frame()
            time.sleep(1.0 / CAMERA_HZ)
            diag = self.diag()
            if "joint_motion" not in diag:  # a node from before the arm-safety work (--before-src)
                return int(diag.get("chunks_published", "0")) > 0
            return diag["joint_motion"] in ("tracking", "braking (chunk ended)", "at rest")

        assert self.ros.wait_until(serving, timeout, period=0.0), f"not serving: {self.diag()}\n{self.node_log_tail()}"

    def node_log_tail(self) -> str:
        try:
            return (self.root / "node.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop_arm(self) -> dict[str, Any]:
        """SIGINT the arm: it writes its log; returns it."""
        os.killpg(self.arm.pid, signal.SIGINT)
        self.arm.wait(timeout=20.0)
        with np.load(self.root / "arm.npz") as data:
            return {key: data[key] for key in data.files}


def motion(
    log: dict[str, Any], from_ns: int | None = None, to_ns: int | None = None, limits: JointLimits = METRIC_LIMITS
) -> MotionReport:
    """The arm log's motion report within [from_ns, to_ns) of the controller's clock, against the arm's
    limits; hand-off jumps compared with v_max times the node's control period."""
    keep = np.ones(len(log["time_ns"]), dtype=bool)
    if from_ns is not None:
        keep &= log["time_ns"] >= from_ns
    if to_ns is not None:
        keep &= log["time_ns"] < to_ns
    index = np.flatnonzero(keep)
    sliced = {k: (v[index] if isinstance(v, np.ndarray) and v.shape[:1] == keep.shape else v) for k, v in log.items()}
    handoffs = np.asarray(log["handoff_indices"], dtype=np.int64)
    sliced["handoff_indices"] = np.searchsorted(index, handoffs[np.isin(handoffs, index)])
    return report_from_log(sliced, limits, handoff_period_s=DT_S)


LATE_ARRIVAL_NS = 3 * round(DT_S * 1e9)
"""A trajectory that reaches the controller this long after its first point may have come after its new
motion had begun (the controller's side took it late, starved): its first point lies at least a period
before it was sent (``JointOutput.spliced``), its new motion a period (plus planning time) after, both
on the period grid, so at least three periods apart."""


def lost_windows(log: dict[str, Any], sent: list[int], since_ns: int) -> list[tuple[int, int]]:
    """The controller-time windows the node cannot answer for: after a trajectory the controller never
    got (the next one it gets continues the lost one's plan, so that hand-off steps by what the two
    plans diverged since), and from a trajectory it took after its new motion had begun (a starved
    controller process). Each window runs from that hand-off to the one after."""
    received = {int(s) for s in log["trajectory_stamp_ns"]}
    arrivals = np.asarray(log["trajectory_arrival_ns"], dtype=np.int64)
    stamps = np.asarray(log["trajectory_stamp_ns"], dtype=np.int64)
    end_of_log = int(log["time_ns"][-1]) + 1

    def window(index: int) -> tuple[int, int]:
        end = int(arrivals[index + 1]) if index + 1 < len(arrivals) else end_of_log
        return int(arrivals[index]) - 10_000_000, end

    windows = []
    for stamp in sorted(set(sent)):
        if stamp in received or stamp < since_ns:
            continue
        later = np.flatnonzero(stamps > stamp)
        if later.size:
            windows.append(window(int(later[0])))
    late = np.flatnonzero((arrivals - stamps > LATE_ARRIVAL_NS) & (stamps >= since_ns))
    return sorted(set(windows) | {window(int(i)) for i in late})


def motion_without(
    log: dict[str, Any], windows: list[tuple[int, int]], from_ns: int, to_ns: int | None = None,
    limits: JointLimits = METRIC_LIMITS,
) -> list[MotionReport]:
    """Motion reports of the stretches between ``windows`` (lost_windows) within [from_ns, to_ns)."""
    edges, start = [], from_ns
    for begin, end in sorted(windows):
        if begin > start:
            edges.append((start, begin))
        start = max(start, end)
    edges.append((start, to_ns if to_ns is not None else int(log["time_ns"][-1]) + 1))
    times = log["time_ns"]
    return [motion(log, a, b, limits) for a, b in edges if np.count_nonzero((times >= a) & (times < b)) > 3]


def at_rest_after(log: dict[str, Any], t_ns: int, until_ns: int | None = None, speed: float = 1e-9) -> int | None:
    """The controller time (ns) from which the setpoint stays at rest within [t_ns, until_ns); None if
    it is still moving at the end of that window."""
    times = log["time_ns"]
    window = (times >= t_ns) & (times < (until_ns if until_ns is not None else np.iinfo(np.int64).max))
    index = np.flatnonzero(window)
    if index.size == 0:
        return None
    moving = np.any(np.abs(log["setpoint_velocities"][index]) > speed, axis=1)
    if moving[-1]:
        return None
    last = np.flatnonzero(moving)
    return int(times[index[last[-1] + 1]]) if last.size else int(times[index[0]])


@contextmanager
def arm_loop(
    root: Path,
    model_dir: Path,
    distro: str = "humble",
    start_state: str = "desired",
    tau_s: float = 0.02,
    node_params: dict[str, Any] | None = None,
    node_src: Path | None = None,
    node_env: dict[str, str] | None = None,
    name: str = "dysl_arm",
    node_may_die: bool = False,
    params_file: Path | None = None,
    joints: tuple[str, ...] = JOINTS,
    initial_positions: np.ndarray | None = None,
    arm_args: tuple[str, ...] = (),
) -> Iterator[ArmLoop]:
    """Start the arm, the node and this process's probes; on exit SIGINT both (the arm writes
    ``root/arm.npz`` unless ``stop_arm`` already did). ``node_src``: run the node from another source tree
    (the code before a change, for a before/after figure)."""
    root = root.resolve()  # the node may run from another directory (node_src)
    model_dir = model_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    domain = unique_domain_id()
    if params_file is None:
        params_file = arm_fixture.write_params(root / "arm.yaml", f"/{name}", arm_fixture.urdf())
    values: dict[str, Any] = {
        "model_dir": str(model_dir),
        "autostart": True,
        "control_rate_hz": RATE_HZ,
        "max_image_age_ms": 400.0,
        "diagnostics_period_s": 0.2,
        "warmup_ticks": 1,
        "stream_priority": 0,
        "state_joint_names": "[" + ",".join(joints) + "]",
        "command_joint_names": "[" + ",".join(joints) + "]",
        **(node_params or {}),
    }
    node = [PYTHON, "-m", "dysl_ros.node.dysl_node", "--ros-args", "-r", f"__node:={name}",
            "--params-file", str(params_file)]
    for key, value in values.items():
        node += ["-p", f"{key}:={str(value).lower() if isinstance(value, bool) else value}"]
    middle = (arm_fixture.LOWER + arm_fixture.UPPER) / 2 if initial_positions is None else initial_positions
    arm = [PYTHON, "-m", "dysl_ros.sim.jtc_arm", "--joints", ",".join(joints), "--distro", distro,
           "--start-state", start_state, "--tau", str(tau_s),
           "--initial-positions=" + ",".join(f"{x:.4f}" for x in middle),
           "--trajectory-topic", f"/{name}/joint_trajectory", "--state-topic", f"/{name}/joint_states",
           "--log", str(root / "arm.npz"), *arm_args]
    env = dict(node_env or {})
    if node_src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(node_src), env.get("PYTHONPATH", "")])
    with ExitStack() as stack:
        ros = stack.enter_context(ros_session(domain, f"{name}_probe"))
        arm_proc = stack.enter_context(ros_process(arm, domain, root / "arm.log"))
        node_proc = stack.enter_context(
            # From another tree: run there, or `python -m` would take this repository's package first.
            ros_process(node, domain, root / "node.log", env_extra=env, may_die=node_may_die, cwd=node_src)
        )
        loop = ArmLoop(ros, name, node_proc, arm_proc, root, domain)
        loop.instruct()
        yield loop


# ---------------------------------------------------------------------- faults


def lifecycle(loop: ArmLoop, transition: int) -> bool:
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request()
    request.transition.id = transition
    answer = loop.ros.call_service(ChangeState, f"/{loop.name}/change_state", request, timeout=30.0)
    return bool(answer.success)


def lifecycle_state(loop: ArmLoop) -> str:
    from lifecycle_msgs.srv import GetState

    answer = loop.ros.call_service(GetState, f"/{loop.name}/get_state", GetState.Request(), timeout=10.0)
    return str(answer.current_state.label)


def enable(loop: ArmLoop, on: bool) -> str:
    from std_srvs.srv import SetBool

    answer = loop.ros.call_service(SetBool, f"/{loop.name}/enable", SetBool.Request(data=on), timeout=10.0)
    assert answer.success, answer.message
    return str(answer.message)


def stream_pid(loop: ArmLoop) -> int:
    """The node's action-stream process (a child of the node's process)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == loop.node.pid and b"stream_process" in command:
            return int(entry.name)
    raise AssertionError("no action-stream process under the node")


@dataclass(frozen=True)
class Stop:
    """How a fault ended in the arm's log: the first trajectory that reached the controller after it
    (the stop command; none when the one it has already brakes, as when the camera stops) and the
    time from which the setpoint stayed at rest, both in ms after the fault."""

    fault: str
    to_stop_command_ms: float | None
    to_rest_ms: float | None
    report: MotionReport

    def row(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        worst = self.report
        hits = sum(j.position_hits + j.velocity_hits + j.acceleration_hits for j in worst.joints)
        nonfinite = sum(j.nonfinite for j in worst.joints)
        return f"| {self.fault} | {ms(self.to_stop_command_ms)} | {ms(self.to_rest_ms)} | {hits} | {nonfinite} |"


STOP_TABLE_HEADER = (
    "| fault | to the stop command, ms | to rest, ms | limit hits | non-finite setpoints |\n|---|---:|---:|---:|---:|"
)


def stop_after(log: dict[str, Any], fault: str, at_ns: int, until_ns: int | None = None) -> Stop:
    arrivals = np.asarray(log["trajectory_arrival_ns"], dtype=np.int64)
    after = arrivals[(arrivals >= at_ns) & (arrivals < (until_ns if until_ns is not None else np.iinfo(np.int64).max))]
    rest = at_rest_after(log, at_ns, until_ns)
    return Stop(
        fault,
        None if after.size == 0 else (int(after[0]) - at_ns) / 1e6,
        None if rest is None else (rest - at_ns) / 1e6,
        motion(log, from_ns=at_ns - 200_000_000, to_ns=until_ns),
    )
