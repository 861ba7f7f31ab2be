"""Your own VLA: your embed, a Hugging Face decoder stack, your head.

    hidden = embed(camera_1, ..., camera_n, instruction, proprio)      your module: (1, T, d)
    hidden = layer_i(hidden)  for every decoder layer                   transformers, from a checkpoint
    actions = head(norm(hidden))                                        your module: (1, horizon, A)

A model directory of this kind (written by ``import_model``, ``dysl_train import``):

    backbone.json           {"kind": "hf_decoder", "family": "qwen2", "num_tokens": T, "embed": {...}, "head": {...}}
    observation_spec.yaml   cameras, state, actions, tokenizer (``observation_spec.py``)
    decoder/                the checkpoint's config.json and safetensors (decoder layers + final norm are read)
    embed.safetensors       your embed's weights
    head.safetensors        your head's weights
    tokenizer/              optional: a Hugging Face tokenizer the spec points at

``embed`` and ``head`` are named by entry points, ``package.module:factory``, called as
``factory(spec, hidden_size, **kwargs)`` and returning an ``nn.Module``; the package must be
importable wherever the model runs (the robot too). The decoder runs with causal attention, as it
was pretrained, with rotary tables and the mask precomputed for the fixed token count ``T``.
Families tested: llama (grouped-query attention, Llama-3 rotary scaling), qwen2, mistral, gemma.
A decoder layer that needs more than (hidden, mask, rotary tables) (Gemma 2/3's alternating
sliding windows, for example) is refused by ``FAMILIES``.
"""

from __future__ import annotations

import copy
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dysl_ros.core.config import ConfigError
from dysl_ros.model.backbone import HFDecoderLayer
from dysl_ros.model.model_dir import (  # the layout's names, re-exported
    DECODER_DIR as DECODER_DIR,
)
from dysl_ros.model.model_dir import (
    EMBED_WEIGHTS as EMBED_WEIGHTS,
)
from dysl_ros.model.model_dir import (
    FAMILIES as FAMILIES,
)
from dysl_ros.model.model_dir import (
    HEAD_WEIGHTS as HEAD_WEIGHTS,
)
from dysl_ros.model.model_dir import (
    HF_DECODER as HF_DECODER,
)
from dysl_ros.model.model_dir import decoder_config_json
from dysl_ros.model.observation_spec import BackboneDims, ObservationSpec

if TYPE_CHECKING:
    from transformers import PretrainedConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModulePart:
    """Your embed or head: an entry point ``package.module:factory`` and the keyword arguments it
    takes besides ``(spec, hidden_size)``."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, spec: ObservationSpec, hidden_size: int) -> nn.Module:
        factory = load_entry_point(self.factory)
        try:
            module = factory(spec, hidden_size, **self.kwargs)
        except Exception as exc:  # the factory is the user's code: say whose call failed
            raise ConfigError(f"{self.factory}(spec, {hidden_size}, **{self.kwargs}) failed: {exc}") from exc
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{self.factory} returned {type(module).__name__}, not a torch.nn.Module")
        return module

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": self.kwargs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModulePart:
        return cls(str(data["factory"]), dict(data.get("kwargs") or {}))


def load_entry_point(name: str) -> Callable[..., Any]:
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"entry point {name!r} must read package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"entry point {name!r}: cannot import {module_name} ({exc}); install the package") from exc
    target = getattr(module, attribute, None)
    if not callable(target):
        raise ConfigError(f"entry point {name!r}: {module_name} has no callable {attribute}")
    return target  # type: ignore[no-any-return]


class NormedHead(nn.Module):
    """The decoder's final norm, then your head: DySL's last layer is static, so every skip lands on
    a real layer and the norm sees what it was trained on."""

    def __init__(self, norm: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.norm(x))
        return out


class DecoderVLA(nn.Module):
    """Embed -> Hugging Face decoder layers -> final norm + head, as the three kinds of segment DySL
    schedules. ``description`` is what ``backbone.json`` records of it."""

    def __init__(
        self,
        spec: ObservationSpec,
        embed: nn.Module,
        blocks: list[HFDecoderLayer],
        head: NormedHead,
        description: dict[str, Any],
        decoder_config: PretrainedConfig,
    ) -> None:
        super().__init__()
        self._spec = spec
        self.description = description
        self.decoder_config = decoder_config
        """The checkpoint's transformers config (written back by ``save_model``)."""
        self.embed = embed
        self.layers = nn.ModuleList(blocks)
        self.head = head
        self.blocks = blocks
        """The same layers, typed: each a transformers decoder layer with its rotary tables and mask."""
        self._dims = BackboneDims(len(blocks), int(description["hidden_size"]), int(description["num_tokens"]))

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    @property
    def dims(self) -> BackboneDims:
        return self._dims

    def forward(self, *inputs: Tensor) -> Tensor:
        x = self.embed(*inputs)
        for layer in self.layers:
            x = layer(x)
        out: Tensor = self.head(x)
        return out


