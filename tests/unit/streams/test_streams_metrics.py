"""The periodic summary line: dropped groups are visible in the log without a metrics port."""

from __future__ import annotations

from collections import Counter

from streamrl.streams import metrics


def test_summary_lists_events_since_last_call_with_hints() -> None:
    metrics.take_summary()  # drop anything other tests recorded
    metrics.record(Counter({"groups_ready": 3, "group_dropped:zero_variance": 2, "duplicate:call": 0}))
    metrics.record(Counter({"group_dropped:zero_variance": 1}))
    line = metrics.take_summary()
    assert line is not None
    assert "groups_ready 3" in line
    assert "group_dropped:zero_variance 3 (all rewards of the group equal: no learning signal" in line
    assert "duplicate:call" not in line  # zero counts are not events
    assert metrics.take_summary() is None  # reset after each line
