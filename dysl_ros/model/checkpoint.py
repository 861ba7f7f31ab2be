"""A model directory: the trained VLA and, once distilled, its DySL modules.

<model_dir>/
  backbone.json              {"kind": "reference"}, {"kind": "hf_llama", "llama_config": {...}}, or
                             {"kind": "hf_decoder", ...}: your embed and head around a Hugging Face
                             decoder (``hf_decoder.py``: observation_spec.yaml, decoder/,
                             embed.safetensors, head.safetensors instead of the next two)
  vla_config.json            VLAConfig: shapes, token layout, normalisation
  model.safetensors          the VLA weights (fp16 when shipped)
  layer_plan.json            static/dynamic layers and the calibration similarities   (after calibrate)
  dysl_modules.json          SkipModuleConfig                                          (after distill)
  dysl_modules.safetensors   controllers + adapters                                    (after distill)
  dysl.json                  DySLConfig the modules were tuned with                    (after distill)
  variants/<name>/           other DySL modules for the same backbone (ablations, lambda sweeps, the
                             per-layer router): only layer_plan.json, dysl_modules.json,
                             dysl_modules.safetensors, dysl.json (+ training reports), never the backbone

A modules directory (``load_bundle(model_dir, modules_dir)``) replaces the model directory's own DySL
files. A directory laid out as ``<model_dir>/variants/<name>/`` (DySL files, no vla_config.json) also
loads on its own, as ``load_bundle(<model_dir>/variants/<name>)``: its backbone is the one two levels up.
That is what lets engines be built for a variant (``build_engines --model-dir <model_dir>/variants/<name>``)
without a copy of the backbone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.backbone import HFLlamaVLA, VLABackbone
from dysl_ros.model.hf_decoder import (
    DECODER_DIR,
    EMBED_WEIGHTS,
    HEAD_WEIGHTS,
    DecoderParts,
    DecoderVLA,
    load_weights,
    save_weights,
)
from dysl_ros.model.hf_decoder import KIND as HF_DECODER
from dysl_ros.model.observation_spec import SPEC_FILE, BackboneDims, ObservationSpec
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import DySLModules, SkipModuleConfig
from dysl_ros.model.spec import VLAConfig

BACKBONE_FILE = "backbone.json"
CONFIG_FILE = "vla_config.json"
WEIGHTS_FILE = "model.safetensors"
PLAN_FILE = "layer_plan.json"
MODULES_CONFIG_FILE = "dysl_modules.json"
MODULES_FILE = "dysl_modules.safetensors"
DYSL_CONFIG_FILE = "dysl.json"
VARIANTS_DIR = "variants"
DYSL_FILES = (PLAN_FILE, MODULES_CONFIG_FILE, MODULES_FILE, DYSL_CONFIG_FILE)
"""What a modules directory holds (besides training reports)."""


class ModelDirError(RuntimeError):
    """A model directory is missing, incomplete or inconsistent; the message says what and where."""


@dataclass
class PolicyBundle:
    model_dir: Path
    spec: ObservationSpec
    dims: BackboneDims
    plan: LayerPlan | None
    modules: DySLModules | None
    dysl_config: DySLConfig | None
    modules_dir: Path | None = None
    """Where the DySL files came from when not ``model_dir`` (a variant's modules directory)."""
    load_model: Callable[[], VLABackbone] | None = field(default=None, repr=False, compare=False)
    """Reads the backbone's weights (``model``'s first use)."""
    _model: VLABackbone | None = field(default=None, repr=False, compare=False)

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> VLABackbone:
        """The backbone in memory, in eval mode: read on first use, so a policy on engines never holds
        the torch weights (a 7B decoder's would be tens of GB)."""
        if self._model is None:
            if self.load_model is None:
                raise ModelDirError(f"{self.model_dir}: this bundle has no backbone to load")
            self._model = self.load_model()
            self._model.eval()  # type: ignore[attr-defined]
        return self._model

    @property
    def has_dysl(self) -> bool:
        return self.plan is not None and self.modules is not None


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


def resolve_dirs(model_dir: str | Path, modules_dir: str | Path | None = None) -> tuple[Path, Path | None]:
    """(backbone directory, modules directory or None). ``model_dir`` may itself be a variant
    directory ``<model>/variants/<name>`` (DySL files, no backbone): then the backbone is ``<model>``."""
    path = Path(model_dir)
    if modules_dir is not None:
        return path, Path(modules_dir)
    if not is_model_dir(path) and (path / PLAN_FILE).is_file():
        parent = path.resolve().parent
        if parent.name == VARIANTS_DIR and is_model_dir(parent.parent):
            return parent.parent, path
    return path, None


def is_model_dir(path: Path) -> bool:
    """A directory with a backbone: the reference kinds' vla_config.json, or an imported model's
    backbone.json (which has no vla_config.json)."""
    return (path / CONFIG_FILE).is_file() or (path / BACKBONE_FILE).is_file()


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
    instead of refused: calibrate and distill replace them. ``lazy``: the backbone's weights are read
    on the bundle's first ``model`` access, not now (engine backends never access it)."""
    path, variant = resolve_dirs(model_dir, modules_dir)
    if not path.is_dir():
        raise ModelDirError(f"model_dir {path} does not exist or is not a directory")
    if variant is not None:
        if not variant.is_dir():
            raise ModelDirError(f"modules_dir {variant} does not exist or is not a directory")
        missing = [name for name in (PLAN_FILE, MODULES_FILE) if not (variant / name).is_file()]
        if missing:
            raise ModelDirError(
                f"modules_dir {variant} has no {' and no '.join(missing)}: train it with "
                f"`dysl_train distill --model-dir {path} --modules-out {variant}` (or `dysl_train router`)"
            )
    model = None if lazy else load_backbone(path, dtype)
    spec, dims = (load_spec(path), load_dims(path)) if model is None else (model.spec, model.dims)
    dysl_dir = variant if variant is not None else path
    try:
        plan, modules, dysl_config = load_dysl_files(dysl_dir, dims, ignore_stale_modules)
    except (ConfigError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{dysl_dir}: bad DySL files: {exc}") from exc
    bundle = PolicyBundle(path, spec, dims, plan, modules, dysl_config, variant, partial(load_backbone, path, dtype))
    if model is not None:
        bundle._model = model.eval()  # type: ignore[attr-defined]
    return bundle


def read_backbone_description(path: Path) -> dict[str, Any]:
    backbone_file = path / BACKBONE_FILE
    if not backbone_file.is_file():
        return {"kind": "reference"}
    try:
        description = json.loads(backbone_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{backbone_file} is not readable JSON: {exc}") from exc
    if not isinstance(description, dict):
        raise ModelDirError(f"{backbone_file} must hold a JSON object")
    return description


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


def load_spec(model_dir: str | Path) -> ObservationSpec:
    """The model's observation spec, without loading its weights."""
    path, _ = resolve_dirs(model_dir)
    try:
        if read_backbone_description(path).get("kind") == HF_DECODER:
            return ObservationSpec.load(path)
        return VLAConfig.load(path / CONFIG_FILE).observation_spec()
    except (OSError, ConfigError, json.JSONDecodeError, TypeError) as exc:
        raise ModelDirError(f"{path}: cannot read the model's observation spec: {exc}") from exc


def load_dims(model_dir: str | Path) -> BackboneDims:
    """The backbone's sizes, without loading its weights."""
    path, _ = resolve_dirs(model_dir)
    try:
        description = read_backbone_description(path)
        if description.get("kind") == HF_DECODER:
            return DecoderParts(path, description, ObservationSpec.load(path)).dims
        return VLAConfig.load(path / CONFIG_FILE).dims()
    except (OSError, ConfigError, KeyError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{path}: cannot read the backbone's sizes: {exc}") from exc


def load_dysl_files(
    path: Path, dims: BackboneDims, ignore_stale_modules: bool = False
) -> tuple[LayerPlan | None, DySLModules | None, DySLConfig | None]:
    """The layer plan, DySL modules and settings in ``path`` (each None when absent)."""
    plan = LayerPlan.load(path / PLAN_FILE) if (path / PLAN_FILE).is_file() else None
    if plan is not None and plan.num_layers != dims.num_layers:
        raise ModelDirError(f"{path / PLAN_FILE} plans {plan.num_layers} layers, the model has {dims.num_layers}")
    modules = None
    if plan is not None and (path / MODULES_FILE).is_file():
        skip_file = path / MODULES_CONFIG_FILE
        skip_config = SkipModuleConfig.load(skip_file) if skip_file.is_file() else SkipModuleConfig()
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
            modules = None
    dysl_config = None
    if (path / DYSL_CONFIG_FILE).is_file():
        dysl_config = DySLConfig.from_dict(json.loads((path / DYSL_CONFIG_FILE).read_text()))
    return plan, modules, dysl_config


def model_hash(model_dir: str | Path, modules_dir: str | Path | None = None) -> str:
    """sha256 over the files that define the policy: engines built from another hash are stale.
    With a modules directory (or a variant directory as ``model_dir``) its DySL files count instead
    of the model directory's."""
    digest = hashlib.sha256()
    path, variant = resolve_dirs(model_dir, modules_dir)
    dysl_dir = variant if variant is not None else path
    files = [
        path / BACKBONE_FILE, path / CONFIG_FILE, path / WEIGHTS_FILE,
        path / SPEC_FILE, path / EMBED_WEIGHTS, path / HEAD_WEIGHTS,
        *((path / DECODER_DIR / "config.json"), *sorted((path / DECODER_DIR).glob("*.safetensors"))),
        dysl_dir / PLAN_FILE, dysl_dir / MODULES_CONFIG_FILE, dysl_dir / MODULES_FILE,
    ]
    for file in files:
        if file.is_file():
            digest.update(file.name.encode())
            with file.open("rb") as stream:  # in blocks: a decoder checkpoint can be gigabytes
                for block in iter(lambda: stream.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()


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