# ------------------------------------------------------------------------------------------ loading


def decoder_config(decoder_dir: Path) -> PretrainedConfig:
    from transformers import AutoConfig

    decoder_config_json(decoder_dir)  # the family check, with the same words as the robot's reading
    config = AutoConfig.from_pretrained(str(decoder_dir), local_files_only=True)
    config._attn_implementation = "sdpa"  # the explicit float mask below works with it and exports to ONNX
    return config


def rotary_tables(config: PretrainedConfig, num_tokens: int) -> tuple[Tensor, Tensor]:
    """cos, sin of the decoder's rotary embedding (scaling included) at positions 0..T-1, fp32."""
    from transformers import AutoModel

    with torch.device("meta"):
        structure = AutoModel.from_config(config)
    rope = type(structure.rotary_emb)(config=config)  # its inv_freq is computed on the CPU, not on meta
    probe = torch.zeros(1, num_tokens, config.hidden_size)
    with torch.no_grad():
        cos, sin = rope(probe, torch.arange(num_tokens)[None])
    return cos.float(), sin.float()


def decoder_weight_files(decoder_dir: Path) -> list[Path]:
    files = sorted(decoder_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{decoder_dir} holds no *.safetensors weights")
    return files


def decoder_tensors(decoder_dir: Path, wanted: Callable[[str], str | None]) -> dict[str, Tensor]:
    """The decoder checkpoint's tensors that ``wanted`` maps to a name (None: skip), read one by one
    from the safetensors files (memory-mapped), so a segment's weights load without the others'."""
    found: dict[str, Tensor] = {}
    for file in decoder_weight_files(decoder_dir):
        with safe_open(str(file), framework="pt") as handle:  # type: ignore[no-untyped-call]
            for key in handle.keys():
                name = wanted(key)
                if name is not None:
                    found[name] = handle.get_tensor(key)
    return found


def _strip_base(key: str) -> str:
    """Checkpoint key -> the bare decoder's: ``model.layers.0...`` (a *ForCausalLM) -> ``layers.0...``."""
    return key[len("model.") :] if key.startswith("model.") else key


def save_weights(module: nn.Module, file: Path, dtype: torch.dtype) -> None:
    """``module``'s state as safetensors on the CPU: floating tensors in ``dtype``, integer buffers as
    they are (an index in fp16 is exact only up to 2048)."""
    tensors = {
        name: tensor.detach().to("cpu", dtype if tensor.is_floating_point() else tensor.dtype).contiguous()
        for name, tensor in module.state_dict().items()
    }
    save_file(tensors, str(file))


def load_weights(module: nn.Module, file: Path, what: str, error: type[Exception] = ConfigError) -> None:
    """Loads the safetensors ``file`` into ``module`` (cast to its dtypes) once every name and shape
    matched, so a file of another model says so rather than loading part-way; ``error`` names ``what``."""
    if not file.is_file():
        raise error(f"{file} is missing: the weights of the {what}")
    try:
        tensors = load_file(str(file))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise error(f"cannot read {file}: {exc}") from exc
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise error(
            f"{file} does not fit the {what}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {wrong[:5]}"
        )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})


