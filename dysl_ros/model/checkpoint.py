"""A model directory's torch side: the VLA and its DySL modules read into memory and written back.

The layout, and everything read without torch (observation spec, sizes, layer plan, DySL settings,
the model hash), is in ``model_dir.py``, whose names the offline tools also import from here. A
robot serving from engines opens its model with ``model_dir.open_bundle`` and never imports this
module (nor torch); ``load_bundle`` reads the weights too (``lazy``: on first use).
"""

from __future__ import annotations

import json
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.backbone import HFLlamaVLA, VLABackbone
from dysl_ros.model.hf_decoder import DecoderParts, DecoderVLA, load_weights, save_weights
from dysl_ros.model.model_dir import (
    BACKBONE_FILE,
    CONFIG_FILE,
    DECODER_DIR,
    DYSL_CONFIG_FILE,
    DYSL_FILES,
    EMBED_WEIGHTS,
    HEAD_WEIGHTS,
    HF_DECODER,
    MODULES_CONFIG_FILE,
    MODULES_FILE,
    PLAN_FILE,
    VARIANTS_DIR,
    WEIGHTS_FILE,
    ModelDirError,
    PolicyBundle,
    check_dirs,
    dysl_files,
    is_model_dir,
    load_dims,
    load_spec,
    model_hash,
    read_backbone_description,
    read_dysl_settings,
    resolve_dirs,
)
from dysl_ros.model.observation_spec import BackboneDims, ObservationSpec
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import DySLModules, SkipModuleConfig
from dysl_ros.model.spec import VLAConfig

__all__ = [  # the layout's names, re-exported for the offline tools
    "BACKBONE_FILE",
    "CONFIG_FILE",
    "DYSL_CONFIG_FILE",
    "DYSL_FILES",
    "HF_DECODER",
    "MODULES_CONFIG_FILE",
    "MODULES_FILE",
    "PLAN_FILE",
    "VARIANTS_DIR",
    "WEIGHTS_FILE",
    "ModelDirError",
    "PolicyBundle",
    "backbone_description",
    "build_model",
    "is_model_dir",
    "load_backbone",
    "load_bundle",
    "load_dims",
    "load_dysl_files",
    "load_modules",
    "load_spec",
    "model_hash",
    "read_backbone_description",
    "resolve_dirs",
    "save_decoder_vla",
    "save_dysl",
    "save_model",
]


def build_model(config: VLAConfig, backbone: dict[str, Any]) -> VLABackbone:
    kind = backbone.get("kind")
    if kind == "reference":
        return ReferenceVLA(config)
    if kind == "hf_llama":
        from transformers import LlamaConfig, LlamaModel

        decoder = LlamaModel(LlamaConfig(**backbone["llama_config"]))
        return HFLlamaVLA(config, decoder)
    raise ModelDirError(f"unknown backbone kind {kind!r} (expected 'reference' or 'hf_llama')")


def backbone_description(model: VLABackbone) -> dict[str, Any]:
    """What ``backbone.json`` records, or ModelDirError for a backbone this package cannot rebuild."""
    if isinstance(model, DecoderVLA):
        return dict(model.description)
    if isinstance(model, HFLlamaVLA):
        return {"kind": "hf_llama", "llama_config": model.llama_config}
    if isinstance(model, ReferenceVLA):
        return {"kind": "reference"}
    raise ModelDirError(
        f"save_model cannot describe a {type(model).__name__}: a model directory must be rebuildable from its files. "
        "Bring your own model as embed + Hugging Face decoder + head with `dysl_train import` "
        "(docs/bring_your_model.md): entry points for your embed and head, their weights, the decoder checkpoint "
        "and an observation spec"
    )


def save_model(model: VLABackbone, model_dir: str | Path, dtype: torch.dtype = torch.float16) -> None:
    """Write ``model`` as a model directory (an imported model: its spec, embed, head and decoder
    weights, the decoder's config.json kept)."""
    description = backbone_description(model)
    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, DecoderVLA):
        save_decoder_vla(model, path, dtype)
        return
    model.config.save(path / CONFIG_FILE)  # type: ignore[attr-defined]
    (path / BACKBONE_FILE).write_text(json.dumps(description, indent=2) + "\n")
    save_weights(model, path / WEIGHTS_FILE, dtype)  # type: ignore[arg-type]


def save_dysl(
    model_dir: str | Path,
    plan: LayerPlan,
    modules: DySLModules | None = None,
    dysl_config: DySLConfig | None = None,
    dtype: torch.dtype = torch.float16,
) -> None:
    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    plan.save(path / PLAN_FILE)
    if modules is not None:
        modules.config.save(path / MODULES_CONFIG_FILE)
        save_weights(modules, path / MODULES_FILE, dtype)
    if dysl_config is not None:
        (path / DYSL_CONFIG_FILE).write_text(json.dumps(dysl_config.to_dict(), indent=2) + "\n")


