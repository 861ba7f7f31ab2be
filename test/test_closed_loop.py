"""Closed-loop benchmark on a tiny random model in real Meta-World, the variants it compares, the
per-layer router and variant module directories."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from model_fixture import TINY, make_model_dir, one_torch_thread, randomise_adapters

from dysl_ros.backends.torch_backend import TorchBackend
from dysl_ros.bench import closed_loop
from dysl_ros.bench.trace import DecisionTrace
from dysl_ros.bench.variants import (
    VARIANTS,
    CoinBackend,
    DeerExitBackend,
    LoadSettings,
    OracleExitBackend,
    VariantLoader,
    coin_probability,
    expected_executed_layers,
    parse_variants,
    random_skip_probability,
)
from dysl_ros.core.config import DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.router import run_router_path
from dysl_ros.core.runner import run_path
from dysl_ros.model.checkpoint import ModelDirError, load_bundle, model_hash, save_dysl
from dysl_ros.model.skip_modules import DySLModules
from dysl_ros.model.spec import Observation, denormalise_actions, preprocess
from dysl_ros.mt10.env import model_goal_marker_radius
from dysl_ros.policy import PolicyOptions, load_policy
from dysl_ros.tools import bench

NUM_LAYERS = TINY.num_layers  # 10; 2 static layers at static_ratio 0.2
# Continuity thresholds no random model can reach: allow points never move and verification never
# fires, so each variant's executed layers follow from its plan and controllers alone.
STILL = {"eta": 100.0, "eta_verify": 100.0}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def set_controllers(modules: DySLModules, skip: set[int] | None = None, *, all_skip: bool = False) -> None:
    """Controllers that always skip (p ~ 1) for the layers in ``skip`` (or all) and never elsewhere."""
    with torch.no_grad():
        for key, controller in modules.controllers.items():
            last = controller.net[-1]
            last.weight.zero_()
            last.bias.fill_(20.0 if all_skip or int(key) in (skip or set()) else -20.0)


def write_variant(model_dir: Path, name: str, plan: LayerPlan, config: DySLConfig, *, all_skip: bool | None,
                  seed: int) -> Path:
    torch.manual_seed(seed)
    modules = DySLModules(TINY.hidden_size, plan)
    randomise_adapters(modules, std=0.05)
    if all_skip is not None:
        set_controllers(modules, all_skip=all_skip)
    out = model_dir / "variants" / name
    save_dysl(out, plan, modules, config, dtype=torch.float32)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_model_dir(tmp_path_factory.mktemp("closed_loop") / "tiny")
    bundle = load_bundle(path)
    assert bundle.plan is not None and bundle.modules is not None
    set_controllers(bundle.modules, all_skip=True)  # DySL skips at every consulted controller
    randomise_adapters(bundle.modules, std=0.05)
    save_dysl(path, bundle.plan, bundle.modules, DySLConfig(static_ratio=0.2, **STILL), dtype=torch.float32)
    last_only = LayerPlan.last_layer_only(NUM_LAYERS)
    write_variant(path, "no_static", last_only, DySLConfig(static_ratio=0.1, **STILL), all_skip=True, seed=1)
    write_variant(path, "one_stage", bundle.plan, DySLConfig(static_ratio=0.2, **STILL), all_skip=None, seed=2)
    write_variant(path, "router", last_only, DySLConfig(static_ratio=0.1), all_skip=None, seed=3)
    return path


# --------------------------------------------------------------------------------------------------
# The benchmark end to end


def test_closed_loop_every_variant(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    markdown, trace_file, plot = tmp_path / "results.md", tmp_path / "trace.json", tmp_path / "plots" / "variants.png"
    code = bench.main([
        "closed-loop", "--model-dir", str(model_dir), "--tasks", "reach-v3", "--episodes", "1",
        "--max-steps", "8", "--execute-steps", "4", "--workers", "1", "--json", "--no-progress",
        "--markdown", str(markdown), "--record-trace", str(trace_file), "--plot", str(plot),
    ])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["seed"] == closed_loop.DEFAULT_EVAL_SEED and report["episodes"] == 1
    assert list(report["variants"]) == list(VARIANTS)
    keys = {"success_rate", "mean_executed_layers", "p99_executed_layers", "executed_fraction",
            "verification_rate", "ticks"}
    plan = load_bundle(model_dir).plan
    assert plan is not None
    static = len(plan.static_layers)
    for name, figures in report["variants"].items():
        assert keys <= set(figures), name
        assert keys <= set(figures["per_task"]["reach-v3"]), name
        assert 0.0 <= figures["success_rate"] <= 1.0
        # 8 steps, 4 executed per chunk: two ticks, unless Meta-World reported success earlier.
        assert 1 <= figures["ticks"] <= 2
        assert figures["executed_fraction"] == pytest.approx(figures["mean_executed_layers"] / NUM_LAYERS)
        least = 0 if name == "random_layers" else 1  # its coins may drop every layer
        assert least <= figures["mean_executed_layers"] <= figures["p99_executed_layers"] <= NUM_LAYERS
    v = report["variants"]
    assert v["dense"]["mean_executed_layers"] == v["dense"]["p99_executed_layers"] == NUM_LAYERS
    # Controllers that always skip: only the static layers run (no pre-skip moves, no verification).
    for name in ("dysl", "no_pre_skip", "no_post_verify"):
        assert v[name]["mean_executed_layers"] == v[name]["p99_executed_layers"] == static, name
        assert v[name]["verification_rate"] == 0.0
    assert v["no_static"]["mean_executed_layers"] == 1  # its plan: only the last layer is static
    assert static <= v["one_stage"]["mean_executed_layers"] <= NUM_LAYERS
    # Random skip matched dysl's mean: the minimum its plan allows, so every coin says skip.
    assert v["random_skip"]["skip_probability"] == v["random_skip"]["coin_probability"] == 1.0
    assert v["random_skip"]["mean_executed_layers"] == static
    # Random drop matched it too: every dynamic layer's coin says drop.
    assert v["random_drop"]["keep_probability"] == 0.0 and v["random_drop"]["mean_executed_layers"] == static
    target = report["random_target"]["target_layers"]
    assert v["random_drop"]["target_layers"] == target == v["dysl"]["mean_executed_layers"]
    # Random layers matched it with a coin over every layer, static ones included.
    assert v["random_layers"]["keep_probability"] == pytest.approx(target / NUM_LAYERS)
    assert v["random_layers"]["target_layers"] == target
    assert v["router"]["verification_rate"] == 0.0

    trace = DecisionTrace.load(trace_file)
    assert trace.num_layers == NUM_LAYERS and trace.static_layers == plan.static_layers
    assert len(trace.ticks) == v["dysl"]["ticks"]
    assert all(all(s is not None for s in t.skipped_from) for t in trace.ticks)
    assert trace.model == model_hash(model_dir)
    text = markdown.read_text()
    assert "| `dysl` |" in text and "reach-v3" in text and "| `random_drop` |" in text
    assert "probability that each dynamic layer runs (no adapters) 0.0000" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wilson_interval() -> None:
    # Reference values of the 95 % Wilson score interval (z = 1.96).
    assert closed_loop.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = closed_loop.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = closed_loop.wilson_interval(271, 300)
    assert low < 271 / 300 < high and high - low < 0.07
    assert closed_loop.wilson_interval(0, 0) == (0.0, 1.0)


def test_closed_loop_workers_and_refusals(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Two worker processes give the same figures as one (paired, seeded episodes).
    args = ["closed-loop", "--model-dir", str(model_dir), "--tasks", "reach-v3", "--episodes", "2",
            "--max-steps", "4", "--variants", "dense,router", "--json", "--no-progress"]
    assert bench.main([*args, "--workers", "2"]) == 0
    pooled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert bench.main([*args, "--workers", "1"]) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(pooled["variants"]) == ["dense", "router"]
    for name in ("dense", "router"):
        for key in ("mean_executed_layers", "p99_executed_layers", "ticks", "success_rate"):
            assert pooled["variants"][name][key] == single["variants"][name][key]

    assert bench.main(["closed-loop", "--model-dir", str(model_dir), "--variants", "random_skip"]) == 2
    assert "random-target-layers" in capsys.readouterr().err
    empty = make_model_dir(tmp_path / "bare")
    assert bench.main(["closed-loop", "--model-dir", str(empty), "--variants", "router"]) == 2
    assert "variants/router" in capsys.readouterr().err
    # An eval seed whose episodes the model was trained on is refused.
    demos = tmp_path / "demos"
    demos.mkdir()
    from dysl_ros.mt10.tasks import episode_seed

    seed = episode_seed(1000, "reach-v3", 0)
    (demos / "index.json").write_text(json.dumps({"episodes": [{"seed": seed}]}))
    (empty / "train_args.json").write_text(json.dumps({"argv": ["dysl_train", "bc", "--demos", str(demos)]}))
    assert bench.main(["closed-loop", "--model-dir", str(empty), "--variants", "dense", "--tasks", "reach-v3",
                       "--seed", "1000"]) == 2
    assert "training episode" in capsys.readouterr().err
    # Trained on two directories (`--demos A,B`): the second one's episodes count too.
    first = tmp_path / "first_demos"
    first.mkdir()
    (first / "index.json").write_text(json.dumps({"episodes": []}))
    (empty / "train_args.json").write_text(json.dumps({"argv": ["bc", "--demos", f"{first},{demos}"]}))
    assert closed_loop.training_episode_seeds(empty)[0] == {seed}


def test_closed_loop_modules_dir_and_eta_override(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Another speed/accuracy point: modules whose controllers never skip, so dysl runs every layer
    # there while the model dir's own modules (always skip) run only the static layers.
    plan = load_bundle(model_dir).plan
    assert plan is not None
    never = write_variant(model_dir, "never_skip", plan, DySLConfig(static_ratio=0.2, **STILL), all_skip=False, seed=4)
    args = ["closed-loop", "--model-dir", str(model_dir), "--tasks", "reach-v3", "--episodes", "1",
            "--max-steps", "8", "--variants", "dysl", "--workers", "1", "--json", "--no-progress"]
    assert bench.main([*args, "--modules-dir", str(never), "--eta", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["variants"]["dysl"]["mean_executed_layers"] == NUM_LAYERS
    assert report["modules_dir"] == str(never) and report["dysl_overrides"] == {"eta": 0.5}
    assert bench.main(args) == 0
    own = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert own["variants"]["dysl"]["mean_executed_layers"] == len(plan.static_layers)
    assert own["modules_dir"] is None and own["dysl_overrides"] == {}

    assert bench.main([*args, "--modules-dir", str(model_dir / "variants" / "missing")]) == 2
    assert "variants/missing" in capsys.readouterr().err
    assert bench.main([*args, "--eta-verify", "0"]) == 2
    assert "--eta-verify must be a finite number > 0" in capsys.readouterr().err

    # The never-skip controllers answer p = sigmoid(-20) ~ 2e-9: a lower skip threshold makes them skip.
    assert bench.main([*args, "--modules-dir", str(never), "--skip-threshold", "1e-12"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["variants"]["dysl"]["mean_executed_layers"] == len(plan.static_layers)
    assert report["dysl_overrides"] == {"skip_threshold": 1e-12}
    assert bench.main([*args, "--skip-threshold", "1.5"]) == 2
    assert "--skip-threshold must lie in (0, 1]" in capsys.readouterr().err

    # The goal marker: the model's (no train_args.json here: Meta-World's), or the flag's with a warning.
    assert own["goal_marker_radius"] is None
    assert bench.main([*args, "--goal-marker-radius", "0.04"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["goal_marker_radius"] == 0.04
    assert "warning: goal marker radius 0.04 m, the model's demos had None" in captured.err
    assert bench.main([*args, "--goal-marker-radius", "5"]) == 2
    assert "--goal-marker-radius: a radius in (0, 0.2] metres or 'none', got '5'" in capsys.readouterr().err

    # The node's chunk aggregation (executed actions: test_closed_loop_executes_the_node_action_queue).
    assert own["chunk_aggregation"] == "latest"
    assert bench.main([*args, "--chunk-aggregation", "weighted", "--aggregation-decay", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["chunk_aggregation"] == "weighted" and report["aggregation_decay"] == 0.5
    assert bench.main([*args, "--chunk-aggregation", "weighted", "--aggregation-decay", "nan"]) == 2
    assert "--aggregation-decay must be a finite number in [-10, 10], got nan" in capsys.readouterr().err


def test_model_goal_marker_radius_comes_from_train_args(tmp_path: Path) -> None:
    assert model_goal_marker_radius(tmp_path) is None  # no train_args.json: trained before it was recorded
    (tmp_path / "train_args.json").write_text(json.dumps({"command": "bc", "goal_marker_radius": 0.04}))
    assert model_goal_marker_radius(tmp_path) == 0.04
    (tmp_path / "train_args.json").write_text(json.dumps({"goal_marker_radius": -1}))
    with pytest.raises(ValueError, match="goal_marker_radius must be None or in"):
        model_goal_marker_radius(tmp_path)


def test_parse_variants() -> None:
    assert parse_variants("all") == list(VARIANTS)
    assert parse_variants("router,dense") == ["dense", "router"]
    with pytest.raises(ValueError, match="unknown variant"):
        parse_variants("dense,sparse")
    # A diagnostic bound runs only when named.
    assert "oracle_exit" not in parse_variants("all")
    assert parse_variants("oracle_exit,dense") == ["dense", "oracle_exit"]


def one_gap_setup() -> tuple[LayerPlan, TorchBackend, Any, list[int]]:
    """A random model with adapters, a plan with one non-empty gap (2..8), one tick's inputs and the
    gaps' starts: the exits of the oracle and deer tests."""
    torch.manual_seed(0)
    from dysl_ros.model.reference_vla import ReferenceVLA

    plan = LayerPlan(num_layers=NUM_LAYERS, static_layers=(0, 1, 9))
    model = ReferenceVLA(TINY).eval()
    modules = DySLModules(TINY.hidden_size, plan)
    randomise_adapters(modules, std=0.05)
    return plan, TorchBackend(model, modules), preprocess(TINY, observation(3)), [g.start for g in plan.gaps]


