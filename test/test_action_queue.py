"""Which action goes out each control period (elapsed steps dropped, time alignment, aggregation,
stale chunks never used) and which actions the continuity history records (predicted slice)."""

from __future__ import annotations

import numpy as np
import pytest

from dysl_ros.action_queue import (
    ActionQueue,
    StreamAction,
    parse_stamp_label,
    predict_executed_slice,
    predicted_execution,
    stamp_label,
)

MS = 1_000_000
DT = 20 * MS
L = 8
CHUNK = np.arange(L * 2, dtype=float).reshape(L, 2)  # action k = [2k, 2k+1]
T0 = 1_000 * 1_000_000_000  # stamps on a ROS clock, ns


def queue(
    on_stale: str = "hold", max_age_ms: int = 500, aggregation: str = "latest", decay: float = 0.01
) -> ActionQueue:
    return ActionQueue(DT, max_age_ms * MS, on_stale, 2, aggregation, decay)


def at(q: ActionQueue, period: int, offset_ns: int = 0) -> StreamAction | None:
    """Period ``period`` of a grid with period 0 at T0 + offset_ns, published on time."""
    t = T0 + offset_ns + period * DT
    return q.next_action(period, t, t)


def test_steps_elapsed_since_the_image_are_dropped_then_one_per_period() -> None:
    q = queue()
    q.push(1, T0, CHUNK)
    first = at(q, 3, offset_ns=5 * MS)  # 3 periods (and a bit) after the image: inference latency
    assert first is not None and first.fresh and first.index == 3 and first.values.tolist() == CHUNK[3].tolist()
    assert [at(q, p, 5 * MS).index for p in range(4, 8)] == [4, 5, 6, 7]  # type: ignore[union-attr]


def test_index_advances_by_one_per_period_even_when_a_period_fires_late() -> None:
    q = queue()
    q.push(1, T0, CHUNK)
    indices = []
    for p in range(1, 6):
        late = 19 * MS if p == 3 else 0  # period 3 fires almost a full period late
        t = T0 + p * DT + late
        indices.append(q.next_action(p, T0 + p * DT, t).index)  # type: ignore[union-attr]
    assert indices == [1, 2, 3, 4, 5]


def test_exhausted_chunk_holds_the_last_action_and_reports_what_it_sent() -> None:
    q = queue("hold")
    q.push(7, T0, CHUNK)
    for p in range(2, L):
        at(q, p)
    assert q.remaining(L - 1) == 0
    held = at(q, L)
    assert held is not None and held.kind == "hold" and held.label == "hold"
    assert held.values.tolist() == CHUNK[-1].tolist()
    [done] = q.take_finished()
    assert (done.seq, done.first_index, done.count) == (7, 2, L - 2)


def test_stale_chunk_is_never_used_even_with_actions_left() -> None:
    q = queue("zero", max_age_ms=100)
    q.push(1, T0, CHUNK)
    assert at(q, 0).fresh  # type: ignore[union-attr]
    # 4 periods = 80 ms after the image, but published 21 ms late: 101 ms > max_age.
    late = q.next_action(4, T0 + 4 * DT, T0 + 4 * DT + 21 * MS)
    assert late is not None and late.kind == "zero" and late.label == "zero" and late.values.tolist() == [0.0, 0.0]
    assert q.remaining(4) == 0 and q.newest_seq == -1


def test_hold_before_any_action_publishes_nothing_and_zero_publishes_zeros() -> None:
    assert queue("hold").next_action(0, T0, T0) is None
    zero = queue("zero").next_action(0, T0, T0)
    assert zero is not None and zero.kind == "zero" and zero.values.tolist() == [0.0, 0.0]


def test_latest_replaces_the_queue_time_aligned_to_the_new_image() -> None:
    q = queue()
    q.push(1, T0, CHUNK)
    at(q, 0)
    at(q, 1)
    q.push(2, T0 + 30 * MS, CHUNK + 100)  # image 30 ms after the first; arrives before period 3
    nxt = at(q, 3)  # 60 ms after T0 = 30 ms after the new image: index 1 of the new chunk
    assert nxt is not None and nxt.index == 1 and nxt.seq == 2 and nxt.values.tolist() == (CHUNK[1] + 100).tolist()
    assert nxt.sources == (T0 + 30 * MS,) and q.remaining(3) == L - 2
    [old] = q.take_finished()
    assert (old.seq, old.first_index, old.count) == (1, 0, 2)


