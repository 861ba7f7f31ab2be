"""DySL settings shared by training, every backend and the node.

All thresholds act on actions in the policy's normalised action space ([-1, 1] per dimension),
so the same values work for any robot whose actions are normalised that way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from dysl_ros.params import boolean, integer_at_least, number_in, param, positive, problems


class ConfigError(ValueError):
    """A setting is out of its valid range; the message names the setting and the range."""


@dataclass(frozen=True)
class DySLConfig:
    """Knobs of dynamic-static layer skipping (paper Sections 3.2-3.3), each declared here once:
    dysl_node's parameters, dysl_bench's and dysl_train's flags derive from these fields."""

    static_ratio: float = param(
        0.2,
        "Fraction of the backbone layers kept static (always executed).",
        number_in(0, 1, open_low=True, open_high=True),
    )
    k: int = param(
        5, "Actions in the continuity window (Eq. 1).", integer_at_least(1, " (actions in the continuity window)")
    )
    eta: float = param(
        0.02,
        "Continuity-change threshold moving the allow points (Eq. 2-3); also the unit of their forward stride "
        "ceil(|dC| / eta).",
        positive,
    )
    eta_verify: float = param(0.05, "Continuity-drop threshold of post-skip verification.", positive)
    skip_threshold: float = param(
        0.5, "A consulted controller skips to the next static layer when its probability is >= this.",
        number_in(0, 1, open_low=True),
    )
    enable_pre_skip: bool = param(
        True, "Move the allow points with continuity (off: controllers decide everywhere).", boolean
    )
    enable_post_verify: bool = param(True, "Re-run densely on the first step of a continuity drop.", boolean)

    def __post_init__(self) -> None:
        found = problems(self)
        if found:
            raise ConfigError("; ".join(found))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DySLConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown DySL setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))
