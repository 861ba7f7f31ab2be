"""``make demo``: the VLA in a closed loop over ROS 2 on this machine (sim_bridge + dysl_node).

    python -m dysl_ros.tools.demo                                # models/reference, 3 tasks x 2 episodes
    python -m dysl_ros.tools.demo --model-dir /tmp/tiny --tasks all --episodes-per-task 10 --json
    python -m dysl_ros.tools.demo --wiring jtc                   # models/reference_joint through a JTC

``--wiring``: ``ee`` (default) moves Meta-World's end effector with the model-space ``~/action``;
``jtc`` and ``forward`` drive the Sawyer's seven joints (``sim_bridge`` arm modes): ``dysl_node``
publishes ``~/joint_trajectory`` (or ``~/commands``) within the arm's limits (``config/sawyer_arm.urdf``
as ``robot_description``, acceleration limits as ``joint_limits.*`` parameters), the bridge's joint
trajectory controller (or forward controller) follows it at 500 Hz inside 1 kHz physics, and the
table adds each episode's joint motion (largest setpoint acceleration and jerk, limit hits, tracking
error); ``motion.png`` plots episode 1's joint setpoints and positions.

What it does: builds the ONNX Runtime engines when missing (``build_engines``), starts ``sim_bridge``
and ``dysl_node`` as two processes on a ROS domain of their own (loopback only, the project's Fast
DDS profile), wires them together with topic remaps, runs the episodes, and prints per episode the
task, success, steps, tick latency p50/p99, mean executed layers and the action stream's jitter
(p99 of the periods between ``~/action`` messages at this launcher's subscriber, minus the nominal
period: DDS delivery and this process's scheduling included). Writes under ``--out``
(``out/demo``): ``results.json``, ``episode.gif`` (one episode, executed layers overlaid),
``dysl_ticks.png`` (C_t, allow points, executed layers per tick) and ``logs/``.

Exit status: 0 done (whatever the success rate), 1 a process failed or timed out, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import suppress
from pathlib import Path
from typing import Any

from dysl_ros.mt10.env import model_goal_marker_radius
from dysl_ros.mt10.tasks import parse_tasks
from dysl_ros.params import add_flags, from_flags
from dysl_ros.sim import rosenv
from dysl_ros.sim.params import DemoSettings, DemoWiring
from dysl_ros.wiring import (
    CONTROLLER_TOPICS,
    DEFAULT_TOPICS,
    EPISODE_RESULT_TOPIC,
    TICK_TOPIC,
    private_topic,
    remap_arguments,
)

DEFAULT_MODEL = Path("models/reference")
DEFAULT_JOINT_MODEL = Path("models/reference_joint")
NODE_NAME = "dysl_node"
# Topic names shared by the two processes: those of the launch files' defaults.
TOPICS = DEFAULT_TOPICS
RESULT_TOPIC = private_topic("sim_bridge", EPISODE_RESULT_TOPIC)
NODE_TICK_TOPIC = private_topic("dysl_node", TICK_TOPIC)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MOTION_LOG = "motion_episode.npz"
"""Joint wirings: the bridge's joint log of episode 1 (``joint_log`` keys)."""
BRIDGE_EXIT_WAIT_S = 15.0
"""After the last result: how long the bridge may take to end by itself before it is stopped."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model-dir", type=Path, default=None,
                   help="trained model (default models/reference; with --wiring jtc or forward models/reference_joint)")
    p.add_argument("--random-model", action="store_true",
                   help="no trained model: write an untrained reference-size model under OUT/random_model and use "
                        "it (plumbing and speed only: it succeeds by chance)")
    add_flags(p, DemoSettings)
    add_flags(p, DemoWiring)
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    p.add_argument("--dense", action="store_true", help="run the node dense (every layer): the baseline")
    p.add_argument("--engines", type=Path, default=Path("engines"), help="engine cache root (default engines/)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--gif-episode", type=int, default=1, help="episode number (1-based) for the GIF; 0: none")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: a free one in 1..200)")
    p.add_argument("--startup-timeout-s", type=float, default=300.0, help="for the node to come up")
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure as the last line")
    args = p.parse_args(argv)
    settings = from_flags(DemoSettings, args)
    wiring = from_flags(DemoWiring, args)
    for problem in settings.problems(arm=wiring.wiring):
        p.error(problem)
    if args.model_dir is None:
        args.model_dir = DEFAULT_MODEL if args.wiring == "ee" else DEFAULT_JOINT_MODEL
    args.tasks, args.task_list = settings.tasks, parse_tasks(settings.tasks)
    return args


# ---------------------------------------------------------------------------------- preparation


def make_random_model(path: Path, joint: bool = False, num_layers: int | None = None) -> Path:
    """An untrained model of the reference shape with DySL modules (random layer plan): the pipeline
    and its speed can be shown before a trained model exists; its actions are meaningless. ``joint``:
    the joint-space reference model's shape (``random_joint_config``)."""
    if (path / "vla_config.json").is_file():
        return path
    import numpy as np
    import torch

    from dysl_ros.core.config import DySLConfig
    from dysl_ros.core.layer_plan import LayerPlan
    from dysl_ros.model.checkpoint import save_dysl, save_model
    from dysl_ros.model.reference_vla import ReferenceVLA
    from dysl_ros.model.skip_modules import DySLModules
    from dysl_ros.model.spec import VLAConfig

    torch.manual_seed(0)
    config = random_joint_config(num_layers or 12) if joint else VLAConfig(num_layers=num_layers or 24)
    model = ReferenceVLA(config)
    similarities = np.random.default_rng(0).uniform(0.5, 1.0, config.num_layers)
    plan = LayerPlan.from_similarities(similarities.tolist(), 0.2)
    save_model(model, path, dtype=torch.float32)
    save_dysl(path, plan, DySLModules(config.hidden_size, plan), DySLConfig(static_ratio=0.2), dtype=torch.float32)
    return path