def test_weighted_aggregation_is_acts_temporal_ensemble_over_fresh_overlapping_chunks() -> None:
    decay = 0.5
    q = queue(aggregation="weighted", decay=decay, max_age_ms=150)
    old, new = CHUNK, CHUNK * -3.0 + 1.0
    q.push(1, T0, old)
    at(q, 0)
    q.push(2, T0 + 40 * MS, new)  # new index = old index - 2
    blended = at(q, 3)
    assert blended is not None and blended.fresh and blended.index == 1 and blended.seq == 2
    w = np.exp(-decay * np.arange(2))  # oldest first
    expected = (w[0] * old[3] + w[1] * new[1]) / w.sum()
    assert np.allclose(blended.values, expected)
    assert blended.sources == (T0, T0 + 40 * MS)
    assert [parse_stamp_label(s) for s in blended.label.split(",")] == [T0, T0 + 40 * MS]
    # 160 ms after the old image (> 150 ms max age): it drops out, the new chunk alone remains.
    alone = at(q, 8)
    assert alone is not None and alone.sources == (T0 + 40 * MS,) and alone.values.tolist() == new[6].tolist()
    assert q.remaining(8) == 1  # the queue lasts as long as the newest chunk


def test_weighted_with_zero_decay_is_the_plain_mean_and_latest_ignores_older_chunks() -> None:
    for aggregation, expected in (("weighted", (CHUNK[2] + (CHUNK[0] + 50)) / 2), ("latest", CHUNK[0] + 50)):
        q = queue(aggregation=aggregation, decay=0.0)
        q.push(1, T0, CHUNK)
        q.push(2, T0 + 2 * DT, CHUNK + 50)
        action = at(q, 2)
        assert action is not None and np.allclose(action.values, expected), aggregation


def test_a_planned_action_is_not_sent_until_committed() -> None:
    """plan_action records nothing: the held command and the chunk's sent count move only on commit."""
    q = queue("hold", max_age_ms=100)
    q.push(1, T0, CHUNK)
    first = q.plan_action(0, T0, T0)
    assert first is not None and first.fresh and first.expires_ns == T0 + 100 * MS
    again = q.plan_action(0, T0, T0)
    assert again is not None and again.index == first.index and again.values.tolist() == first.values.tolist()
    q.push(2, T0 + DT, CHUNK + 10)  # chunk 1 retires having sent nothing
    [unsent] = q.take_finished()
    assert (unsent.seq, unsent.first_index, unsent.count) == (1, -1, 0)
    assert q.plan_action(1, T0 + DT, T0 + DT - 1) is not None
    q.push(3, T0 + 2 * DT, CHUNK + 20)
    q.take_finished()
    # Still nothing committed: a stale plan finds no command to hold.
    assert q.plan_action(2, T0 + 2 * DT, T0 + 2 * DT + 101 * MS) is None


def test_a_write_that_slipped_past_max_age_is_planned_again_and_never_recorded() -> None:
    """The stream's re-check before the DDS write: planned on time, the write slipped 2 ms past the
    image's max age; re-planned at the later time it is the hold of the last committed command, and
    the chunk's report counts only what really went out."""
    q = queue("hold", max_age_ms=100)
    q.push(1, T0, CHUNK)
    for p in range(3):
        q.next_action(p, T0 + p * DT, T0 + p * DT)
    planned = q.plan_action(4, T0 + 4 * DT, T0 + 4 * DT + 19 * MS)  # 99 ms: fresh when planned
    assert planned is not None and planned.fresh and planned.index == 4
    assert planned.expires_ns is not None and T0 + 4 * DT + 21 * MS > planned.expires_ns  # written at 101 ms
    again = q.plan_action(4, T0 + 4 * DT, T0 + 4 * DT + 21 * MS)
    assert again is not None and again.kind == "hold" and again.values.tolist() == CHUNK[2].tolist()
    assert again.expires_ns is None
    q.commit_action(again)
    [done] = q.take_finished()
    assert (done.seq, done.first_index, done.count) == (1, 0, 3)
    with pytest.raises(ValueError, match="plan it again"):
        q.commit_action(planned)


def test_weighted_replan_drops_only_the_chunk_that_aged_out() -> None:
    q = queue(aggregation="weighted", decay=0.0, max_age_ms=100)
    q.push(1, T0, CHUNK)
    q.push(2, T0 + 40 * MS, CHUNK + 50)
    planned = q.plan_action(4, T0 + 4 * DT, T0 + 4 * DT + 19 * MS)
    assert planned is not None and planned.sources == (T0, T0 + 40 * MS) and planned.expires_ns == T0 + 100 * MS
    again = q.plan_action(4, T0 + 4 * DT, T0 + 4 * DT + 21 * MS)
    assert again is not None and again.sources == (T0 + 40 * MS,) and again.values.tolist() == (CHUNK[2] + 50).tolist()
    assert again.expires_ns == T0 + 140 * MS
    q.commit_action(again)
    assert q.remaining(4) == L - 3


