"""Which backbone layers are static (always run) and which are dynamic (skippable).

Paper Section 3.2: a layer whose output differs most from its input (lowest input/output cosine
similarity) carries the most information and is kept static. The last layer is always static so
that every skip lands on a real layer. A *gap* is the run of dynamic layers in front of a static
layer; skipping jumps from inside a gap straight to its static layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dysl_ros.core.config import ConfigError


@dataclass(frozen=True)
class Gap:
    """Dynamic layers ``start .. static-1`` in front of static layer ``static``.

    ``start`` is the layer after the previous static layer (0 for the first gap, whose predecessor is
    the embedding). A gap may be empty (``start == static``) when two static layers are adjacent.
    Allow points of this gap live in ``[start, static]``.
    """

    start: int
    static: int

    @property
    def dynamic_layers(self) -> range:
        return range(self.start, self.static)

    def __len__(self) -> int:
        return self.static - self.start


@dataclass(frozen=True)
class LayerPlan:
    num_layers: int
    static_layers: tuple[int, ...]
    similarities: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ConfigError(f"a layer plan needs at least one layer, got num_layers={self.num_layers}")
        static = tuple(self.static_layers)
        if list(static) != sorted(set(static)):
            raise ConfigError(f"static_layers must be strictly increasing, got {list(static)}")
        if not static or static[0] < 0 or static[-1] != self.num_layers - 1:
            raise ConfigError(
                f"static_layers must lie in [0, {self.num_layers - 1}] and end with the last layer "
                f"({self.num_layers - 1}) so every skip lands on a real layer; got {list(static)}"
            )
        if self.similarities is not None and len(self.similarities) != self.num_layers:
            raise ConfigError(f"similarities has {len(self.similarities)} entries for {self.num_layers} layers")

    @classmethod
    def from_similarities(cls, similarities: Sequence[float], static_ratio: float) -> LayerPlan:
        """Static = the lowest-similarity layers, ``round(static_ratio * L)`` of them (at least 1),
        always including the last layer."""
        sims = [float(s) for s in similarities]
        if not sims:
            raise ConfigError("no layer similarities given")
        if any(not math.isfinite(s) for s in sims):
            raise ConfigError(f"layer similarities must be finite, got {sims}")
        if not 0.0 < static_ratio < 1.0:
            raise ConfigError(f"static_ratio must lie in (0, 1), got {static_ratio}")
        num_layers = len(sims)
        num_static = min(num_layers, max(1, round(static_ratio * num_layers)))
        last = num_layers - 1
        by_information = sorted(range(last), key=lambda i: (sims[i], i))
        static = sorted([last, *by_information[: num_static - 1]])
        return cls(num_layers=num_layers, static_layers=tuple(static), similarities=tuple(sims))

    @classmethod
    def dense(cls, num_layers: int) -> LayerPlan:
        """Every layer static: nothing can be skipped."""
        return cls(num_layers=num_layers, static_layers=tuple(range(num_layers)))

    @classmethod
    def last_layer_only(cls, num_layers: int) -> LayerPlan:
        """Only the last layer static: one gap over the whole stack (the 'no static layers' ablation)."""
        return cls(num_layers=num_layers, static_layers=(num_layers - 1,))

    @property
    def gaps(self) -> tuple[Gap, ...]:
        starts = (0, *(s + 1 for s in self.static_layers[:-1]))
        return tuple(Gap(start, static) for start, static in zip(starts, self.static_layers, strict=True))

    @property
    def dynamic_layers(self) -> tuple[int, ...]:
        static = set(self.static_layers)
        return tuple(i for i in range(self.num_layers) if i not in static)

    def gap_of(self, layer: int) -> Gap:
        """The gap a layer belongs to (a static layer belongs to the gap it closes)."""
        for gap in self.gaps:
            if gap.start <= layer <= gap.static:
                return gap
        raise IndexError(f"layer {layer} outside [0, {self.num_layers - 1}]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "static_layers": list(self.static_layers),
            "dynamic_layers": list(self.dynamic_layers),
            "similarities": None if self.similarities is None else list(self.similarities),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerPlan:
        try:
            sims = data.get("similarities")
            return cls(
                num_layers=int(data["num_layers"]),
                static_layers=tuple(int(i) for i in data["static_layers"]),
                similarities=None if sims is None else tuple(float(s) for s in sims),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed layer plan: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LayerPlan:
        return cls.from_dict(json.loads(Path(path).read_text()))