def random_joint_config(num_layers: int) -> Any:
    """The joint-space reference model's shape (scripts/reference_joint_config.json) with placeholder
    normalisation: arm joint changes of about 0.01 rad per step, so an untrained model moves the arm
    gently. Its state is the Sawyer's joints, its actions joint position deltas and the gripper."""
    from dysl_ros.model.spec import VLAConfig
    from dysl_ros.mt10.joint_env import ACTION_NAMES, STATE_NAMES

    arm = len(ACTION_NAMES) - 1
    return VLAConfig(
        num_layers=num_layers, proprio_dim=len(STATE_NAMES), action_dim=len(ACTION_NAMES),
        action_names=ACTION_NAMES, state_names=STATE_NAMES, action_semantics="joint_position_deltas",
        action_low=(-0.5,) * arm + (-1.0,), action_high=(0.5,) * arm + (1.0,),
        proprio_mean=(1.5, -0.5, -0.3, 0.9, 0.3, 1.3, 2.8, 0.0, 0.0), proprio_std=(0.3,) * 7 + (0.01, 0.01),
        action_scale=(0.01,) * arm + (1.0,), action_offset=(0.0,) * (arm + 1),
    )


def num_layers(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "vla_config.json").read_text()).get("num_layers", 0))
    except (OSError, ValueError):
        return 0


def build_engines(model_dir: Path, engines: Path) -> None:
    """``build_engines`` (exit 0 also when the engines are up to date); raises with its output on failure."""
    command = [sys.executable, "-m", "dysl_ros.tools.build_engines", "--model-dir", str(model_dir),
               "--out", str(engines)]
    done = subprocess.run(command, capture_output=True, text=True)
    first = (done.stdout.strip().splitlines() or [""])[0]
    if done.returncode != 0:
        raise RuntimeError(f"build_engines failed ({done.returncode}):\n{done.stderr.strip() or done.stdout.strip()}")
    print(f"  {first}", file=sys.stderr)


def _param(name: str, value: object) -> list[str]:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(str(v) for v in value) + "]"
    else:
        text = str(value)
    return ["-p", f"{name}:={text}"]


def arm_params_file(path: Path) -> Path:
    """The node's arm parameters for the simulated Sawyer (``sim.sawyer``): its URDF as
    ``robot_description``, the acceleration limits as ros2_control's ``joint_limits.*``."""
    import yaml

    from dysl_ros.sim.sawyer import joint_limit_parameters, read_urdf

    path.parent.mkdir(parents=True, exist_ok=True)
    values = {"robot_description": read_urdf(), "joint_limits": joint_limit_parameters()}
    path.write_text(yaml.safe_dump({f"/{NODE_NAME}": {"ros__parameters": values}}, sort_keys=False))
    return path


def joint_motion(args: argparse.Namespace) -> bool:
    """Whether the demo reports the joints' motion: always through the joint controllers; with the end
    effector when asked (``--joint-motion``), in real time."""
    return bool(args.mode == "real_time" and (args.wiring != "ee" or args.joint_motion))


