"""Recorded DySL decisions of a closed-loop run, so the latency benchmark replays DySL's real skip
pattern (verifications included) instead of a guessed one.

File format (JSON): ``{"format": "dysl-decision-trace/2", "model": <model hash or name>,
"num_layers": L, "static_layers": [...], "ticks": [{"allow_points": [...], "skipped_from":
[layer | null per gap], "verified": bool, "reran": bool, "discarded_skipped_from": [layer | null
per gap] | null}, ...]}``. On a re-run tick ``skipped_from`` is the kept dense pass's (all null) and
``discarded_skipped_from`` where the discarded skipping pass jumped. ``dysl-decision-trace/1`` files
(no ``discarded_skipped_from``) still load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dysl_ros.core.runner import TickResult

FORMAT = "dysl-decision-trace/2"
READABLE_FORMATS = ("dysl-decision-trace/1", FORMAT)


@dataclass(frozen=True)
class TickDecision:
    allow_points: tuple[int, ...]
    skipped_from: tuple[int | None, ...]
    """Per gap: the dynamic layer whose adapter jumped to the static layer, or None (ran it all)."""
    verified: bool
    reran: bool
    discarded_skipped_from: tuple[int | None, ...] | None = None
    """On a re-run tick: where the discarded skipping pass (run with ``allow_points``) jumped. None
    elsewhere, and on re-run ticks of a version-1 trace, which did not record it."""

    @classmethod
    def from_tick(cls, tick: TickResult) -> TickDecision:
        # On a re-run, skipped_from describes the dense pass that was kept; the discarded skipping pass
        # used tick.allow_points. Replaying "skipping pass, then the dense rest" is what the tick cost.
        return cls(tick.allow_points, tick.skipped_from, tick.verified, tick.reran, tick.discarded_skipped_from)


@dataclass
class DecisionTrace:
    model: str
    num_layers: int
    static_layers: tuple[int, ...]
    ticks: list[TickDecision] = field(default_factory=list)

    def append(self, tick: TickResult) -> None:
        self.ticks.append(TickDecision.from_tick(tick))

    def save(self, path: str | Path) -> None:
        data = {
            "format": FORMAT,
            "model": self.model,
            "num_layers": self.num_layers,
            "static_layers": list(self.static_layers),
            "ticks": [asdict(t) for t in self.ticks],
        }
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)  # as --markdown and --plot: no run lost to a missing folder
        file.write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> DecisionTrace:
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read decision trace {path}: {exc}") from exc
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{path} is not a {FORMAT} file (format: {data.get('format')!r})")
        ticks = [
            TickDecision(
                tuple(int(a) for a in t["allow_points"]),
                _skips(t["skipped_from"]),
                bool(t["verified"]),
                bool(t["reran"]),
                None if t.get("discarded_skipped_from") is None else _skips(t["discarded_skipped_from"]),
            )
            for t in data["ticks"]
        ]
        return cls(str(data["model"]), int(data["num_layers"]), tuple(int(s) for s in data["static_layers"]), ticks)


def _skips(values: list[Any]) -> tuple[int | None, ...]:
    return tuple(None if v is None else int(v) for v in values)
