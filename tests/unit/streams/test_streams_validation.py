"""The validation reward: every val rollout counts once, failed and timed-out ones as 0."""

from __future__ import annotations

import random

import pytest

from streamrl.streams.validation import add_outcome, result, summary


def _apply(events):
    entry = None
    for rid, status, reward, ts in events:
        new = add_outcome(entry, rid, status, reward, ts)
        entry = new if new is not None else entry
    return entry


def test_failed_and_timed_out_rollouts_score_zero() -> None:
    entry = _apply(
        [
            ("val/3/a/0", "succeeded", 1.0, 10.0),
            ("val/3/b/0", "failed", None, 11.0),
            ("val/3/c/0", "timeout", None, 12.0),
            ("val/3/d/0", "succeeded", 0.5, 9.0),
        ]
    )
    rec = result("policy", 3, entry)
    assert (rec.count, rec.succeeded, rec.failed, rec.timed_out) == (4, 2, 1, 1)
    assert rec.mean == pytest.approx(1.5 / 4) and (rec.min, rec.max) == (0.0, 1.0)
    assert rec.std == pytest.approx((sum((x - 0.375) ** 2 for x in (1.0, 0.0, 0.0, 0.5)) / 4) ** 0.5)
    assert rec.updated_at.timestamp() == 12.0 and rec.key() == "policy/3"


def test_a_later_success_replaces_a_failure_but_nothing_replaces_a_success() -> None:
    entry = _apply([("r", "failed", None, 1.0), ("r", "timeout", None, 2.0)])
    assert (
        result("p", 0, entry).failed == 1 and result("p", 0, entry).timed_out == 0
    )  # the first failure counts
    assert add_outcome(entry, "r", "failed", None, 3.0) is None
    entry = add_outcome(entry, "r", "succeeded", 0.75, 4.0)
    assert result("p", 0, entry).model_dump(include={"count", "succeeded", "failed", "mean"}) == {
        "count": 1, "succeeded": 1, "failed": 0, "mean": 0.75,
    }  # fmt: skip
    assert add_outcome(entry, "r", "succeeded", 0.0, 5.0) is None  # a second success (another attempt)
    assert add_outcome(entry, "r", "failed", None, 5.0) is None
    with pytest.raises(ValueError, match="succeeded without a reward"):  # never scored as 0
        add_outcome(None, "s", "succeeded", None, 1.0)


def test_duplicates_and_redelivery_order_do_not_change_the_figures() -> None:
    rng = random.Random(7)
    events = [
        (f"val/1/t{i}/0", rng.choice(["succeeded", "failed", "timeout"]), rng.random(), float(i))
        for i in range(40)
    ]
    expected = result("p", 1, _apply(events))
    for _ in range(20):
        replayed = events + rng.sample(events, 15)  # at-least-once: some records twice
        rng.shuffle(replayed)  # one status per rollout here, so any order gives the same figures
        assert result("p", 1, _apply(replayed)) == expected


def test_summary_is_the_records_figures_by_version() -> None:
    items = [
        ("10", _apply([("a", "succeeded", 1.0, 5.0), ("b", "failed", None, 6.0)])),
        ("2", {"outcomes": {}}),
    ]
    view = summary("policy", items)
    assert list(view) == ["10"]
    assert view["10"]["count"] == 2 and view["10"]["mean"] == 0.5 and view["10"]["failed"] == 1
    assert "policy_name" not in view["10"]