def joint_remaps(wiring: str) -> list[str]:
    """The joint command topics of both processes, as ros2_control's controllers name them."""
    if wiring == "ee":
        return []
    return remap_arguments({name: CONTROLLER_TOPICS[name] for name in ("joint_trajectory", "commands")})


def node_command(args: argparse.Namespace, model_dir: Path, config_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "dysl_ros.node.dysl_node", "--ros-args"]
    if (config_dir / "dysl.yaml").is_file():
        command += ["--params-file", str(config_dir / "dysl.yaml")]
    params: dict[str, object] = {
        "model_dir": str(model_dir.resolve()),
        "engine_dir": str(args.engines.resolve()),
        "backend": args.backend,
        "autostart": True,
        "control_rate_hz": float(args.control_rate_hz),
        "dense": args.dense,
    }
    if args.wiring != "ee":
        from dysl_ros.mt10.joint_env import ARM_JOINTS, STATE_NAMES

        command += ["--params-file", str(arm_params_file(args.out / "logs" / "arm_params.yaml"))]
        params["state_joint_names"] = list(STATE_NAMES)
        params["command_joint_names"] = list(ARM_JOINTS)
    for name, value in params.items():
        command += _param(name, value)
    return command + remap_arguments(TOPICS) + joint_remaps(args.wiring)


def bridge_command(args: argparse.Namespace, model_dir: Path, config_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "dysl_ros.tools.sim_bridge", "--ros-args"]
    if (config_dir / "sim_bridge.yaml").is_file():
        command += ["--params-file", str(config_dir / "sim_bridge.yaml")]
    params: dict[str, object] = {
        "mode": args.mode,
        "tasks": args.task_list,
        "episodes_per_task": args.episodes_per_task,
        "seed": args.seed,
        "control_rate_hz": float(args.control_rate_hz),
        "camera_rate_hz": float(args.camera_rate_hz),
        "execute_steps": args.execute_steps,
        "max_steps": args.max_steps,
        "startup_timeout_s": float(args.startup_timeout_s),
        "on_finish": "exit",
        # Draw the goal as the model's demos did (0: Meta-World's marker).
        "goal_marker_radius": model_goal_marker_radius(model_dir) or 0.0,
    }
    if joint_motion(args):
        params["motion_log"] = str((args.out / MOTION_LOG).resolve())
    if args.wiring != "ee":
        params.update(arm=args.wiring, policy_node=f"/{NODE_NAME}")
    for name, value in params.items():
        command += _param(name, value)
    return command + remap_arguments(TOPICS) + joint_remaps(args.wiring)


# ---------------------------------------------------------------------------------- observing


