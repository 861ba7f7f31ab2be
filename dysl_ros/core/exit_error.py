"""How far an exit's action chunk lands from the dense chunk: the label of the controllers' stage-3
fit (dysl_ros.training.distill) and the oracle's test (dysl_ros.bench.variants.OracleExitBackend).

- ``absolute``: mean |chunk - dense| over the chunk's actions and dimensions (normalised actions).
- ``relative``: the same divided by the dense chunk's own mean |action| (at least ``RELATIVE_FLOOR``).
  An absolute tolerance is loose where the policy moves little: Meta-World reach's chunks are a
  quarter or less of the other tasks' in size (docs/experiments.md), so a deviation that is small in
  absolute terms turns the hand off its course there. Measured against the motion it perturbs, the
  same deviation counts as large.

Written with operators that numpy arrays and torch tensors share, so that training and the bench
compute one definition. Shapes (..., chunk_len, action_dim) -> (...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dysl_ros.params import non_negative, one_of, optional, param

EXIT_MEASURES: tuple[str, ...] = ("absolute", "relative")
RELATIVE_FLOOR = 0.02
"""Smallest dense-chunk size a relative error divides by (a still arm would make any deviation huge)."""


@dataclass(frozen=True)
class ExitRule:
    """The two settings of an exit test, declared once: the oracle's (``dysl_bench --oracle-*``) and
    stage 3's (``dysl_train distill --exit-*``) fields derive from them."""

    tolerance: float | None = param(
        None, "Tolerance on the exit error between a jump's chunk and the dense chunk.", optional(non_negative)
    )
    measure: str = param(
        "absolute",
        "The exit error: mean |chunk - dense chunk| in normalised actions (absolute), or that divided by the "
        "dense chunk's mean |action| (relative: a deviation counts against the motion it perturbs).",
        one_of(EXIT_MEASURES),
    )


def relative_scale(dense: Any) -> Any:
    """What a ``relative`` error divides the absolute one by: the dense chunk's mean |action|, at
    least RELATIVE_FLOOR."""
    return abs(dense).mean(axis=(-2, -1)).clip(min=RELATIVE_FLOOR)


def exit_error(chunk: Any, dense: Any, measure: str = "absolute") -> Any:
    """Deviation of ``chunk`` from ``dense`` by ``measure`` (one of EXIT_MEASURES)."""
    if measure not in EXIT_MEASURES:
        raise ValueError(f"exit measure must be one of {EXIT_MEASURES}, got {measure!r}")
    error = abs(chunk - dense).mean(axis=(-2, -1))
    if measure == "relative":
        error = error / relative_scale(dense)
    return error
