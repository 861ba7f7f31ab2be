"""Which backbone layers are static (always run) and which are dynamic (skippable).

Paper Section 3.2: a layer whose output differs most from its input (lowest input/output cosine
similarity) carries the most information and is kept static. The last layer is always static so
that every skip lands on a real layer. A *gap* is the run of dynamic layers in front of a static
layer; skipping jumps from inside a gap straight to its static layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
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


LOWEST_SIMILARITY = "lowest_similarity"
EXPLICIT = "explicit"


@dataclass(frozen=True)
class LayerPlan:
    num_layers: int
    static_layers: tuple[int, ...]
    similarities: tuple[float, ...] | None = None
    rule: str = field(default=LOWEST_SIMILARITY, compare=False)
    """How the static layers were chosen, as recorded in layer_plan.json: ``lowest_similarity``,
    ``lowest_similarity, max_gap N`` or ``explicit``."""

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
    def from_similarities(
        cls, similarities: Sequence[float], static_ratio: float, max_gap: int | None = None
    ) -> LayerPlan:
        """Static = the lowest-similarity layers, ``round(static_ratio * L)`` of them (at least 1),
        always including the last layer. With ``max_gap``: the set of that many layers (more only
        if that many cannot do it) with the lowest total similarity such that no gap holds more than
        ``max_gap`` dynamic layers, so the skipping spreads over the depth."""
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
        if max_gap is not None:
            if isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 1:
                raise ConfigError(f"max_gap must be an integer >= 1, got {max_gap!r}")
            static = _lowest_with_max_gap(sims, num_static, max_gap)
            return cls(num_layers, static, tuple(sims), f"{LOWEST_SIMILARITY}, max_gap {max_gap}")
        by_information = sorted(range(last), key=lambda i: (sims[i], i))
        static_list = sorted([last, *by_information[: num_static - 1]])
        return cls(num_layers=num_layers, static_layers=tuple(static_list), similarities=tuple(sims))

    @classmethod
    def explicit(
        cls, num_layers: int, static_layers: Sequence[int], similarities: Sequence[float] | None = None
    ) -> LayerPlan:
        """The static layers as given (the last layer must be among them)."""
        sims = None if similarities is None else tuple(float(s) for s in similarities)
        return cls(num_layers, tuple(int(i) for i in static_layers), sims, EXPLICIT)

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
            "rule": self.rule,
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
                rule=str(data.get("rule", LOWEST_SIMILARITY)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed layer plan: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LayerPlan:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _lowest_with_max_gap(sims: Sequence[float], count: int, max_gap: int) -> tuple[int, ...]:
    """The static set with the lowest total similarity, ``count`` layers or the fewest more that keep
    every gap at most ``max_gap`` long, the last layer always in it (dynamic programming over the
    position of the previous static layer)."""
    num_layers = len(sims)
    last = num_layers - 1
    needed = -(-num_layers // (max_gap + 1))  # fewest static layers any placement needs
    for size in range(max(count, needed), num_layers + 1):
        # best[k][j]: lowest total similarity of k static layers ending at layer j, all gaps <= max_gap.
        inf = float("inf")
        best = [[inf] * num_layers for _ in range(size + 1)]
        came = [[-1] * num_layers for _ in range(size + 1)]
        for j in range(min(max_gap + 1, num_layers)):
            best[1][j] = sims[j]
        for k in range(2, size + 1):
            for j in range(num_layers):
                for i in range(max(0, j - max_gap - 1), j):
                    total = best[k - 1][i] + sims[j]
                    if total < best[k][j]:
                        best[k][j], came[k][j] = total, i
        if best[size][last] < inf:
            chosen, j = [], last
            for k in range(size, 0, -1):
                chosen.append(j)
                j = came[k][j]
            return tuple(sorted(chosen))
    raise ConfigError(f"no plan keeps every gap within {max_gap} layers")  # cannot happen: all static fits