def load_bundle(
    model_dir: str | Path,
    modules_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    ignore_stale_modules: bool = False,
    lazy: bool = False,
) -> PolicyBundle:
    """Load on the CPU in ``dtype`` (fp32 by default; backends move and cast). An imported model is
    read part by part in ``dtype``, never whole in fp32. ``modules_dir``: take the layer plan, DySL
    modules and settings from there (a variant, e.g. ``<model_dir>/variants/no_static``) instead of
    ``model_dir``; it must hold a plan and modules that fit the model. ``ignore_stale_modules``: DySL
    modules trained for another layer plan than the directory's are left out (with a note on stderr)
    instead of refused: calibrate and distill replace them. ``lazy``: the backbone's and the modules'
    weights are read on the bundle's first ``model`` / ``modules`` access, not now (engine backends
    never access them)."""
    path, variant = check_dirs(model_dir, modules_dir)
    model = None if lazy else load_backbone(path, dtype)
    spec, dims = (load_spec(path), load_dims(path)) if model is None else (model.spec, model.dims)
    dysl_dir, plan, dysl_config, has_modules = dysl_files(path, variant, dims)
    modules = None
    if has_modules and not lazy:
        modules = load_dysl_modules(dysl_dir, dims, ignore_stale_modules)
        has_modules = modules is not None
    bundle = PolicyBundle(
        path, spec, dims, plan, dysl_config, variant, has_modules,
        partial(load_backbone, path, dtype), partial(load_modules, dysl_dir, dims),
    )
    bundle._model = model.eval() if model is not None else None  # type: ignore[attr-defined]
    bundle._modules = modules
    return bundle


def load_backbone(path: Path, dtype: torch.dtype = torch.float32) -> VLABackbone:
    """The model of ``path`` (reference kinds, or an imported ``hf_decoder``) in ``dtype``, on the CPU."""
    description = read_backbone_description(path)
    if description.get("kind") == HF_DECODER:
        try:
            return DecoderParts(path, description, ObservationSpec.load(path)).build(dtype)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{path}: {exc}") from exc
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ModelDirError(f"model_dir {path} has no {name}: is this a dysl_ros model directory?")
    try:
        config = VLAConfig.load(path / CONFIG_FILE)
    except (ConfigError, json.JSONDecodeError, TypeError) as exc:
        raise ModelDirError(f"{path}: bad {CONFIG_FILE}: {exc}") from exc
    try:
        model = build_model(config, description)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{path}: {BACKBONE_FILE} does not fit {CONFIG_FILE}: {exc}") from exc
    load_weights(model, path / WEIGHTS_FILE, "configured model", ModelDirError)  # type: ignore[arg-type]
    return model.to(dtype) if dtype != torch.float32 else model  # type: ignore[attr-defined,no-any-return]


def load_dysl_files(
    path: Path, dims: BackboneDims, ignore_stale_modules: bool = False
) -> tuple[LayerPlan | None, DySLModules | None, DySLConfig | None]:
    """The layer plan, DySL modules and settings in ``path`` (each None when absent)."""
    plan, dysl_config = read_dysl_settings(path, dims)
    modules = load_dysl_modules(path, dims, ignore_stale_modules) if plan is not None else None
    return plan, modules, dysl_config


def load_modules(path: Path, dims: BackboneDims) -> DySLModules:
    """The DySL modules (controllers, adapters) in ``path``; ModelDirError when missing or stale."""
    modules = load_dysl_modules(path, dims)
    if modules is None:
        raise ModelDirError(f"{path} has no DySL modules ({MODULES_FILE} with {PLAN_FILE})")
    return modules


def load_dysl_modules(path: Path, dims: BackboneDims, ignore_stale_modules: bool = False) -> DySLModules | None:
    """The DySL modules of ``path``'s layer plan (None without a plan or modules file). Modules that do
    not fit the plan are a ModelDirError, or left out (None, a note on stderr) with
    ``ignore_stale_modules``."""
    plan, _ = read_dysl_settings(path, dims)
    if plan is None or not (path / MODULES_FILE).is_file():
        return None
    skip_file = path / MODULES_CONFIG_FILE
    try:
        skip_config = SkipModuleConfig.load(skip_file) if skip_file.is_file() else SkipModuleConfig()
    except (ConfigError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path}: bad DySL files: {exc}") from exc
    modules = DySLModules(dims.hidden_size, plan, skip_config)
    try:
        load_weights(modules, path / MODULES_FILE, "DySL modules of the layer plan", ModelDirError)
    except ModelDirError as exc:
        if not ignore_stale_modules:
            raise ModelDirError(
                f"{exc}; were they trained for another layer plan than {path / PLAN_FILE}'s static layers "
                f"{list(plan.static_layers)}? Distil them again (dysl_train distill)"
            ) from exc
        print(f"note: {path / MODULES_FILE} does not fit the layer plan (another plan's modules): left out",
              file=sys.stderr)
        return None
    return modules


def save_decoder_vla(model: DecoderVLA, path: Path, dtype: torch.dtype) -> None:
    """An imported model after training (``dysl_train bc``): its embed, head and decoder weights."""
    model.spec.save(path)
    (path / BACKBONE_FILE).write_text(json.dumps(model.description, indent=2) + "\n")
    save_weights(model.embed, path / EMBED_WEIGHTS, dtype)
    save_weights(model.head.head, path / HEAD_WEIGHTS, dtype)
    decoder = nn.ModuleDict({"layers": nn.ModuleList(block.layer for block in model.blocks), "norm": model.head.norm})
    (path / DECODER_DIR).mkdir(exist_ok=True)
    model.decoder_config.to_json_file(str(path / DECODER_DIR / "config.json"))
    tokenizer = model.spec.tokenizer
    if tokenizer.kind == "huggingface" and model.spec.model_dir is not None:
        source, target = model.spec.model_dir / tokenizer.path, path / tokenizer.path
        if source.resolve() != target.resolve():
            shutil.copytree(source, target, dirs_exist_ok=True)
    for old in (path / DECODER_DIR).glob("*.safetensors*"):
        if old.name != "model.safetensors":
            old.unlink()  # shards of the imported checkpoint: replaced by the one file below
    save_weights(decoder, path / DECODER_DIR / "model.safetensors", dtype)
