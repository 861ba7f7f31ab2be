"""DySL modules (budget, initial behaviour), model directories and calibration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_fixture import tiny_llama_vla
from torch import Tensor, nn

from dysl_ros.backends.torch_backend import TorchBackend
from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import DySLRunner, ModelInputs
from dysl_ros.model.backbone import HFLlamaVLA, VLABackbone, backbone_parameters
from dysl_ros.model.calibration import calibrate, layer_similarities
from dysl_ros.model.checkpoint import (
    CONFIG_FILE,
    PLAN_FILE,
    WEIGHTS_FILE,
    ModelDirError,
    load_bundle,
    model_hash,
    save_dysl,
    save_model,
)
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import (
    MAX_PARAMETER_RATIO,
    Adapter,
    Controller,
    DySLModules,
    SkipModuleConfig,
    parameter_report,
)
from dysl_ros.model.spec import Observation, VLAConfig, preprocess

SMALL = VLAConfig(image_size=32, patch_size=16, instruction_tokens=8, hidden_size=32, num_layers=6, num_heads=2,
                  ffn_size=64)


def reference_model(config: VLAConfig = SMALL, seed: int = 0) -> ReferenceVLA:
    torch.manual_seed(seed)
    return ReferenceVLA(config).eval()


def hf_llama_model(seed: int = 1) -> HFLlamaVLA:
    return tiny_llama_vla(seed=seed)


def make_model(kind: str) -> VLABackbone:
    return reference_model() if kind == "reference" else hf_llama_model()


def inputs_for(config: VLAConfig, seed: int) -> ModelInputs:
    rng = np.random.default_rng(seed)
    obs = Observation(
        image=rng.integers(0, 256, size=(config.image_size, config.image_size, 3), dtype=np.uint8),
        instruction=f"task number {seed}",
        proprio=rng.normal(size=config.proprio_dim),
    )
    return preprocess(config, obs)


def batch(config: VLAConfig, seeds: list[int]) -> dict[str, Tensor]:
    samples = [inputs_for(config, s) for s in seeds]
    return {key: torch.as_tensor(np.concatenate([s[key] for s in samples])) for key in samples[0]}


def chunk_of(model: VLABackbone, inputs: ModelInputs) -> np.ndarray:
    tensors = [torch.as_tensor(inputs[key]) for key in ("image", "instruction", "proprio")]
    with torch.no_grad():
        out: np.ndarray = model(*tensors)[0].numpy()
    return out


def skipping_modules(config: VLAConfig, plan: LayerPlan, seed: int = 3) -> DySLModules:
    """Modules whose controllers always skip and whose adapters are not the identity."""
    torch.manual_seed(seed)
    modules = DySLModules(config.hidden_size, plan, SkipModuleConfig(adapter_bottleneck=8, controller_hidden=4))
    with torch.no_grad():
        for adapter in modules.adapters.values():
            nn.init.normal_(adapter.up.weight, std=0.5)
        for controller in modules.controllers.values():
            nn.init.zeros_(controller.net[-1].weight)
            nn.init.constant_(controller.net[-1].bias, 50.0)
    return modules


def plan_for(model: VLABackbone) -> LayerPlan:
    num_layers = model.config.num_layers
    return LayerPlan(num_layers=num_layers, static_layers=(1, num_layers - 1))


# ---------------------------------------------------------------------------------------------------------
# Skip modules


def test_default_config_dysl_parameters_within_two_percent_of_backbone() -> None:
    config = VLAConfig()
    model = ReferenceVLA(config)
    plan = LayerPlan.from_similarities([1.0 - 0.01 * i for i in range(config.num_layers)], DySLConfig().static_ratio)
    assert len(plan.dynamic_layers) == 24 - round(0.2 * 24) == 19
    modules = DySLModules(config.hidden_size, plan)
    report = parameter_report(backbone_parameters(model), modules)
    print(f"\nDySL parameter report (default VLAConfig): {report}")

    # By hand (hidden 128, ffn 384, controller width 8, adapter bottleneck 12):
    # block: qkv 128*384 + out 128*128 + gate/up/down 3*128*384 + 2 norms 2*128 = 213,248; x 24 layers.
    assert report["backbone_parameters"] == 24 * (128 * 384 + 128 * 128 + 3 * 128 * 384 + 2 * 128) == 5_117_952
    # controller: 128*8+8 + 8+1 = 1,041; adapter: norm 128 + down 128*12+12 + up 12*128+128 = 3,340.
    assert report["dysl_parameters"] == 19 * (1041 + 3340) == 83_239
    assert report["ratio"] == pytest.approx(83_239 / 5_117_952)
    assert report["ratio"] <= MAX_PARAMETER_RATIO == 0.02


def test_no_static_layers_ablation_fits_the_budget_too() -> None:
    """The "without static layers" ablation has 23 dynamic layers: the default modules must still fit."""
    model = ReferenceVLA(VLAConfig())
    modules = DySLModules(VLAConfig().hidden_size, LayerPlan.last_layer_only(24))
    report = parameter_report(backbone_parameters(model), modules)
    assert report["dysl_parameters"] == 23 * (1041 + 3340) == 100_763
    assert report["ratio"] <= MAX_PARAMETER_RATIO


def test_parameter_report_raises_over_budget() -> None:
    config = VLAConfig()
    model = ReferenceVLA(config)
    plan = LayerPlan(num_layers=24, static_layers=(5, 11, 17, 23))
    modules = DySLModules(config.hidden_size, plan, SkipModuleConfig(adapter_bottleneck=64))
    with pytest.raises(ConfigError, match=r"over the 2% budget.*adapter_bottleneck"):
        parameter_report(backbone_parameters(model), modules)


def test_modules_exist_for_dynamic_layers_only() -> None:
    plan = LayerPlan(num_layers=6, static_layers=(2, 3, 5))
    modules = DySLModules(32, plan)
    assert sorted(int(k) for k in modules.controllers) == [0, 1, 4]
    assert sorted(int(k) for k in modules.adapters) == [0, 1, 4]
    with pytest.raises(KeyError):
        modules.adapter(2)


def test_adapter_starts_as_identity() -> None:
    torch.manual_seed(0)
    adapter = Adapter(32, 8)
    x = torch.randn(2, 7, 32)
    assert torch.equal(adapter(x), x)
    with torch.no_grad():
        nn.init.normal_(adapter.up.weight)
    assert not torch.equal(adapter(x), x)  # it is a real residual branch once trained


def test_controller_outputs_probability_per_sample() -> None:
    torch.manual_seed(0)
    controller = Controller(32, 8)
    x = torch.randn(3, 7, 32) * 10
    p = controller(x)
    assert p.shape == (3,)
    assert torch.all((p > 0) & (p < 1))
    # Mean-pooled over tokens: permuting the tokens does not change the answer.
    assert torch.allclose(controller(x[:, torch.randperm(7)]), p, atol=1e-6)
    # Samples are independent.
    assert torch.allclose(controller(x[1:2]), p[1:2], atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Model directories


@pytest.mark.parametrize("kind", ["reference", "hf_llama"])
def test_fp32_round_trip_reproduces_chunks_exactly(kind: str, tmp_path: Path) -> None:
    model = make_model(kind)
    plan = plan_for(model)
    modules = skipping_modules(model.config, plan)
    dysl_config = DySLConfig(k=3, eta=0.05)
    save_model(model, tmp_path, dtype=torch.float32)
    save_dysl(tmp_path, plan, modules, dysl_config, dtype=torch.float32)

    bundle = load_bundle(tmp_path)
    assert bundle.has_dysl
    assert type(bundle.model) is type(model)
    assert bundle.model.config == model.config
    assert bundle.plan == plan
    assert bundle.dysl_config == dysl_config
    assert bundle.modules is not None and bundle.modules.config == modules.config

    inputs = inputs_for(model.config, 0)
    assert np.array_equal(chunk_of(bundle.model, inputs), chunk_of(model, inputs))
    # The skip path (controllers + adapters) survives too.
    before = DySLRunner(TorchBackend(model, modules), plan, dysl_config).step(inputs)
    after = DySLRunner(TorchBackend(bundle.model, bundle.modules), plan, dysl_config).step(inputs)
    assert before.skipped_from == after.skipped_from == (0, 2)
    assert np.array_equal(before.chunk, after.chunk)


@pytest.mark.parametrize("kind", ["reference", "hf_llama"])
def test_fp16_round_trip_is_close_and_loads_as_fp32(kind: str, tmp_path: Path) -> None:
    model = make_model(kind)
    save_model(model, tmp_path)  # fp16 by default
    bundle = load_bundle(tmp_path)
    assert not bundle.has_dysl and bundle.plan is None and bundle.modules is None and bundle.dysl_config is None
    loaded = bundle.model.state_dict()  # type: ignore[attr-defined]
    for name, tensor in model.state_dict().items():  # type: ignore[attr-defined]
        assert loaded[name].dtype == torch.float32
        assert torch.equal(loaded[name], tensor.half().float()), name  # exactly the fp16-rounded weights
    inputs = inputs_for(model.config, 1)
    np.testing.assert_allclose(chunk_of(bundle.model, inputs), chunk_of(model, inputs), atol=2e-3, rtol=0)


def test_plan_without_modules_loads_plan_only(tmp_path: Path) -> None:
    model = reference_model()
    save_model(model, tmp_path)
    save_dysl(tmp_path, plan_for(model))
    bundle = load_bundle(tmp_path)
    assert bundle.plan == plan_for(model)
    assert bundle.modules is None and not bundle.has_dysl


def test_load_bundle_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist or is not a directory"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelDirError, match="is not a directory"):
        load_bundle(tmp_path / "file")


def test_load_bundle_dir_without_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=f"has no {CONFIG_FILE}"):
        load_bundle(tmp_path)
    SMALL.save(tmp_path / CONFIG_FILE)
    with pytest.raises(ModelDirError, match=f"has no {WEIGHTS_FILE}: is this a dysl_ros model directory"):
        load_bundle(tmp_path)


def test_load_bundle_weights_of_another_config(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    save_model(reference_model(), ours)
    other = VLAConfig(image_size=32, patch_size=16, instruction_tokens=8, hidden_size=64, num_layers=6,
                      num_heads=2, ffn_size=64)
    save_model(reference_model(other), theirs)
    shutil.copy(theirs / WEIGHTS_FILE, ours / WEIGHTS_FILE)
    with pytest.raises(ModelDirError, match=r"does not fit the configured model.*wrong shape"):
        load_bundle(ours)

    fewer = VLAConfig(image_size=32, patch_size=16, instruction_tokens=8, hidden_size=32, num_layers=4,
                      num_heads=2, ffn_size=64)
    save_model(reference_model(fewer), theirs)
    shutil.copy(theirs / WEIGHTS_FILE, ours / WEIGHTS_FILE)
    with pytest.raises(ModelDirError, match=r"missing \['layers\.4\."):
        load_bundle(ours)


def test_load_bundle_damaged_or_inconsistent_files(tmp_path: Path) -> None:
    model = reference_model()
    save_model(model, tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelDirError, match="cannot read"):
        load_bundle(tmp_path)

    save_model(model, tmp_path)
    LayerPlan(num_layers=4, static_layers=(3,)).save(tmp_path / PLAN_FILE)
    with pytest.raises(ModelDirError, match="plans 4 layers, the model has 6"):
        load_bundle(tmp_path)
    (tmp_path / PLAN_FILE).unlink()

    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelDirError, match=f"bad {CONFIG_FILE}"):
        load_bundle(tmp_path)

    SMALL.save(tmp_path / CONFIG_FILE)
    (tmp_path / "backbone.json").write_text(json.dumps({"kind": "mamba"}))
    with pytest.raises(ModelDirError, match="unknown backbone kind 'mamba'"):
        load_bundle(tmp_path)


def test_model_hash_tracks_weights_and_plan(tmp_path: Path) -> None:
    model = reference_model()
    save_model(model, tmp_path)
    first = model_hash(tmp_path)
    assert len(first) == 64
    save_model(model, tmp_path)
    assert model_hash(tmp_path) == first  # same weights, same hash

    with torch.no_grad():
        model.head.proj.bias[0] += 0.5
    save_model(model, tmp_path)
    changed = model_hash(tmp_path)
    assert changed != first

    save_dysl(tmp_path, plan_for(model))
    assert model_hash(tmp_path) not in (first, changed)


# ---------------------------------------------------------------------------------------------------------
# Calibration


def test_layer_similarities_range_and_hand_value() -> None:
    model = reference_model()
    one = batch(SMALL, [0])
    sims = layer_similarities(model, [one])
    assert len(sims) == SMALL.num_layers
    assert all(-1.0 <= s <= 1.0 for s in sims)
    with torch.no_grad():
        x0 = model.embed(one["image"], one["instruction"], one["proprio"])
        expected = F.cosine_similarity(x0, model.layers[0](x0), dim=-1).mean().item()
    assert sims[0] == pytest.approx(expected, abs=1e-6)

    # Several batches of different sizes: a token-weighted mean over all samples.
    two = batch(SMALL, [1, 2])
    combined = layer_similarities(model, [one, two])
    alone = layer_similarities(model, [batch(SMALL, [0, 1, 2])])
    np.testing.assert_allclose(combined, alone, atol=1e-6)


def test_calibrate_keeps_informative_layers_and_the_last_one() -> None:
    model = reference_model()
    # Layers 1 and 3 become the identity (their residual branches output 0): similarity 1, least
    # informative, so they must not be static.
    with torch.no_grad():
        for i in (1, 3):
            nn.init.zeros_(model.layers[i].attn.out.weight)
            nn.init.zeros_(model.layers[i].mlp.down.weight)
    batches = [batch(SMALL, [0, 1]), batch(SMALL, [2])]
    sims = layer_similarities(model, batches)
    assert sims[1] == pytest.approx(1.0, abs=1e-6)
    assert sims[3] == pytest.approx(1.0, abs=1e-6)

    plan = calibrate(model, batches, static_ratio=0.5)
    assert isinstance(plan, LayerPlan)
    assert plan.num_layers == 6
    assert len(plan.static_layers) == 3  # round(0.5 * 6)
    assert plan.static_layers[-1] == 5
    assert 1 not in plan.static_layers and 3 not in plan.static_layers
    assert plan.similarities == pytest.approx(tuple(sims), abs=1e-9)


def test_calibration_needs_batches() -> None:
    with pytest.raises(ValueError, match="no calibration batches"):
        layer_similarities(reference_model(), [])
