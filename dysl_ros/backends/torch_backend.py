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
        self, model: VLABackbone, modules: DySLModules | None, device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model
        self.modules = modules
        model.embed.to(self.device, dtype).eval()  # type: ignore[attr-defined]
        model.layers.to(self.device, dtype).eval()
        model.head.to(self.device, dtype).eval()
        # Token ids stay integers; cameras and state take the model's dtype. In the embed's argument order.
        self._input_dtypes = {
            name: torch.long if kind == "int64" else dtype for name, (_, kind) in model.spec.input_shapes().items()
        }
        if modules is not None:
            modules.to(self.device, dtype).eval()

    @torch.inference_mode()
    def embed(self, inputs: ModelInputs) -> Tensor:
        tensors = [
            torch.as_tensor(inputs[name], device=self.device, dtype=dtype) for name, dtype in self._input_dtypes.items()
        ]
        out: Tensor = self.model.embed(*tensors)
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
