"""Pure figures of the coordination benchmark."""

from __future__ import annotations

import math

import pytest

from bench.coordination.stats import (
    TrajectoryTiming,
    group_to_batch_ms,
    median_of,
    percentile,
    rate_per_s,
    service_times_ms,
)


def test_percentile_interpolates_like_numpy() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 100) == 5.0
    assert percentile(xs, 25) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert math.isnan(percentile([], 50))


def test_percentile_rejects_bad_q() -> None:
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_rate_is_count_over_span_in_seconds() -> None:
    assert rate_per_s(2000, 1_000.0, 2_000.0) == pytest.approx(2000.0)
    assert rate_per_s(400, 0.0, 800.0) == pytest.approx(500.0)
    with pytest.raises(ValueError, match="after start"):
        rate_per_s(1, 5.0, 5.0)


def test_service_time_keeps_first_acknowledged_record_per_rollout() -> None:
    timings = [
        TrajectoryTiming("r1", started_ms=100.0, acked_ms=104.0),
        TrajectoryTiming("r2", started_ms=100.0, acked_ms=110.0),
        TrajectoryTiming("r1", started_ms=200.0, acked_ms=250.0),  # redelivered duplicate: ignored
    ]
    assert sorted(service_times_ms(timings)) == [4.0, 10.0]
    # the order of the input does not matter: the earliest ack wins
    assert sorted(service_times_ms(reversed(timings))) == [4.0, 10.0]


def test_group_to_batch_skips_groups_without_batch() -> None:
    last = {"g1": 1000.0, "g2": 1500.0, "g3": 1700.0}
    batch = {"g1": 1200.0, "g2": 1600.0}
    assert sorted(group_to_batch_ms(last, batch)) == [100.0, 200.0]


def test_median_of_repetitions_ignores_missing_and_nan() -> None:
    runs = [
        {"rate": 10.0, "p99": 5.0, "note": "x"},
        {"rate": 30.0, "p99": float("nan")},
        {"rate": 20.0, "p99": 7.0, "flag": True},
    ]
    med = median_of(runs)
    assert med == {"rate": 20.0, "p99": 6.0}
    assert math.isnan(median_of(runs, ["absent"])["absent"])