def test_oracle_exit_takes_the_shallowest_exit_within_its_tolerance() -> None:
    """Tolerance 0: the dense chunk; infinite: every gap left at its start; in between: the first
    dynamic layer whose jump lands within the tolerance, every shallower one outside it."""
    plan, torch_backend, inputs, starts = one_gap_setup()
    dense, _ = run_path(torch_backend, inputs, plan.gaps, [g.static for g in plan.gaps], 0.5)

    exact, trace = run_path(OracleExitBackend(torch_backend, plan, 0.0), inputs, plan.gaps, starts, 0.5)
    assert len(trace.executed_layers) == NUM_LAYERS and not trace.skipped_any
    np.testing.assert_allclose(exact, dense, atol=1e-6)
    anything = OracleExitBackend(torch_backend, plan, float("inf"))
    _, trace = run_path(anything, inputs, plan.gaps, starts, 0.5)
    assert trace.executed_layers == plan.static_layers and trace.skipped_from == (None, None, 2)

    # The exit errors along the gap, measured by hand: jump from layer i, then layer 9 and the head.
    x = torch_backend.run_layers(0, 2, torch_backend.embed(inputs))
    errors = []
    for layer in range(2, 9):
        jumped = torch_backend.run_layers(9, 10, torch_backend.adapt(layer, x))
        errors.append(float(np.mean(np.abs(torch_backend.head(jumped) - dense))))
        x = torch_backend.run_layers(layer, layer + 1, x)
    assert len(set(errors)) == len(errors) and min(errors) > 0
    tolerance = float(np.median(errors))
    first = 2 + next(k for k, error in enumerate(errors) if error <= tolerance)
    oracle = OracleExitBackend(torch_backend, plan, tolerance)
    chunk, trace = run_path(oracle, inputs, plan.gaps, starts, 0.5)
    assert trace.skipped_from == (None, None, first)
    assert trace.executed_layers == (0, 1, *range(2, first), 9)
    assert float(np.mean(np.abs(chunk - dense))) == pytest.approx(errors[first - 2], rel=1e-5)
    with pytest.raises(ValueError, match="tolerance"):
        OracleExitBackend(torch_backend, plan, -0.1)

    # actions=k: the same jump, measured over the chunk's first k actions only.
    first_two = OracleExitBackend(torch_backend, plan, tolerance, actions=2)
    x = first_two.run_layers(0, 2, first_two.embed(inputs))
    jumped = torch_backend.head(torch_backend.run_layers(9, 10, torch_backend.adapt(2, x)))
    assert first_two.exit_error(2, x) == pytest.approx(float(np.mean(np.abs(jumped[:2] - dense[:2]))), rel=1e-6)
    assert first_two.exit_error(2, x) != pytest.approx(errors[0], rel=1e-3)  # the whole chunk's differs
    with pytest.raises(ValueError, match="actions"):
        OracleExitBackend(torch_backend, plan, tolerance, actions=0)


