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


def test_validation_gauges_follow_the_newest_published_version() -> None:
    from streamrl.streams import metrics as sm

    def shown() -> tuple[float, float, float]:
        return (
            sm.VALIDATION_VERSION._value.get(),
            sm.VALIDATION_REWARD._value.get(),
            sm.VALIDATION_ROLLOUTS._value.get(),
        )

    v = int(shown()[0]) + 7  # newer than anything set before in this process
    sm.show_validation(v, 0.25, 4)
    assert shown() == (v, 0.25, 4)
    sm.show_validation(v, 0.5, 8)  # the same version filling up
    assert shown() == (v, 0.5, 8)
    sm.show_validation(v - 4, 1.0, 104)  # an older version's record (a replay) does not move the gauges
    assert shown() == (v, 0.5, 8)
