"""GPU backends against eager torch fp32, and how load_policy picks and refuses backends.

Parity (needs a CUDA GPU; the TensorRT cases also TensorRT, else skipped with the reason): the
CUDA-graph and TensorRT backends, fp32 and fp16, on the tiny reference and Hugging Face Llama models
of test_engines (adapters that change the hidden states, controllers whose probabilities spread
widely around the threshold), over 100 random observations with skipping active, against eager
torch fp32 on the CPU.

- fp32: the whole DySL runner, tick by tick: identical skip decisions, allow points, verifications
  and re-runs, chunks within 1e-4.
- fp16: both backends run each tick's pass with the allow points the fp32 runner used (continuity
  feeds the chunks back into the allow points, so a 1e-2 chunk difference would otherwise move them
  apart): every controller probability within 2e-2 of fp32's and the same decision, and chunks
  within 2e-2. A decision may only differ where fp32's probability is itself within that tolerance
  of the threshold (the precision cannot decide it); such ties are counted and must stay rare.

The comparison code runs here too, on the onnxruntime backend (``test_parity_harness_on_the_cpu``),
so that what the GPU tests assert is known to work. Backend selection and refusals run everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from model_fixture import TINY, make_model_dir, one_torch_thread, tiny_llama_vla
from test_engines import MICRO, random_observations, save_case

from dysl_ros.backends.build import build_engines
from dysl_ros.backends.capability import backend_problems
from dysl_ros.backends.errors import BackendUnavailable
from dysl_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from dysl_ros.backends.registry import BackendOptions, auto_backend
from dysl_ros.backends.torch_backend import TorchBackend
from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner, FloatArray, ModelInputs, SegmentBackend, run_path
from dysl_ros.model.backbone import VLABackbone
from dysl_ros.model.checkpoint import load_bundle
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.spec import preprocess
from dysl_ros.policy import PolicyOptions, load_policy

CUDA = torch.cuda.is_available()
TENSORRT_PROBLEMS = backend_problems("tensorrt")
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
TICKS = 100
MAX_TIE_SHARE = 0.05
"""fp16: at most this share of controller consults may be ties (fp32 probability within the fp16
tolerance of the threshold)."""
# eta = eta_verify = 0.05 against |dC| ~ 0.02 on these observations: allow points move both ways, some
# ticks skip, some re-run densely (as in test_engines).
CONFIG = DySLConfig(static_ratio=0.2, eta=0.05, eta_verify=0.05, skip_threshold=0.5)

needs_cuda = pytest.mark.skipif(not CUDA, reason=f"needs a CUDA GPU (torch {torch.__version__} sees none)")
needs_tensorrt = pytest.mark.skipif(
    bool(TENSORRT_PROBLEMS), reason="needs TensorRT and a CUDA GPU: " + "; ".join(TENSORRT_PROBLEMS)
)


# ---------------------------------------------------------------------------------------------------------
# Comparison


class Recording:
    """A segment backend passed through, recording each controller consult as (layer, probability)."""

    def __init__(self, backend: SegmentBackend[Any]) -> None:
        self.backend = backend
        self.name = backend.name
        self.consults: list[tuple[int, float]] = []

    def embed(self, inputs: ModelInputs) -> Any:
        return self.backend.embed(inputs)

    def run_layers(self, start: int, stop: int, x: Any) -> Any:
        return self.backend.run_layers(start, stop, x)

    def adapt(self, layer: int, x: Any) -> Any:
        return self.backend.adapt(layer, x)

    def skip_probability(self, layer: int, x: Any) -> float:
        p = self.backend.skip_probability(layer, x)
        self.consults.append((layer, p))
        return p

    def head(self, x: Any) -> FloatArray:
        return self.backend.head(x)


@dataclass
class Report:
    ticks: int = 0
    skipped_ticks: int = 0
    reruns: int = 0
    consults: int = 0
    ties: int = 0
    chunk_error: float = 0.0
    probability_error: float = 0.0
    notes: list[str] = field(default_factory=list)


def compare_runners(
    reference: SegmentBackend[Any], candidate: SegmentBackend[Any], plan: LayerPlan, inputs: list[ModelInputs]
) -> Report:
    """fp32: both backends under their own DySL runner; everything the runner decides must agree."""
    ref_runner, cand_runner = DySLRunner(reference, plan, CONFIG), DySLRunner(candidate, plan, CONFIG)
    report = Report()
    for tick, item in enumerate(inputs):
        a, b = ref_runner.step(item), cand_runner.step(item)
        assert b.skipped_from == a.skipped_from, f"tick {tick}"
        assert (b.allow_points, b.next_allow_points) == (a.allow_points, a.next_allow_points), f"tick {tick}"
        assert (b.executed_layers, b.layer_evaluations) == (a.executed_layers, a.layer_evaluations), f"tick {tick}"
        assert (b.verified, b.reran, b.controllers_consulted) == (a.verified, a.reran, a.controllers_consulted)
        report.ticks += 1
        report.skipped_ticks += any(s is not None for s in a.skipped_from)
        report.reruns += a.reran
        report.consults += a.controllers_consulted
        report.chunk_error = max(report.chunk_error, float(np.abs(b.chunk - a.chunk).max()))
    return report


def compare_lockstep(
    reference: SegmentBackend[Any],
    candidate: SegmentBackend[Any],
    plan: LayerPlan,
    inputs: list[ModelInputs],
    tolerance: float,
) -> Report:
    """fp16: each tick's pass on both backends with the allow points the reference runner used."""
    runner = DySLRunner(reference, plan, CONFIG)
    allow_points = [runner.step(item).allow_points for item in inputs]
    ref, cand = Recording(reference), Recording(candidate)
    threshold = CONFIG.skip_threshold
    report = Report()
    for tick, (item, allow) in enumerate(zip(inputs, allow_points, strict=True)):
        ref.consults.clear()
        cand.consults.clear()
        ref_chunk, ref_trace = run_path(ref, item, plan.gaps, allow, threshold)
        cand_chunk, cand_trace = run_path(cand, item, plan.gaps, allow, threshold)
        report.ticks += 1
        report.skipped_ticks += ref_trace.skipped_any
        tie = False
        for (layer, p), (cand_layer, q) in zip(ref.consults, cand.consults, strict=False):  # apart after a tie
            assert cand_layer == layer, f"tick {tick}: consulted layer {cand_layer}, reference {layer}"
            report.consults += 1
            report.probability_error = max(report.probability_error, abs(q - p))
            assert abs(q - p) <= tolerance, f"tick {tick}, controller {layer}: p = {q}, reference {p}"
            if (q >= threshold) != (p >= threshold):
                assert abs(p - threshold) <= tolerance  # implied by the line above; spelled out
                report.ties += 1
                report.notes.append(f"tick {tick}: controller {layer} tie (p = {q:.4f}, reference {p:.4f})")
                tie = True
                break  # the paths part here: nothing after this consult is comparable
        if tie:
            continue
        assert cand_trace == ref_trace, f"tick {tick}"
        report.chunk_error = max(report.chunk_error, float(np.abs(cand_chunk - ref_chunk).max()))
    return report


