"""Trajectory continuity (paper Eq. 1) and the post-skip verification trigger.

Actions are built from 3-4-5 triangles so every step norm is an exact integer: ||(3, 4)|| = 5,
||(6, 8)|| = 10, ||(0, 0)|| = 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dysl_ros.core.continuity import (
    ContinuityMonitor,
    ContinuityReading,
    continuity_deltas,
    is_first_drop,
    suggest_etas,
)


def test_known_sequence_gives_hand_computed_continuity() -> None:
    monitor = ContinuityMonitor(k=3)  # window: the last 4 actions, 3 differences

    # a0 = (0, 0). One action, no difference yet: perfectly smooth; first reading has delta 0.
    r = monitor.push([[0.0, 0.0]])
    assert r == ContinuityReading(continuity=0.0, delta=0.0)

    # a1 = (3, 4). Differences: |a1 - a0| = 5. Only one available -> C = -5 / 1 = -5.
    r = monitor.push([[3.0, 4.0]])
    assert r.continuity == -5.0
    assert r.delta == -5.0  # -5 - 0

    # a2 = (3, 4), a3 = (6, 8). Window a0..a3, differences 5, 0, 5 -> C = -(5 + 0 + 5) / 3 = -10/3.
    r = monitor.push([[3.0, 4.0], [6.0, 8.0]])
    assert r.continuity == pytest.approx(-10.0 / 3.0, abs=1e-12)
    assert r.delta == pytest.approx(-10.0 / 3.0 - (-5.0), abs=1e-12)  # = +5/3

    # a4 = (6, 8), a5 = (6, 8). Window is the last 4: a2..a5 = (3,4), (6,8), (6,8), (6,8);
    # differences 5, 0, 0 -> C = -5/3. a0 and a1 have left the window.
    r = monitor.push([[6.0, 8.0], [6.0, 8.0]])
    assert r.continuity == pytest.approx(-5.0 / 3.0, abs=1e-12)
    assert r.delta == pytest.approx(-5.0 / 3.0 - (-10.0 / 3.0), abs=1e-12)  # = +5/3
    assert monitor.last_continuity == r.continuity
    assert monitor.last_delta == r.delta

    # a6 = (12, 16). Window a3..a6: (6,8), (6,8), (6,8), (12,16); differences 0, 0, 10 -> C = -10/3.
    r = monitor.push([12.0, 16.0])  # a single 1-D action is one row
    assert r.continuity == pytest.approx(-10.0 / 3.0, abs=1e-12)
    assert r.delta == pytest.approx(-10.0 / 3.0 + 5.0 / 3.0, abs=1e-12)  # = -5/3


def test_chunk_is_appended_after_history_in_execution_order() -> None:
    # History (0, 0). Chunk (3, 4), (0, 0): differences 5, 5 -> C = -5.
    forward = ContinuityMonitor(k=2)
    forward.push([[0.0, 0.0]])
    assert forward.push([[3.0, 4.0], [0.0, 0.0]]).continuity == -5.0

    # Same actions, chunk rows swapped: (0, 0), (3, 4): differences 0, 5 -> C = -2.5.
    swapped = ContinuityMonitor(k=2)
    swapped.push([[0.0, 0.0]])
    assert swapped.push([[0.0, 0.0], [3.0, 4.0]]).continuity == -2.5


def test_long_chunk_uses_only_its_last_k_plus_one_actions() -> None:
    monitor = ContinuityMonitor(k=2)
    # Last 3 rows (0,0), (3,4), (3,4): differences 5, 0 -> C = -2.5.
    # (Taking the first 3 rows instead would give differences 50, 50 -> C = -50.)
    chunk = [[0.0, 0.0], [30.0, 40.0], [0.0, 0.0], [3.0, 4.0], [3.0, 4.0]]
    assert monitor.push(chunk).continuity == -2.5


def test_pushing_in_pieces_equals_pushing_at_once() -> None:
    actions = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [9.0, 12.0], [9.0, 12.0]])
    pieces = ContinuityMonitor(k=3)
    pieces.push(actions[:2])
    pieces.push(actions[2:3])
    at_once = ContinuityMonitor(k=3)
    # Last 4 actions (3,4), (3,4), (9,12), (9,12): differences 0, 10, 0 -> C = -10/3.
    assert pieces.push(actions[3:]).continuity == at_once.push(actions).continuity
    assert at_once.last_continuity == pytest.approx(-10.0 / 3.0, abs=1e-12)


def test_preview_does_not_change_state_but_push_does() -> None:
    monitor = ContinuityMonitor(k=2)
    monitor.push([[0.0, 0.0]])
    before = (monitor.last_continuity, monitor.last_delta)
    assert before == (0.0, 0.0)

    first = monitor.preview([[3.0, 4.0]])
    second = monitor.preview([[3.0, 4.0]])
    assert first == second == ContinuityReading(continuity=-5.0, delta=-5.0)
    assert (monitor.last_continuity, monitor.last_delta) == before

    # A different preview is still computed against the unchanged history.
    assert monitor.preview([[6.0, 8.0]]).continuity == -10.0

    pushed = monitor.push([[3.0, 4.0]])
    assert pushed == first
    assert (monitor.last_continuity, monitor.last_delta) == (-5.0, -5.0)
    # Now the history holds (0,0), (3,4): the same preview as before gives another answer.
    # (0,0), (3,4), (3,4): differences 5, 0 -> C = -2.5, delta = -2.5 - (-5) = +2.5.
    assert monitor.preview([[3.0, 4.0]]) == ContinuityReading(continuity=-2.5, delta=2.5)


def test_preview_on_a_fresh_monitor_has_zero_delta() -> None:
    monitor = ContinuityMonitor(k=1)
    reading = monitor.preview([[0.0, 0.0], [3.0, 4.0]])
    assert reading == ContinuityReading(continuity=-5.0, delta=0.0)
    assert monitor.last_delta is None
    assert monitor.last_continuity is None


def test_warm_up_averages_the_differences_available() -> None:
    monitor = ContinuityMonitor(k=4)  # full window: 5 actions, 4 differences
    assert monitor.push([0.0, 0.0]).continuity == 0.0  # 1 action: no difference
    assert monitor.push([3.0, 4.0]).continuity == -5.0  # differences [5] -> -5/1
    assert monitor.push([3.0, 4.0]).continuity == -2.5  # [5, 0] -> -5/2
    assert monitor.push([9.0, 12.0]).continuity == -5.0  # [5, 0, 10] -> -15/3
    assert monitor.push([9.0, 12.0]).continuity == -3.75  # [5, 0, 10, 0] -> -15/4
    # Sixth action: (0,0) leaves the window; [0, 10, 0, 10] -> -20/4.
    assert monitor.push([3.0, 4.0]).continuity == -5.0


def test_reset_forgets_history_and_previous_reading() -> None:
    monitor = ContinuityMonitor(k=2)
    monitor.push([[0.0, 0.0], [3.0, 4.0]])
    monitor.reset()
    assert monitor.last_continuity is None
    assert monitor.last_delta is None
    # One action after a reset: nothing to difference against, and delta 0 (first reading).
    assert monitor.push([[30.0, 40.0]]) == ContinuityReading(0.0, 0.0)


@pytest.mark.parametrize(
    "actions",
    [
        np.zeros((2, 2, 2)),  # 3-D
        np.zeros((0, 2)),  # no action
        np.float64(1.0),  # scalar
        [[0.0, math.nan]],
        [[math.inf, 0.0]],
        [[0.0, -math.inf]],
    ],
)
def test_bad_actions_raise_and_leave_state_alone(actions: object) -> None:
    monitor = ContinuityMonitor(k=2)
    monitor.push([[0.0, 0.0], [3.0, 4.0]])
    with pytest.raises(ValueError):
        monitor.preview(actions)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        monitor.push(actions)  # type: ignore[arg-type]
    assert monitor.last_continuity == -5.0
    assert monitor.last_delta == 0.0
    # History still only (0,0), (3,4): pushing (3,4) gives differences 5, 0 -> -2.5.
    assert monitor.push([[3.0, 4.0]]).continuity == -2.5


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        ContinuityMonitor(k=0)


def test_first_drop_fires_on_first_step_of_each_drop_only() -> None:
    eta_v = 0.05
    deltas = [0.0, -0.1, -0.2, -0.3, 0.0, 0.02, -0.1, -0.06, 0.1, -0.5]
    expected = [False, True, False, False, False, False, True, False, False, True]
    fired = []
    previous: float | None = None
    for delta in deltas:
        fired.append(is_first_drop(delta, previous, eta_v))
        previous = delta
    assert fired == expected


def test_first_drop_boundaries() -> None:
    eta_v = 0.25  # exact in binary, so the boundaries below are exact
    assert not is_first_drop(-0.25, 0.0, eta_v)  # exactly -eta_v is not a drop
    assert is_first_drop(-0.25000001, 0.0, eta_v)
    assert is_first_drop(-1.0, -0.25, eta_v)  # previous exactly -eta_v was not a drop
    assert not is_first_drop(-1.0, -0.2500001, eta_v)  # previous was a drop
    assert is_first_drop(-1.0, None, eta_v)  # no previous reading counts as no drop
    assert not is_first_drop(0.0, None, eta_v)


def test_first_drop_driven_by_a_monitor() -> None:
    # k = 1: C_t = -|a_t - a_{t-1}|. eta_v = 2.
    monitor = ContinuityMonitor(k=1)
    actions = [(0, 0), (0, 0), (3, 4), (9, 12), (9, 12), (9, 12), (12, 16)]
    # C:      0       0       -5      -10      0         0         -5
    # delta:  0       0       -5      -5       +10       0         -5
    # fires:  no      no      yes     no(prev) no        no        yes
    fired = []
    for action in actions:
        previous = monitor.last_delta
        reading = monitor.push([list(map(float, action))])
        fired.append(is_first_drop(reading.delta, previous, 2.0))
    assert fired == [False, False, True, False, False, False, True]


def test_continuity_deltas_follow_the_monitor_per_inference() -> None:
    # 1-D actions: steady steps of 1, then one jump of 5. k = 2, two actions per inference.
    trajectory = np.array([[0.0], [1.0], [2.0], [3.0], [8.0], [9.0]])
    deltas = continuity_deltas([trajectory], k=2, actions_per_inference=2)
    # inference 1: window [0,1] -> C=-1; inference 2: window [1,2,3] -> C=-1 (dC 0);
    # inference 3: window [3,8,9] -> diffs 5,1 -> C=-3 (dC -2).
    np.testing.assert_allclose(deltas, [0.0, -2.0])


def test_suggest_etas_takes_quantiles_of_changes_and_drops() -> None:
    deltas = np.array([-0.4, -0.1, 0.1, 0.2, -0.2, 0.05])
    eta, eta_verify = suggest_etas(deltas, eta_quantile=0.5, verify_quantile=0.5)
    assert eta == pytest.approx(float(np.median(np.abs(deltas))))  # 0.15
    assert eta_verify == pytest.approx(0.2)  # median of the drops 0.4, 0.1, 0.2
    with pytest.raises(ValueError, match="at least one continuity drop"):
        suggest_etas(np.array([0.1, 0.2]))
