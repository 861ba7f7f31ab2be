"""Skipping-allow points (paper Eq. 2-3): fast forward on a continuity drop, one step back on recovery."""

from __future__ import annotations

import math

import pytest

from dysl_ros.core.allow_points import AllowPoints
from dysl_ros.core.layer_plan import Gap, LayerPlan

ETA = 0.1

# 12 layers, static 5, 6, 11: gaps [0, 5] (5 dynamic layers), [6, 6] (empty), [7, 11] (4 dynamic layers).
PLAN = LayerPlan(num_layers=12, static_layers=(5, 6, 11))


def make() -> AllowPoints:
    return AllowPoints(PLAN, ETA)


def test_plan_shape_used_by_these_tests() -> None:
    assert PLAN.gaps == (Gap(0, 5), Gap(6, 6), Gap(7, 11))


def test_points_start_at_gap_starts() -> None:
    assert make().points == (0, 6, 7)


def test_drop_of_3_2_eta_moves_by_4_then_rise_of_2_eta_moves_back_by_1() -> None:
    allow = make()
    # ceil(3.2) = 4: 0 -> 4, empty gap stays 6, 7 -> 11 (exactly the static layer, no clamping needed).
    assert allow.update(-3.2 * ETA) == (4, 6, 11)
    assert allow.points == (4, 6, 11)
    # Recovery walks back one layer per update, whatever the size of the rise.
    assert allow.update(2 * ETA) == (3, 6, 10)
    assert allow.update(50 * ETA) == (2, 6, 9)


@pytest.mark.parametrize("delta", [0.0, 0.5 * ETA, -0.5 * ETA, -0.999 * ETA, 0.999 * ETA, -ETA, ETA])
def test_change_within_eta_does_not_move(delta: float) -> None:
    allow = make()
    allow.set((2, 6, 9))
    assert allow.update(delta) == (2, 6, 9)


def test_forward_clamps_at_static_layer() -> None:
    allow = make()
    allow.set((3, 6, 8))
    # ceil(4.5) = 5: 3 + 5 = 8 -> clamped to 5; 8 + 5 = 13 -> clamped to 11.
    assert allow.update(-4.5 * ETA) == (5, 6, 11)
    # Already at the static layers: another drop keeps them there.
    assert allow.update(-100.0) == (5, 6, 11)


def test_backward_clamps_at_gap_start() -> None:
    allow = make()
    allow.set((1, 6, 7))
    assert allow.update(2 * ETA) == (0, 6, 7)
    assert allow.update(2 * ETA) == (0, 6, 7)


def test_empty_gap_stays_put() -> None:
    allow = make()
    for delta in (-3.2 * ETA, -100.0, 2 * ETA, 2 * ETA, 2 * ETA, 0.0):
        assert allow.update(delta)[1] == 6


@pytest.mark.parametrize("eta", [0.1, 0.02, 0.05, 0.3, 0.7, 1e-3])
def test_exact_multiple_of_eta_moves_by_that_multiple(eta: float) -> None:
    # -3 * eta / eta is not always 3.0 in floating point (for eta = 0.1 it is 3.0000000000000004),
    # which a bare ceil would turn into 4.
    allow = AllowPoints(PLAN, eta)
    assert allow.update(-3 * eta) == (3, 6, 10)


def test_float_noise_guard_does_not_swallow_real_excess() -> None:
    allow = make()
    # 3.000001 eta is more than 3 eta: stride 4.
    assert allow.update(-3.000001 * ETA) == (4, 6, 11)


def test_stride_is_ceil_of_ratio() -> None:
    plan = LayerPlan(num_layers=40, static_layers=(39,))
    for ratio in (1.01, 1.5, 2.0, 2.2, 7.9, 12.0, 12.0001):
        allow = AllowPoints(plan, ETA)
        assert allow.update(-ratio * ETA) == (math.ceil(round(ratio, 6)),)


def test_set_validation() -> None:
    allow = make()
    with pytest.raises(ValueError, match="expected 3 allow points, got 2"):
        allow.set((0, 6))
    with pytest.raises(ValueError, match="expected 3 allow points, got 4"):
        allow.set((0, 6, 7, 8))
    with pytest.raises(ValueError, match=r"allow point 6 outside its gap \[0, 5\]"):
        allow.set((6, 6, 7))
    with pytest.raises(ValueError, match=r"allow point 7 outside its gap \[6, 6\]"):
        allow.set((0, 7, 7))
    with pytest.raises(ValueError, match=r"allow point 6 outside its gap \[7, 11\]"):
        allow.set((0, 6, 6))
    assert allow.points == (0, 6, 7)  # failed sets change nothing
    allow.set((5, 6, 11))  # both ends of a gap are valid
    assert allow.points == (5, 6, 11)
    allow.set([0, 6, 7])
    assert allow.points == (0, 6, 7)


def test_reset_and_close_all() -> None:
    allow = make()
    allow.close_all()
    assert allow.points == (5, 6, 11)
    allow.reset()
    assert allow.points == (0, 6, 7)


@pytest.mark.parametrize("eta", [0.0, -0.1, math.nan])
def test_eta_must_be_positive(eta: float) -> None:
    with pytest.raises(ValueError, match="eta must be > 0"):
        AllowPoints(PLAN, eta)
