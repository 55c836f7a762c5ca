"""Reading topics to their end offsets: the sampler's recovery (from the beginning, or from the
offsets a snapshot covers)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamrl.errors import BrokerError
from streamrl.topics import is_settling

Partition = tuple[str, int]
"""``(topic, partition)``."""


def partitions(
    client: Consumer | AdminClient, topics: Iterable[str], timeout_s: float = 10.0
) -> dict[Partition, tuple[int, int]]:
    """``(topic, partition) -> (low, high)`` watermarks of every partition of ``topics`` (``high`` is
    the offset of the next record). An ``AdminClient`` asks for all of them in two ListOffsets
    requests; a consumer costs a round trip per partition (~0.2 s each on a busy broker).

    Raises:
        BrokerError: a topic does not exist, or metadata or watermarks are unavailable.
    """
    try:
        meta = client.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics: {exc}") from exc
    tps: list[Partition] = []
    for topic in topics:
        if topic not in meta or meta[topic].error is not None:
            raise BrokerError(f"topic {topic} does not exist; run `streamrl topics create` first")
        tps += [(topic, p) for p in sorted(meta[topic].partitions)]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _watermarks(client, tps, timeout_s)
        except KafkaException as exc:
            if not is_settling(exc) or time.monotonic() > deadline:
                raise BrokerError(f"{sorted({t for t, _ in tps})}: cannot read watermarks: {exc}") from exc
            time.sleep(0.2)  # a new partition's leader settles in


def _watermarks(
    client: Consumer | AdminClient, tps: list[Partition], timeout_s: float
) -> dict[Partition, tuple[int, int]]:
    if isinstance(client, AdminClient):
        marks = []
        for spec in (OffsetSpec.earliest(), OffsetSpec.latest()):
            futures = client.list_offsets(
                {TopicPartition(t, p): spec for t, p in tps}, request_timeout=timeout_s
            )
            marks.append({(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()})
        return {tp: (marks[0][tp], marks[1][tp]) for tp in tps}
    return {
        (t, p): client.get_watermark_offsets(TopicPartition(t, p), timeout=timeout_s, cached=False)
        for t, p in tps
    }


def read_to_end(
    consumer: Consumer,
    topics: Iterable[str],
    handle: Callable[[Message], None],
    *,
    timeout_s: float = 60.0,
    start: Mapping[Partition, int] | None = None,
    positions: dict[Partition, int] | None = None,
    marks: Mapping[Partition, tuple[int, int]] | None = None,
) -> dict[str, int]:
    """Assign every partition of ``topics`` and feed ``handle`` each record up to the end offsets
    taken at the start (records written meanwhile may be handled too). The consumer stays assigned,
    so live reading continues where recovery stopped.

    Args:
        start: ``(topic, partition) -> offset`` to read from (a snapshot's offsets); a partition not
            in it is read from the beginning.
        positions: filled with ``(topic, partition) -> offset of the next record`` once the end is
            reached (the end offset, or past it when more was read).
        marks: the partitions' watermarks (:func:`partitions`) when the caller has them; else
            asked of ``consumer``.

    Returns:
        records read per topic.

    Raises:
        BrokerError: metadata or watermarks unavailable, a fetch error, or the end not reached in ``timeout_s``.
    """
    topics = list(topics)
    start = start or {}
    marks = dict(marks) if marks is not None else partitions(consumer, topics)
    tps, ends = [], {}
    for (topic, p), (low, high) in marks.items():
        first = start.get((topic, p), OFFSET_BEGINNING)
        tps.append(TopicPartition(topic, p, first))
        if high > max(low, first):
            ends[(topic, p)] = high
    consumer.assign(tps)
    counts = dict.fromkeys(topics, 0)
    last: dict[Partition, int] = {}
    deadline = time.monotonic() + timeout_s
    while ends:
        if time.monotonic() > deadline:
            raise BrokerError(f"recovery did not reach the end of {sorted(ends)} within {timeout_s:.0f} s")
        for msg in consumer.consume(num_messages=1000, timeout=0.1):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise BrokerError(f"{msg.topic()}[{msg.partition()}]: fetch error: {msg.error()}")
            handle(msg)  # records past the end offsets are handled too: nothing is skipped
            counts[msg.topic()] += 1
            key = (msg.topic(), msg.partition())
            last[key] = msg.offset() + 1
            if key in ends and msg.offset() + 1 >= ends[key]:
                del ends[key]
        for tp in consumer.position([TopicPartition(t, p) for t, p in list(ends)]):
            if tp.offset >= 0 and tp.offset >= ends[(tp.topic, tp.partition)]:
                del ends[(tp.topic, tp.partition)]  # compaction gaps / control records at the end
    if positions is not None:
        for key, (_, high) in marks.items():
            positions[key] = max(high, last.get(key, 0), start.get(key, 0))
    return counts
