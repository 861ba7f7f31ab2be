"""Which action goes out each control period: elapsed steps skipped, stale chunks never used."""

from __future__ import annotations

import numpy as np
import pytest

from dysl_ros.node.action_stream import ActionSchedule

DT = 0.02
CHUNK = np.arange(8 * 2, dtype=float).reshape(8, 2)  # action k = [2k, 2k+1]


def schedule(on_stale: str = "hold", max_age: float = 0.5) -> ActionSchedule:
    return ActionSchedule(DT, max_age, on_stale, action_dim=2)


def test_steps_elapsed_during_inference_are_skipped_then_one_per_period() -> None:
    s = schedule()
    s.replace(10.0, CHUNK)
    first = s.next_action(10.0 + 0.065)  # 3 periods (and a bit) of inference latency
    assert first is not None and first.fresh and first.index == 3
    assert first.values.tolist() == CHUNK[3].tolist()
    later = [s.next_action(10.065 + DT * i) for i in range(1, 5)]
    assert [a.index for a in later if a] == [4, 5, 6, 7]


def test_exhausted_chunk_holds_last_action() -> None:
    s = schedule("hold")
    s.replace(0.0, CHUNK)
    for i in range(8):
        s.next_action(i * DT)
    held = s.next_action(8 * DT)
    assert held is not None and not held.fresh and held.values.tolist() == CHUNK[7].tolist()


def test_stale_chunk_is_never_used_even_with_actions_left() -> None:
    s = schedule("zero", max_age=0.1)
    s.replace(0.0, CHUNK)
    assert s.next_action(0.0).fresh  # type: ignore[union-attr]
    stale = s.next_action(0.15)
    assert stale is not None and not stale.fresh and stale.values.tolist() == [0.0, 0.0]
    assert stale.index == -1 and stale.source_stamp == 0.0


def test_hold_before_any_action_publishes_nothing_and_zero_publishes_zeros() -> None:
    assert schedule("hold").next_action(1.0) is None
    zero = schedule("zero").next_action(1.0)
    assert zero is not None and zero.values.tolist() == [0.0, 0.0]


def test_a_new_chunk_replaces_the_old_one() -> None:
    s = schedule()
    s.replace(0.0, CHUNK)
    s.next_action(0.0)
    s.replace(0.05, CHUNK + 100)
    nxt = s.next_action(0.05 + 0.021)
    assert nxt is not None and nxt.index == 1 and nxt.values.tolist() == (CHUNK[1] + 100).tolist()


def test_clear_and_validation() -> None:
    s = schedule("zero")
    s.replace(0.0, CHUNK)
    s.clear()
    assert not s.next_action(0.0).fresh  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="on_stale"):
        ActionSchedule(DT, 0.5, "drift", 2)
    assert s.elapsed_steps(1.0, 1.0 + 3 * DT) == 3  # exact multiples are not lost to float noise
