"""`dysl_bench latency`: the JSON report, the replay of recorded decisions, trace errors.

Never asserts speed: timings on a shared 2-core CI machine mean nothing. It checks that the figures
exist and are consistent, and that the replay runs exactly the path a trace prescribes."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_fixture import make_model_dir, randomise_adapters

from dysl_ros.backends.torch_backend import TorchBackend
from dysl_ros.bench import latency
from dysl_ros.bench.replay import (
    check_trace,
    dense_decision,
    load_trace,
    map_trace,
    replay_tick,
    synthetic_decisions,
)
from dysl_ros.bench.synthetic import SHAPES, synthetic_plan
from dysl_ros.bench.trace import DecisionTrace, TickDecision
from dysl_ros.core.config import DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner, FloatArray, ModelInputs
from dysl_ros.model.checkpoint import load_bundle
from dysl_ros.model.spec import preprocess
from dysl_ros.tools.bench import main as bench_main

JSON_KEYS = ("backbone_p50_ms", "backbone_p99_ms", "tick_p50_ms", "tick_p99_ms")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("latency") / "tiny")


def plan_of(model_dir: Path) -> LayerPlan:
    return LayerPlan.load(model_dir / "layer_plan.json")


def varied_decisions(plan: LayerPlan) -> list[TickDecision]:
    """Every kind of path: skip at the first layer, forced prefix then a later skip, controllers that
    never skip, dense, verified without re-run, verified with re-run."""
    gaps = plan.gaps
    starts = tuple(g.start for g in gaps)
    statics = tuple(g.static for g in gaps)
    first = tuple(g.start if len(g) else None for g in gaps)
    middle_allow = tuple(g.start + len(g) // 3 for g in gaps)
    late_skip = tuple(g.start + 2 * len(g) // 3 if len(g) >= 2 else None for g in gaps)
    none = tuple(None for _ in gaps)
    return [
        TickDecision(starts, first, False, False),
        TickDecision(middle_allow, late_skip, False, False),
        TickDecision(starts, none, False, False),
        TickDecision(statics, none, False, False),
        TickDecision(middle_allow, late_skip[:1] + none[1:], True, False),
        TickDecision(middle_allow, none, True, True),
        TickDecision(starts, first, False, False),
    ]


def write_trace(path: Path, plan: LayerPlan, ticks: list[TickDecision], model: str = "tiny") -> Path:
    DecisionTrace(model, plan.num_layers, plan.static_layers, ticks).save(path)
    return path


def expected_executed(plan: LayerPlan, tick: TickDecision) -> int:
    """Independently of the replay: a layer is on the chunk's path when it is static, or dynamic and in
    front of its gap's recorded skip layer (the adapter replaces the skip layer and those after it).
    A re-run tick returns the dense pass's chunk."""
    if tick.reran:
        return plan.num_layers
    on_path = 0
    for layer in range(plan.num_layers):
        gap = plan.gap_of(layer)
        skip = tick.skipped_from[plan.gaps.index(gap)]
        on_path += layer == gap.static or skip is None or layer < skip
    return on_path


