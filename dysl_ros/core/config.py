"""DySL settings shared by training, every backend and the node.

All thresholds act on actions in the policy's normalised action space ([-1, 1] per dimension),
so the same values work for any robot whose actions are normalised that way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


class ConfigError(ValueError):
    """A setting is out of its valid range; the message names the setting and the range."""


@dataclass(frozen=True)
class DySLConfig:
    """Knobs of dynamic-static layer skipping (paper Sections 3.2-3.3).

    static_ratio:       fraction of the backbone layers kept static (always executed).
    k:                  actions in the continuity window of Eq. 1.
    eta:                continuity-change threshold of the allow points (Eq. 2-3); also the unit of
                        the forward stride ceil(|dC| / eta).
    eta_verify:         continuity-change threshold of post-skip verification.
    skip_threshold:     a consulted controller skips to the next static layer when p >= this.
    enable_pre_skip:    move the allow points with continuity (off: controllers decide everywhere).
    enable_post_verify: re-run densely on the first step of a continuity drop.
    """

    static_ratio: float = 0.2
    k: int = 5
    eta: float = 0.02
    eta_verify: float = 0.05
    skip_threshold: float = 0.5
    enable_pre_skip: bool = True
    enable_post_verify: bool = True

    def __post_init__(self) -> None:
        _check_open_interval("static_ratio", self.static_ratio, 0.0, 1.0)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k must be an integer >= 1 (actions in the continuity window), got {self.k!r}")
        _check_positive("eta", self.eta)
        _check_positive("eta_verify", self.eta_verify)
        _check_open_interval("skip_threshold", self.skip_threshold, 0.0, 1.0, closed_high=True)
        for name in ("enable_pre_skip", "enable_post_verify"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DySLConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown DySL setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive(name: str, value: object) -> None:
    if not _is_number(value) or float(value) <= 0.0:  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _check_open_interval(name: str, value: object, low: float, high: float, *, closed_high: bool = False) -> None:
    number = float(value) if _is_number(value) else math.nan  # type: ignore[arg-type]
    ok = low < number and (number <= high if closed_high else number < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ConfigError(f"{name} must lie in ({low}, {high}{bracket}, got {value!r}")