class Observer:
    """This process's ROS side: results, ticks, action arrival times, frames of the GIF episode."""

    def __init__(self, keep_frames_of: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray, String

        from dysl_ros.sim.report import Tick

        self._tick_class = Tick
        self.lock = threading.Lock()
        self.results: list[dict[str, Any]] = []
        self.ticks: list[Tick] = []
        self.action_times: list[float] = []
        self.frames: deque[tuple[float, Any]] = deque(maxlen=1000)
        self.keep_frames_of = keep_frames_of  # 1-based episode number; 0: none
        self.instructions = 0
        self.node_diagnostics: dict[str, str] = {}  # the node's own latest /diagnostics values

        rclpy.init()
        self._rclpy = rclpy
        self.node = rclpy.create_node("dysl_demo")
        deep_reliable = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        # Best effort readers match best-effort and reliable writers alike.
        deep_best_effort = QoSProfile(
            depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
        )
        latched = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        latched1 = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, RESULT_TOPIC, self._on_result, latched)
        self.node.create_subscription(DiagnosticStatus, NODE_TICK_TOPIC, self._on_tick, deep_best_effort)
        self.node.create_subscription(Float64MultiArray, TOPICS["action"], self._on_action, deep_reliable)
        self.node.create_subscription(String, TOPICS["instruction"], self._on_instruction, latched1)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        if keep_frames_of:
            self._image_sub = self.node.create_subscription(Image, TOPICS["image"], self._on_image, deep_best_effort)
        executor = SingleThreadedExecutor()
        executor.add_node(self.node)
        self._spinner = rosenv.BackgroundSpinner(executor, "demo_ros")

    def now(self) -> float:
        return float(self.node.get_clock().now().nanoseconds) * 1e-9

    def _on_result(self, msg: Any) -> None:
        result = json.loads(msg.data)
        with self.lock:
            self.results.append(result)
            if len(self.results) >= self.keep_frames_of > 0:
                self.keep_frames_of = -self.keep_frames_of  # recorded: stop taking frames
                self.node.destroy_subscription(self._image_sub)  # and stop receiving them

    def _on_tick(self, msg: Any) -> None:
        tick = self._tick_class.from_values({kv.key: kv.value for kv in msg.values})
        with self.lock:
            self.ticks.append(tick)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == "dysl_node: inference":
                with self.lock:
                    self.node_diagnostics = {kv.key: kv.value for kv in status.values}

    def _on_action(self, _msg: Any) -> None:
        now = self.now()
        with self.lock:
            self.action_times.append(now)

    def _on_instruction(self, _msg: Any) -> None:
        with self.lock:
            self.instructions += 1

    def _on_image(self, msg: Any) -> None:
        if self.keep_frames_of <= 0:
            return
        import numpy as np

        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if msg.encoding != "rgb8" or msg.step != msg.width * 3:
            return
        rgb = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)
        with self.lock:
            self.frames.append((stamp, rgb))

    def close(self) -> None:
        self._spinner.stop()
        self.node.destroy_node()
        self._rclpy.try_shutdown()


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The subscriber thread must get the GIL promptly, or its own delays read as stream jitter.
    sys.setswitchinterval(0.0005)
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    model_dir: Path = args.model_dir
    if args.random_model:
        random_dir = out / ("random_joint_model" if args.wiring != "ee" else "random_model")
        print(f"demo: writing an untrained reference-size model to {random_dir}", file=sys.stderr)
        model_dir = make_random_model(random_dir, joint=args.wiring != "ee")
    elif not (model_dir / "vla_config.json").is_file():
        print(
            f"demo: no model at {model_dir} (vla_config.json missing). Train one (`make train`), pass --model-dir, "
            "or --random-model to see the pipeline run with untrained weights.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    layers = num_layers(model_dir)
    if args.backend == "onnxruntime":
        print(f"demo: ONNX Runtime engines for {model_dir} under {args.engines}/ (built if missing)", file=sys.stderr)
        try:
            build_engines(model_dir, args.engines)
        except RuntimeError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return EXIT_FAILED

    domain = rosenv.claim_domain_id(args.domain_id)
    env = rosenv.ros_environment(domain)
    rosenv.apply(env)  # this process's own participant too
    config_dir = rosenv.fastdds_profile().parent
    episodes = len(args.task_list) * args.episodes_per_task
    print(
        f"demo: {episodes} episode(s) over {', '.join(args.task_list)}, {args.mode}, "
        f"{args.control_rate_hz:g} Hz control / {args.camera_rate_hz:g} Hz camera, run seed {args.seed}, "
        f"ROS domain {domain}, logs in {logs}/",
        file=sys.stderr,
    )
    observer = Observer(args.gif_episode)
    node_log, bridge_log = logs / "dysl_node.log", logs / "sim_bridge.log"
    node = rosenv.start_process(node_command(args, model_dir, config_dir), env, node_log)
    bridge = rosenv.start_process(bridge_command(args, model_dir, config_dir), env, bridge_log)
    status = EXIT_OK
    failure = ""
    try:
        failure = _wait_for_episodes(args, observer, node, bridge, episodes, node_log, bridge_log)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        if not failure:
            # Every result is in and the bridge ends by itself: a SIGINT during its shutdown would turn
            # a complete run into "sim_bridge exited with -2" (seen on a 50-episode run).
            with suppress(subprocess.TimeoutExpired):
                bridge.wait(timeout=BRIDGE_EXIT_WAIT_S)
        bridge_rc = rosenv.stop_process(bridge)
        rosenv.stop_process(node)
        time.sleep(0.2)
        observer.close()
    if failure:
        print(f"demo: {failure}", file=sys.stderr)
        status = EXIT_FAILED
    elif bridge_rc not in (0, None):
        print(f"demo: sim_bridge exited with {bridge_rc}:\n{rosenv.log_tail(bridge_log)}", file=sys.stderr)
        status = EXIT_FAILED
    summary = _report(args, observer, layers, model_dir, out, time.monotonic() - started)
    if args.json:
        print(json.dumps(summary))
    return status


def _wait_for_episodes(
    args: argparse.Namespace,
    observer: Observer,
    node: subprocess.Popen[bytes],
    bridge: subprocess.Popen[bytes],
    episodes: int,
    node_log: Path,
    bridge_log: Path,
) -> str:
    """Show progress until every episode result arrived; returns why it stopped early ('' when done)."""
    from tqdm import tqdm

    # Budget: the node coming up, then each episode at most max_steps control periods (real time;
    # lockstep is faster), twice over, plus a start-up allowance per episode.
    per_episode = 2.0 * args.max_steps / args.control_rate_hz + 20.0
    deadline = time.monotonic() + args.startup_timeout_s + episodes * per_episode
    interactive = sys.stderr.isatty()
    begun = time.monotonic()
    bar = tqdm(total=episodes, desc="episodes", unit="ep", file=sys.stderr, dynamic_ncols=True, mininterval=2.0,
               disable=not interactive)
    shown = 0
    next_status = 0.0
    try:
        while True:
            with observer.lock:
                results = list(observer.results)
                ticks, actions, started = len(observer.ticks), len(observer.action_times), observer.instructions
            for result in results[shown:]:
                ok = "error" if result.get("error") else ("success" if result["success"] else "failure")
                line = (f"  episode {shown + 1}/{episodes} {result['task']:<24} seed {result['seed']:>10}: {ok} "
                        f"in {result['steps']} steps, {result['wall_time_s']:.1f} s")
                shown += 1
                if interactive:
                    bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr)
                bar.update(1)
            if time.monotonic() >= next_status:
                phase = "waiting for dysl_node" if started == 0 else f"episode {min(started, episodes)}/{episodes}"
                status = (f"{phase}, ticks {ticks}, actions {actions}, "
                          f"ok {sum(bool(r['success']) for r in results)}")
                if interactive:
                    next_status = time.monotonic() + 2.0
                    bar.set_postfix_str(status, refresh=True)
                else:  # a log, not a terminal: a plain line every 10 s
                    next_status = time.monotonic() + 10.0
                    print(f"  [{time.monotonic() - begun:5.0f} s] {len(results)}/{episodes} done; {status}",
                          file=sys.stderr)
            if len(results) >= episodes:
                return ""
            if any(r.get("error") for r in results):
                return f"episode aborted: {results[-1]['error']}\n{rosenv.log_tail(bridge_log)}"
            if node.poll() is not None:
                return f"dysl_node exited with {node.returncode}:\n{rosenv.log_tail(node_log)}"
            if bridge.poll() is not None and bridge.returncode != 0:
                return f"sim_bridge exited with {bridge.returncode}:\n{rosenv.log_tail(bridge_log)}"
            if bridge.poll() is not None and time.monotonic() > _exit_grace(bridge):
                return f"sim_bridge exited after {len(results)} of {episodes} results reached the demo"
            if time.monotonic() > deadline:
                return f"timed out after {len(results)} of {episodes} episodes (logs: {node_log.parent})"
            time.sleep(0.5)
    finally:
        bar.close()


