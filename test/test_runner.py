"""The DySL runner: exactness against the dense model, the skip path, forced prefixes and verification.

The torch tests run the real models (ReferenceVLA and a Hugging Face Llama stack) through the real
TorchBackend. The verification tests use a pure-numpy SegmentBackend whose head returns chunks the
test chooses, so the decision logic can be checked tick by tick with hand arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pytest
import torch
from model_fixture import randomise_adapters, tiny_llama_vla
from torch import Tensor, nn

from dysl_ros.backends.torch_backend import TorchBackend
from dysl_ros.core.config import DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner, ModelInputs, TickResult
from dysl_ros.model.backbone import HFLlamaVLA, VLABackbone
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import DySLModules, SkipModuleConfig
from dysl_ros.model.spec import Observation, VLAConfig, preprocess

# ---------------------------------------------------------------------------------------------------------
# Real models


def reference_model() -> ReferenceVLA:
    torch.manual_seed(0)
    config = VLAConfig(
        image_size=32, patch_size=16, instruction_tokens=8, hidden_size=32, num_layers=6, num_heads=2, ffn_size=64
    )
    return ReferenceVLA(config).eval()


def hf_llama_model() -> HFLlamaVLA:
    return tiny_llama_vla()


# Each plan has a gap of 2+ dynamic layers and an empty gap (two adjacent static layers).
PLANS = {
    # 6 layers: gaps [0,2] (dynamic 0,1), [3,3] (empty), [4,5] (dynamic 4)
    "reference": LayerPlan(num_layers=6, static_layers=(2, 3, 5)),
    # 4 layers: gaps [0,2] (dynamic 0,1), [3,3] (empty)
    "hf_llama": LayerPlan(num_layers=4, static_layers=(2, 3)),
}


@dataclass
class Case:
    kind: str
    model: VLABackbone
    plan: LayerPlan
    modules: DySLModules


def make_case(kind: str) -> Case:
    model: VLABackbone = reference_model() if kind == "reference" else hf_llama_model()
    plan = PLANS[kind]
    torch.manual_seed(2)
    modules = DySLModules(model.config.hidden_size, plan, SkipModuleConfig(adapter_bottleneck=8, controller_hidden=8))
    randomise_adapters(modules)
    return Case(kind, model, plan, modules)


@pytest.fixture(params=["reference", "hf_llama"])
def case(request: pytest.FixtureRequest) -> Case:
    return make_case(request.param)


def force_controllers(modules: DySLModules, logit: float) -> None:
    """Every controller outputs sigmoid(logit) whatever its input (last Linear: weight 0, bias logit)."""
    with torch.no_grad():
        for controller in modules.controllers.values():
            last = controller.net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, logit)


def observation_inputs(config: VLAConfig, seed: int) -> ModelInputs:
    rng = np.random.default_rng(seed)
    obs = Observation(
        image=rng.integers(0, 256, size=(config.image_size, config.image_size, 3), dtype=np.uint8),
        instruction="pick up the red cube",
        proprio=rng.normal(size=config.proprio_dim),
    )
    return preprocess(config, obs)


def as_tensors(inputs: ModelInputs) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.as_tensor(inputs["image"]),
        torch.as_tensor(inputs["instruction"]),
        torch.as_tensor(inputs["proprio"]),
    )


def dense_chunk(model: VLABackbone, inputs: ModelInputs) -> np.ndarray:
    """The dense model called directly: model(image, instruction, proprio)."""
    with torch.no_grad():
        out: np.ndarray = model(*as_tensors(inputs))[0].numpy()
    return out


def hand_path(case: Case, inputs: ModelInputs, allow_points: Sequence[int]) -> np.ndarray:
    """With every consulted controller skipping: per gap, layers start..allow-1 run (forced prefix); if
    allow < static, adapter(allow) jumps to the static layer; then the static layer runs."""
    model, modules = case.model, case.modules
    with torch.no_grad():
        x = model.embed(*as_tensors(inputs))
        for gap, allow in zip(case.plan.gaps, allow_points, strict=True):
            for layer in range(gap.start, allow):
                x = model.layers[layer](x)
            if allow < gap.static:
                x = modules.adapter(allow)(x)
            x = model.layers[gap.static](x)
        out: np.ndarray = model.head(x)[0].numpy()
    return out


def test_dense_runner_equals_dense_model_exactly(case: Case) -> None:
    statics = tuple(gap.static for gap in case.plan.gaps)
    runner = DySLRunner(TorchBackend(case.model, None), case.plan, DySLConfig(), dense=True)
    for seed in range(3):
        inputs = observation_inputs(case.model.config, seed)
        result = runner.step(inputs)
        expected = dense_chunk(case.model, inputs)
        assert result.chunk.dtype == np.float32
        assert result.chunk.shape == (case.model.config.chunk_len, case.model.config.action_dim)
        assert np.array_equal(result.chunk, expected)
        assert result.executed_layers == result.layer_evaluations == case.plan.num_layers
        assert result.controllers_consulted == 0
        assert result.skipped_from == (None,) * len(case.plan.gaps)
        assert result.allow_points == result.next_allow_points == statics
        assert not result.verified and not result.reran


def test_allow_points_at_static_layers_equal_dense_even_with_skip_happy_controllers(case: Case) -> None:
    force_controllers(case.modules, 50.0)  # p = 1: every consulted controller would skip
    runner = DySLRunner(TorchBackend(case.model, case.modules), case.plan, DySLConfig())
    statics = [gap.static for gap in case.plan.gaps]
    inputs = observation_inputs(case.model.config, 7)
    expected = dense_chunk(case.model, inputs)

    chunk, trace = runner.forward(inputs, statics)
    assert np.array_equal(chunk, expected)
    assert trace.executed_layers == tuple(range(case.plan.num_layers))
    assert trace.controllers_consulted == 0
    assert not trace.skipped_any
    assert np.array_equal(runner.dense_forward(inputs), expected)

    dense_runner = DySLRunner(TorchBackend(case.model, case.modules), case.plan, DySLConfig(), dense=True)
    assert np.array_equal(dense_runner.step(inputs).chunk, expected)


def test_controllers_that_never_skip_reproduce_dense(case: Case) -> None:
    force_controllers(case.modules, -50.0)  # p = 0
    runner = DySLRunner(TorchBackend(case.model, case.modules), case.plan, DySLConfig())
    inputs = observation_inputs(case.model.config, 3)
    result = runner.step(inputs)
    assert result.allow_points == tuple(gap.start for gap in case.plan.gaps)
    assert np.array_equal(result.chunk, dense_chunk(case.model, inputs))
    assert result.executed_layers == case.plan.num_layers
    assert result.controllers_consulted == len(case.plan.dynamic_layers)  # every dynamic layer asked
    assert result.skipped_from == (None,) * len(case.plan.gaps)


def test_skipping_everywhere_follows_the_adapter_path(case: Case) -> None:
    force_controllers(case.modules, 50.0)
    runner = DySLRunner(TorchBackend(case.model, case.modules), case.plan, DySLConfig())
    inputs = observation_inputs(case.model.config, 11)
    result = runner.step(inputs)

    starts = tuple(gap.start for gap in case.plan.gaps)
    assert result.allow_points == starts  # a fresh runner consults controllers from each gap's start

    # By hand: embed -> per gap: adapter(gap.start) for a non-empty gap, then the static layer -> head.
    model, modules = case.model, case.modules
    with torch.no_grad():
        x = model.embed(*as_tensors(inputs))
        for gap in case.plan.gaps:
            if len(gap) > 0:
                x = modules.adapter(gap.start)(x)
            x = model.layers[gap.static](x)
        expected = model.head(x)[0].numpy()
    assert np.array_equal(result.chunk, expected)
    assert not np.array_equal(result.chunk, dense_chunk(model, inputs))  # the skip changed the answer

    non_empty = [gap for gap in case.plan.gaps if len(gap) > 0]
    assert result.executed_layers == len(case.plan.static_layers)
    assert result.layer_evaluations == len(case.plan.static_layers)
    assert result.skipped_from == tuple(gap.start if len(gap) > 0 else None for gap in case.plan.gaps)
    assert result.controllers_consulted == len(non_empty)
    assert not result.verified  # first tick: delta 0


# (kind, allow points, executed layers, skipped_from, controllers consulted), written out by hand.
FORCED_PREFIX_CASES = [
    # Gaps [0,2], [3,3], [4,5]. Allow 1: layer 0 forced, controller at 1 skips -> adapter(1) -> layer 2.
    ("reference", (1, 3, 4), (0, 2, 3, 5), (1, None, 4), 2),
    # Allow at 5 = static: gap [4,5] runs completely (layer 4 forced), no controller there.
    ("reference", (1, 3, 5), (0, 2, 3, 4, 5), (1, None, None), 1),
    ("reference", (2, 3, 4), (0, 1, 2, 3, 5), (None, None, 4), 1),
    # Gaps [0,2], [3,3].
    ("hf_llama", (1, 3), (0, 2, 3), (1, None), 1),
    ("hf_llama", (0, 3), (2, 3), (0, None), 1),
]


@pytest.mark.parametrize(("kind", "allow", "executed", "skipped_from", "consulted"), FORCED_PREFIX_CASES)
def test_forced_prefix_then_skip(
    kind: str,
    allow: tuple[int, ...],
    executed: tuple[int, ...],
    skipped_from: tuple[int | None, ...],
    consulted: int,
) -> None:
    case = make_case(kind)
    force_controllers(case.modules, 50.0)
    runner = DySLRunner(TorchBackend(case.model, case.modules), case.plan, DySLConfig())
    inputs = observation_inputs(case.model.config, 5)

    chunk, trace = runner.forward(inputs, allow)
    assert trace.executed_layers == executed
    assert trace.skipped_from == skipped_from
    assert trace.controllers_consulted == consulted
    assert np.array_equal(chunk, hand_path(case, inputs, allow))

    runner.allow.set(allow)
    result = runner.step(inputs)
    assert result.allow_points == allow
    assert result.executed_layers == len(executed)
    assert np.array_equal(result.chunk, chunk)


def test_skip_threshold_is_inclusive(case: Case) -> None:
    force_controllers(case.modules, 0.0)  # sigmoid(0) = 0.5 exactly
    inputs = observation_inputs(case.model.config, 4)
    starts = [gap.start for gap in case.plan.gaps]
    at = DySLRunner(TorchBackend(case.model, case.modules), case.plan, DySLConfig(skip_threshold=0.5))
    _, trace = at.forward(inputs, starts)
    assert trace.executed_layers == case.plan.static_layers  # p >= threshold: skip
    above = DySLRunner(TorchBackend(case.model, case.modules), case.plan, DySLConfig(skip_threshold=0.51))
    _, trace = above.forward(inputs, starts)
    assert trace.executed_layers == tuple(range(case.plan.num_layers))


def test_verification_rerun_publishes_the_dense_chunk(case: Case) -> None:
    # k = 1 and one executed action per tick: C_1 = 0 and C_2 = -|a_2 - a_1| < 0, so with a tiny
    # eta_verify the second tick is the first step of a drop.
    force_controllers(case.modules, 50.0)
    config = DySLConfig(k=1, eta=10.0, eta_verify=1e-9)
    runner = DySLRunner(TorchBackend(case.model, case.modules), case.plan, config)
    first, second = observation_inputs(case.model.config, 20), observation_inputs(case.model.config, 21)
    one = slice(0, 1)
    r1 = runner.step(first, execute=one)
    assert not r1.verified
    assert np.array_equal(r1.chunk, hand_path(case, first, [g.start for g in case.plan.gaps]))

    r2 = runner.step(second, execute=one)
    dense = dense_chunk(case.model, second)
    assert r2.verified and r2.reran
    assert np.array_equal(r2.chunk, dense)
    expected_c = -float(np.linalg.norm(dense[0].astype(np.float64) - r1.chunk[0].astype(np.float64)))
    assert r2.continuity == pytest.approx(expected_c, rel=1e-12)
    assert r2.executed_layers == case.plan.num_layers
    # The re-run resumes at the first dynamic layer: the static layers in front of it ran once.
    first_dynamic = next(gap.start for gap in case.plan.gaps if len(gap) > 0)
    assert r2.layer_evaluations == len(case.plan.static_layers) + case.plan.num_layers - first_dynamic


# ---------------------------------------------------------------------------------------------------------
# Decision logic over a pure-numpy backend


class ScriptedBackend:
    """A SegmentBackend whose "hidden state" is the tuple of layers run so far and whose head returns
    the next chunk of a script. Every controller answers ``skip_prob``."""

    name = "scripted"

    def __init__(self, chunks: Sequence[Sequence[float]], skip_prob: float = 1.0) -> None:
        self.chunks = [np.asarray([c], dtype=np.float32) for c in chunks]  # one action per chunk
        self.skip_prob = skip_prob
        self.paths: list[tuple[Any, ...]] = []
        self.consulted: list[int] = []
        self.layers_run = 0

    def embed(self, inputs: ModelInputs) -> tuple[Any, ...]:
        assert "proprio" in inputs
        return ()

    def run_layers(self, start: int, stop: int, x: tuple[Any, ...]) -> tuple[Any, ...]:
        self.layers_run += stop - start
        return (*x, *range(start, stop))

    def adapt(self, layer: int, x: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*x, f"adapter{layer}")

    def skip_probability(self, layer: int, x: tuple[Any, ...]) -> float:
        self.consulted.append(layer)
        return self.skip_prob

    def head(self, x: tuple[Any, ...]) -> np.ndarray:
        self.paths.append(x)
        return self.chunks.pop(0)


INPUTS: ModelInputs = {"proprio": np.zeros((1, 4), dtype=np.float32)}

# 12 layers, static 5 and 11: gaps [0,5] and [6,11], 5 dynamic layers each.
PLAN = LayerPlan(num_layers=12, static_layers=(5, 11))
# k = 1 with one action per chunk: C_t = -|a_t - a_{t-1}|. Integer 3-4-5 actions keep every norm exact.
CONFIG = DySLConfig(k=1, eta=4.0, eta_verify=2.0)


def run_ticks(runner: DySLRunner[Any], ticks: int) -> list[TickResult]:
    return [runner.step(INPUTS) for _ in range(ticks)]


def test_verification_fires_on_first_drop_and_rerun_chunk_drives_allow_points() -> None:
    backend = ScriptedBackend(
        [
            (0, 0),  # t1
            (30, 40),
            (9, 12),  # t2: skipping pass, then the dense re-run
            (39, 52),  # t3
            (39, 52),  # t4
            (39, 52),  # t5
            (45, 60),
            (39, 53),  # t6: skipping pass, then the dense re-run
            (39, 53),  # t7
        ]
    )
    runner = DySLRunner(backend, PLAN, CONFIG)
    r = run_ticks(runner, 7)

    # t1: C = 0 (one action), delta 0. Points at the gap starts; both controllers skip at once.
    assert r[0].allow_points == (0, 6)
    assert backend.paths[0] == ("adapter0", 5, "adapter6", 11)
    assert (r[0].continuity, r[0].delta) == (0.0, 0.0)
    assert (r[0].verified, r[0].reran) == (False, False)
    assert r[0].executed_layers == r[0].layer_evaluations == 2
    assert r[0].skipped_from == (0, 6)
    assert r[0].controllers_consulted == 2
    assert r[0].next_allow_points == (0, 6)

    # t2: skipping pass gives (30, 40): C = -|(30,40) - (0,0)| = -50, delta = -50 < -2 with previous
    # delta 0 >= -2 -> first drop -> dense re-run gives (9, 12): C = -|(9,12)| = -15, delta = -15.
    # Points move by ceil(15 / 4) = ceil(3.75) = 4: (0, 6) -> (4, 10).
    # (Had the skipping pass's chunk been kept: ceil(50 / 4) = 13 -> clamped to (5, 11).)
    assert (r[1].verified, r[1].reran) == (True, True)
    np.testing.assert_array_equal(r[1].chunk, [[9.0, 12.0]])
    assert backend.paths[2] == tuple(range(12))  # the re-run is dense
    assert (r[1].continuity, r[1].delta) == (-15.0, -15.0)
    assert r[1].allow_points == (0, 6)
    assert r[1].next_allow_points == (4, 10)
    assert r[1].executed_layers == 12  # the published chunk's path
    assert r[1].layer_evaluations == 2 + 12  # discarded skipping pass + dense re-run (it skipped at 0)
    assert r[1].skipped_from == (None, None)
    assert r[1].discarded_skipped_from == (0, 6)
    assert r[1].controllers_consulted == 0

    # t3: points (4, 10): layers 0-3 forced, controller at 4 skips to 5; 6-9 forced, controller at 10
    # skips to 11. (39, 52): C = -|(30, 40)| = -50, delta = -50 - (-15) = -35. Still dropping, but the
    # previous delta -15 was already a drop -> no verification. Points: ceil(35/4) = 9 -> clamped (5, 11).
    assert backend.paths[3] == (0, 1, 2, 3, "adapter4", 5, 6, 7, 8, 9, "adapter10", 11)
    assert (r[2].verified, r[2].reran) == (False, False)
    assert (r[2].continuity, r[2].delta) == (-50.0, -35.0)
    assert r[2].executed_layers == r[2].layer_evaluations == 10
    assert r[2].skipped_from == (4, 10)
    assert r[2].next_allow_points == (5, 11)

    # t4: points at the static layers: dense path, no controller. C = 0, delta = +50 > 4: back by one.
    assert backend.paths[4] == tuple(range(12))
    assert r[3].controllers_consulted == 0
    assert (r[3].continuity, r[3].delta) == (0.0, 50.0)
    assert r[3].next_allow_points == (4, 10)
    assert not r[3].verified

    # t5: C = 0, delta = 0: no move.
    assert r[4].delta == 0.0
    assert r[4].next_allow_points == (4, 10)

    # t6: skipping pass (45, 60): C = -|(6, 8)| = -10, delta = -10: first drop again after recovery.
    # Re-run (39, 53): C = -|(0, 1)| = -1, delta = -1, inside +-eta -> points stay (4, 10).
    # (The skipping pass's chunk would have moved them by ceil(10/4) = 3 -> (5, 11).)
    assert (r[5].verified, r[5].reran) == (True, True)
    np.testing.assert_array_equal(r[5].chunk, [[39.0, 53.0]])
    assert (r[5].continuity, r[5].delta) == (-1.0, -1.0)
    assert r[5].next_allow_points == (4, 10)
    # The skipping pass left the dense path at layer 4 (0-3 forced): the re-run resumes there and
    # runs 4-11, not the whole stack again. The path is the dense one all the same.
    assert backend.paths[7] == tuple(range(12))
    assert r[5].discarded_skipped_from == (4, 10)
    assert r[5].layer_evaluations == 10 + 8

    # t7: C = 0, delta = +1: no verification, no move.
    assert (r[6].verified, r[6].delta, r[6].next_allow_points) == (False, 1.0, (4, 10))

    # Every tick's layer_evaluations is what the backend really ran.
    assert sum(t.layer_evaluations for t in r) == backend.layers_run
    assert not backend.chunks  # every scripted chunk consumed: two head calls on t2 and t6 only


def test_verification_without_any_skip_does_not_rerun() -> None:
    backend = ScriptedBackend([(0, 0), (30, 40)], skip_prob=0.0)  # controllers never skip
    runner = DySLRunner(backend, PLAN, CONFIG)
    r = run_ticks(runner, 2)
    # t2: C = -50, delta = -50 -> first drop, but the pass was already dense.
    assert (r[1].verified, r[1].reran) == (True, False)
    np.testing.assert_array_equal(r[1].chunk, [[30.0, 40.0]])
    assert r[1].layer_evaluations == r[1].executed_layers == 12
    assert r[1].controllers_consulted == 10
    assert r[1].next_allow_points == (5, 11)  # ceil(50/4) = 13 -> clamped
    assert len(backend.paths) == 2


def test_verification_with_closed_allow_points_does_not_rerun() -> None:
    backend = ScriptedBackend([(0, 0), (30, 40)], skip_prob=1.0)
    runner = DySLRunner(backend, PLAN, CONFIG)
    runner.step(INPUTS)
    runner.allow.close_all()  # nothing may be skipped on the next pass
    result = runner.step(INPUTS)
    assert (result.verified, result.reran) == (True, False)
    assert result.layer_evaluations == 12
    assert backend.consulted == [0, 6]  # only the first tick asked controllers


SCRIPT_WITHOUT_RERUNS = [(0, 0), (30, 40), (39, 52), (39, 52), (39, 52), (45, 60), (45, 60)]


def test_post_verify_disabled_never_verifies() -> None:
    backend = ScriptedBackend(SCRIPT_WITHOUT_RERUNS)
    runner = DySLRunner(backend, PLAN, DySLConfig(k=1, eta=4.0, eta_verify=2.0, enable_post_verify=False))
    r = run_ticks(runner, len(SCRIPT_WITHOUT_RERUNS))
    assert [t.verified for t in r] == [False] * 7
    assert [t.reran for t in r] == [False] * 7
    assert len(backend.paths) == 7  # one pass per tick
    for tick, action in zip(r, SCRIPT_WITHOUT_RERUNS, strict=True):
        np.testing.assert_array_equal(tick.chunk, [action])
    # t2 is still a drop of 50: ceil(50/4) = 13 -> clamped at the static layers; allow points still move.
    assert r[1].next_allow_points == (5, 11)


def test_pre_skip_disabled_never_moves_allow_points() -> None:
    backend = ScriptedBackend([(0, 0), (30, 40), (9, 12), (39, 52), (39, 52), (39, 52), (45, 60), (39, 53)])
    runner = DySLRunner(backend, PLAN, DySLConfig(k=1, eta=4.0, eta_verify=2.0, enable_pre_skip=False))
    r = run_ticks(runner, 6)
    assert all(t.allow_points == t.next_allow_points == (0, 6) for t in r)
    assert [t.verified for t in r] == [False, True, False, False, False, True]  # verification still works
    assert [t.delta for t in r] == [0.0, -15.0, -35.0, 50.0, 0.0, -1.0]


def test_dense_runner_never_verifies_or_moves() -> None:
    backend = ScriptedBackend(SCRIPT_WITHOUT_RERUNS)
    runner = DySLRunner(backend, PLAN, CONFIG, dense=True)
    r = run_ticks(runner, len(SCRIPT_WITHOUT_RERUNS))
    assert not any(t.verified for t in r)
    assert all(t.allow_points == t.next_allow_points == (5, 11) for t in r)
    assert backend.consulted == []
    assert all(t.executed_layers == 12 for t in r)


def test_execute_slice_selects_what_continuity_records() -> None:
    backend = ScriptedBackend([])
    backend.chunks = [
        np.array([[0, 0], [99, 99], [99, 99]], dtype=np.float32),
        np.array([[3, 4], [0, 0], [0, 0]], dtype=np.float32),
    ]
    runner = DySLRunner(backend, PLAN, DySLConfig(k=1, eta=4.0, eta_verify=2.0, enable_post_verify=False))
    assert runner.step(INPUTS, execute=slice(0, 1)).continuity == 0.0
    # Only (0,0) then (3,4) were executed: C = -5. (Recording whole chunks would give C = 0.)
    result = runner.step(INPUTS, execute=slice(0, 1))
    assert result.continuity == -5.0
    assert result.chunk.shape == (3, 2)  # the whole chunk is still returned

    backend.chunks = [np.zeros((3, 2), dtype=np.float32)]
    with pytest.raises(ValueError, match="selects no action"):
        runner.step(INPUTS, execute=slice(3, 3))


def test_reset_restores_allow_points_and_continuity() -> None:
    backend = ScriptedBackend([(0, 0), (30, 40), (9, 12), (300, 400)])
    runner = DySLRunner(backend, PLAN, CONFIG)
    run_ticks(runner, 2)
    assert runner.allow.points == (4, 10)
    runner.reset()
    assert runner.allow.points == (0, 6)
    after = runner.step(INPUTS)
    assert (after.continuity, after.delta, after.verified) == (0.0, 0.0, False)  # a fresh episode


def test_withdraw_last_takes_a_dropped_chunk_out_of_history_and_allow_points() -> None:
    # (0,0) executed, then (30,40) computed but dropped (its image went stale), then (3,4) executed.
    backend = ScriptedBackend([(0, 0), (30, 40), (3, 4)])
    runner = DySLRunner(backend, PLAN, DySLConfig(k=1, eta=4.0, eta_verify=2.0, enable_post_verify=False))
    runner.step(INPUTS)
    dropped = runner.step(INPUTS)
    assert (dropped.delta, dropped.next_allow_points) == (-50.0, (5, 11))  # the drop moved the points
    runner.withdraw_last()
    assert runner.allow.points == (0, 6)
    after = runner.step(INPUTS)
    # History is (0,0) -> (3,4): C = -5 and dC = -5 against the executed (0,0)'s C = 0.
    assert (after.continuity, after.delta) == (-5.0, -5.0)
    assert after.allow_points == (0, 6)

    runner.withdraw_last()
    with pytest.raises(RuntimeError, match="no step to withdraw"):
        runner.withdraw_last()  # only the last step can be taken back, once
    runner.reset()
    with pytest.raises(RuntimeError, match="no step to withdraw"):
        runner.withdraw_last()