def test_closed_loop_oracle_exit_needs_its_tolerance(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["closed-loop", "--model-dir", str(model_dir), "--tasks", "reach-v3", "--episodes", "1",
            "--max-steps", "4", "--workers", "1", "--variants", "dense,oracle_exit", "--json", "--no-progress"]
    assert bench.main(args) == 2
    assert "--oracle-tolerance" in capsys.readouterr().err
    assert bench.main([*args, "--oracle-tolerance", "0"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    oracle, dense = report["variants"]["oracle_exit"], report["variants"]["dense"]
    assert oracle["mean_executed_layers"] == NUM_LAYERS and oracle["ticks"] == dense["ticks"]
    assert report["oracle_tolerance"] == 0.0 and report["oracle_actions"] is None
    assert report["oracle_measure"] == "absolute"
    assert "oracle_exit is a bound" in closed_loop.markdown_report(report)
    assert "over the whole chunk" in closed_loop.markdown_report(report)
    # Any relative error passes a huge tolerance: every tick leaves at the first allow point.
    assert bench.main([*args, "--oracle-tolerance", "1e9", "--oracle-measure", "relative"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["oracle_measure"] == "relative"
    assert report["variants"]["oracle_exit"]["mean_executed_layers"] < NUM_LAYERS
    assert "over the dense chunk's mean |action|" in closed_loop.markdown_report(report)
    assert bench.main([*args, "--oracle-tolerance", "0", "--oracle-actions", "99"]) == 2
    assert "--oracle-actions must lie in 1..8" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Random skip


def test_random_skip_probability_hits_its_target() -> None:
    plan = LayerPlan(num_layers=10, static_layers=(3, 9))  # gaps of 3 and 5 dynamic layers
    assert expected_executed_layers(plan, 0.0) == 10
    assert expected_executed_layers(plan, 1.0) == 2
    for target in (2.5, 4.0, 6.25, 9.9):
        q = random_skip_probability(plan, target)
        assert 0.0 < q < 1.0
        assert expected_executed_layers(plan, q) == pytest.approx(target, abs=1e-6)
    assert random_skip_probability(plan, 1.0) == 1.0 and random_skip_probability(plan, 12.0) == 0.0
    # Allow points past the gap starts force their prefix.
    assert expected_executed_layers(plan, 1.0, [2, 6]) == 2 + 2 + 2
    q = random_skip_probability(plan, 7.0, [2, 6])
    assert expected_executed_layers(plan, q, [2, 6]) == pytest.approx(7.0, abs=1e-6)


def test_coin_backend_executes_the_expected_layers_on_average() -> None:
    """The solver's formula against the real runner path over a real torch backend."""
    torch.manual_seed(0)
    from dysl_ros.model.reference_vla import ReferenceVLA

    plan = LayerPlan(num_layers=NUM_LAYERS, static_layers=(3, 9))
    model = ReferenceVLA(TINY).eval()
    modules = DySLModules(TINY.hidden_size, plan)
    target = 5.0
    q = random_skip_probability(plan, target)
    coin = CoinBackend(TorchBackend(model, modules), q, seed=7)
    inputs = preprocess(TINY, observation())
    counts = [len(run_path(coin, inputs, plan.gaps, [g.start for g in plan.gaps], 0.5)[1].executed_layers)
              for _ in range(600)]
    assert float(np.mean(counts)) == pytest.approx(target, abs=0.25)
    assert min(counts) >= 2 and max(counts) <= NUM_LAYERS


@pytest.mark.parametrize("variant", ["random_drop", "random_layers"])
def test_untrained_random_skip_runs_its_fixed_layers_and_a_matched_share_of_the_others(
    model_dir: Path, variant: str
) -> None:
    """random_drop always runs the static layers; random_layers no layer (its coin may drop any)."""
    loader = VariantLoader(LoadSettings(str(model_dir)))
    plan = load_bundle(model_dir).plan
    assert plan is not None
    fixed = plan.static_layers if variant == "random_drop" else ()
    free = NUM_LAYERS - len(fixed)
    assert coin_probability(variant, plan, len(fixed) + 0.25 * free) == pytest.approx(0.25)
    assert coin_probability(variant, plan, -1.0) == 0.0 and coin_probability(variant, plan, 99.0) == 1.0
    obs = observation(2)
    # Every coin says run: the dense model's actions; every coin says drop: the fixed layers alone,
    # with nothing (no adapter) standing in for the dropped layers.
    dense = loader.get("dense").step(obs, slice(0, 4))
    everything = loader.get(variant, 1.0).step(obs, slice(0, 4))
    assert everything.executed_layers == NUM_LAYERS
    np.testing.assert_allclose(everything.actions, dense.actions, atol=1e-6)
    policy = loader.base_policy(None)
    backend, config = policy.runner.backend, policy.bundle.model.config
    x = backend.embed(preprocess(config, obs))
    for layer in fixed:
        x = backend.run_layers(layer, layer + 1, x)
    fixed_only = loader.get(variant, 0.0).step(obs, slice(0, 4))
    assert fixed_only.executed_layers == len(fixed) and not fixed_only.verified
    np.testing.assert_allclose(fixed_only.actions, denormalise_actions(config, backend.head(x)), atol=1e-6)
    assert not np.allclose(fixed_only.actions, dense.actions, atol=1e-3)
    # In between: the expected count on average, and an episode seed replays its coins.
    target = len(fixed) + 0.5 * free
    runner = loader.get(variant, coin_probability(variant, plan, target))
    runner.reset(11)
    counts = [runner.step(obs, slice(0, 4)).executed_layers for _ in range(400)]
    assert float(np.mean(counts)) == pytest.approx(target, abs=0.3)
    assert min(counts) >= len(fixed) and max(counts) <= NUM_LAYERS and len(set(counts)) > 2
    if variant == "random_layers":
        assert min(counts) < len(plan.static_layers)  # the static layers were dropped too
    runner.reset(11)
    assert [runner.step(obs, slice(0, 4)).executed_layers for _ in range(400)] == counts


def observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (TINY.image_size, TINY.image_size, 3), dtype=np.uint8)
    return Observation(image, "reach the goal", rng.normal(size=TINY.proprio_dim).astype(np.float32))


# --------------------------------------------------------------------------------------------------
# The per-layer router


def test_run_router_path_executes_exactly_the_kept_layers() -> None:
    torch.manual_seed(0)
    from dysl_ros.model.reference_vla import ReferenceVLA

    model = ReferenceVLA(TINY).eval()
    modules = DySLModules(TINY.hidden_size, LayerPlan.last_layer_only(NUM_LAYERS))
    randomise_adapters(modules, std=0.1)
    routed = {1, 4, 6}
    set_controllers(modules, routed)
    backend = TorchBackend(model, modules)
    inputs = preprocess(TINY, observation(1))
    chunk, trace = run_router_path(backend, inputs, 0.5, num_layers=NUM_LAYERS)
    assert trace.routed_layers == (1, 4, 6)
    assert trace.executed_layers == (0, 2, 3, 5, 7, 8, 9)
    assert trace.routers_consulted == NUM_LAYERS - 1
    with torch.no_grad():
        x = model.embed(torch.as_tensor(inputs["image"]), torch.as_tensor(inputs["instruction"]),
                        torch.as_tensor(inputs["proprio"]))
        for i, layer in enumerate(model.layers):
            x = modules.adapter(i)(x) if i in routed else layer(x)
        expected = model.head(x)[0].numpy()
    np.testing.assert_allclose(chunk, expected, atol=1e-5)
    # Every router keeps: the dense model; every router skips: only the last layer runs.
    set_controllers(modules, set())
    dense_chunk, trace = run_router_path(backend, inputs, 0.5, num_layers=NUM_LAYERS)
    assert trace.executed_layers == tuple(range(NUM_LAYERS))
    with torch.no_grad():
        x = model.embed(torch.as_tensor(inputs["image"]), torch.as_tensor(inputs["instruction"]),
                        torch.as_tensor(inputs["proprio"]))
        for layer in model.layers:
            x = layer(x)
        np.testing.assert_allclose(dense_chunk, model.head(x)[0].numpy(), atol=1e-5)
    set_controllers(modules, all_skip=True)
    _, trace = run_router_path(backend, inputs, 0.5, num_layers=NUM_LAYERS)
    assert trace.executed_layers == (NUM_LAYERS - 1,)


def test_router_module_has_no_torch() -> None:
    code = "import sys, dysl_ros.core.router, dysl_ros.bench.variants; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# Variant module directories


def test_load_bundle_with_modules_dir(model_dir: Path, tmp_path: Path) -> None:
    main = load_bundle(model_dir)
    variant = load_bundle(model_dir, model_dir / "variants" / "no_static")
    assert variant.plan == LayerPlan.last_layer_only(NUM_LAYERS) != main.plan
    assert variant.modules is not None and variant.dysl_config is not None
    assert variant.modules_dir == model_dir / "variants" / "no_static" and variant.model_dir == model_dir
    assert variant.dysl_config.static_ratio == pytest.approx(0.1)
    assert set(variant.modules.controllers) == {str(i) for i in range(NUM_LAYERS - 1)}
    # A variant directory alone loads with the backbone two levels up, and hashes apart from the main.
    alone = load_bundle(model_dir / "variants" / "no_static")
    assert alone.plan == variant.plan and alone.model_dir.resolve() == model_dir.resolve()
    no_static = model_dir / "variants" / "no_static"
    assert model_hash(no_static) == model_hash(model_dir, no_static) != model_hash(model_dir)
    # The weights are the backbone's.
    for a, b in zip(main.model.state_dict().values(), variant.model.state_dict().values(), strict=True):  # type: ignore[attr-defined]
        assert torch.equal(a, b)

    wrong = tmp_path / "wrong_plan"
    bigger = LayerPlan.last_layer_only(NUM_LAYERS + 2)
    save_dysl(wrong, bigger, DySLModules(TINY.hidden_size, bigger), DySLConfig(static_ratio=0.1))
    with pytest.raises(ModelDirError, match="plans 12 layers, the model has 10"):
        load_bundle(model_dir, wrong)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelDirError, match=r"no layer_plan\.json"):
        load_bundle(model_dir, empty)
    with pytest.raises(ModelDirError, match="does not exist"):
        load_bundle(model_dir, tmp_path / "missing")
    # Modules of another width do not fit.
    narrow = tmp_path / "narrow"
    plan = LayerPlan.last_layer_only(NUM_LAYERS)
    save_dysl(narrow, plan, DySLModules(TINY.hidden_size * 2, plan), DySLConfig(static_ratio=0.1))
    with pytest.raises(ModelDirError, match="does not fit"):
        load_bundle(model_dir, narrow)


def test_load_policy_with_modules_dir(model_dir: Path) -> None:
    policy = load_policy(model_dir, PolicyOptions(modules_dir=model_dir / "variants" / "no_static", num_threads=1))
    assert policy.plan.static_layers == (NUM_LAYERS - 1,)
    out = policy.predict_action_chunk(observation(2), slice(0, 4))
    assert out.tick.executed_layers == 1  # its controllers always skip, from layer 0 to the last layer
    main = load_policy(model_dir, PolicyOptions(num_threads=1))
    assert main.plan.static_layers != policy.plan.static_layers


def test_bench_variant_results_are_json_serialisable(model_dir: Path) -> None:
    results = [closed_loop.EpisodeResult("dense", "reach-v3", 0, 1, True, 3, [10, 10], [10, 10], 0, None, 0.1)]
    figures: dict[str, Any] = closed_loop.variant_figures(results, ["reach-v3"], NUM_LAYERS)
    assert figures["success_rate"] == 1.0 and figures["ticks"] == 2 and figures["executed_fraction"] == 1.0
    json.dumps(figures)


class _RecordingEnv:
    """A real Meta-World env that also keeps every action it was given."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.actions: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, action: Any) -> Any:
        self.actions.append(np.asarray(action, dtype=np.float64).copy())
        return self.env.step(action)


class _RecordingLoader(VariantLoader):
    """The real variants; the chunks each one returned are kept per tick."""

    chunks: list[np.ndarray]

    def get(self, variant: str, coin: float | None = None) -> Any:
        inner = super().get(variant, coin)
        loader = self

        class Recorded:
            policy = inner.policy  # type: ignore[attr-defined]

            def reset(self, seed: int) -> None:
                loader.chunks = []
                inner.reset(seed)

            def step(self, obs: Any, execute: slice) -> Any:
                step = inner.step(obs, execute)
                loader.chunks.append(np.asarray(step.actions, dtype=np.float64).copy())
                return step

        return Recorded()


@pytest.mark.parametrize("aggregation,decay", [("latest", 0.01), ("weighted", 0.0), ("weighted", 0.7)])
def test_closed_loop_executes_the_node_action_queue(model_dir: Path, aggregation: str, decay: float) -> None:
    """Re-planning every 4 of 8 actions: `latest` runs each chunk's first 4; `weighted` averages
    each step's two predictions (the previous chunk's action 4 + j, the new one's j) with the
    weights of dysl_node's chunk_aggregation, exp(-decay * i), i = 0 the older."""
    from dysl_ros.mt10.env import make_env

    settings = closed_loop.WorkerSettings(
        LoadSettings(str(model_dir)), "corner", 12, 4, None, aggregation=aggregation, aggregation_decay=decay
    )
    loader = _RecordingLoader(settings.load)
    state = closed_loop.WorkerState(settings, loader)
    env = _RecordingEnv(make_env("reach-v3", 0, TINY.image_size, "corner", max_steps=12, post_success_steps=0))
    state.envs["reach-v3"] = env
    job = closed_loop.Job("dense", "reach-v3", 0, 7, "reach the goal")
    result = closed_loop.run_episode(state, job)
    state.close()
    chunks = loader.chunks
    assert result.steps == len(env.actions) and len(chunks) == len(result.executed) >= 2
    older, newer = 1.0, float(np.exp(-decay))
    for step, action in enumerate(env.actions):
        tick, j = divmod(step, 4)
        expected = chunks[tick][j]
        if aggregation == "weighted" and tick > 0:
            expected = (older * chunks[tick - 1][4 + j] + newer * chunks[tick][j]) / (older + newer)
        # The env casts to float32 before Meta-World sees the action.
        np.testing.assert_allclose(action, expected.astype(np.float32), rtol=0, atol=1e-6)
    if aggregation == "weighted":  # the two chunks of a random model do differ: the average is not either one
        assert not np.allclose(env.actions[4], chunks[1][0], atol=1e-6)


def test_deer_exit_leaves_where_successive_exits_agree() -> None:
    """Threshold 0: exits never agree exactly, so the pass stays dense; infinite: every gap left at its
    second exit (the first has nothing to agree with); in between: the first exit whose chunk lies
    within the threshold of the previous exit's, measured by hand."""
    plan, torch_backend, inputs, starts = one_gap_setup()
    _, trace = run_path(DeerExitBackend(torch_backend, plan, 0.0), inputs, plan.gaps, starts, 0.5)
    assert not trace.skipped_any and len(trace.executed_layers) == NUM_LAYERS
    _, trace = run_path(DeerExitBackend(torch_backend, plan, float("inf")), inputs, plan.gaps, starts, 0.5)
    assert trace.skipped_from == (None, None, 3)

    x = torch_backend.run_layers(0, 2, torch_backend.embed(inputs))
    chunks = []
    for layer in range(2, 9):
        chunks.append(torch_backend.head(torch_backend.run_layers(9, 10, torch_backend.adapt(layer, x))))
        x = torch_backend.run_layers(layer, layer + 1, x)
    agreement = [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(chunks)]
    threshold = float(np.median(agreement))
    first = 3 + next(k for k, value in enumerate(agreement) if value <= threshold)
    chunk, trace = run_path(DeerExitBackend(torch_backend, plan, threshold), inputs, plan.gaps, starts, 0.5)
    assert trace.skipped_from == (None, None, first)
    np.testing.assert_allclose(chunk, chunks[first - 2], atol=1e-6)
    with pytest.raises(ValueError, match="deer threshold"):
        DeerExitBackend(torch_backend, plan, -1.0)
