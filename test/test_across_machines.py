"""dysl_node with its camera and controller on another machine: two network namespaces joined by a veth
pair stand in for the robot computer (A, 10.213.7.1) and the camera + controller machine (B, 10.213.7.2).

1. With config/fastdds_network.xml and subnet discovery on both sides (``dds_environment(...,
   localhost_only=False)``, what the launch files set for ``localhost_only:=false``), B's images reach
   the node and chunks stamped with them come back to B.
2. With config/fastdds.xml and localhost-only discovery in A (the default), the node serves a feeder
   on its own host but B's images never reach it: the loopback profile keeps everything on the host.

B gets a /dev/shm of its own (a tmpfs in its private mount namespace): network namespaces share the
host's shared memory, a second machine does not, so nothing can take a shortcut around the veth.
Needs CAP_NET_ADMIN (``ip netns add``; root here), else skipped. No traffic leaves the namespaces: the
only non-loopback interfaces the processes see are the two ends of the veth pair.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from model_fixture import make_model_dir
from ros_harness import PYTHON, REPO, check_alive, ros_process, unique_domain_id
from test_node import node_command

from dysl_ros.wiring import dds_environment

pytestmark = pytest.mark.ros

SUBNET = "10.213.7"
ADDRESS_A, ADDRESS_B = f"{SUBNET}.1", f"{SUBNET}.2"
NODE = "dysl_xm"
# Each publisher stamps its images with its own last three nanosecond digits, so a chunk's stamp
# (the image it was computed from) tells which side's camera it came from.
TAG_A, TAG_B = 101, 202
CHUNK_TIMEOUT_S = 25.0  # node start (torch import + tiny model) and discovery on a loaded 2-core machine
MIN_CHUNKS = 3
ISOLATION_WINDOW_S = 4.0  # B publishing while the loopback-only node demonstrably works

# The camera + controller side: publishes image / joint_states / instruction to the node's topics and
# prints, as JSON lines, the stamps of the chunks it receives, how many images it sent and how many
# readers its image publisher has matched.
ROBOT_SCRIPT = """
import json, sys, time
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

node_name, tag = sys.argv[1], int(sys.argv[2])
SENSOR = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def emit(**item):
    print(json.dumps(item), flush=True)


rclpy.init()
node = rclpy.create_node(f"robot_{tag}")
image_pub = node.create_publisher(Image, f"/{node_name}/image", SENSOR)
state_pub = node.create_publisher(JointState, f"/{node_name}/joint_states", SENSOR)
instruction_pub = node.create_publisher(String, f"/{node_name}/instruction", LATCHED)
node.create_subscription(
    JointTrajectory, f"/{node_name}/action_chunk",
    lambda m: emit(chunk=m.header.stamp.sec * 10**9 + m.header.stamp.nanosec), RELIABLE,
)
instruction_pub.publish(String(data="reach the goal"))
sent = 0


def tick():
    global sent
    now = node.get_clock().now().nanoseconds
    ns = now - now % 1000 + tag
    msg = Image(encoding="rgb8", width=64, height=48, step=64 * 3, data=bytes(64 * 48 * 3))
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
    state_pub.publish(JointState(position=[0.0, 0.6, 0.2, 1.0]))
    image_pub.publish(msg)
    sent += 1
    if sent % 10 == 0:
        emit(sent=sent, readers=image_pub.get_subscription_count())


node.create_timer(0.05, tick)
emit(started=True)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10.0)


def _not_permitted(result: subprocess.CompletedProcess[str]) -> bool:
    return any(text in result.stderr for text in ("not permitted", "Permission denied"))


@dataclass(frozen=True)
class Namespaces:
    a: str
    b: str