class DecoderParts:
    """One imported model's pieces, built one at a time (``build_engines`` exports segment by
    segment, so a large model never needs all its weights in fp32 at once)."""

    def __init__(self, model_dir: Path, description: dict[str, Any], spec: ObservationSpec) -> None:
        self.model_dir = model_dir
        self.description = description
        self.spec = spec
        self.decoder_dir = model_dir / DECODER_DIR
        self.config = decoder_config(self.decoder_dir)
        self.num_tokens = int(description["num_tokens"])
        self.hidden_size = int(self.config.hidden_size)
        self.num_layers = int(self.config.num_hidden_layers)
        self.rotary = rotary_tables(self.config, self.num_tokens)
        self.embed_part = ModulePart.from_dict(description["embed"])
        self.head_part = ModulePart.from_dict(description["head"])

    @property
    def dims(self) -> BackboneDims:
        return BackboneDims(self.num_layers, self.hidden_size, self.num_tokens)

    def embed(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        module = self.embed_part.build(self.spec, self.hidden_size)
        load_weights(module, self.model_dir / EMBED_WEIGHTS, f"embed {self.embed_part.factory} builds")
        return module.to(dtype).eval()

    def head(self, dtype: torch.dtype = torch.float32) -> NormedHead:
        head = self.head_part.build(self.spec, self.hidden_size)
        load_weights(head, self.model_dir / HEAD_WEIGHTS, f"head {self.head_part.factory} builds")
        norm = copy.deepcopy(self._structure().norm).to_empty(device="cpu")
        self._load(norm, lambda key: key[len("norm.") :] if key.startswith("norm.") else None, "final norm")
        return NormedHead(norm, head).to(dtype).eval()

    def layer(self, index: int, dtype: torch.dtype = torch.float32) -> HFDecoderLayer:
        """Decoder layer ``index`` as a hidden -> hidden block, its weights read from the checkpoint."""
        # A copy of the meta layer: materialising the structure's own would keep every layer alive.
        layer = copy.deepcopy(self._structure().layers[index]).to_empty(device="cpu")
        prefix = f"layers.{index}."
        self._load(layer, lambda key: key[len(prefix) :] if key.startswith(prefix) else None, f"layer {index}")
        cos, sin = self.rotary
        return HFDecoderLayer(layer.to(dtype), cos, sin).eval()

    def build(self, dtype: torch.dtype = torch.float32) -> DecoderVLA:
        """The whole model in ``dtype``: each part is read and cast on its own (no full fp32 copy)."""
        blocks = [self.layer(i, dtype) for i in range(self.num_layers)]
        return DecoderVLA(
            self.spec, self.embed(dtype), blocks, self.head(dtype), self.description, self.config
        ).eval()

    def _structure(self) -> Any:
        from transformers import AutoModel

        if not hasattr(self, "_meta"):
            with torch.device("meta"):  # shapes only: parameters are materialised part by part
                self._meta = AutoModel.from_config(self.config)
        return self._meta

    def _load(self, module: nn.Module, rename: Callable[[str], str | None], what: str) -> None:
        tensors = decoder_tensors(self.decoder_dir, lambda key: rename(_strip_base(key)))
        expected = module.state_dict()
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ConfigError(f"{self.decoder_dir}: the checkpoint lacks the {what}'s weights {missing[:5]}")
        module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items() if k in expected})


# ------------------------------------------------------------------------------------------ import