def run_bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = bench_main(["latency", "--no-progress", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_last_line_with_a_trace(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_of(model_dir)
    ticks = varied_decisions(plan)
    trace = write_trace(tmp_path / "decisions.json", plan, ticks)
    rc, out, err = run_bench(
        capsys,
        "--model-dir", str(model_dir), "--backend", "onnxruntime", "--num-threads", "1",
        "--trace", str(trace), "--iterations", str(2 * len(ticks)), "--warmup", "2", "--json",
    )  # fmt: skip
    assert rc == 0, err
    lines = out.strip().splitlines()
    report = json.loads(lines[-1])
    assert "| dense |" in out and "| DySL |" in out  # the markdown table comes first
    assert report["backend"] == "onnxruntime" and report["device"].startswith("cpu")
    for variant in ("dense", "dysl"):
        figures = report[variant]
        for key in JSON_KEYS:
            assert isinstance(figures[key], float) and figures[key] > 0, (variant, key)
        assert figures["backbone_p99_ms"] >= figures["backbone_p50_ms"]
        assert figures["tick_p99_ms"] >= figures["tick_p50_ms"]
        assert figures["tick_p50_ms"] > figures["backbone_p50_ms"] * 0.5  # the tick contains the backbone
    assert report["backbone_speedup"] == pytest.approx(
        report["dense"]["backbone_p50_ms"] / report["dysl"]["backbone_p50_ms"]
    )
    assert report["tick_speedup"] == pytest.approx(report["dense"]["tick_p50_ms"] / report["dysl"]["tick_p50_ms"])
    expected = np.mean([expected_executed(plan, t) for t in ticks])
    assert report["dysl"]["mean_executed_layers"] == pytest.approx(expected)
    assert report["dense"]["mean_executed_layers"] == plan.num_layers
    assert report["dysl"]["reran_ticks"] == 2 * sum(t.reran for t in ticks)
    # These hand-made re-run ticks do not say where the skipping pass jumped: replayed as an upper bound.
    assert report["dysl"]["reran_upper_bound_ticks"] == report["dysl"]["reran_ticks"] > 0
    assert "(an upper bound)" in out
    assert report["skip_pattern"] == "trace" and report["trace"] == str(trace)
    assert report["iterations"] == 2 * len(ticks)


def test_without_trace_the_pattern_is_labelled_synthetic(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run_bench(
        capsys, "--model-dir", str(model_dir), "--backend", "onnxruntime", "--num-threads", "1",
        "--skip-pattern", "static-only", "--iterations", "5", "--warmup", "1", "--json",
    )  # fmt: skip
    assert rc == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["skip_pattern"] == "synthetic:static-only"
    assert "SYNTHETIC skip pattern" in out and "no --trace" in err
    plan = plan_of(model_dir)
    assert report["dysl"]["mean_executed_layers"] == len(plan.static_layers)


class RecordingBackend:
    """Delegates to a real backend and records every call (a wrapper, not a mock: the real segments run)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = f"recording {inner.name}"
        self.calls: list[tuple[Any, ...]] = []

    def embed(self, inputs: ModelInputs) -> Any:
        self.calls.append(("embed",))
        return self.inner.embed(inputs)

    def run_layers(self, start: int, stop: int, x: Any) -> Any:
        self.calls.append(("run_layers", start, stop))
        return self.inner.run_layers(start, stop, x)

    def adapt(self, layer: int, x: Any) -> Any:
        self.calls.append(("adapt", layer))
        return self.inner.adapt(layer, x)

    def skip_probability(self, layer: int, x: Any) -> float:
        self.calls.append(("skip_probability", layer))
        return float(self.inner.skip_probability(layer, x))

    def head(self, x: Any) -> FloatArray:
        self.calls.append(("head",))
        return self.inner.head(x)

    def take(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


def torch_recording(model_dir: Path) -> tuple[RecordingBackend, Any]:
    bundle = load_bundle(model_dir)
    assert bundle.modules is not None
    torch.manual_seed(3)
    randomise_adapters(bundle.modules)  # adapter paths then differ from dense ones
    return RecordingBackend(TorchBackend(bundle.model, bundle.modules)), bundle


def observation_inputs(config: Any, count: int) -> list[ModelInputs]:
    return [preprocess(config, obs) for obs in latency.fixed_observations(config, count, seed=5)]


def layers_run(calls: list[tuple[Any, ...]]) -> list[int]:
    return [layer for call in calls if call[0] == "run_layers" for layer in range(call[1], call[2])]


def test_replay_runs_exactly_the_recorded_path(model_dir: Path) -> None:
    backend, bundle = torch_recording(model_dir)
    plan = plan_of(model_dir)
    inputs = observation_inputs(bundle.spec, 1)[0]
    for tick in varied_decisions(plan):
        _, timing = replay_tick(backend, lambda: inputs, plan.gaps, tick)
        calls = backend.take()
        # Expected, pass by pass, from the decision alone.
        passes = [(tick.allow_points, tick.skipped_from)]
        if tick.reran:  # skipping pass (skip positions not recorded: none), then dense
            passes.append((tuple(g.static for g in plan.gaps), tuple(None for _ in plan.gaps)))
        layers: list[int] = []
        controllers: list[int] = []
        adapters: list[int] = []
        for allow_points, skipped in passes:
            for gap, allow, skip in zip(plan.gaps, allow_points, skipped, strict=True):
                end = gap.static if skip is None else skip  # dynamic layers run: [start, end)
                layers += [*range(gap.start, end), gap.static]
                controllers += list(range(allow, gap.static if skip is None else skip + 1))
                adapters += [] if skip is None else [skip]
        assert layers_run(calls) == layers, tick
        assert [c[1] for c in calls if c[0] == "skip_probability"] == controllers, tick
        assert [c[1] for c in calls if c[0] == "adapt"] == adapters, tick
        assert [c[0] for c in calls].count("embed") == len(passes)
        assert [c[0] for c in calls].count("head") == len(passes)
        assert timing.executed_layers == expected_executed(plan, tick)
        assert timing.layer_evaluations == len(layers)
        assert timing.controllers == len(controllers) and timing.adapters == len(adapters)


def test_replay_reproduces_a_recorded_runner(model_dir: Path, tmp_path: Path) -> None:
    """Decisions recorded from DySLRunner, replayed on the same inputs: the same backend calls and the
    same chunks on every tick, re-run ticks included."""
    backend, bundle = torch_recording(model_dir)
    plan = plan_of(model_dir)
    config = DySLConfig(static_ratio=0.2, k=2, eta=0.001, eta_verify=0.003, skip_threshold=0.5)
    runner = DySLRunner(backend, plan, config)
    trace = DecisionTrace("tiny", plan.num_layers, plan.static_layers)
    inputs = observation_inputs(bundle.spec, 12)
    recorded = []
    for item in inputs:
        tick = runner.step(item)
        trace.append(tick)
        recorded.append((tick, backend.take()))
    ticks = [t for t, _ in recorded]
    # The random model's continuity moves by ~0.001-0.2: these settings exercise every branch.
    assert any(t.reran for t in ticks) and any(t.verified and not t.reran for t in ticks)
    assert any(not t.reran and any(s is not None for s in t.skipped_from) for t in ticks)
    ends = {ticks[0].allow_points, dense_decision(plan).allow_points}
    assert any(t.allow_points not in ends for t in ticks), "allow points never stopped inside a gap"
    check_trace(trace, plan)
    for item, decision, (tick, runner_calls) in zip(inputs, trace.ticks, recorded, strict=True):
        chunk, timing = replay_tick(backend, functools.partial(dict, item), plan.gaps, decision)
        calls = backend.take()
        assert np.array_equal(chunk, tick.chunk)
        assert timing.executed_layers == tick.executed_layers
        # Re-run ticks included: the replay issues the runner's calls, the dense rest after the first skip.
        assert calls == runner_calls
        assert timing.layer_evaluations == tick.layer_evaluations

    # A version-1 trace did not record where a re-run's discarded pass jumped: it still loads, and its
    # re-run ticks replay as an upper bound (no skip in the first pass, then a whole dense pass).
    saved = tmp_path / "trace.json"
    trace.save(saved)
    data = json.loads(saved.read_text())
    data["format"] = "dysl-decision-trace/1"
    for tick_data in data["ticks"]:
        del tick_data["discarded_skipped_from"]
    saved.write_text(json.dumps(data))
    old = load_trace(saved)
    check_trace(old, plan)
    for item, decision, (tick, _) in zip(inputs, old.ticks, recorded, strict=True):
        assert decision.discarded_skipped_from is None
        chunk, timing = replay_tick(backend, functools.partial(dict, item), plan.gaps, decision)
        backend.take()
        assert np.array_equal(chunk, tick.chunk)
        if tick.reran:
            assert timing.layer_evaluations > tick.layer_evaluations

@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json {", "cannot read decision trace"),
        (json.dumps({"format": "something-else/1"}), "is not a dysl-decision-trace/2 file"),
        (
            json.dumps({"format": "dysl-decision-trace/1", "model": "m", "num_layers": 10, "static_layers": [3, 9],
                        "ticks": [{"allow_points": [0, 4]}]}),
            "malformed",
        ),
        (
            json.dumps({"format": "dysl-decision-trace/1", "model": "m", "num_layers": 10, "static_layers": [3, 9],
                        "ticks": []}),
            "has no ticks",
        ),
        ("PLAN_MISMATCH", "recorded on a model with 12 layers"),
        ("BAD_ALLOW", "allow point 7 outside"),
        ("BAD_SKIP", "skipped_from layer"),
        ("DISCARDED_WITHOUT_RERUN", "did not re-run"),
        ("RERUN_WITHOUT_SKIP", "skipped nothing"),
    ],
)  # fmt: skip
def test_bad_trace_is_a_clear_error(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    plan = plan_of(model_dir)
    path = tmp_path / "trace.json"
    starts = tuple(g.start for g in plan.gaps)
    none = tuple(None for _ in plan.gaps)
    if content == "PLAN_MISMATCH":
        write_trace(path, LayerPlan(12, (5, 11)), [TickDecision((0, 6), (None, None), False, False)])
    elif content == "BAD_ALLOW":
        write_trace(path, plan, [TickDecision((7, *starts[1:]), none, False, False)])
    elif content == "BAD_SKIP":
        gap = plan.gaps[0]
        write_trace(path, plan, [TickDecision(starts, (gap.static, *none[1:]), False, False)])
    elif content == "DISCARDED_WITHOUT_RERUN":
        write_trace(path, plan, [TickDecision(starts, none, True, False, (starts[0], *none[1:]))])
    elif content == "RERUN_WITHOUT_SKIP":
        write_trace(path, plan, [TickDecision(starts, none, True, True, none)])
    else:
        path.write_text(content)
    if content == "BAD_ALLOW":
        assert plan.gaps[0].static < 7  # the fixture's first gap ends before layer 7
    rc, out, err = run_bench(
        capsys, "--model-dir", str(model_dir), "--backend", "torch", "--trace", str(path), "--iterations", "1"
    )
    assert rc == 2
    assert message in err, err
    assert "Traceback" not in err and out == ""


def test_missing_model_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_bench(capsys, "--model-dir", str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err


def test_synthetic_7b_refuses_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_bench(capsys, "--synthetic", "llama2-7b", "--device", "cpu")
    assert rc == 2 and "--allow-cpu" in err and out == ""


def test_synthetic_tiny_replays_a_mapped_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = LayerPlan(24, (2, 7, 12, 17, 23))
    ticks = [
        TickDecision(tuple(g.start for g in reference.gaps), tuple(g.start for g in reference.gaps), False, False),
        TickDecision(tuple(g.static for g in reference.gaps), tuple(None for _ in reference.gaps), True, True),
    ]
    trace = write_trace(tmp_path / "reference.json", reference, ticks, model="reference")
    rc, out, err = run_bench(capsys, "--synthetic", "tiny", "--trace", str(trace), "--iterations", "4",
                             "--warmup", "1", "--json")  # fmt: skip
    assert rc == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["label"] == "latency-only, random weights" and "latency-only, random weights" in out
    assert report["skip_pattern"] == "trace (mapped)" and report["model"] == "synthetic:tiny"
    plan = synthetic_plan(SHAPES["tiny"].num_layers)
    assert report["static_layers"] == list(plan.static_layers)
    # Static-only ticks stay static-only, re-run ticks stay dense: (static + all) / 2.
    assert report["dysl"]["mean_executed_layers"] == pytest.approx((len(plan.static_layers) + plan.num_layers) / 2)


def test_trace_mapping_onto_32_layers() -> None:
    source = LayerPlan(24, (2, 7, 12, 17, 23))
    target = synthetic_plan(32)
    assert target.static_layers == (4, 10, 15, 20, 26, 31)
    ticks = [
        *synthetic_decisions(source, "static-only"),
        *synthetic_decisions(source, "no-skip"),
        dense_decision(source),
        *synthetic_decisions(source, "half"),
        TickDecision((1, 3, 8, 13, 18), (1, None, 10, None, 18), True, False),
    ]
    mapped = map_trace(DecisionTrace("ref", 24, source.static_layers, ticks), target)
    check_trace(mapped, target)
    assert mapped.ticks[0] == synthetic_decisions(target, "static-only")[0]
    assert mapped.ticks[1] == synthetic_decisions(target, "no-skip")[0]
    assert mapped.ticks[2] == dense_decision(target)
    assert mapped.ticks[4].verified and not mapped.ticks[4].reran

    def dynamic_share(plan: LayerPlan, tick: TickDecision) -> float:
        ran = sum((g.static if s is None else s) - g.start for g, s in zip(plan.gaps, tick.skipped_from, strict=True))
        return ran / len(plan.dynamic_layers)

    for original, carried in zip(ticks, mapped.ticks, strict=True):
        assert dynamic_share(target, carried) == pytest.approx(dynamic_share(source, original), abs=0.2)


def test_parser_knows_every_synthetic_shape() -> None:
    assert set(latency._synthetic_shapes()) == set(SHAPES)