_EXITED_AT: dict[int, float] = {}


def _exit_grace(proc: subprocess.Popen[bytes]) -> float:
    """Results may still be in flight when the bridge exits: allow a few seconds."""
    return _EXITED_AT.setdefault(proc.pid, time.monotonic() + 5.0)


def _report(
    args: argparse.Namespace, observer: Observer, layers: int, model_dir: Path, out: Path, wall_s: float
) -> dict[str, Any]:
    from dysl_ros.sim import report

    with observer.lock:
        results = sorted(observer.results, key=lambda r: float(r["start_stamp"]))
        ticks = list(observer.ticks)
        action_times = sorted(observer.action_times)
        frames = sorted(observer.frames, key=lambda f: f[0])
    rows = []
    print(report.TABLE_HEADER)
    for number, result in enumerate(results, start=1):
        fig = report.episode_figures(ticks, action_times, result, args.control_rate_hz)
        print(report.table_row(number, result, fig, layers))
        rows.append({**result, **fig.to_dict()})
    successes = sum(bool(r["success"]) for r in results)
    rate = successes / len(results) if results else math.nan
    print(f"overall: {successes}/{len(results)} successes ({100 * rate:.1f} %)" if results else "overall: no episodes")
    motion = _motion_report(args, results, model_dir, out) if joint_motion(args) else {}
    if not ticks:
        print(f"note: no {NODE_TICK_TOPIC} telemetry arrived, so tick latency and layers are n/a")
    all_fig = report.episode_figures(
        ticks, action_times,
        {"start_stamp": results[0]["start_stamp"], "end_stamp": results[-1]["end_stamp"]} if results
        else {"start_stamp": 0.0, "end_stamp": 0.0},
        args.control_rate_hz,
    )
    with observer.lock:
        own = dict(observer.node_diagnostics)
    if own:
        print(f"dysl_node's own figures (last /diagnostics, its recent window): action period jitter p99 "
              f"{own.get('action_period_jitter_p99_ms', 'n/a')} ms, tick p50/p99 "
              f"{own.get('tick_latency_p50_ms', 'n/a')} / {own.get('tick_latency_p99_ms', 'n/a')} ms, "
              f"backend {own.get('backend', '?')}")
    media: dict[str, str] = {}
    if args.gif_episode and len(results) >= args.gif_episode:
        gif_result = results[args.gif_episode - 1]
        mine = [(s, f) for s, f in frames
                if float(gif_result["start_stamp"]) - 1e-6 <= s <= float(gif_result["end_stamp"]) + 1e-6]
        written = report.write_gif(out / "episode.gif", mine, report.episode_ticks(ticks, gif_result), gif_result,
                                   layers, args.camera_rate_hz)
        if written:
            media["gif"] = str(out / "episode.gif")
            print(f"gif: {out / 'episode.gif'} ({written} frames of episode {args.gif_episode}, {gif_result['task']})")
    if not args.no_plot and ticks and results:
        title = (f"{model_dir.name}: {'dense' if args.dense else 'DySL'}, {args.mode}, "
                 f"{len(results)} episodes, run seed {args.seed}")
        report.write_plot(out / "dysl_ticks.png", ticks, results, layers, title)
        media["plot"] = str(out / "dysl_ticks.png")
        print(f"plot: {out / 'dysl_ticks.png'}")
    summary = {
        "model_dir": str(model_dir),
        "backend": args.backend,
        "dense": args.dense,
        "mode": args.mode,
        "tasks": args.task_list,
        "episodes_per_task": args.episodes_per_task,
        "seed": args.seed,
        "control_rate_hz": args.control_rate_hz,
        "camera_rate_hz": args.camera_rate_hz,
        "execute_steps": args.execute_steps if args.mode == "lockstep" else None,
        "max_steps": args.max_steps,
        "episodes_run": len(results),
        "successes": successes,
        "success_rate": rate if results else None,
        "overall": all_fig.to_dict(),
        "node_diagnostics": own,
        "wiring": args.wiring,
        **motion,
        "wall_time_s": round(wall_s, 1),
        "files": media,
        "episodes": rows,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"results: {out / 'results.json'} (demo wall time {wall_s:.0f} s)")
    return summary