def import_model(
    out_dir: str | Path,
    *,
    decoder_dir: str | Path,
    spec: ObservationSpec,
    embed: ModulePart,
    head: ModulePart,
    embed_weights: str | Path | None = None,
    head_weights: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a model directory from a Hugging Face decoder checkpoint, your embed and head (entry
    points + safetensors weights; None: the factory's own initialisation, e.g. to train them with
    ``dysl_train bc``), an observation spec and optionally a tokenizer directory. The decoder's
    weights are copied as they are; ``dtype`` is what ``embed``/``head`` weights are stored in."""
    import shutil

    out = Path(out_dir)
    source = Path(decoder_dir)
    config = decoder_config(source)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if tokenizer_dir is not None and (spec.tokenizer.kind, spec.tokenizer.path) != ("huggingface", "tokenizer"):
        raise ConfigError("with a tokenizer directory, the spec's tokenizer is {kind: huggingface, path: tokenizer}")
    hidden_size = int(config.hidden_size)
    modules = {}
    for part, weights, what in ((embed, embed_weights, "embed"), (head, head_weights, "head")):
        module = part.build(spec, hidden_size)
        if weights is not None:
            load_weights(module, Path(weights), f"{what} {part.factory} builds")
        modules[what] = module.float().eval()
    num_tokens = probe_tokens(modules["embed"], spec, hidden_size)
    probe_head(modules["head"], spec, hidden_size, num_tokens)

    out.mkdir(parents=True, exist_ok=True)
    target = out / DECODER_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for file in [source / "config.json", *decoder_weight_files(source), *source.glob("*.safetensors.index.json")]:
        shutil.copy2(file, target / file.name)
    if tokenizer_dir is not None:
        if (out / "tokenizer").exists():
            shutil.rmtree(out / "tokenizer")
        shutil.copytree(tokenizer_dir, out / "tokenizer")
        check_tokenizer(out / "tokenizer", spec.tokenizer.length)
    for what, weights_file in (("embed", EMBED_WEIGHTS), ("head", HEAD_WEIGHTS)):
        save_weights(modules[what], out / weights_file, DTYPES[dtype])
    description = {
        "kind": HF_DECODER,
        "family": config.model_type,
        "hidden_size": hidden_size,
        "num_layers": int(config.num_hidden_layers),
        "num_tokens": num_tokens,
        "embed": embed.to_dict(),
        "head": head.to_dict(),
    }
    spec.save(out)
    (out / "backbone.json").write_text(json.dumps(description, indent=2) + "\n")
    return out


TOKENIZER_PROBES = (
    "put the red block in the bowl",
    "Open the DRAWER, then push the button  twice!",
    "",
    "a long instruction that names every step: reach the mug, grasp its handle, lift it ten centimetres, "
    "carry it to the left of the plate and put it down gently without spilling",
)


def check_tokenizer(path: Path, length: int) -> None:
    """The robot reads the tokenizer with the ``tokenizers`` package alone
    (``observation_spec.load_hf_tokenizer``): refuse one whose ids there differ from transformers'."""
    from transformers import AutoTokenizer

    from dysl_ros.model.observation_spec import load_hf_tokenizer

    reference = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if reference.pad_token_id is None:
        raise ConfigError(f"the tokenizer in {path} has no pad token: set one before importing the model")
    robot = load_hf_tokenizer(path, length)
    for text in TOKENIZER_PROBES:
        expected = list(reference(text, padding="max_length", truncation=True, max_length=length)["input_ids"])
        if robot.encode(text).ids != expected:
            raise ConfigError(
                f"the tokenizer in {path} gives other ids through the tokenizers package (what dysl_node uses) "
                f"than through transformers for {text!r}: {robot.encode(text).ids} vs {expected}. Save it as a "
                "fast tokenizer whose tokenizer.json holds its whole pipeline (post-processor included)"
            )


def probe_head(head: nn.Module, spec: ObservationSpec, hidden_size: int, num_tokens: int) -> None:
    """The head must map (1, T, hidden_size) to the spec's (1, horizon, action_dim)."""
    try:
        with torch.no_grad():
            out = head(torch.zeros(1, num_tokens, hidden_size))
    except Exception as exc:
        raise ConfigError(f"the head failed on (1, {num_tokens}, {hidden_size}) hidden states: {exc}") from exc
    expected = (1, spec.horizon, spec.action_dim)
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(f"the head must return {expected} (horizon x actions of the spec), got {shape}")


def probe_tokens(embed: nn.Module, spec: ObservationSpec, hidden_size: int) -> int:
    """Run the embed once on zeros: it must return (1, T, hidden_size); T is fixed from then on."""
    inputs = [torch.zeros(shape, dtype=torch.int64 if kind == "int64" else torch.float32)
              for shape, kind in spec.input_shapes().values()]
    try:
        with torch.no_grad():
            out = embed(*inputs)
    except Exception as exc:
        raise ConfigError(f"the embed failed on inputs {list(spec.input_names)}: {exc}") from exc
    if not isinstance(out, Tensor) or out.ndim != 3 or out.shape[0] != 1 or out.shape[2] != hidden_size:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(
            f"the embed must return (1, T, {hidden_size}) hidden states for inputs {list(spec.input_names)}, "
            f"got {shape}"
        )
    return int(out.shape[1])
