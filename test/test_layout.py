"""The package's shape: imports run one way (no circles), and what a robot runs stays apart from the
offline tools (training, simulation, benchmarks never import the node)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "dysl_ros"
OFFLINE = ("dysl_ros.training", "dysl_ros.sim", "dysl_ros.bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dysl_ros modules ``path`` imports anywhere (inside functions too), except type-only imports."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(child) for statement in node.body for child in ast.walk(statement)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dysl_ros")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dysl_ros"):
            for alias in node.names:  # `from dysl_ros.x import y`: y may be a module itself
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (empty when there is none)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_the_graph_sees_real_imports() -> None:
    graph = import_graph()
    assert "dysl_ros.core.runner" in graph["dysl_ros.policy"]
    assert "dysl_ros.action_queue" in graph["dysl_ros.bench.closed_loop"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_offline_code_never_imports_the_node() -> None:
    graph = import_graph()
    offenders = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith(OFFLINE)
        for target in targets
        if target.startswith("dysl_ros.node")
    ]
    assert not offenders, offenders


def test_what_a_robot_runs_never_imports_the_offline_tools() -> None:
    graph = import_graph()
    robot = ("dysl_ros.core", "dysl_ros.model", "dysl_ros.backends", "dysl_ros.policy", "dysl_ros.node")
    offenders = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith(robot)
        for target in targets
        if target.startswith((*OFFLINE, "dysl_ros.tools"))
    ]
    assert not offenders, offenders


def test_the_core_needs_neither_torch_nor_ros() -> None:
    for path in (PACKAGE_DIR / "core").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        names |= {
            node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not names & {"torch", "rclpy", "onnxruntime", "tensorrt"}, f"{path.name} imports {names}"


ROBOT_RUNTIME = """
import sys
import numpy as np
import dysl_ros.node.dysl_node, dysl_ros.node.stream_process  # the node, as `dysl_node` imports it
from dysl_ros.backends.capability import backend_problems
from dysl_ros.model.observation_spec import Observation
from dysl_ros.policy import PolicyOptions, load_policy

backend_problems("tensorrt"), backend_problems("torch")  # the probes a CPU robot asks
policy = load_policy(sys.argv[1], PolicyOptions(backend=sys.argv[2], engine_dir=sys.argv[3]))
spec = policy.spec
images = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in spec.cameras}
policy.predict_action_chunk(Observation(images, "reach the goal", np.zeros(spec.state_dim)))
offline = ("torch", "transformers", "safetensors", "onnx", "tqdm")
print(policy.backend_name, sorted(m for m in offline if m in sys.modules))
"""


def test_serving_from_engines_imports_neither_torch_nor_transformers(tmp_path: Path) -> None:
    """In the development venv, where torch is installed: the node's imports, ``load_policy`` on
    onnxruntime engines (``auto`` picks them) and a tick leave torch, transformers and the offline
    packages out of ``sys.modules`` (test_runtime_install.py runs the node where they are absent)."""
    import subprocess
    import sys

    from model_fixture import make_model_dir

    from dysl_ros.backends.build import build_engines

    model_dir = make_model_dir(tmp_path / "tiny")
    build_engines(model_dir, tmp_path / "engines", "onnxruntime", progress=False)
    for backend in ("onnxruntime", "auto"):
        args = [sys.executable, "-c", ROBOT_RUNTIME, str(model_dir), backend, str(tmp_path / "engines")]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        assert done.stdout.strip() == "onnxruntime []", done.stdout + done.stderr
    # The same, asking for eager torch, does import it: the check can fail.
    args[-2] = "torch"
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip().startswith("torch ['safetensors', 'torch'"), done.stdout + done.stderr
