"""Dense vs DySL latency on one backend: backbone and whole-tick p50/p99, layers executed, speedups.

"Backbone" is the layers + controllers + adapters part of a tick (embed and head excluded); "tick" is
preprocess + embed + backbone + head, plus the dense re-run on ticks that post-skip verification
re-ran. Each part is timed with time.perf_counter around the backend calls (CUDA backends are
synchronised before each clock read). Warm-up ticks are not counted; dense and DySL ticks alternate
on the same backend so background load hits both alike.

DySL's figure replays a recorded skip pattern (--trace, written by `dysl_bench closed-loop
--record-trace`): per tick the same forced prefixes, controllers consulted at the same layers (they
run: their cost counts), the recorded skips, static layers and head; a full dense pass on re-run
ticks. Without --trace a synthetic pattern derived from the layer plan is used (--skip-pattern) and
the output says so. Observations are fixed random ones: latency does not depend on their content,
only on the path, which the trace fixes.

--synthetic llama2-7b measures a Llama-2-7B-shaped backbone with random weights (latency only) on a
GPU; a trace of the reference model is mapped onto its 32 layers (see dysl_ros.bench.replay).

With --json the last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dysl_ros.backends.registry import BACKEND_CHOICES
from dysl_ros.bench import common
from dysl_ros.bench.replay import (
    SYNTHETIC_PATTERNS,
    TickTiming,
    check_trace,
    dense_decision,
    load_trace,
    map_trace,
    replay_tick,
    synthetic_decisions,
    trace_plan,
)
from dysl_ros.bench.trace import TickDecision
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import ModelInputs, SegmentBackend
from dysl_ros.model.observation_spec import BackboneDims, Observation, ObservationSpec, preprocess

MIN_TICKS = 200
"""Without --iterations: whole passes over the trace, at least this many ticks."""
WORDS = ("pick", "up", "the", "red", "block", "open", "drawer", "press", "button", "push", "to", "goal", "reach")


class BenchError(RuntimeError):
    """The benchmark cannot run as asked; the message says why and what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model-dir", default="models/reference", help="model directory (default: %(default)s)")
    model.add_argument(
        "--synthetic",
        choices=sorted(_synthetic_shapes()),
        help="instead of --model-dir: a synthetic backbone with random weights (latency only); llama2-7b needs a "
        "GPU (or --allow-cpu)",
    )
    model.add_argument("--allow-cpu", action="store_true", help="let a heavy --synthetic model run on the CPU")
    run = parser.add_argument_group("backend")
    run.add_argument(
        "--backend",
        default="auto",
        metavar="{" + ",".join(BACKEND_CHOICES) + "}",
        help="segment backend, as dysl_node's `backend` parameter (default: %(default)s)",
    )
    run.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (default: %(default)s)")
    run.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        help="default: fp16 for --synthetic on CUDA, else fp32",
    )
    run.add_argument("--num-threads", type=int, default=0, help="CPU inference threads; 0: the backend's default")
    run.add_argument("--engine-dir", help="engine cache (default: <model-dir>/engines)")
    run.add_argument(
        "--eager", action="store_true", help="torch on CUDA: time eager segments instead of CUDA graphs"
    )
    run.add_argument(
        "--compare-eager",
        action="store_true",
        help="torch on CUDA: also time dense on eager torch segments (the 'dense_eager' figures)",
    )
    pattern = parser.add_argument_group("skip pattern")
    pattern.add_argument("--trace", help="decision trace to replay (dysl_bench closed-loop --record-trace)")
    pattern.add_argument(
        "--skip-pattern",
        choices=SYNTHETIC_PATTERNS,
        default="half",
        help="without --trace: a synthetic pattern from the layer plan, the same every tick (default: %(default)s); "
        "half: skip half-way through each gap, static-only: only static layers run, no-skip: controllers everywhere, "
        "nothing skipped",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--iterations",
        type=int,
        help=f"measured ticks per variant (default: whole passes over the trace, at least {MIN_TICKS})",
    )
    timing.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="uncounted ticks per variant, after one uncounted replay of each distinct recorded path "
        "(default: %(default)s)",
    )
    timing.add_argument("--observations", type=int, default=8, help="fixed random observations cycled through")
    timing.add_argument("--seed", type=int, default=0, help="seed of the observations and synthetic weights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")


def _synthetic_shapes() -> tuple[str, ...]:
    return ("llama2-7b", "tiny")


