"""Your own VLA: an imported Hugging Face decoder of each tested family behaves as the checkpoint
does, loads without fp32 copies, exports to engines that match torch with the same skip decisions,
and every bad model directory is refused with a message saying what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from byom_fixture import EMBED, FAMILIES, HEAD, SPEC, make_imported_model, random_observation, write_decoder

from dysl_ros.backends import export
from dysl_ros.backends.build import build_engines
from dysl_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from dysl_ros.backends.torch_backend import TorchBackend
from dysl_ros.core.config import ConfigError
from dysl_ros.core.runner import DySLRunner
from dysl_ros.model.checkpoint import ModelDirError, load_bundle, model_hash, save_model
from dysl_ros.model.hf_decoder import DecoderVLA, ModulePart, import_model
from dysl_ros.model.observation_spec import SPEC_FILE, Observation, ObservationSpec, preprocess
from dysl_ros.policy import PolicyOptions, load_policy

TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=FAMILIES)
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    family = str(request.param)
    return family, make_imported_model(tmp_path_factory.mktemp(family), family)


def test_the_decoder_runs_as_the_checkpoint_does(imported: tuple[str, Path]) -> None:
    """Our blocks (rotary tables and causal mask precomputed) against transformers' own forward
    on the same embeddings: the rotary scaling, grouped-query attention and final norm all come
    through."""
    from transformers import AutoModel

    family, model_dir = imported
    bundle = load_bundle(model_dir)
    model = bundle.model
    assert isinstance(model, DecoderVLA) and model.spec == SPEC
    reference = AutoModel.from_pretrained(str(model_dir / "decoder"), local_files_only=True).eval()
    inputs = preprocess(SPEC, Observation(**random_observation(np.random.default_rng(1))))
    tensors = [torch.as_tensor(inputs[name]) for name in SPEC.input_names]
    with torch.no_grad():
        embedded = model.embed(*tensors)
        theirs = reference(inputs_embeds=embedded).last_hidden_state  # causal, as pretrained
        expected = model.head.head(theirs)
        ours = model(*tensors)
    assert ours.shape == (1, SPEC.horizon, SPEC.action_dim)
    assert torch.allclose(ours, expected, atol=1e-5), f"{family}: {float((ours - expected).abs().max())}"


def test_engines_match_torch_with_the_same_skip_decisions(
    imported: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model_dir = imported
    # Every segment through the low-memory export (weights written after tracing), which large
    # models take; the reference model's tests cover the exporter's own path.
    monkeypatch.setattr(export, "LOW_MEMORY_EXPORT_BYTES", 0)
    bundle = load_bundle(model_dir)
    assert bundle.has_dysl and bundle.plan is not None and bundle.dysl_config is not None
    engine_dir = build_engines(model_dir, tmp_path / "engines", progress=False)
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    assert manifest["shapes"]["front"] == [1, 3, 24, 32] and manifest["shapes"]["wrist"] == [1, 3, 16, 40]
    assert manifest["shapes"]["actions"] == [1, 10, 7]
    settings = bundle.dysl_config
    engines = DySLRunner(OnnxRuntimeBackend(engine_dir, num_threads=1), bundle.plan, settings)
    eager = DySLRunner(TorchBackend(bundle.model, bundle.modules), bundle.plan, settings)
    rng = np.random.default_rng(3)
    skipped = 0
    for _ in range(30):
        inputs = preprocess(SPEC, Observation(**random_observation(rng)))
        ours, theirs = engines.step(inputs), eager.step(inputs)
        assert ours.skipped_from == theirs.skipped_from and ours.allow_points == theirs.allow_points
        assert np.abs(ours.chunk - theirs.chunk).max() <= TOLERANCE
        skipped += any(s is not None for s in ours.skipped_from)
    assert skipped > 0, "no tick skipped: the comparison did not exercise the adapters"


def test_policy_denormalises_into_the_specs_units(imported: tuple[str, Path]) -> None:
    _, model_dir = imported
    policy = load_policy(model_dir, PolicyOptions(dense=True))
    out = policy.predict_action_chunk(Observation(**random_observation(np.random.default_rng(0))))
    assert out.actions.shape == (10, 7)
    low, high = np.asarray(SPEC.action_normalisation.low), np.asarray(SPEC.action_normalisation.high)
    expected = (out.tick.chunk + 1.0) / 2.0 * (high - low) + low  # min_max: [-1, 1] -> [min, max]
    assert np.allclose(out.actions, expected)


def test_half_precision_loads_without_an_fp32_copy(imported: tuple[str, Path]) -> None:
    _, model_dir = imported
    bundle = load_bundle(model_dir, dtype=torch.bfloat16)
    dtypes = {p.dtype for p in bundle.model.layers.parameters()} | {p.dtype for p in bundle.model.embed.parameters()}
    assert dtypes == {torch.bfloat16}


def test_save_model_round_trips_an_imported_model(imported: tuple[str, Path], tmp_path: Path) -> None:
    family, model_dir = imported
    bundle = load_bundle(model_dir)
    out = tmp_path / "saved"
    save_model(bundle.model, out, dtype=torch.float32)
    again = load_bundle(out).model
    inputs = preprocess(SPEC, Observation(**random_observation(np.random.default_rng(4))))
    tensors = [torch.as_tensor(inputs[name]) for name in SPEC.input_names]
    with torch.no_grad():
        assert torch.equal(bundle.model(*tensors), again(*tensors)), family


def test_save_model_refuses_a_backbone_it_cannot_describe(tmp_path: Path) -> None:
    class Mine(torch.nn.Module):
        pass

    with pytest.raises(ModelDirError, match="dysl_train import"):
        save_model(Mine(), tmp_path)  # type: ignore[arg-type]


def test_the_model_hash_covers_the_imported_files(imported: tuple[str, Path], tmp_path: Path) -> None:
    import shutil

    _, model_dir = imported
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    before = model_hash(copy)
    spec_text = (copy / SPEC_FILE).read_text().replace("center_crop", "letterbox")
    (copy / SPEC_FILE).write_text(spec_text)
    assert model_hash(copy) != before


def test_bad_model_directories_say_what_is_wrong(tmp_path: Path) -> None:
    decoder = write_decoder(tmp_path / "ckpt", "qwen2")
    model_dir = import_model(tmp_path / "m", decoder_dir=decoder, spec=SPEC, embed=EMBED, head=HEAD)
    (model_dir / SPEC_FILE).unlink()
    with pytest.raises(ModelDirError, match=r"has no observation_spec\.yaml"):
        load_bundle(model_dir)
    with pytest.raises(ConfigError, match="cannot import no_such_package"):
        import_model(tmp_path / "x", decoder_dir=decoder, spec=SPEC, embed=ModulePart("no_such_package:f"), head=HEAD)
    with pytest.raises(ConfigError, match=r"query_head.*failed"):  # the factory's own error, named
        import_model(tmp_path / "y", decoder_dir=decoder, spec=SPEC, embed=EMBED,
                     head=ModulePart("dysl_ros.model.parts:query_head", {"bogus": 1}))
    with pytest.raises(ConfigError, match="the head failed on"):  # an embed is no head
        import_model(tmp_path / "y", decoder_dir=decoder, spec=SPEC, embed=EMBED, head=EMBED)
    config = json.loads((decoder / "config.json").read_text())
    (decoder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="family 'gpt2' is not supported"):
        import_model(tmp_path / "z", decoder_dir=decoder, spec=SPEC, embed=EMBED, head=HEAD)


def test_a_spec_must_make_sense() -> None:
    data = SPEC.to_dict()
    with pytest.raises(ConfigError, match="fit must be one of"):
        ObservationSpec.from_dict({**data, "cameras": [{**data["cameras"][0], "fit": "squash"}]})
    with pytest.raises(ConfigError, match="unknown key"):
        ObservationSpec.from_dict({**data, "camera": []})
    with pytest.raises(ConfigError, match="needs 7 values"):
        bad = {**data["actions"], "normalisation": {"kind": "mean_std", "mean": [0.0], "std": [1.0]}}
        ObservationSpec.from_dict({**data, "actions": bad})
    assert ObservationSpec.from_dict(data) == SPEC


def lerobot_dataset(root: Path, episodes: int = 2, frames: int = 14) -> Path:
    """Two cameras of the spec's cameras' names but other sizes, 8-D state, 7-D actions."""
    from dysl_ros.training.lerobot_dataset import RecordedEpisode
    from dysl_ros.training.lerobot_writer import write_lerobot_dataset

    rng = np.random.default_rng(0)
    recorded = []
    for index in range(episodes):
        t = np.linspace(0.0, 1.0, frames, dtype=np.float32)[:, None]
        images = {
            "front": rng.integers(0, 256, (frames, 36, 48, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, (frames, 20, 44, 3), dtype=np.uint8),
        }
        state = np.sin(t * np.arange(1, 9, dtype=np.float32) + index).astype(np.float32)
        actions = (0.15 * np.cos(t * np.arange(1, 8, dtype=np.float32))).astype(np.float32)
        recorded.append(RecordedEpisode(index, "put the red block in the bowl", images, state, actions, 10.0))
    return write_lerobot_dataset(root, recorded, fps=10.0, codec="images")


def test_the_whole_path_on_a_lerobot_dataset(imported: tuple[str, Path], tmp_path: Path) -> None:
    """import (the fixture) -> calibrate -> distill on a LeRobot v3.0 dataset -> engines within
    1e-4 of torch with the same skip decisions -> dysl_bench offline, for each family."""
    import shutil
    from contextlib import redirect_stdout
    from io import StringIO

    from dysl_ros.tools import bench, train

    family, imported_dir = imported
    model_dir = tmp_path / family
    shutil.copytree(imported_dir, model_dir)
    dataset = lerobot_dataset(tmp_path / "dataset")
    assert train.main(["calibrate", "--model-dir", str(model_dir), "--demos", str(dataset),
                       "--batches", "2", "--batch-size", "4", "--static-ratio", "0.34"]) == 0
    assert train.main(["distill", "--model-dir", str(model_dir), "--demos", str(dataset),
                       "--stage1-steps", "3", "--stage2-steps", "3", "--batch-size", "4", "--seed", "1",
                       "--adapter-bottleneck", "1", "--controller-hidden", "2"]) == 0  # 2 % of a tiny stack
    bundle = load_bundle(model_dir)
    assert bundle.has_dysl and bundle.plan is not None and bundle.dysl_config is not None
    engine_dir = build_engines(model_dir, tmp_path / "engines", progress=False)
    engines = DySLRunner(OnnxRuntimeBackend(engine_dir, num_threads=1), bundle.plan, bundle.dysl_config)
    eager = DySLRunner(TorchBackend(bundle.model, bundle.modules), bundle.plan, bundle.dysl_config)
    rng = np.random.default_rng(7)
    for _ in range(10):
        inputs = preprocess(SPEC, Observation(**random_observation(rng)))
        ours, theirs = engines.step(inputs), eager.step(inputs)
        assert ours.skipped_from == theirs.skipped_from and np.abs(ours.chunk - theirs.chunk).max() <= TOLERANCE
    out = StringIO()
    with redirect_stdout(out):
        code = bench.main(["offline", "--model-dir", str(model_dir), "--demos", str(dataset), "--no-progress",
                           "--variants", "dense,dysl,random_skip", "--json"])
    assert code == 0
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert report["variants"]["dense"]["mean_dense_error"] == 0.0
    assert report["variants"]["dysl"]["ticks"] == report["variants"]["dense"]["ticks"] > 0