def check(report: Report, tolerance: float, label: str) -> None:
    print(
        f"{label}: {report.ticks} ticks, {report.skipped_ticks} with a skip, {report.reruns} re-runs, "
        f"{report.consults} consults ({report.ties} ties), chunk max abs error {report.chunk_error:.2e}, "
        f"probability max abs error {report.probability_error:.2e}",
        *report.notes,
        sep="\n  ",
    )
    assert report.chunk_error <= tolerance
    assert 0 < report.skipped_ticks < report.ticks, "the comparison must see ticks with and without skipping"
    assert report.ties <= MAX_TIE_SHARE * max(report.consults, 1)


# ---------------------------------------------------------------------------------------------------------
# Models and backends


@dataclass(frozen=True)
class Case:
    kind: str
    model_dir: Path
    inputs: list[ModelInputs]


@pytest.fixture(scope="module", params=["reference", "hf_llama"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    root = tmp_path_factory.mktemp(f"gpu_{request.param}")
    if request.param == "reference":
        torch.manual_seed(0)
        model: VLABackbone = ReferenceVLA(TINY)
        plan = LayerPlan(num_layers=TINY.num_layers, static_layers=(3, 4, 9))
    else:
        model = tiny_llama_vla(6)
        plan = LayerPlan(num_layers=6, static_layers=(2, 3, 5))
    model_dir = save_case(root / "model", model, plan)
    config = model.config
    return Case(request.param, model_dir, [preprocess(config, o) for o in random_observations(config, TICKS, seed=3)])


def reference_backend(model_dir: Path) -> TorchBackend:
    """Eager torch fp32 on the CPU: the reference every backend is held to."""
    bundle = load_bundle(model_dir)
    return TorchBackend(bundle.model, bundle.modules)


def plan_of(model_dir: Path) -> LayerPlan:
    plan = load_bundle(model_dir).plan
    assert plan is not None
    return plan


@pytest.fixture
def strict_fp32() -> Iterator[None]:
    """fp32 on the GPU without TF32 (cuDNN allows it for convolutions by default), as on the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run_parity(candidate: SegmentBackend[Any], case: Case, precision: str, label: str) -> None:
    reference, plan = reference_backend(case.model_dir), plan_of(case.model_dir)
    if precision == "fp32":
        report = compare_runners(reference, candidate, plan, case.inputs)
    else:
        report = compare_lockstep(reference, candidate, plan, case.inputs, TOLERANCE[precision])
    check(report, TOLERANCE[precision], f"{label} {precision} ({case.kind})")


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.usefixtures("strict_fp32")
def test_cuda_graph_parity(case: Case, precision: str) -> None:
    from dysl_ros.backends.torch_cuda_graph import TorchCudaGraphBackend

    bundle = load_bundle(case.model_dir)  # its own copy: the backend moves the model to the GPU
    dtype = torch.float16 if precision == "fp16" else torch.float32
    backend = TorchCudaGraphBackend(bundle.model, bundle.modules, "cuda", dtype)
    run_parity(backend, case, precision, "CUDA graphs")


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.usefixtures("strict_fp32")
def test_tensorrt_parity(case: Case, precision: str, tmp_path: Path) -> None:
    from dysl_ros.backends.tensorrt_backend import TensorRTBackend

    engine_dir = build_engines(case.model_dir, tmp_path / "engines", "tensorrt", precision, progress=False)
    run_parity(TensorRTBackend(engine_dir), case, precision, "TensorRT")


def test_parity_harness_on_the_cpu(tmp_path: Path) -> None:
    """The comparisons above, run here on onnxruntime (fp32) against the same reference."""
    torch.manual_seed(0)
    plan = LayerPlan(num_layers=TINY.num_layers, static_layers=(3, 4, 9))
    model_dir = save_case(tmp_path / "model", ReferenceVLA(TINY), plan)
    inputs = [preprocess(TINY, o) for o in random_observations(TINY, TICKS, seed=3)]
    candidate = OnnxRuntimeBackend(build_engines(model_dir, tmp_path / "engines", progress=False), num_threads=1)
    with one_torch_thread():
        runners = compare_runners(reference_backend(model_dir), candidate, plan, inputs)
        lockstep = compare_lockstep(reference_backend(model_dir), candidate, plan, inputs, TOLERANCE["fp32"])
    check(runners, TOLERANCE["fp32"], "harness: onnxruntime, whole runner")
    check(lockstep, TOLERANCE["fp32"], "harness: onnxruntime, lockstep")
    assert runners.reruns > 0 and lockstep.consults > 0 and lockstep.ties == 0


# ---------------------------------------------------------------------------------------------------------
# Backend selection and refusals (run everywhere)


@pytest.fixture
def micro_dir(tmp_path: Path) -> Path:
    return make_model_dir(tmp_path / "micro", MICRO)


@pytest.mark.skipif(CUDA, reason="checks the CPU-only choice; this machine has a CUDA GPU")
def test_auto_on_the_cpu_picks_onnxruntime_and_says_why(micro_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    policy = load_policy(micro_dir, PolicyOptions(backend="auto", engine_dir=str(cache), num_threads=1))
    assert policy.backend_name == "onnxruntime"
    assert policy.backend_reason == (
        f"auto on the CPU: onnxruntime engines (fp32), built into {cache / 'micro' / 'onnxruntime'} "
        "(GPU backends need device: cuda)"
    )
    again = load_policy(micro_dir, PolicyOptions(backend="auto", engine_dir=str(cache), num_threads=1))
    assert again.backend_reason.startswith("auto on the CPU: onnxruntime engines (fp32) exist at ")
    assert not again.bundle.model_loaded  # serving from engines never reads the torch weights

    # Asked for the GPU on a machine without one: auto picks the backend whose GPU parity passed
    # (never TensorRT, which has not run), names what this machine lacks, then torch refuses.
    backend, reason = auto_backend(micro_dir, BackendOptions(device="cuda", precision="fp16"))
    assert backend == "torch"
    assert reason.startswith("auto on cuda: torch CUDA graphs (CUDA graphs passed GPU parity on an NVIDIA H200")
    assert "sees no CUDA GPU" in reason and "TensorRT only as backend: tensorrt" in reason
    with pytest.raises(ConfigError, match="device 'cuda' requested but torch sees no CUDA device"):
        load_policy(micro_dir, PolicyOptions(backend="auto", device="cuda", precision="fp16"))


def test_torch_on_the_cpu_is_eager(micro_dir: Path) -> None:
    policy = load_policy(micro_dir, PolicyOptions(backend="torch"))
    assert policy.backend_name == "torch" and isinstance(policy.runner.backend, TorchBackend)
    assert policy.bundle.model_loaded
    assert policy.backend_reason == "backend torch requested; cpu: eager segments"


@pytest.mark.skipif(CUDA, reason="checks the refusal without CUDA; this machine has a CUDA GPU")
def test_cuda_graphs_need_cuda(micro_dir: Path) -> None:
    from dysl_ros.backends.torch_cuda_graph import TorchCudaGraphBackend

    bundle = load_bundle(micro_dir)
    with pytest.raises(BackendUnavailable) as info:
        TorchCudaGraphBackend(bundle.model, bundle.modules, "cuda")
    message = str(info.value)
    assert message.startswith("backend torch_cuda_graph is not available on this machine: torch ")
    assert "sees no CUDA GPU" in message and "use backend onnxruntime or eager torch" in message


@pytest.mark.skipif(not TENSORRT_PROBLEMS, reason="checks the refusal without TensorRT; TensorRT is usable here")
def test_tensorrt_refused_without_tensorrt(micro_dir: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        load_policy(micro_dir, PolicyOptions(backend="tensorrt", device="cuda", precision="fp16"))
    message = str(info.value)
    assert message.startswith("backend tensorrt is not available on this machine: ")
    assert all(problem in message for problem in TENSORRT_PROBLEMS)
    assert not (micro_dir / "engines").exists()  # refused before anything was built


def test_tensorrt_settings_refused(micro_dir: Path) -> None:
    with pytest.raises(ConfigError, match="backend tensorrt runs on a CUDA device; device 'cpu'"):
        load_policy(micro_dir, PolicyOptions(backend="tensorrt"))
    with pytest.raises(ConfigError, match="backend tensorrt builds fp16 or fp32, not 'int8'"):
        load_policy(micro_dir, PolicyOptions(backend="tensorrt", device="cuda", precision="int8"))
