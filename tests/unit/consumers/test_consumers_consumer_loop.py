"""SampleConsumer's loop-side queue and soft flow control, driven without a broker.

The confluent-kafka consumer is replaced by a recorder of pause/commit/unassign calls (pure logic:
the real broker paths are covered by tests/integration/consumers).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from streamrl.consumers.consumer_loop import SampleConsumer

TOPIC = "t.samples"


class _Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def error(self) -> None:
        return None


class _FakeConsumer:
    def __init__(self, batches: list[list[_Msg]]) -> None:
        self.batches = batches
        self.paused: list[Any] = []
        self.commits: list[list[TopicPartition]] = []
        self.unassigned: list[Any] = []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[_Msg]:
        if not self.batches:
            return []
        batch = self.batches[0][:num_messages]
        self.batches[0] = self.batches[0][num_messages:]
        if not self.batches[0]:
            self.batches.pop(0)
        return batch

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]

    def pause(self, parts: Any) -> None:
        self.paused.append(parts)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(offsets)

    def incremental_unassign(self, parts: Any) -> None:
        self.unassigned.append(parts)


def _consumer(
    batches: list[list[_Msg]], concurrency: int = 2
) -> tuple[SampleConsumer, _FakeConsumer, list[int]]:
    fake = _FakeConsumer(batches)
    notes: list[int] = []
    sc = SampleConsumer(
        fake,  # type: ignore[arg-type]
        TOPIC,
        concurrency,
        lambda: notes.append(1),
        poll_timeout_s=0.0,
        commit_interval_s=0.0,
        revoke_grace_s=0.0,
    )
    for p in (0, 1):
        sc.tracker.assign((TOPIC, p))
        sc.assigned.add((TOPIC, p))
    return sc, fake, notes


def test_take_hands_out_queued_samples_oldest_first_and_counts_them_running() -> None:
    sc, _, notes = _consumer([[_Msg(0, o) for o in range(5)]])
    sc._step()
    assert notes == [1]  # one wake-up per fetched batch, not per sample
    got = sc.take(3)
    assert [m.offset() for m in got] == [0, 1, 2]
    assert sc.running() == 3
    assert [m.offset() for m in sc.take(10)] == [3, 4]
    assert sc.take(1) == []


def test_commit_waits_for_every_earlier_acknowledgement() -> None:
    sc, fake, _ = _consumer([[_Msg(0, o) for o in range(3)]])
    sc._step()
    sc.take(3)
    sc.finished((TOPIC, 0), 1, acked=True)
    sc._commit(force=True)
    assert [(tp.partition, tp.offset) for c in fake.commits for tp in c] == [(0, 0)]  # 0 still running
    sc.finished((TOPIC, 0), 0, acked=True)
    sc._commit(force=True)
    assert [(tp.partition, tp.offset) for tp in fake.commits[-1]] == [(0, 2)]
    assert sc.running() == 1


def test_soft_pause_at_the_in_flight_bound_never_pauses_partitions() -> None:
    sc, fake, _ = _consumer([[_Msg(0, o) for o in range(300)], [_Msg(0, 300)], [_Msg(0, 301)]])
    assert sc.max_backlog == 256
    sc._step()  # takes exactly max_backlog: room = 256
    sc._step()  # bound reached: soft pause, takes at most one sample per poll
    assert sc._full and fake.paused == []
    assert len(sc._backlog) <= sc.max_backlog + 1
    got = sc.take(200)
    for m in got:
        sc.finished((TOPIC, 0), m.offset(), acked=True)
    sc._flow_control()
    assert not sc._full and fake.paused == []


def test_drain_pauses_partitions_and_take_returns_nothing() -> None:
    sc, fake, _ = _consumer([[_Msg(0, 0), _Msg(1, 0)]])
    sc._step()
    sc.drain()
    assert sc.take(5) == []
    sc._flow_control()
    assert len(fake.paused) == 1 and sc._full


def test_revoke_drops_queued_samples_of_the_revoked_partition_only() -> None:
    sc, fake, _ = _consumer([[_Msg(0, 0), _Msg(1, 0), _Msg(0, 1), _Msg(1, 1)]])
    sc._step()
    sc._on_revoke(fake, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert [(m.partition(), m.offset()) for m in sc.take(10)] == [(1, 0), (1, 1)]
    assert (TOPIC, 0) not in sc.assigned and fake.unassigned
