"""Per-segment ONNX engines: export parity with torch, the ONNX Runtime backend under the DySL runner,
the engine manifest and its refusals, load_policy's engine handling and the build_engines CLI.

Models are tiny and random (the engines must reproduce whatever the weights are); adapters and
controllers are made non-trivial so that skipping changes the result and happens on some ticks only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from model_fixture import TINY, make_model_dir, one_torch_thread, randomise_adapters, tiny_llama_vla
from torch import nn

from dysl_ros.backends import manifest as engine_manifest
from dysl_ros.backends.build import build_engines
from dysl_ros.backends.capability import backend_problems
from dysl_ros.backends.errors import BackendUnavailable, EngineError
from dysl_ros.backends.export import segment_specs
from dysl_ros.backends.manifest import (
    MANIFEST_FILE,
    Manifest,
    check_manifest,
    engine_path,
    manifest_differences,
    read_manifest,
)
from dysl_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from dysl_ros.backends.torch_backend import TorchBackend
from dysl_ros.core.config import DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner
from dysl_ros.model.backbone import HFLlamaVLA, VLABackbone
from dysl_ros.model.checkpoint import load_bundle, save_dysl, save_model
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import DySLModules, SkipModuleConfig
from dysl_ros.model.spec import Observation, VLAConfig, preprocess
from dysl_ros.policy import PolicyOptions, load_policy

TOLERANCE = 1e-4
REPO = Path(__file__).resolve().parents[1]
TENSORRT_PROBLEMS = backend_problems("tensorrt")
"""Empty where TensorRT and a CUDA GPU are usable (then tensorrt engines really build)."""
# Smallest sensible model for the manifest / CLI tests: 3 layers, 9 segments, builds in ~1 s.
MICRO = VLAConfig(
    image_size=16, patch_size=16, instruction_tokens=4, hidden_size=16, num_layers=3, num_heads=2, ffn_size=32
)


def hf_llama_model(num_layers: int = 6) -> HFLlamaVLA:
    return tiny_llama_vla(num_layers)


def save_case(path: Path, model: VLABackbone, plan: LayerPlan) -> Path:
    """A model directory whose adapters change the hidden states and whose controllers' skip
    probabilities spread widely around 0.5 (so ties with the threshold are practically impossible)."""
    torch.manual_seed(2)
    modules = DySLModules(model.config.hidden_size, plan, SkipModuleConfig(adapter_bottleneck=8, controller_hidden=8))
    randomise_adapters(modules)
    with torch.no_grad():
        for controller in modules.controllers.values():
            nn.init.normal_(controller.net[0].weight, std=2.0)
            nn.init.normal_(controller.net[2].weight, std=2.0)
    save_model(model, path, dtype=torch.float32)
    save_dysl(path, plan, modules, DySLConfig(), dtype=torch.float32)
    return path


@dataclass(frozen=True)
class Built:
    kind: str
    model_dir: Path
    engine_dir: Path


@pytest.fixture(scope="module", params=["reference", "hf_llama"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "reference":
        torch.manual_seed(0)
        model: VLABackbone = ReferenceVLA(TINY)
        plan = LayerPlan(num_layers=TINY.num_layers, static_layers=(3, 4, 9))  # gaps [0,3], [4,4] (empty), [5,9]
    else:
        model = hf_llama_model()
        plan = LayerPlan(num_layers=6, static_layers=(2, 3, 5))
    model_dir = save_case(root / "model", model, plan)
    return Built(request.param, model_dir, build_engines(model_dir, root / "engines", progress=False))


@pytest.fixture
def micro(tmp_path: Path) -> tuple[Path, Path]:
    """(model_dir, engine root) of a freshly built micro model."""
    model_dir = make_model_dir(tmp_path / "micro", MICRO)
    build_engines(model_dir, tmp_path / "engines", progress=False)
    return model_dir, tmp_path / "engines"


def hand_made_tensorrt_engines(onnx_dir: Path) -> Path:
    """A TensorRT engine directory written by hand next to the onnxruntime one ``onnx_dir``: the
    manifest a TensorRT 10.3 fp16 build on a Jetson AGX Orin would write, over placeholder plan files.
    Only the checks made before TensorRT is touched (manifest, model, files, sha256) can use it."""
    engine_dir = onnx_dir.parent / "tensorrt"
    engine_dir.mkdir()
    manifest = read_manifest(onnx_dir)
    for name in manifest.segments:
        (engine_dir / f"{name}.plan").write_bytes(f"placeholder plan of {name}".encode() * 64)
    replace(
        manifest,
        backend="tensorrt",
        backend_version="10.3.0",
        device="NVIDIA Jetson AGX Orin, compute capability 8.7",
        precision="fp16",
        segments={name: f"{name}.plan" for name in manifest.segments},
        sha256={name: engine_manifest.file_sha256(engine_dir / f"{name}.plan") for name in manifest.segments},
    ).save(engine_dir)
    return engine_dir


def random_observations(config: VLAConfig, count: int, seed: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    words = ["pick", "up", "the", "red", "block", "open", "drawer", "push", "button", "to", "left"]
    return [
        Observation(
            image=rng.integers(0, 256, (config.image_size, config.image_size, 3), dtype=np.uint8),
            instruction=" ".join(rng.choice(words, size=int(rng.integers(1, 6)))),
            proprio=rng.normal(size=config.proprio_dim),
        )
        for _ in range(count)
    ]


# ---------------------------------------------------------------------------------------------------------
# Export parity


def test_every_segment_matches_torch(built: Built) -> None:
    bundle = load_bundle(built.model_dir)
    manifest = read_manifest(built.engine_dir)
    specs = segment_specs(bundle.model, bundle.modules)
    assert [s.name for s in specs] == list(manifest.segments)
    num_dynamic = len(bundle.plan.dynamic_layers) if bundle.plan else 0
    assert len(specs) == 2 + bundle.model.config.num_layers + 2 * num_dynamic

    inputs = preprocess(bundle.model.config, random_observations(bundle.model.config, 1, seed=7)[0])
    generator = torch.Generator().manual_seed(11)
    hidden = torch.randn(1, bundle.model.config.num_tokens, bundle.model.config.hidden_size, generator=generator)
    errors = {}
    for spec in specs:
        session = ort.InferenceSession(
            str(built.engine_dir / manifest.segments[spec.name]), providers=["CPUExecutionProvider"]
        )
        if spec.name == "embed":
            args = tuple(torch.as_tensor(inputs[name]) for name in spec.input_names)
        else:
            args = (hidden,)
        with torch.no_grad():
            expected = spec.build()(*args).numpy()
        got = session.run(None, {name: a.numpy() for name, a in zip(spec.input_names, args, strict=True)})[0]
        assert got.shape == expected.shape, spec.name
        assert got.dtype == np.float32, spec.name
        errors[spec.name] = float(np.abs(got - expected).max())
    worst = max(errors, key=lambda n: errors[n])
    print(f"{built.kind}: worst segment {worst} max abs error {errors[worst]:.2e}")
    assert errors[worst] <= TOLERANCE, errors

    shapes = manifest.shapes
    assert shapes["hidden"] == [1, bundle.model.config.num_tokens, bundle.model.config.hidden_size]
    assert shapes["skip_probability"] == [1]
    assert shapes["actions"] == [1, bundle.model.config.chunk_len, bundle.model.config.action_dim]


def test_export_is_deterministic(micro: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, root = micro
    again = build_engines(model_dir, tmp_path / "again", progress=False)
    assert read_manifest(again).sha256 == read_manifest(engine_path(root, model_dir, "onnxruntime")).sha256


# ---------------------------------------------------------------------------------------------------------
# Runner parity: the same decisions and chunks through ONNX Runtime as through eager torch


def test_runner_parity_with_dysl(built: Built) -> None:
    bundle = load_bundle(built.model_dir)
    assert bundle.plan is not None
    # eta = eta_verify = 0.05 against |dC| ~ 0.02 on these observations: allow points move both ways,
    # some ticks skip, some re-run densely.
    config = DySLConfig(static_ratio=0.2, eta=0.05, eta_verify=0.05, skip_threshold=0.5)
    torch_runner = DySLRunner(TorchBackend(bundle.model, bundle.modules), bundle.plan, config)
    ort_runner = DySLRunner(OnnxRuntimeBackend(built.engine_dir, num_threads=1), bundle.plan, config)

    worst = 0.0
    skipped_ticks = reruns = 0
    with one_torch_thread():
        ticks = [
            (torch_runner.step(inputs), ort_runner.step(inputs))
            for obs in random_observations(bundle.model.config, 100, seed=3)
            for inputs in [preprocess(bundle.spec, obs)]
        ]
    for a, b in ticks:
        assert b.skipped_from == a.skipped_from
        assert b.allow_points == a.allow_points
        assert b.next_allow_points == a.next_allow_points
        assert (b.executed_layers, b.layer_evaluations) == (a.executed_layers, a.layer_evaluations)
        assert (b.verified, b.reran, b.controllers_consulted) == (a.verified, a.reran, a.controllers_consulted)
        worst = max(worst, float(np.abs(b.chunk - a.chunk).max()))
        skipped_ticks += any(s is not None for s in a.skipped_from)
        reruns += a.reran
    print(
        f"{built.kind}: 100 ticks, {skipped_ticks} with a skip, {reruns} dense re-runs, chunk max abs error {worst:.2e}"
    )
    assert worst <= TOLERANCE
    assert 0 < skipped_ticks < 100, "the test must see ticks with and without skipping"
    assert reruns > 0, "the test must see post-skip verification re-run densely"


# ---------------------------------------------------------------------------------------------------------
# Manifest


def test_manifest_round_trip(micro: tuple[Path, Path]) -> None:
    model_dir, root = micro
    engine_dir = engine_path(root, model_dir, "onnxruntime")
    assert engine_dir == root / "micro" / "onnxruntime"
    data = json.loads((engine_dir / MANIFEST_FILE).read_text())
    for field in (
        "format",
        "model_hash",
        "backend",
        "backend_version",
        "device",
        "precision",
        "shapes",
        "segments",
        "layer_plan",
        "created",
    ):
        assert field in data, field
    assert data["format"] == 1 and data["backend"] == "onnxruntime" and data["precision"] == "fp32"
    assert data["backend_version"] == ort.__version__
    assert data["layer_plan"]["static_layers"] == [2]
    assert data["segments"] == {
        name: f"{name}.onnx"
        for name in (
            "embed",
            "layer_00",
            "layer_01",
            "layer_02",
            "adapter_00",
            "controller_00",
            "adapter_01",
            "controller_01",
            "head",
        )
    }
    manifest = read_manifest(engine_dir)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert check_manifest(engine_dir, model_dir, "onnxruntime", precision="fp32") == manifest
    # Up to date: build_engines keeps the engines instead of rebuilding them.
    before = (engine_dir / MANIFEST_FILE).stat().st_mtime_ns
    assert build_engines(model_dir, root, progress=False) == engine_dir
    assert (engine_dir / MANIFEST_FILE).stat().st_mtime_ns == before


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_missing_engine_directory(tmp_path: Path, backend: str) -> None:
    model_dir = make_model_dir(tmp_path / "micro", MICRO)
    with pytest.raises(EngineError) as info:
        check_manifest(tmp_path / "nowhere" / "micro" / backend, model_dir, backend)
    message = str(info.value)
    assert f"no {backend} engines" in message and "engine directory missing" in message
    assert f"build_engines --model-dir {model_dir} --out {tmp_path / 'nowhere'} --backend {backend}" in message
    if backend == "onnxruntime":
        with pytest.raises(EngineError, match=r"engine directory .* does not exist"):
            OnnxRuntimeBackend(tmp_path / "nowhere")
    else:
        from dysl_ros.backends.tensorrt_backend import TensorRTBackend  # the stubs make this importable here

        with pytest.raises(EngineError, match=r"engine directory .* does not exist"):
            TensorRTBackend(tmp_path / "nowhere")


def test_manifest_from_another_model(micro: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, root = micro
    # Same directory name, other weights: its engines land in the same engine directory.
    other = make_model_dir(tmp_path / "elsewhere" / "micro", MICRO, seed=5)
    engine_dir = engine_path(root, other, "onnxruntime")
    with pytest.raises(EngineError) as info:
        check_manifest(engine_dir, other, "onnxruntime")
    message = str(info.value)
    assert "model hash: engines were built from another model" in message
    assert str(model_dir.resolve()) in message  # where the engines came from
    assert f"build_engines --model-dir {other} --out {root} --backend onnxruntime --force" in message
    with pytest.raises(EngineError, match="built from another model"):
        build_engines(other, root, progress=False)

    # The same refusal for TensorRT plans (the manifest check is shared).
    hand_made_tensorrt_engines(engine_dir)
    with pytest.raises(EngineError) as info:
        check_manifest(engine_path(root, other, "tensorrt"), other, "tensorrt", precision="fp16")
    message = str(info.value)
    assert "model hash: engines were built from another model" in message
    assert f"build_engines --model-dir {other} --out {root} --backend tensorrt --force" in message
    if TENSORRT_PROBLEMS:  # this machine: every difference is listed, TensorRT and GPU included
        assert "backend version: built with tensorrt 10.3.0, installed is none (TensorRT is not installed" in message
        assert "device: built on 'NVIDIA Jetson AGX Orin, compute capability 8.7', this machine has 'none (" in message

    assert check_manifest(build_engines(other, root, force=True, progress=False), other, "onnxruntime")


def test_backend_version_and_device_mismatch(micro: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, root = micro
    engine_dir = engine_path(root, model_dir, "onnxruntime")
    data = json.loads((engine_dir / MANIFEST_FILE).read_text())
    data.update(backend_version="0.0.1", device="Some Other CPU (riscv64)")
    (engine_dir / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(EngineError) as info:
        check_manifest(engine_dir, model_dir, "onnxruntime")
    message = str(info.value)
    assert f"backend version: built with onnxruntime 0.0.1, installed is {ort.__version__}" in message
    assert "device" not in message  # ONNX files are portable across CPUs
    assert "--force" in message
    monkeypatch.setattr(engine_manifest, "DEVICE_BOUND_BACKENDS", frozenset({"onnxruntime"}))
    with pytest.raises(EngineError, match=r"device: built on 'Some Other CPU \(riscv64\)', this machine has"):
        check_manifest(engine_dir, model_dir, "onnxruntime")


def test_tensorrt_manifest_from_another_gpu_or_version(micro: tuple[Path, Path]) -> None:
    """TensorRT plans only run with the TensorRT version and GPU they were built with."""
    model_dir, root = micro
    manifest = read_manifest(hand_made_tensorrt_engines(engine_path(root, model_dir, "onnxruntime")))
    same = dict(
        backend="tensorrt",
        model_hash=manifest.model_hash,
        model_dir=str(model_dir),
        backend_version="10.3.0",
        device="NVIDIA Jetson AGX Orin, compute capability 8.7",
        precision="fp16",
    )
    assert manifest_differences(manifest, **same) == []
    other = {**same, "backend_version": "10.7.0", "device": "NVIDIA H100 80GB HBM3, compute capability 9.0"}
    assert manifest_differences(manifest, **other) == [
        "backend version: built with tensorrt 10.3.0, installed is 10.7.0",
        "device: built on 'NVIDIA Jetson AGX Orin, compute capability 8.7', this machine has "
        "'NVIDIA H100 80GB HBM3, compute capability 9.0'",
    ]
    assert manifest_differences(manifest, **{**same, "precision": "fp32"}) == [
        "precision: engines are fp16, fp32 was asked for"
    ]


def test_corrupted_tensorrt_plan_is_refused_at_load(micro: tuple[Path, Path]) -> None:
    from dysl_ros.backends.tensorrt_backend import TensorRTBackend

    model_dir, root = micro
    engine_dir = hand_made_tensorrt_engines(engine_path(root, model_dir, "onnxruntime"))
    with pytest.raises(EngineError) as intact:
        TensorRTBackend(engine_dir)  # files intact: refused for another reason (no TensorRT here, or not a plan)
    assert "corrupted" not in str(intact.value)
    if TENSORRT_PROBLEMS:
        assert isinstance(intact.value, BackendUnavailable)
    file = engine_dir / "layer_01.plan"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(EngineError) as info:
        TensorRTBackend(engine_dir)
    message = str(info.value)
    assert "segment layer_01 is corrupted: sha256" in message
    assert f"build_engines --model-dir {model_dir.resolve()} --out {root} --backend tensorrt --force" in message


def test_corrupted_segment_is_refused_at_load(micro: tuple[Path, Path]) -> None:
    model_dir, root = micro
    engine_dir = engine_path(root, model_dir, "onnxruntime")
    OnnxRuntimeBackend(engine_dir)  # intact: loads
    file = engine_dir / "layer_01.onnx"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, e.g. a weight: ONNX Runtime alone would not notice
    file.write_bytes(bytes(data))
    with pytest.raises(EngineError) as info:
        OnnxRuntimeBackend(engine_dir)
    message = str(info.value)
    assert "segment layer_01 is corrupted: sha256" in message
    assert f"build_engines --model-dir {model_dir.resolve()} --out {root} --backend onnxruntime --force" in message


def test_a_moved_models_corrupted_engine_names_the_directory_being_loaded(micro: tuple[Path, Path]) -> None:
    """The manifest records where the model was built from; a model directory moved since (engines
    kept under their own root) gets a rebuild command for where it is now, not for a path that is gone."""
    model_dir, root = micro
    moved = model_dir.parent / "moved" / model_dir.name  # same name: the engines under root still fit
    moved.parent.mkdir()
    shutil.move(model_dir, moved)
    engine_dir = engine_path(root, moved, "onnxruntime")
    assert read_manifest(engine_dir).model_dir == str(model_dir.resolve())  # the old place, now gone
    file = engine_dir / "layer_01.onnx"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(EngineError) as info:
        load_policy(moved, PolicyOptions(backend="onnxruntime", engine_dir=str(root), num_threads=1))
    message = str(info.value)
    assert "segment layer_01 is corrupted: sha256" in message
    assert f"build_engines --model-dir {moved} --out {root} --backend onnxruntime --force" in message
    assert str(model_dir) not in message.replace(str(moved), "")


def test_unloadable_segment_is_refused(micro: tuple[Path, Path]) -> None:
    # A file that matches its recorded hash but is not ONNX (e.g. a hand-edited manifest).
    model_dir, root = micro
    engine_dir = engine_path(root, model_dir, "onnxruntime")
    (engine_dir / "head.onnx").write_bytes(b"not an onnx file")
    data = json.loads((engine_dir / MANIFEST_FILE).read_text())
    data["sha256"]["head"] = engine_manifest.file_sha256(engine_dir / "head.onnx")
    (engine_dir / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(EngineError, match="ONNX Runtime cannot load segment head"):
        OnnxRuntimeBackend(engine_dir)


def test_unavailable_backends_and_precisions(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "micro", MICRO)
    with pytest.raises(EngineError, match="'torch' has no engine files to build"):
        build_engines(model_dir, tmp_path, backend="torch")
    with pytest.raises(EngineError, match="precision 'fp16' is not available for onnxruntime"):
        build_engines(model_dir, tmp_path, precision="fp16")
    with pytest.raises(EngineError, match="precision 'int8' is not available for tensorrt"):
        build_engines(model_dir, tmp_path, backend="tensorrt", precision="int8")
    if TENSORRT_PROBLEMS:
        with pytest.raises(BackendUnavailable) as info:
            build_engines(model_dir, tmp_path, backend="tensorrt")
        assert info.value.problems == TENSORRT_PROBLEMS
        assert str(info.value).startswith("backend tensorrt is not available on this machine: ")
        assert not (tmp_path / "micro" / "tensorrt").exists()  # refused before anything was written


# ---------------------------------------------------------------------------------------------------------
# load_policy


def test_load_policy_onnxruntime_builds_checks_and_rebuilds(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "micro", MICRO)
    obs = random_observations(MICRO, 1, seed=1)[0]
    policy = load_policy(model_dir, PolicyOptions(backend="onnxruntime", num_threads=1))  # builds <model_dir>/engines
    engine_dir = model_dir / "engines" / "micro" / "onnxruntime"
    assert policy.backend_name == "onnxruntime" and (engine_dir / MANIFEST_FILE).is_file()
    reference = load_policy(model_dir, PolicyOptions(backend="torch")).predict_action_chunk(obs).actions
    assert np.abs(policy.predict_action_chunk(obs).actions - reference).max() <= TOLERANCE

    auto = load_policy(model_dir, PolicyOptions(backend="auto", engine_dir=str(tmp_path / "cache")))
    assert auto.backend_name == "onnxruntime" and (tmp_path / "cache" / "micro" / "onnxruntime").is_dir()

    data = json.loads((engine_dir / MANIFEST_FILE).read_text())
    (engine_dir / MANIFEST_FILE).write_text(json.dumps({**data, "backend_version": "0.0.1"}))
    with pytest.raises(EngineError, match="backend version"):
        load_policy(model_dir, PolicyOptions(backend="onnxruntime"))
    rebuilt = load_policy(model_dir, PolicyOptions(backend="onnxruntime", force_engine_update=True))
    assert rebuilt.backend_name == "onnxruntime"
    assert read_manifest(engine_dir).backend_version == ort.__version__


# ---------------------------------------------------------------------------------------------------------
# build_engines CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dysl_ros.tools.build_engines", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_build_engines_cli(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "micro", MICRO)
    out = tmp_path / "out"
    done = run_cli("--model-dir", str(model_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr
    engine_dir = out / "micro" / "onnxruntime"
    assert f"engines: {engine_dir}" in done.stdout
    assert "layer_02" in done.stdout and "controller_01" in done.stdout and "total" in done.stdout
    manifest = read_manifest(engine_dir)
    assert all((engine_dir / file).is_file() for file in manifest.segments.values())

    # Another model in the same place: refused without --force (exit 1), rebuilt with it.
    shutil.rmtree(model_dir)
    make_model_dir(model_dir, MICRO, seed=9)
    refused = run_cli("--model-dir", str(model_dir), "--out", str(out))
    assert refused.returncode == 1 and "built from another model" in refused.stderr

    no_files = run_cli("--model-dir", str(model_dir), "--out", str(out), "--backend", "torch")
    assert no_files.returncode == 2
    assert "--backend torch has no engine files: its CUDA graphs are captured" in no_files.stderr
    if TENSORRT_PROBLEMS:
        unavailable = run_cli("--model-dir", str(model_dir), "--out", str(out), "--backend", "tensorrt")
        assert unavailable.returncode == 2, unavailable.stderr
        assert "build_engines: backend tensorrt is not available on this machine: " in unavailable.stderr
        for problem in TENSORRT_PROBLEMS:  # each missing piece named
            assert problem in unavailable.stderr
        assert "Nothing was built." in unavailable.stderr
        assert not (out / "micro" / "tensorrt").exists()


def test_tensorrt_plans_are_built_from_matching_onnxruntime_engines(micro: tuple[Path, Path], tmp_path: Path) -> None:
    """A TensorRT build (on a robot without torch too) takes its ONNX files from onnxruntime engines
    of the same model, under the output root or the model's own engines/, and from nothing else:
    another model's engines, or a segment whose file changed, send it back to exporting (torch)."""
    from dysl_ros.backends.build import _onnx_engines
    from dysl_ros.model.model_dir import model_hash

    model_dir, root = micro
    digest = model_hash(model_dir)
    found = _onnx_engines(model_dir, root, digest)
    assert found is not None and found[0] == engine_path(root, model_dir, "onnxruntime")
    assert _onnx_engines(model_dir, tmp_path / "empty", digest) is None  # neither root has any
    own = build_engines(model_dir, model_dir / "engines", progress=False)
    found = _onnx_engines(model_dir, tmp_path / "empty", digest)
    assert found is not None and found[0] == own
    assert _onnx_engines(model_dir, root, "another model's hash") is None
    (own / found[1].segments["head"]).write_bytes(b"not the exported head")
    (engine_path(root, model_dir, "onnxruntime") / "layer_00.onnx").unlink()
    assert _onnx_engines(model_dir, root, digest) is None