def _motion_report(
    args: argparse.Namespace, results: list[dict[str, Any]], model_dir: Path, out: Path
) -> dict[str, Any]:
    """Joint wirings: each episode's joint motion (from its result), the run's, and episode 1's plot."""
    from dysl_ros.sim import joint_log

    rows = [(n, r["motion"]) for n, r in enumerate(results, start=1) if isinstance(r.get("motion"), dict)]
    if not rows:
        print("note: no joint motion figures arrived with the episode results")
        return {}
    print("joint motion (largest over the joints; " + (
        "setpoints at the controller's 500 Hz):" if args.wiring != "ee"
        else "ee: the joints themselves, following the mocap weld, each 12.5 ms simulated step):"))
    print("  #  accel rad/s2  jerk rad/s3  limit hits pos/vel/acc  tracking err max/rms rad")
    for number, m in rows:
        print(f"{number:>3}  {m['max_acceleration_fd']:>11.3g}  {m['max_jerk_fd']:>11.3g}  "
              f"{m['position_hits']:>8.0f} / {m['velocity_hits']:.0f} / {m['acceleration_hits']:.0f}      "
              f"{m['tracking_error_max']:.3g} / {m['tracking_error_rms']:.2g}")
    overall = joint_log.combine([{k: float("nan") if v is None else float(v) for k, v in m.items()} for _, m in rows])
    figures: dict[str, Any] = {"motion": overall}
    log_file = out / MOTION_LOG
    if log_file.is_file() and not args.no_plot:
        import numpy as np

        with np.load(log_file) as data:
            log = {key: data[key] for key in data.files}
        plot = out / "motion.png"
        joint_log.plot_episode(
            log, plot, f"{model_dir.name} through {args.wiring} ({'dense' if args.dense else 'DySL'}): "
            f"{log['task']} seed {int(log['seed'])}, {'success' if bool(log['success']) else 'failure'}",
        )
        figures["files_motion"] = {"plot": str(plot), "log": str(log_file)}
        print(f"motion plot: {plot}")
    return figures


if __name__ == "__main__":
    sys.exit(main())