@dataclass
class Subject:
    """What is measured: a backend over a model, with what the report needs to name it."""

    backend: SegmentBackend[Any]
    plan: LayerPlan
    spec: ObservationSpec
    dims: BackboneDims
    model: str
    device: str
    precision: str
    identities: tuple[str, ...] = ()
    """Names a trace of this very model may carry (model hash, directory name)."""
    eager: SegmentBackend[Any] | None = None
    label: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    return common.exit_status("dysl_bench latency", _run, args, (BenchError, *common.USAGE_ERRORS))


def _run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    subject = _synthetic_subject(args) if args.synthetic else _model_dir_subject(args)
    decisions, pattern = _decisions(args, subject)
    iterations = args.iterations or len(decisions) * math.ceil(MIN_TICKS / len(decisions))
    observations = fixed_observations(subject.spec, args.observations, args.seed)
    results = measure(
        subject.backend,
        subject.plan,
        subject.spec,
        decisions,
        observations,
        iterations=iterations,
        warmup=args.warmup,
        eager=subject.eager,
        progress=not args.no_progress,
    )
    report = build_report(subject, results, pattern, args.trace, iterations, args.warmup)
    print(markdown(report))
    if args.json:
        print(json.dumps(report))
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if args.backend not in BACKEND_CHOICES:
        raise BenchError(f"--backend must be one of {list(BACKEND_CHOICES)}, got {args.backend!r}")
    for name in ("iterations", "observations"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BenchError(f"--{name} must be >= 1, got {value}")
    if args.warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {args.warmup}")
    if args.num_threads < 0:
        raise BenchError(f"--num-threads must be >= 0, got {args.num_threads}")


# --------------------------------------------------------------------------------------------------
# Subjects: a model directory through load_policy, or a synthetic backbone on torch.


def _model_dir_subject(args: argparse.Namespace) -> Subject:
    from dysl_ros.policy import PolicyOptions, load_policy

    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        hint = " (the reference model is trained by `make train`)" if args.model_dir == "models/reference" else ""
        raise BenchError(f"model directory {model_dir} does not exist{hint}; pass --model-dir or --synthetic")
    precision = args.precision or "fp32"
    print(f"loading {model_dir} on {args.backend} ({args.device}, {precision})...", file=sys.stderr)
    options = PolicyOptions(
        backend=args.backend,
        device=args.device,
        precision=precision,
        num_threads=args.num_threads,
        engine_dir=args.engine_dir,
        cuda_graphs=not args.eager,
    )
    policy = load_policy(model_dir, options)
    print(f"backend: {policy.backend_reason}", file=sys.stderr)
    if (args.eager or args.compare_eager) and policy.backend_name not in ("torch", "torch_cuda_graph"):
        raise BenchError(f"--eager and --compare-eager need the torch backend, not {policy.backend_name!r}")
    backend: SegmentBackend[Any] = policy.runner.backend
    eager: SegmentBackend[Any] | None = None
    if args.compare_eager:
        import torch

        from dysl_ros.backends.torch_backend import TorchBackend

        _check_compare_eager(backend, args.device)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        eager = TorchBackend(policy.bundle.model, policy.bundle.modules, args.device, dtype)  # the same weights
    from dysl_ros.model.checkpoint import model_hash

    return Subject(
        backend=backend,
        plan=policy.plan,
        spec=policy.spec,
        dims=policy.bundle.dims,
        model=str(model_dir),
        device=args.device,
        precision=precision,
        identities=(model_hash(model_dir), model_dir.resolve().name, str(model_dir)),
        eager=eager,
        extras={"num_threads": args.num_threads},
    )


def _synthetic_subject(args: argparse.Namespace) -> Subject:
    from dysl_ros.bench.synthetic import LABEL, SHAPES, build_synthetic

    shape = SHAPES[args.synthetic]
    if args.backend not in ("auto", "torch"):
        raise BenchError(f"--synthetic models run on the torch backend, not {args.backend!r}")
    on_cpu = not args.device.startswith("cuda")
    if shape.heavy and on_cpu and not args.allow_cpu:
        raise BenchError(
            f"--synthetic {args.synthetic} is a {shape.num_layers}-layer, {shape.hidden_size}-wide backbone: on the "
            f"CPU ({args.device}) a tick takes seconds to minutes and fp32 weights need ~27 GB of memory. "
            "Run it on a GPU (--device cuda), or pass --allow-cpu to run it here anyway"
        )
    import torch

    if not on_cpu and not torch.cuda.is_available():
        raise BenchError(f"device {args.device!r} requested but torch sees no CUDA device")
    precision = args.precision or ("fp32" if on_cpu else "fp16")
    if precision == "fp16" and on_cpu:
        raise BenchError("precision fp16 needs a CUDA device; use fp32 on the CPU")
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    print(f"building synthetic {args.synthetic} ({precision}, {args.device}), random weights...", file=sys.stderr)
    synthetic = build_synthetic(args.synthetic, args.device, dtype, seed=args.seed)
    backend = _torch_backend(synthetic.model, synthetic.modules, args.device, dtype, eager=args.eager)
    eager = None
    if args.compare_eager:
        _check_compare_eager(backend, args.device)
        eager = _torch_backend(synthetic.model, synthetic.modules, args.device, dtype, eager=True)
    config = synthetic.model.config
    return Subject(
        backend=backend,
        plan=synthetic.plan,
        spec=synthetic.model.spec,
        dims=synthetic.model.dims,
        model=f"synthetic:{args.synthetic}",
        device=args.device,
        precision=precision,
        eager=eager,
        label=LABEL,
        extras={
            "synthetic_shape": {
                "hidden_size": shape.hidden_size,
                "num_layers": shape.num_layers,
                "num_heads": shape.num_heads,
                "intermediate_size": shape.intermediate_size,
                "tokens": config.num_tokens,
            },
        },
    )


def _torch_backend(model: Any, modules: Any, device: str, dtype: Any, *, eager: bool) -> Any:
    """As load_policy's torch backend: CUDA graphs on a CUDA device unless ``eager``, else eager segments."""
    if not eager and device.startswith("cuda"):
        from dysl_ros.backends.torch_cuda_graph import TorchCudaGraphBackend

        print("capturing every segment as a CUDA graph...", file=sys.stderr)
        return TorchCudaGraphBackend(model, modules, device, dtype)
    from dysl_ros.backends.torch_backend import TorchBackend

    return TorchBackend(model, modules, device, dtype)


def _check_compare_eager(backend: Any, device: str) -> None:
    from dysl_ros.backends.torch_backend import TorchBackend

    if not device.startswith("cuda"):
        raise BenchError("--compare-eager compares CUDA-graph with eager torch segments: it needs --device cuda")
    if type(backend) is TorchBackend:
        raise BenchError(
            "--compare-eager: the backend measured is already eager torch (no CUDA-graph backend in use), "
            "so there is nothing to compare"
        )


# --------------------------------------------------------------------------------------------------
# Skip patterns


def _decisions(args: argparse.Namespace, subject: Subject) -> tuple[list[TickDecision], str]:
    if args.trace is None:
        print(
            f"note: no --trace: replaying the synthetic skip pattern {args.skip_pattern!r} derived from the layer "
            "plan, not DySL's recorded decisions",
            file=sys.stderr,
        )
        return synthetic_decisions(subject.plan, args.skip_pattern), f"synthetic:{args.skip_pattern}"
    trace = load_trace(args.trace)
    if args.synthetic and (trace.num_layers, tuple(trace.static_layers)) != (
        subject.plan.num_layers,
        subject.plan.static_layers,
    ):
        source = trace_plan(trace)
        print(
            f"mapping the trace's plan ({source.num_layers} layers, static {list(source.static_layers)}) onto "
            f"{subject.plan.num_layers} layers (static {list(subject.plan.static_layers)}): each gap takes the "
            "decisions of the recorded gap at its relative depth, allow/skip positions scaled to its length",
            file=sys.stderr,
        )
        trace = map_trace(trace, subject.plan)
        subject.extras["trace_mapped_from"] = {
            "num_layers": source.num_layers,
            "static_layers": list(source.static_layers),
        }
        return trace.ticks, "trace (mapped)"
    check_trace(trace, subject.plan, f"decision trace {args.trace}")
    if subject.identities and trace.model not in subject.identities:
        print(
            f"warning: {args.trace} was recorded on model {trace.model!r}, not on {subject.model}: its layer plan "
            "fits, so its skip pattern is replayed as recorded",
            file=sys.stderr,
        )
    return trace.ticks, "trace"


# --------------------------------------------------------------------------------------------------
# Measurement


def fixed_observations(spec: ObservationSpec, count: int, seed: int) -> list[Observation]:
    """``count`` random observations of the model's shapes (latency does not depend on content)."""
    rng = np.random.default_rng(seed)
    observations = []
    for _ in range(count):
        images = {c.name: rng.integers(0, 256, (c.height, c.width, c.channels), dtype=np.uint8) for c in spec.cameras}
        observations.append(
            Observation(
                image=images,
                instruction=" ".join(rng.choice(WORDS, size=5)),
                proprio=rng.normal(size=spec.state_dim).astype(np.float32),
            )
        )
    return observations


def synchronizer(backend: Any) -> Callable[[], None]:
    """Wait for the backend's device: its optional ``synchronize()`` hook, else torch.cuda.synchronize
    for a backend on a CUDA ``device``, else nothing (host backends finish before they return)."""
    hook = getattr(backend, "synchronize", None)
    if callable(hook):
        return hook  # type: ignore[no-any-return]
    device = getattr(backend, "device", None)
    if getattr(device, "type", None) == "cuda":
        import torch

        def cuda_sync() -> None:
            torch.cuda.synchronize(device)

        return cuda_sync
    return lambda: None


@dataclass
class Results:
    dense: list[TickTiming]
    dysl: list[TickTiming]
    dense_eager: list[TickTiming] | None


def measure(
    backend: SegmentBackend[Any],
    plan: LayerPlan,
    spec: ObservationSpec,
    decisions: Sequence[TickDecision],
    observations: Sequence[Observation],
    *,
    iterations: int,
    warmup: int,
    eager: SegmentBackend[Any] | None = None,
    progress: bool = True,
) -> Results:
    """Alternate dense and DySL ticks (``decisions`` cycled through) on ``backend``; the first
    ``warmup`` rounds, after one replay of each distinct decision, are not counted."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    gaps = plan.gaps
    dense = dense_decision(plan)
    inputs: list[Callable[[], ModelInputs]] = [_preprocessor(spec, obs) for obs in observations]
    variants: list[tuple[str, SegmentBackend[Any], Callable[[], None]]] = [
        ("dense", backend, synchronizer(backend)),
        ("dysl", backend, synchronizer(backend)),
    ]
    if eager is not None:
        variants.append(("dense_eager", eager, synchronizer(eager)))
    timings: dict[str, list[TickTiming]] = {name: [] for name, _, _ in variants}

    distinct = list(dict.fromkeys(decisions))
    for decision in tqdm(distinct, desc="warm-up paths", unit="path", disable=not progress or len(distinct) < 20):
        replay_tick(backend, inputs[0], gaps, decision, synchronize=variants[0][2])
    total = warmup + iterations
    for index in tqdm(range(total), desc="latency", unit="round", disable=not progress):
        counted = index >= warmup
        order = variants if index % 2 == 0 else variants[::-1]  # neither variant always runs first
        for name, runner_backend, sync in order:
            decision = decisions[(index - warmup) % len(decisions)] if name == "dysl" else dense
            _, timing = replay_tick(runner_backend, inputs[index % len(inputs)], gaps, decision, synchronize=sync)
            if counted:
                timings[name].append(timing)
    return Results(timings["dense"], timings["dysl"], timings.get("dense_eager"))


def _preprocessor(spec: ObservationSpec, obs: Observation) -> Callable[[], ModelInputs]:
    def run() -> ModelInputs:
        return preprocess(spec, obs)

    return run


# --------------------------------------------------------------------------------------------------
# Report


def summarise(timings: Sequence[TickTiming]) -> dict[str, Any]:
    backbone = np.array([t.backbone_s for t in timings]) * 1e3
    tick = np.array([t.tick_s for t in timings]) * 1e3
    return {
        "backbone_p50_ms": float(np.percentile(backbone, 50)),
        "backbone_p99_ms": float(np.percentile(backbone, 99)),
        "tick_p50_ms": float(np.percentile(tick, 50)),
        "tick_p99_ms": float(np.percentile(tick, 99)),
        "backbone_mean_ms": float(backbone.mean()),
        "tick_mean_ms": float(tick.mean()),
        "embed_p50_ms": float(np.percentile([t.embed_s * 1e3 for t in timings], 50)),
        "head_p50_ms": float(np.percentile([t.head_s * 1e3 for t in timings], 50)),
        "preprocess_p50_ms": float(np.percentile([t.preprocess_s * 1e3 for t in timings], 50)),
        "mean_executed_layers": float(np.mean([t.executed_layers for t in timings])),
        "mean_layer_evaluations": float(np.mean([t.layer_evaluations for t in timings])),
        "mean_controllers": float(np.mean([t.controllers for t in timings])),
        "mean_adapters": float(np.mean([t.adapters for t in timings])),
        "reran_ticks": int(sum(t.reran for t in timings)),
        "reran_upper_bound_ticks": int(sum(t.rerun_upper_bound for t in timings)),
    }


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    from dysl_ros.backends.capability import cpu_name

    return f"{device} ({cpu_name()})"


def build_report(
    subject: Subject,
    results: Results,
    pattern: str,
    trace: str | None,
    iterations: int,
    warmup: int,
) -> dict[str, Any]:
    dense = summarise(results.dense)
    dysl = summarise(results.dysl)
    report: dict[str, Any] = {
        "backend": str(subject.backend.name),
        "device": device_description(subject.device),
        "dense": dense,
        "dysl": dysl,
        "backbone_speedup": dense["backbone_p50_ms"] / dysl["backbone_p50_ms"],
        "tick_speedup": dense["tick_p50_ms"] / dysl["tick_p50_ms"],
        "tick_p99_ratio": dysl["tick_p99_ms"] / dense["tick_p99_ms"],
        "model": subject.model,
        "label": subject.label,
        "backend_impl": type(subject.backend).__name__,
        "precision": subject.precision,
        "skip_pattern": pattern,
        "trace": trace,
        "iterations": iterations,
        "warmup": warmup,
        "num_layers": subject.plan.num_layers,
        "static_layers": list(subject.plan.static_layers),
        "tokens": subject.dims.num_tokens,
    }
    if results.dense_eager is not None:
        eager = summarise(results.dense_eager)
        report["dense_eager"] = eager
        report["graph_vs_eager_dense_backbone_speedup"] = eager["backbone_p50_ms"] / dense["backbone_p50_ms"]
        report["dysl_vs_eager_dense_backbone_speedup"] = eager["backbone_p50_ms"] / dysl["backbone_p50_ms"]
    report.update(subject.extras)
    return report


def markdown(report: dict[str, Any]) -> str:
    pattern = report["skip_pattern"]
    if pattern.startswith("synthetic"):
        source = (
            f"SYNTHETIC skip pattern '{pattern.split(':', 1)[1]}' derived from the layer plan (no --trace): "
            "not DySL's recorded decisions"
        )
    else:
        mapped = " (mapped onto this plan)" if "mapped" in pattern else ""
        source = f"replayed decision trace {report['trace']}{mapped}"
    lines = [
        f"## dysl_bench latency: {report['model']} on {report['backend']} ({report['backend_impl']}, "
        f"{report['precision']}), {report['device']}",
        "",
    ]
    if report.get("label"):
        lines += [f"**{report['label']}**", ""]
    lines += [
        f"DySL path: {source}. {report['iterations']} measured ticks per variant after {report['warmup']} warm-up; "
        f"{report['num_layers']} layers, static {report['static_layers']}, {report['tokens']} tokens.",
        "",
        "| variant | backbone p50 ms | backbone p99 ms | tick p50 ms | tick p99 ms | executed layers | re-runs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("dense", report["dense"]), ("DySL", report["dysl"])]
    if "dense_eager" in report:
        rows.append(("dense, eager", report["dense_eager"]))
    for name, figures in rows:
        lines.append(
            f"| {name} | {figures['backbone_p50_ms']:.3f} | {figures['backbone_p99_ms']:.3f} | "
            f"{figures['tick_p50_ms']:.3f} | {figures['tick_p99_ms']:.3f} | {figures['mean_executed_layers']:.2f} | "
            f"{figures['reran_ticks']} |"
        )
    reran, upper_bound = report["dysl"]["reran_ticks"], report["dysl"].get("reran_upper_bound_ticks", 0)
    if reran:
        lines += [
            "",
            f"{reran} re-run ticks cost the skipping pass plus the dense rest from its first skip, as the runner "
            "runs them.",
        ]
    if upper_bound:
        lines[-1] += (
            f" {upper_bound} of them come from a version-1 trace that did not record where the skipping pass "
            "jumped: replayed without skips and then as a whole dense pass (an upper bound)."
        )
    lines += [
        "",
        f"Backbone speedup (p50, dense / DySL): **{report['backbone_speedup']:.2f}x**; tick speedup: "
        f"**{report['tick_speedup']:.2f}x**; DySL tick p99 / dense tick p99: {report['tick_p99_ratio']:.2f}.",
    ]
    if "dense_eager" in report:
        lines.append(
            f"Dense eager / dense {report['backend_impl']} backbone (p50): "
            f"{report['graph_vs_eager_dense_backbone_speedup']:.2f}x."
        )
    return "\n".join(lines)
