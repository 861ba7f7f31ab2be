"""A head of one's own that fails: NaN chunks on demand (for the node's fault tests).

Loaded by the node from the model directory's entry point ``nan_head:make_head`` (the test puts this
directory on the node's PYTHONPATH). The torch backend calls it once per head pass (warm-up and
verification re-runs included); once the file ``trigger`` exists, the next ``nan_count`` passes return
NaN. A file rather than a call count: the test fails the model once the arm is being served, however
long start-up took on a loaded machine."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dysl_ros.model.observation_spec import ObservationSpec
from dysl_ros.model.parts import QueryHead


class NanHead(QueryHead):
    def __init__(self, spec: ObservationSpec, hidden_size: int, trigger: str, nan_count: int) -> None:
        super().__init__(spec, hidden_size)
        self.trigger, self.nan_left = Path(trigger), nan_count
        self.triggered = False

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        self.triggered = self.triggered or self.trigger.exists()
        if self.triggered and self.nan_left > 0:
            self.nan_left -= 1
            return torch.full_like(out, float("nan"))
        return out


def make_head(spec: ObservationSpec, hidden_size: int, trigger: str = "", nan_count: int = 0) -> NanHead:
    return NanHead(spec, hidden_size, trigger or "/nonexistent/nan_head_trigger", nan_count)
