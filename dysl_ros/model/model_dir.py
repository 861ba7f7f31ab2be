"""A model directory as the robot reads it, without torch: its layout, the observation spec, the
backbone's sizes, the layer plan and DySL settings, and the hash that engines are checked against.

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

A modules directory (``open_bundle(model_dir, modules_dir)``) replaces the model directory's own DySL
files. A directory laid out as ``<model_dir>/variants/<name>/`` (DySL files, no vla_config.json) also
opens on its own: its backbone is the one two levels up. That is what lets engines be built for a
variant (``build_engines --model-dir <model_dir>/variants/<name>``) without a copy of the backbone.

Serving from engines needs only what this module reads. The weights (the backbone, the controllers
and adapters) are torch objects: ``checkpoint.py`` reads them, and a ``PolicyBundle`` loads them on
first use through the loaders it was opened with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.observation_spec import SPEC_FILE, BackboneDims, ObservationSpec
from dysl_ros.model.spec import VLAConfig

if TYPE_CHECKING:
    from dysl_ros.model.backbone import VLABackbone
    from dysl_ros.model.skip_modules import DySLModules

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

HF_DECODER = "hf_decoder"
"""``backbone.json`` kind of an imported model: your embed and head around a Hugging Face decoder."""
DECODER_DIR = "decoder"
EMBED_WEIGHTS = "embed.safetensors"
HEAD_WEIGHTS = "head.safetensors"
FAMILIES = ("llama", "qwen2", "mistral", "gemma")
"""transformers ``model_type``s whose decoder layers run as plain hidden -> hidden blocks here."""


class ModelDirError(RuntimeError):
    """A model directory is missing, incomplete or inconsistent; the message says what and where."""


@dataclass
class PolicyBundle:
    """What a policy is made of: the model's spec, sizes, layer plan and DySL settings, read now, and
    its torch weights (backbone, DySL modules), read on first use by ``load_model`` / ``load_modules``
    (a policy on engines never reads them, so it needs no torch)."""

    model_dir: Path
    spec: ObservationSpec
    dims: BackboneDims
    plan: LayerPlan | None
    dysl_config: DySLConfig | None
    modules_dir: Path | None = None
    """Where the DySL files came from when not ``model_dir`` (a variant's modules directory)."""
    has_modules: bool = False
    """The DySL modules (controllers, adapters) are there: loaded, or in the directory to be loaded."""
    load_model: Callable[[], VLABackbone] | None = field(default=None, repr=False, compare=False)
    """Reads the backbone's weights (``model``'s first use)."""
    load_modules: Callable[[], DySLModules] | None = field(default=None, repr=False, compare=False)
    """Reads the DySL modules' weights (``modules``' first use)."""
    _model: VLABackbone | None = field(default=None, repr=False, compare=False)
    _modules: DySLModules | None = field(default=None, repr=False, compare=False)

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
    def modules(self) -> DySLModules | None:
        """The controllers and adapters (None without them), in eval mode: read on first use."""
        if not self.has_modules:
            return None
        if self._modules is None:
            if self.load_modules is None:
                raise ModelDirError(f"{self.dysl_dir}: this bundle has no DySL modules to load")
            self._modules = self.load_modules()
        return self._modules

    @property
    def dysl_dir(self) -> Path:
        return self.modules_dir if self.modules_dir is not None else self.model_dir

    @property
    def has_dysl(self) -> bool:
        return self.plan is not None and self.has_modules


def open_bundle(
    model_dir: str | Path,
    modules_dir: str | Path | None = None,
    *,
    load_model: Callable[[Path], VLABackbone] | None = None,
    load_modules: Callable[[Path, BackboneDims], DySLModules] | None = None,
) -> PolicyBundle:
    """The bundle of ``model_dir`` (``modules_dir``: take the layer plan, DySL modules and settings from
    there instead, see ``resolve_dirs``) with no weights read. ``load_model(backbone_dir)`` and
    ``load_modules(dysl_dir, dims)`` read them when first asked for (``checkpoint.load_backbone``
    and ``checkpoint.load_modules``); without them, asking is a ModelDirError."""
    path, variant = check_dirs(model_dir, modules_dir)
    spec, dims = load_spec(path), load_dims(path)
    dysl_dir, plan, dysl_config, has_modules = dysl_files(path, variant, dims)
    return PolicyBundle(
        path, spec, dims, plan, dysl_config, variant, has_modules,
        partial(load_model, path) if load_model is not None else None,
        partial(load_modules, dysl_dir, dims) if load_modules is not None else None,
    )


def dysl_files(
    path: Path, variant: Path | None, dims: BackboneDims
) -> tuple[Path, LayerPlan | None, DySLConfig | None, bool]:
    """Where the DySL files are (the variant's directory, else the model's), their layer plan and
    settings, and whether modules are there to load."""
    dysl_dir = variant if variant is not None else path
    plan, dysl_config = read_dysl_settings(dysl_dir, dims)
    return dysl_dir, plan, dysl_config, plan is not None and (dysl_dir / MODULES_FILE).is_file()


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


def check_dirs(model_dir: str | Path, modules_dir: str | Path | None = None) -> tuple[Path, Path | None]:
    """``resolve_dirs``, with a ModelDirError for a directory that is not there or a modules directory
    without a layer plan and modules."""
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
    return path, variant


def is_model_dir(path: Path) -> bool:
    """A directory with a backbone: the reference kinds' vla_config.json, or an imported model's
    backbone.json (which has no vla_config.json)."""
    return (path / CONFIG_FILE).is_file() or (path / BACKBONE_FILE).is_file()


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
            config = decoder_config_json(path / DECODER_DIR)
            return BackboneDims(
                int(config["num_hidden_layers"]), int(config["hidden_size"]), int(description["num_tokens"])
            )
        return VLAConfig.load(path / CONFIG_FILE).dims()
    except (OSError, ConfigError, KeyError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{path}: cannot read the backbone's sizes: {exc}") from exc


def decoder_config_json(decoder_dir: Path) -> dict[str, Any]:
    """The decoder checkpoint's ``config.json``, its family checked against ``FAMILIES``."""
    file = decoder_dir / "config.json"
    if not file.is_file():
        raise ConfigError(f"{decoder_dir} has no config.json: give a Hugging Face checkpoint directory")
    config = json.loads(file.read_text())
    if not isinstance(config, dict):
        raise ConfigError(f"{file} must hold a JSON object")
    family = config.get("model_type", "")
    if family not in FAMILIES:
        raise ConfigError(
            f"{decoder_dir}: decoder family {family!r} is not supported (supported: {', '.join(FAMILIES)}); its "
            "layers must run as hidden -> hidden blocks given a mask and rotary tables"
        )
    return config


def read_dysl_settings(path: Path, dims: BackboneDims) -> tuple[LayerPlan | None, DySLConfig | None]:
    """The layer plan and DySL settings in ``path`` (each None when absent)."""
    try:
        plan = LayerPlan.load(path / PLAN_FILE) if (path / PLAN_FILE).is_file() else None
        dysl_config = None
        if (path / DYSL_CONFIG_FILE).is_file():
            dysl_config = DySLConfig.from_dict(json.loads((path / DYSL_CONFIG_FILE).read_text()))
    except (ConfigError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path}: bad DySL files: {exc}") from exc
    if plan is not None and plan.num_layers != dims.num_layers:
        raise ModelDirError(f"{path / PLAN_FILE} plans {plan.num_layers} layers, the model has {dims.num_layers}")
    return plan, dysl_config


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