def test_clear_forgets_chunks_and_the_held_command() -> None:
    q = queue("hold")
    q.push(1, T0, CHUNK)
    at(q, 0)
    q.clear()
    assert at(q, 1) is None and q.remaining(1) == 0


def test_validation() -> None:
    with pytest.raises(ValueError, match="on_stale"):
        ActionQueue(DT, 100 * MS, "drift", 2)
    with pytest.raises(ValueError, match="chunk_aggregation"):
        ActionQueue(DT, 100 * MS, "hold", 2, "median")
    with pytest.raises(ValueError, match="chunk must be shaped"):
        queue().push(1, T0, np.zeros((8, 3)))


def test_stamp_labels_are_exact() -> None:
    stamp = 1_795_436_846_326_115_550
    assert stamp_label(stamp) == "1795436846.326115550"
    assert parse_stamp_label(stamp_label(stamp)) == stamp
    assert parse_stamp_label("12.5") == 12_500_000_000


@pytest.mark.parametrize(
    ("elapsed", "threshold", "latency_steps", "expected"),
    [
        (1, 0, 3, slice(1, 8)),  # re-plan on an empty queue: the rest of the chunk
        (1, 4, 2, slice(1, 5)),  # trigger after index 3 (4 left), next chunk 2 periods later
        (0, 4, 1, slice(0, 4)),
        (5, 4, 2, slice(5, 7)),  # already at the threshold on arrival: re-plan at once
        (5, 4, 9, slice(5, 8)),  # slow inference: up to the end of the chunk
        (12, 4, 1, slice(7, 8)),  # everything elapsed: at least the last action (never an empty slice)
    ],
)
def test_predicted_execution(elapsed: int, threshold: int, latency_steps: int, expected: slice) -> None:
    assert predicted_execution(L, elapsed, threshold, latency_steps) == expected


@pytest.mark.parametrize("threshold", [0, 2, 4, 7])
@pytest.mark.parametrize("latency_ms", [3, 27, 45, 75])
def test_predicted_slice_matches_what_a_simulated_stream_sends(threshold: int, latency_ms: int) -> None:
    """Stream grid + re-plan trigger + inference latency simulated: the slice predicted when inference
    starts equals the actions later sent from that chunk (constant latency, so exact)."""
    handover = 2 * MS
    latency = latency_ms * MS + handover
    base = 5 * MS  # the stream's grid phase (monotonic); ROS time = monotonic + T0 here
    q = queue(max_age_ms=10_000)
    predicted: dict[int, slice] = {}
    pending: list[tuple[int, int, int]] = []  # (arrival, seq, stamp)
    camera = 33 * MS
    trigger_at = 0  # inference starts (monotonic)
    seq = 0
    sent: dict[int, list[int]] = {}
    for period in range(1, 400):
        t = base + period * DT
        if trigger_at is not None and trigger_at < t:
            seq += 1
            stamp = (trigger_at // camera) * camera  # newest camera frame
            predicted[seq] = predict_executed_slice(
                stamp_ns=T0 + stamp,
                ros_now_ns=T0 + trigger_at,
                mono_now_ns=trigger_at,
                grid=(base, DT),
                latency_ns=latency,
                chunk_len=L,
                replan_threshold=threshold,
            )
            pending.append((trigger_at + latency, seq, stamp))
            trigger_at = None
        while pending and pending[0][0] <= t - MS:  # the stream takes commands until 1 ms before a deadline
            _, s, stamp = pending.pop(0)
            q.push(s, T0 + stamp, CHUNK)
        action = q.next_action(period, T0 + t, T0 + t)
        if action is not None and action.fresh:
            sent.setdefault(action.seq, []).append(action.index)
        if trigger_at is None and not pending and q.remaining(period) <= threshold:
            trigger_at = t + 500_000  # the request reaches the inference thread
    checked = [s for s in sent if 1 < s < seq - 1]
    assert len(checked) > 10
    for s in checked:
        indices = sent[s]
        assert indices == list(range(indices[0], indices[-1] + 1))
        assert predicted[s] == slice(indices[0], indices[-1] + 1), (s, predicted[s], indices)
