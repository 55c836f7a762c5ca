"""Kafka helpers of the tests and benchmarks: a free port, a throwaway broker, reading a topic.

:class:`TopicReader` is the one way tests read what a stage wrote: it assigns every partition of
one topic at offset 0 (no consumer group membership, so no rebalance wait and no commits), reads
``read_committed`` like the stages do, and decodes each value with the project's ``Serde``. Waits
are bounded and event-ordered: :meth:`TopicReader.read` returns as soon as ``n`` records are in,
:meth:`TopicReader.read_to_end` as soon as every partition reached the end offset it had when
called; either raises ``AssertionError`` naming the topic and what was missing after ``timeout_s``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from streamrl.broker import LocalKafka, new_cluster_id
from streamrl.config import Settings
from streamrl.config.kafka import LocalBrokerSettings
from streamrl.dev.rundir import free_port
from streamrl.kafka import make_consumer
from streamrl.schemas.serde import Serde
from streamrl.topics import high_watermark

__all__ = [
    "TopicReader",
    "committed_offsets",
    "free_port",
    "read_topic",
    "start_local_broker",
    "start_local_cluster",
    "wait_committed",
]


def start_local_broker(data_dir: Path, *, heap: str = "512m", timeout_s: float = 120.0) -> LocalKafka:
    """A started ``streamrl.broker.LocalKafka`` on two free ports with its log under ``data_dir``.

    The caller stops it (``broker.stop()``); ``broker.bootstrap`` is its ``host:port``. The jar
    cache is the user's (``kafka.local.home``), so only the first run on a machine resolves jars.

    Raises:
        BrokerError: the broker did not answer within ``timeout_s`` (or Java/Maven are missing).
    """
    cfg = LocalBrokerSettings(port=free_port(), controller_port=free_port(), heap=heap)
    broker = LocalKafka(cfg, data_dir=data_dir)
    broker.start(timeout_s=timeout_s)
    return broker


def start_local_cluster(
    data_dir: Path, *, nodes: int = 3, heap: str = "384m", timeout_s: float = 180.0
) -> list[LocalKafka]:
    """``nodes`` started Kafka nodes forming one cluster on free ports (KRaft, each broker and
    controller, a static quorum of all of them; one cluster id), the log of node ``i`` under
    ``data_dir/node<i>``; internal topics and ``default.replication.factor`` at ``nodes``,
    ``min.insync.replicas`` at ``nodes - 1``.

    The nodes are started together (a quorum of three needs two to elect a controller, so one
    node alone never answers). The caller stops every node; ``",".join(n.bootstrap for n in nodes)``
    is the cluster's bootstrap list.

    Raises:
        BrokerError: a node did not answer within ``timeout_s`` (the others are stopped).
    """
    ports = {i: (free_port(), free_port()) for i in range(1, nodes + 1)}
    voters = {i: cport for i, (_, cport) in ports.items()}
    cluster = [
        LocalKafka(
            LocalBrokerSettings(port=port, controller_port=cport, heap=heap),
            data_dir=data_dir / f"node{i}",
            node_id=i,
            voters=voters,
            replication=nodes,
        )
        for i, (port, cport) in ports.items()
    ]
    cluster_id = new_cluster_id()
    for node in cluster:
        node.format_storage(cluster_id)
    errors: list[BaseException] = []

    def start(node: LocalKafka) -> None:
        try:
            node.start(timeout_s=timeout_s)
        except BaseException as exc:  # re-raised below, after every node's start returned
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(node,), daemon=True) for node in cluster]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for node in cluster:
            node.stop()
        raise errors[0]
    return cluster


class TopicReader:
    """Reads one topic from its beginning and decodes its records.

    Args:
        settings: the test's settings (cluster, topic prefix).
        base: the topic's base name (``"batches"``); the prefix is added.
        record_type: decode values as this record (``Serde.decode_message``, so a bad record
            raises ``SchemaError`` naming ``topic[partition]@offset``); None keeps the raw
            ``confluent_kafka.Message`` objects.
        serde: the serde to decode with (e.g. one on a Schema Registry); default a plain ``Serde()``.
        full_name: read this topic instead (a full name, e.g. a stage's internal or changelog topic).

    Attributes:
        messages: every message read so far, in read order (per partition in offset order).
        records: the decoded records of ``messages`` (the messages themselves without ``record_type``).
    """

    def __init__(
        self,
        settings: Settings,
        base: str,
        record_type: type | None = None,
        *,
        serde: Serde | None = None,
        full_name: str | None = None,
    ) -> None:
        self.topic = full_name or settings.topics.name(base)
        self.record_type = record_type
        self.serde = serde or Serde()
        self.consumer = make_consumer(settings, f"test-reader-{uuid.uuid4().hex[:8]}")
        meta = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        assert meta.error is None, f"{self.topic}: {meta.error}"
        self.partitions = sorted(meta.partitions)
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in self.partitions])
        self.messages: list[Message] = []
        self.records: list[Any] = []
        self._next: dict[int, int] = {}

    def poll(self, timeout_s: float = 0.2) -> int:
        """Read what arrives within ``timeout_s`` (at most 500 records); returns how many."""
        msgs = self.consumer.consume(500, timeout=timeout_s)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, f"{self.topic}: {err}"
                continue
            self.messages.append(msg)
            self._next[msg.partition()] = msg.offset() + 1
            if self.record_type is None:
                self.records.append(msg)
            else:
                self.records.append(self.serde.decode_message(msg, self.record_type))
        return len(msgs)

    def read_until(self, done: Callable[[list[Any]], bool], timeout_s: float = 60.0) -> list[Any]:
        """Read until ``done(records)``; returns every record read so far.

        Raises:
            AssertionError: ``done`` still false after ``timeout_s`` (the message gives the count).
        """
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            assert time.monotonic() < deadline, (
                f"{self.topic}: condition not met after {timeout_s} s ({len(self.records)} record(s) read)"
            )
            self.poll()
        return self.records

    def read(self, n: int, timeout_s: float = 60.0) -> list[Any]:
        """Read until at least ``n`` records (in all, duplicates included) are in; returns all of them.

        Raises:
            AssertionError: fewer than ``n`` after ``timeout_s``.
        """
        return self.read_until(lambda r: len(r) >= n, timeout_s)

    def end_offsets(self, timeout_s: float = 30.0) -> dict[int, int]:
        """Partition -> end offset (the offset the next record will get) right now.

        A broker may answer ``NOT_LEADER_FOR_PARTITION`` (or leader not available) for a moment
        after the topic was created or a leader moved; :func:`streamrl.topics.high_watermark` asks
        again, up to ``timeout_s`` per partition.
        """
        return {
            p: high_watermark(self.consumer, TopicPartition(self.topic, p), timeout_s)
            for p in self.partitions
        }

    def read_to_end(self, timeout_s: float = 30.0) -> list[Any]:
        """Read every partition up to the end offset it has now; returns every record read so far.

        With transactions, the end offset counts commit markers, so a partition counts as done
        once the reader's position reached it (``position`` skips markers and aborted records).

        Raises:
            AssertionError: some partition not read to its end after ``timeout_s``.
        """
        ends = self.end_offsets()
        deadline = time.monotonic() + timeout_s
        while True:
            todo = {p: e for p, e in ends.items() if self._position(p) < e}
            if not todo:
                return self.records
            assert time.monotonic() < deadline, f"{self.topic}: partitions {todo} not read to their end"
            self.poll()

    def _position(self, partition: int) -> int:
        [tp] = self.consumer.position([TopicPartition(self.topic, partition)])
        return max(tp.offset, self._next.get(partition, 0))

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def committed_offsets(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """Partition -> offset committed by consumer group ``group_id`` on the full topic name ``topic``
    (the next offset the group will read; ``-1001`` where it committed nothing)."""
    consumer = make_consumer(settings, group_id)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def wait_committed(settings: Settings, group_id: str, topics: list[str], timeout_s: float = 60.0) -> None:
    """Wait until consumer group ``group_id`` committed each of ``topics`` (full names, in order) up to
    the end offsets it has when its turn comes.

    A stage commits an input offset only after what it wrote for that record is acknowledged, so
    once this returns everything the group writes in response to the records already in those
    topics is in the log: a test reads the output to its end instead of waiting for it to go quiet.
    List a stage's internal topics after the inputs that feed them.

    Raises:
        AssertionError: some partition still behind after ``timeout_s`` (names it, with both offsets).
    """
    deadline = time.monotonic() + timeout_s
    consumer = make_consumer(settings, group_id)
    try:
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
            ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
            while True:
                done = {tp.partition: max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10)}
                behind = {p: (done[p], e) for p, e in ends.items() if done[p] < e}
                if not behind:
                    break
                assert time.monotonic() < deadline, (
                    f"{group_id} has not committed {topic} to its end after {timeout_s} s: "
                    f"partition -> (committed, end) {behind}"
                )
                time.sleep(0.1)  # polling the broker for the group's state, not ordering the test
    finally:
        consumer.close()


def read_topic(
    settings: Settings,
    base: str,
    record_type: type | None = None,
    *,
    n: int | None = None,
    timeout_s: float = 30.0,
    serde: Serde | None = None,
) -> list[Any]:
    """Every record of a topic from its beginning: with ``n``, once at least ``n`` are in, else up to
    the end offsets it has now (see :class:`TopicReader`).

    Raises:
        AssertionError: fewer than ``n`` records, or the end not reached, within ``timeout_s``.
    """
    with TopicReader(settings, base, record_type, serde=serde) as reader:
        if n is not None:
            reader.read(n, timeout_s)
        return reader.read_to_end(timeout_s)
