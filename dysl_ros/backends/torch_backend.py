"""Eager PyTorch segments, on CPU or GPU: the reference executor every compiled backend is checked
against."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dysl_ros.core.runner import FloatArray, ModelInputs
from dysl_ros.model.backbone import VLABackbone
from dysl_ros.model.skip_modules import DySLModules


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        model: VLABackbone,
        modules: DySLModules | None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model
        self.modules = modules
        model.embed.to(self.device, dtype).eval()  # type: ignore[attr-defined]
        model.layers.to(self.device, dtype).eval()
        model.head.to(self.device, dtype).eval()
        if modules is not None:
            modules.to(self.device, dtype).eval()

    @torch.inference_mode()
    def embed(self, inputs: ModelInputs) -> Tensor:
        image = torch.as_tensor(inputs["image"], device=self.device, dtype=self.dtype)
        instruction = torch.as_tensor(inputs["instruction"], device=self.device, dtype=torch.long)
        proprio = torch.as_tensor(inputs["proprio"], device=self.device, dtype=self.dtype)
        out: Tensor = self.model.embed(image, instruction, proprio)
        return out

    @torch.inference_mode()
    def run_layers(self, start: int, stop: int, x: Tensor) -> Tensor:
        for layer in self.model.layers[start:stop]:
            x = layer(x)
        return x

    @torch.inference_mode()
    def adapt(self, layer: int, x: Tensor) -> Tensor:
        out: Tensor = self._modules().adapter(layer)(x)
        return out

    @torch.inference_mode()
    def skip_probability(self, layer: int, x: Tensor) -> float:
        return float(self._modules().controller(layer)(x)[0].item())

    @torch.inference_mode()
    def head(self, x: Tensor) -> FloatArray:
        chunk: Tensor = self.model.head(x)
        return np.asarray(chunk[0].float().cpu().numpy(), dtype=np.float32)

    def _modules(self) -> DySLModules:
        if self.modules is None:
            raise RuntimeError("this model has no DySL modules (controllers/adapters): run it dense")
        return self.modules
