"""publish's check before reading a row: a ``tasks`` topic missing from the metadata for a moment (a
broker of a cluster that lists a topic just created a little later) is waited for, one missing for
longer is reported."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streamrl import topics
from streamrl.topics import TopicUnavailable, require_topic


class _Metadata:
    """A producer whose metadata lists ``topic`` from the ``appears_at``-th request on."""

    def __init__(self, topic: str, appears_at: int | None) -> None:
        self.topic, self.appears_at, self.calls = topic, appears_at, 0

    def list_topics(self, timeout: float) -> SimpleNamespace:
        self.calls += 1
        listed = self.appears_at is not None and self.calls >= self.appears_at
        return SimpleNamespace(topics={self.topic: object()} if listed else {})


def test_a_topic_listed_a_moment_later_is_waited_for() -> None:
    producer = _Metadata("p.tasks", appears_at=3)
    require_topic(producer, "p.tasks", "b:9092", timeout_s=1.0)
    assert producer.calls == 3


def test_a_topic_still_missing_is_reported_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "TOPIC_APPEAR_WAIT_S", 0.5)
    producer = _Metadata("p.tasks", appears_at=None)
    with pytest.raises(
        TopicUnavailable, match=r"topic 'p.tasks' does not exist on b:9092; create the topics"
    ):
        require_topic(producer, "p.tasks", "b:9092", timeout_s=1.0)
    assert producer.calls >= 2
