"""The robot's runtime install: ``requirements-runtime.txt`` alone, with neither torch nor
transformers (``make setup`` makes it as ``.venv-runtime``). There ``dysl_node`` serves, over real
DDS, the shipped model's and a bring-your-own two-camera model's onnxruntime engines (built where
torch is, as on a workstation), and its chunks equal those of the development venv, where torch is
installed, on the same inputs; without engines it refuses with the command that builds them.

Both nodes run DySL with the allow points held at their start (``enable_pre_skip: false``, no
post-skip verification): controllers are consulted from the first dynamic layer on every tick, so
skipping happens, and each chunk depends on its inputs alone, not on when the node ticked.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builtin_interfaces.msg import Time
from byom_fixture import SPEC as BYOM_SPEC
from byom_fixture import WORDS, make_imported_model
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import LATCHED_QOS, PYTHON, REPO, SENSOR_QOS, ros_process, ros_session, unique_domain_id
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from test_node import node_command, stamp_ns
from trajectory_msgs.msg import JointTrajectory

from dysl_ros.backends.build import build_engines
from dysl_ros.model.model_dir import load_dims, load_spec
from dysl_ros.model.observation_spec import ObservationSpec

pytestmark = pytest.mark.ros

RUNTIME_VENV = REPO / ".venv-runtime"
RUNTIME_PYTHON = RUNTIME_VENV / "bin" / "python"
REFERENCE = REPO / "models" / "reference"
SAMPLES = 4
"""Observations per model, each a chunk compared between the two installs."""
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def runtime_python() -> Path:
    if not RUNTIME_PYTHON.exists():
        pytest.fail(f"no runtime venv at {RUNTIME_VENV}: `make setup` makes it (requirements-runtime.txt alone)")
    return RUNTIME_PYTHON


def run_python(python: Path | str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", code, *args], capture_output=True, text=True, cwd=str(REPO), timeout=300, check=False
    )


def test_the_runtime_venv_has_neither_torch_nor_transformers(runtime_python: Path) -> None:
    code = """
import importlib, json
found = {}
for name in ("torch", "transformers", "safetensors", "dysl_ros", "rclpy", "onnxruntime", "cv2", "tokenizers"):
    try:
        importlib.import_module(name)
        found[name] = True
    except ImportError:
        found[name] = False
print(json.dumps(found))
"""
    found = json.loads(run_python(runtime_python, code).stdout)
    assert found == {
        "torch": False, "transformers": False, "safetensors": False,
        "dysl_ros": True, "rclpy": True, "onnxruntime": True, "cv2": True, "tokenizers": True,
    }
    # The development venv, the other side of the comparison below, has both.
    assert json.loads(run_python(PYTHON, code).stdout)["torch"]


def test_without_engines_the_runtime_refuses_naming_build_engines(runtime_python: Path, tmp_path: Path) -> None:
    code = """
import sys
from dysl_ros.backends.errors import EngineError
from dysl_ros.policy import PolicyOptions, load_policy
try:
    load_policy(sys.argv[1], PolicyOptions(backend=sys.argv[2], engine_dir=sys.argv[3]))
except EngineError as exc:
    print(type(exc).__name__, exc)
else:
    print("loaded")
"""
    refused = run_python(runtime_python, code, str(REFERENCE), "onnxruntime", str(tmp_path / "none"))
    assert refused.stdout.startswith("TorchNeeded "), refused.stdout + refused.stderr
    assert "build_engines --model-dir" in refused.stdout and "torch" in refused.stdout
    assert not (tmp_path / "none").exists()  # nothing half-built left behind
    eager = run_python(runtime_python, code, str(REFERENCE), "torch", str(tmp_path / "none"))
    assert eager.stdout.startswith("BackendUnavailable backend torch"), eager.stdout + eager.stderr
    assert "onnxruntime" in eager.stdout


def test_the_tokenizer_gives_transformers_ids_without_transformers(runtime_python: Path, tmp_path: Path) -> None:
    model_dir = make_imported_model(tmp_path, "llama", tokenizer=True)
    texts = ["put the red block in the bowl", "OPEN the drawer", "", " ".join(WORDS * 2), "an unknown word"]
    code = """
