"""A head of one's own that fails: NaN chunks on chosen calls (for the node's fault tests).

Loaded by the node from the model directory's entry point ``nan_head:make_head`` (the test puts this
directory on the node's PYTHONPATH); the torch backend calls it once per head pass, so "call n" is
the n-th head pass since the process started (warm-up and verification re-runs included)."""

from __future__ import annotations

import torch
from torch import Tensor

from dysl_ros.model.observation_spec import ObservationSpec
from dysl_ros.model.parts import QueryHead


class NanHead(QueryHead):
    def __init__(self, spec: ObservationSpec, hidden_size: int, nan_from: int, nan_count: int) -> None:
        super().__init__(spec, hidden_size)
        self.nan_from, self.nan_count = nan_from, nan_count
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        self.calls += 1
        if self.nan_from <= self.calls < self.nan_from + self.nan_count:
            return torch.full_like(out, float("nan"))
        return out


def make_head(spec: ObservationSpec, hidden_size: int, nan_from: int = 10**9, nan_count: int = 0) -> NanHead:
    return NanHead(spec, hidden_size, nan_from, nan_count)
