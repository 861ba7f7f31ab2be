"""The reference model the repository ships (models/reference): within the size budget, complete,
loadable, and runnable through DySL and every variant the closed-loop benchmark needs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dysl_ros.model.checkpoint import load_bundle
from dysl_ros.model.skip_modules import MAX_PARAMETER_RATIO
from dysl_ros.model.spec import Observation
from dysl_ros.policy import PolicyOptions, load_policy

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "reference"
SIZE_BUDGET = 32 * 1024 * 1024
VARIANTS = ("one_stage", "no_static", "router", "lambda_0.002", "lambda_0.005")


def shipped_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "models"], cwd=REPO, capture_output=True, text=True, check=False)
    if listed.returncode != 0:  # not a git checkout (an sdist): everything there is what shipped
        return [p for p in (REPO / "models").rglob("*") if p.is_file()]
    return [REPO / line for line in listed.stdout.splitlines() if line]


def test_shipped_weights_fit_the_budget_and_hold_no_logs() -> None:
    files = shipped_files()
    assert any(f.name == "model.safetensors" for f in files), "models/reference/model.safetensors is not tracked"
    total = sum(f.stat().st_size for f in files)
    assert total <= SIZE_BUDGET, f"shipped model files take {total / 2**20:.1f} MiB, over 32 MiB"
    generated = [f for f in files if f.suffix in {".onnx", ".plan", ".engine"} or f.name.endswith("_log.jsonl")]
    assert not generated, f"generated files are tracked: {generated}"


def test_shipped_model_loads_with_its_dysl_modules_and_provenance() -> None:
    bundle = load_bundle(MODEL)
    assert bundle.has_dysl and bundle.plan is not None and bundle.dysl_config is not None
    assert bundle.plan.static_layers[-1] == bundle.model.config.num_layers - 1
    assert bundle.modules is not None
    backbone = sum(p.numel() for p in bundle.model.parameters())  # type: ignore[attr-defined]
    assert bundle.modules.num_parameters() <= MAX_PARAMETER_RATIO * backbone
    provenance = json.loads((MODEL / "train_args.json").read_text())
    assert provenance["command"] == "bc" and provenance["init_from"], "a later bc phase made it (the recipe has four)"
    distilled = json.loads((MODEL / "distill.json").read_text())
    assert distilled["static_layers"] == list(bundle.plan.static_layers)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_shipped_variant_fits_the_model(variant: str) -> None:
    bundle = load_bundle(MODEL, modules_dir=MODEL / "variants" / variant)
    assert bundle.has_dysl


def test_shipped_policy_runs_a_tick_dense_and_dysl() -> None:
    config = load_bundle(MODEL).model.config
    rng = np.random.default_rng(0)
    obs = Observation(
        image=rng.integers(0, 256, (config.image_size, config.image_size, 3), dtype=np.uint8),
        instruction="open the drawer",
        proprio=np.zeros(config.proprio_dim),
    )
    for dense in (True, False):
        policy = load_policy(MODEL, PolicyOptions(backend="torch", num_threads=1, dense=dense))
        out = policy.predict_action_chunk(obs)
        assert out.actions.shape == (config.chunk_len, config.action_dim)
        assert np.all(np.isfinite(out.actions))
        if dense:
            assert out.tick.executed_layers == config.num_layers
        else:
            assert len(policy.plan.static_layers) <= out.tick.executed_layers <= config.num_layers


def test_the_node_parameters_keep_the_models_calibrated_dysl_settings() -> None:
    # config/dysl.yaml as shipped: the node must run the thresholds calibration wrote, not defaults.
    import yaml

    from dysl_ros.node.params import NodeParams

    shipped = yaml.safe_load((REPO / "config" / "dysl.yaml").read_text())["/**"]["ros__parameters"]
    params = NodeParams.from_values({**shipped, "model_dir": str(MODEL)})
    calibrated = load_bundle(MODEL).dysl_config
    assert calibrated is not None
    policy = load_policy(MODEL, PolicyOptions(dysl_overrides=params.dysl_overrides))
    assert policy.runner.config == calibrated
    tuned = NodeParams.from_values({**shipped, "model_dir": str(MODEL), "eta": 0.3})
    policy = load_policy(MODEL, PolicyOptions(dysl_overrides=tuned.dysl_overrides))
    assert policy.runner.config.eta == 0.3 and policy.runner.config.eta_verify == calibrated.eta_verify