import json, sys
from dysl_ros.model.model_dir import load_spec
spec = load_spec(sys.argv[1])
print(json.dumps([spec.tokenize(text).tolist() for text in json.loads(sys.argv[2])]))
"""
    ids = json.loads(run_python(runtime_python, code, str(model_dir), json.dumps(texts)).stdout)
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(model_dir / "tokenizer"), local_files_only=True)
    length = load_spec(model_dir).tokenizer.length
    expected = [reference(t, padding="max_length", truncation=True, max_length=length)["input_ids"] for t in texts]
    assert ids == expected
    assert len({tuple(i) for i in ids}) == len(texts)  # the texts do tokenize differently


# ------------------------------------------------------------------------------------- over DDS


@dataclass(frozen=True)
class Served:
    model_dir: Path
    engine_dir: Path
    spec: ObservationSpec
    instruction: str


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Served:
    engines = tmp_path_factory.mktemp("reference_engines")
    build_engines(REFERENCE, engines, "onnxruntime", progress=False)  # here, with torch: a workstation
    return Served(REFERENCE, engines, load_spec(REFERENCE), "push the button")


@pytest.fixture(scope="module")
def byom_model(tmp_path_factory: pytest.TempPathFactory) -> Served:
    model_dir = make_imported_model(tmp_path_factory.mktemp("byom"), "qwen2", tokenizer=True)
    engines = model_dir / "engines"
    build_engines(model_dir, engines, "onnxruntime", progress=False)
    spec = load_spec(model_dir)
    assert spec.tokenizer.kind == "huggingface" and len(spec.cameras) == 2
    assert [c.name for c in spec.cameras] == [c.name for c in BYOM_SPEC.cameras]
    return Served(model_dir, engines, spec, "put the red block in the bowl")


def observations(spec: ObservationSpec, count: int) -> list[tuple[dict[str, npt.NDArray[np.uint8]], list[float]]]:
    """``count`` (camera images of each camera's own size, state) pairs, the same for every run. The
    state is one for all: it comes on its own topic, unstamped, so a tick may still see the state
    sent before the images it answers."""
    rng = np.random.default_rng(38)
    state = rng.normal(0.0, 0.5, spec.state_dim).round(4).tolist()
    return [
        ({c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras}, state)
        for _ in range(count)
    ]


def serve(
    python: Path | str, served: Served, log: Path, env_extra: dict[str, str] | None = None
) -> tuple[list[Any], list[int]]:
    """Start dysl_node with ``python`` on ``served``'s engines, send it ``SAMPLES`` observations one
    after another over DDS (each until a chunk stamped with it comes back); the chunks, and the
    executed layers of every tick (``~/dysl_tick``)."""
    name = "dysl_runtime"
    domain = unique_domain_id()
    command = node_command(
        served.model_dir, name, backend="onnxruntime", engine_dir=str(served.engine_dir),
        enable_pre_skip=False, enable_post_verify=False,
    )
    command[0] = str(python)
    chunks: list[Any] = []
    with ros_process(command, domain, log, env_extra) as proc, ros_session(domain, "runtime_probe") as ros:
        cameras = [c.name for c in served.spec.cameras]
        topics = {c: f"/{name}/image" if len(cameras) == 1 else f"/{name}/{c}/image" for c in cameras}
        images = {c: ros.publisher(Image, topic, SENSOR_QOS) for c, topic in topics.items()}
        state_pub = ros.publisher(JointState, f"/{name}/joint_states", SENSOR_QOS)
        ros.publisher(String, f"/{name}/instruction", LATCHED_QOS).publish(String(data=served.instruction))
        deep = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        received = ros.subscribe(JointTrajectory, f"/{name}/action_chunk", deep)
        ticks = ros.subscribe(
            DiagnosticStatus, f"/{name}/dysl_tick", deep,
            lambda m: int(next(kv.value for kv in m.values if kv.key == "executed_layers")),
        )
        for pixels, state in observations(served.spec, SAMPLES):
            sent: set[int] = set()

            def send(
                pixels: dict[str, npt.NDArray[np.uint8]] = pixels, state: list[float] = state, sent: set[int] = sent
            ) -> None:
                state_pub.publish(JointState(position=state))
                now = ros.node.get_clock().now().nanoseconds
                stamp = Time(sec=now // 10**9, nanosec=now % 10**9)  # one stamp: the cameras in step
                for camera, rgb in pixels.items():
                    msg = Image(encoding="rgb8", height=rgb.shape[0], width=rgb.shape[1], step=rgb.shape[1] * 3)
                    msg.data = rgb.tobytes()
                    msg.header.stamp = stamp
                    images[camera].publish(msg)
                sent.add(now)

            def answered(send: Any = send, sent: set[int] = sent) -> bool:
                if proc.poll() is not None:
                    return True
                send()
                return any(stamp_ns(m.header.stamp) in sent for m in received.messages)

            assert ros.wait_until(answered, 120.0, period=0.1), f"no chunk for sample {len(chunks)}; log {log}"
            assert proc.poll() is None, log.read_text()[-3000:]
            chunks.append(next(m for m in received.messages if stamp_ns(m.header.stamp) in sent))
        return chunks, ticks.messages


def positions(chunks: list[Any]) -> npt.NDArray[np.float64]:
    return np.asarray([[list(point.positions) for point in chunk.points] for chunk in chunks])


@pytest.mark.parametrize("which", ["reference_model", "byom_model"])
def test_the_runtime_node_serves_chunks_equal_to_the_torch_installs(
    which: str, runtime_python: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    served: Served = request.getfixturevalue(which)
    runtime, executed = serve(
        runtime_python, served, tmp_path / "runtime.log", {"AMENT_PREFIX_PATH": str(RUNTIME_VENV)}
    )
    with_torch, _ = serve(PYTHON, served, tmp_path / "with_torch.log")
    assert f"model {served.model_dir} on onnxruntime (cpu" in (tmp_path / "runtime.log").read_text()
    got, expected = positions(runtime), positions(with_torch)
    assert got.shape == (SAMPLES, served.spec.horizon, served.spec.action_dim)
    assert [list(c.joint_names) for c in runtime] == [list(served.spec.action_names)] * SAMPLES
    assert np.all(np.isfinite(got))
    assert np.abs(got - expected).max() <= TOLERANCE
    # DySL skipped layers (fewer ran than the model has), and different observations give different
    # chunks: the comparison is not of the dense path alone, nor of constant output.
    assert min(executed) < load_dims(served.model_dir).num_layers
    assert min(np.abs(got[i] - got[j]).max() for i in range(SAMPLES) for j in range(i)) > 1e-3
