"""Skipping-allow points (paper Eq. 2-3), one per gap between static layers.

Dynamic layers in front of a gap's allow point always run; from the allow point on, the skip
controllers are consulted. On a continuity drop the points jump forward fast (stride
ceil(|dC| / eta), up to the static layer: the whole gap runs); on recovering continuity they walk
back one layer per inference. Fast to protect, slow to relax.
"""

from __future__ import annotations

import math
from typing import Sequence

from dysl_ros.core.layer_plan import Gap, LayerPlan


class AllowPoints:
    def __init__(self, plan: LayerPlan, eta: float) -> None:
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        self.gaps: tuple[Gap, ...] = plan.gaps
        self.eta = eta
        self._points = [gap.start for gap in self.gaps]

    @property
    def points(self) -> tuple[int, ...]:
        return tuple(self._points)

    def reset(self) -> None:
        """Back to the start of every gap: controllers consulted from the first dynamic layer."""
        self._points = [gap.start for gap in self.gaps]

    def close_all(self) -> None:
        """Every point at its static layer: nothing may be skipped (dense inference)."""
        self._points = [gap.static for gap in self.gaps]

    def set(self, points: Sequence[int]) -> None:
        if len(points) != len(self.gaps):
            raise ValueError(f"expected {len(self.gaps)} allow points, got {len(points)}")
        for point, gap in zip(points, self.gaps, strict=True):
            if not gap.start <= point <= gap.static:
                raise ValueError(f"allow point {point} outside its gap [{gap.start}, {gap.static}]")
        self._points = list(points)

    def update(self, delta: float) -> tuple[int, ...]:
        """Move every point for a continuity change ``delta`` = C_t - C_{t-1}; returns the new points."""
        if delta < -self.eta:
            # Rounded first so that an exact multiple of eta is not pushed up by float noise.
            stride = math.ceil(round(-delta / self.eta, 9))
            self._points = [min(p + stride, gap.static) for p, gap in zip(self._points, self.gaps, strict=True)]
        elif delta > self.eta:
            self._points = [max(p - 1, gap.start) for p, gap in zip(self._points, self.gaps, strict=True)]
        return self.points