@pytest.fixture(scope="module")
def namespaces() -> Iterator[Namespaces]:
    """Two fresh network namespaces joined by a veth pair, deleted (with the veth) afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 ('ip') is not installed")
    suffix = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ns = Namespaces(a=f"dysl-xm-a-{suffix}", b=f"dysl-xm-b-{suffix}")
    probe = _ip("netns", "add", ns.a)
    if probe.returncode != 0:  # no CAP_SYS_ADMIN (or no /run/netns): any failure here means "not here"
        pytest.skip(f"cannot create network namespaces (needs root: CAP_SYS_ADMIN): {probe.stderr.strip()}")
    created = [ns.a]
    try:
        created.append(ns.b)
        # Created inside A with its peer put straight into B: no interface ever exists in the host's
        # namespace, so this cannot touch the host's network (or clash with a concurrent run).
        steps = [
            ("netns", "add", ns.b),
            ("-n", ns.a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", ns.b),
        ]
        for name, dev, address in ((ns.a, "veth-a", ADDRESS_A), (ns.b, "veth-b", ADDRESS_B)):
            steps += [
                ("-n", name, "link", "set", "lo", "up"),  # the loopback profile and SHM discovery need it
                ("-n", name, "addr", "add", f"{address}/24", "dev", dev),
                ("-n", name, "link", "set", dev, "up"),
                # No default route in a fresh namespace: DDS discovery multicast (239.255.0.1) goes
                # over the veth, as it goes over a machine's default interface.
                ("-n", name, "route", "add", "224.0.0.0/4", "dev", dev),
            ]
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0 and _not_permitted(result):  # e.g. CAP_SYS_ADMIN but no CAP_NET_ADMIN
                pytest.skip(f"cannot set up the veth pair (needs CAP_NET_ADMIN): {result.stderr.strip()}")
            assert result.returncode == 0, f"ip {' '.join(step)}: {result.stderr.strip()}"
        shm = _ip(*in_namespace(ns.b, ["true"], own_shm=True)[1:])
        if shm.returncode != 0:  # CAP_NET_ADMIN without CAP_SYS_ADMIN
            pytest.skip(f"cannot mount a private /dev/shm in a namespace: {shm.stderr.strip()}")
        yield ns
    finally:
        for name in reversed(created):
            _ip("netns", "del", name)  # takes the veth pair with it


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("xm_model"))


def in_namespace(ns: str, args: list[str], own_shm: bool = False) -> list[str]:
    """``args`` run inside network namespace ``ns``; ``own_shm``: with a private, empty /dev/shm.

    ``ip netns exec`` gives the command a mount namespace of its own (with / made a slave), so the
    tmpfs mounted there is seen by that process tree only and disappears with it.
    """
    if own_shm:
        args = ["sh", "-c", 'mount -t tmpfs -o size=256m dysl_xm_shm /dev/shm && exec "$@"', "sh", *args]
    return ["ip", "netns", "exec", ns, *args]


def network_env() -> dict[str, str]:
    """What the launch files set for ``localhost_only:=false``, taken from this source tree."""
    return dds_environment(str(REPO), os.environ.get("ROS_DISTRO", ""), localhost_only=False)


def records(log: Path) -> list[dict[str, int]]:
    """The JSON lines a robot script printed (its log also holds rclpy's own messages)."""
    items = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError:  # a line still being written
                pass
    return items


def chunk_tags(log: Path) -> list[int]:
    """For every chunk a robot script received: the tag of the image it was computed from."""
    return [item["chunk"] % 1000 for item in records(log) if "chunk" in item]


def wait_for(predicate: Callable[[], bool], timeout: float, procs: list[tuple[subprocess.Popen[bytes], Path]]) -> bool:
    """Poll ``predicate`` every 0.2 s until true or ``timeout``; fail early if a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        for proc, log in procs:
            check_alive(proc, log)
        time.sleep(0.2)
    return bool(predicate())


def robot_command(script: Path, tag: int) -> list[str]:
    return [PYTHON, str(script), NODE, str(tag)]


def assert_profile_parsed(*logs: Path) -> None:
    # Fast DDS reports a profile it cannot parse (then silently uses its defaults) on stderr.
    for log in logs:
        text = log.read_text(errors="replace")
        assert "XMLPARSER" not in text, f"Fast DDS rejected a profile ({log.name}):\n{text[-3000:]}"


def test_chunks_reach_a_controller_on_another_machine(namespaces: Namespaces, model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "robot.py"
    script.write_text(ROBOT_SCRIPT)
    domain = unique_domain_id()
    node_log, robot_log = tmp_path / "node_a.log", tmp_path / "robot_b.log"
    t0 = time.monotonic()
    with (
        ros_process(in_namespace(namespaces.a, node_command(model_dir, NODE)), domain, node_log, network_env()) as node,
        ros_process(
            in_namespace(namespaces.b, robot_command(script, TAG_B), own_shm=True), domain, robot_log, network_env()
        ) as robot,
    ):
        procs = [(node, node_log), (robot, robot_log)]
        # A few chunks, not one: a stream across the veth, not a single lucky sample.
        arrived = wait_for(lambda: chunk_tags(robot_log).count(TAG_B) >= MIN_CHUNKS, CHUNK_TIMEOUT_S, procs)
    elapsed = time.monotonic() - t0
    assert_profile_parsed(node_log, robot_log)
    assert arrived, (
        f"fewer than {MIN_CHUNKS} chunks stamped with B's images reached B within {CHUNK_TIMEOUT_S} s; "
        f"B's last records {records(robot_log)[-5:]}\nnode log:\n{node_log.read_text(errors='replace')[-3000:]}"
    )
    tags = chunk_tags(robot_log)
    assert set(tags) == {TAG_B}, f"chunks from images nobody in this test sent: {tags}"
    print(f"{len(tags)} chunks for B's camera in B, {elapsed:.1f} s after starting both sides")


def test_loopback_profile_keeps_the_node_on_its_host(namespaces: Namespaces, model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "robot.py"
    script.write_text(ROBOT_SCRIPT)
    domain = unique_domain_id()
    node_log, local_log, remote_log = tmp_path / "node_a.log", tmp_path / "robot_a.log", tmp_path / "robot_b.log"
    # A: node and a local feeder with ros_process's default environment (config/fastdds.xml +
    # localhost-only discovery); B: as in the first test, network profile and subnet discovery.
    with (
        ros_process(in_namespace(namespaces.a, node_command(model_dir, NODE)), domain, node_log) as node,
        ros_process(in_namespace(namespaces.a, robot_command(script, TAG_A)), domain, local_log) as local,
        ros_process(
            in_namespace(namespaces.b, robot_command(script, TAG_B), own_shm=True), domain, remote_log, network_env()
        ) as remote,
    ):
        procs = [(node, node_log), (local, local_log), (remote, remote_log)]
        # The node works: it answers the feeder on its own host ...
        serving = wait_for(lambda: TAG_A in chunk_tags(local_log), CHUNK_TIMEOUT_S, procs)
        assert serving, f"the node never answered its local feeder:\n{node_log.read_text(errors='replace')[-3000:]}"
        # ... while B keeps publishing for a few seconds (with the network profile on both sides, B
        # matched the node's image reader within half a second of the node creating it).
        sent_before = max((r["sent"] for r in records(remote_log) if "sent" in r), default=0)
        time.sleep(ISOLATION_WINDOW_S)
        for proc, log in procs:
            check_alive(proc, log)
    assert_profile_parsed(node_log, local_log, remote_log)
    remote_records = records(remote_log)
    sent_after = max((r["sent"] for r in remote_records if "sent" in r), default=0)
    assert sent_after - sent_before >= 20, f"B hardly published during the window: {remote_records[-5:]}"
    assert chunk_tags(remote_log) == [], "a chunk reached B through the loopback-only profile"
    assert TAG_B not in chunk_tags(local_log), "the loopback-only node computed a chunk from B's image"
    readers = [r["readers"] for r in remote_records if "readers" in r]
    assert not any(readers), f"B's image publisher found a reader on the loopback-only side: {readers}"
