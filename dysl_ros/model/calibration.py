"""Per-layer input/output cosine similarity (paper Section 3.1): how much each layer changes the
hidden states. The least similar layers are the informative ones and become static."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.backbone import VLABackbone


@torch.inference_mode()
def layer_similarities(model: VLABackbone, batches: Iterable[Mapping[str, Tensor]]) -> list[float]:
    """Mean over tokens and samples of cos(x_i, layer_i(x_i)), for every layer i.

    Each batch holds the embed's inputs (``model.spec.input_names``) on the model's device.
    """
    num_layers = len(model.layers)
    totals = torch.zeros(num_layers, dtype=torch.float64)
    count = 0
    for batch in batches:
        x = model.embed(*(batch[name] for name in model.spec.input_names))
        for i, layer in enumerate(model.layers):
            y = layer(x)
            totals[i] += F.cosine_similarity(x.float(), y.float(), dim=-1).double().sum().cpu()
            x = y
        count += x.shape[0] * x.shape[1]
    if count == 0:
        raise ValueError("no calibration batches given")
    return (totals / count).tolist()


def calibrate(model: VLABackbone, batches: Iterable[Mapping[str, Tensor]], static_ratio: float) -> LayerPlan:
    return LayerPlan.from_similarities(layer_similarities(model, batches), static_ratio)
