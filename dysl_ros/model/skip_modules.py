"""DySL's trainable parts: one skip controller and one adapter per dynamic layer (paper Section 3.2).

Controller i reads x_i (the input of dynamic layer i), mean-pooled over tokens, and gives the
probability of skipping to the gap's static layer. Adapter i maps x_i, token by token, to an
estimate of that static layer's input. Both are tiny next to the frozen backbone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dysl_ros.core.config import ConfigError
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.reference_vla import RMSNorm

MAX_PARAMETER_RATIO = 0.02
"""Controllers + adapters may hold at most this fraction of the backbone's parameters."""


@dataclass(frozen=True)
class SkipModuleConfig:
    adapter_bottleneck: int = 12
    controller_hidden: int = 8

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SkipModuleConfig:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return cls(**data)


class Controller(nn.Module):
    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1))

    def logits(self, x: Tensor) -> Tensor:
        pooled = x.float().mean(dim=1)  # pool in fp32: fp16 sums over ~100 tokens lose precision
        return self.net(pooled.to(next(self.net.parameters()).dtype)).float().squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> skip probability (B,)."""
        return torch.sigmoid(self.logits(x))


class Adapter(nn.Module):
    """Residual bottleneck MLP, zero-initialised on the way up so it starts as the identity
    (skipping a gap then means 'the skipped layers changed nothing', the natural prior)."""

    def __init__(self, hidden_size: int, bottleneck: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden_size, eps)
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(nn.functional.gelu(self.down(self.norm(x))))


class DySLModules(nn.Module):
    """Controllers and adapters keyed by dynamic-layer index."""

    def __init__(self, hidden_size: int, plan: LayerPlan, config: SkipModuleConfig | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.config = config or SkipModuleConfig()
        layers = plan.dynamic_layers
        self.controllers = nn.ModuleDict(
            {str(i): Controller(hidden_size, self.config.controller_hidden) for i in layers}
        )
        self.adapters = nn.ModuleDict({str(i): Adapter(hidden_size, self.config.adapter_bottleneck) for i in layers})

    def controller(self, layer: int) -> Controller:
        module = self.controllers[str(layer)]
        assert isinstance(module, Controller)
        return module

    def adapter(self, layer: int) -> Adapter:
        module = self.adapters[str(layer)]
        assert isinstance(module, Adapter)
        return module

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def parameter_report(backbone_parameters: int, modules: DySLModules) -> dict[str, float]:
    """Trainable DySL parameters against the backbone's; raises if over the 2 % budget."""
    dysl = modules.num_parameters()
    ratio = dysl / backbone_parameters
    report = {"backbone_parameters": backbone_parameters, "dysl_parameters": dysl, "ratio": ratio}
    if ratio > MAX_PARAMETER_RATIO:
        raise ConfigError(
            f"controllers + adapters hold {dysl:,} parameters, {ratio:.2%} of the backbone's "
            f"{backbone_parameters:,}: over the {MAX_PARAMETER_RATIO:.0%} budget. Lower "
            "adapter_bottleneck or controller_hidden."
        )
    return report
