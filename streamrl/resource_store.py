"""The ``resources`` topic: publishing versioned resources, and the cache workers resolve pins from.

``resources`` is compacted and keyed ``name/version``; a version is derived from its content
(:meth:`streamrl.schemas.Resource.create`), so a record never changes and compaction never drops a
version. Writers (the optimizer, ``streamrl resources put``) publish a resource *before* any sample
that pins it, and wait for the acknowledgement.

:class:`ResourceStore` keeps every record it has read in memory (prompt templates: a few KB each) and
reads the topic incrementally: a lookup that misses reads what arrived since the last read, up to
the end offsets the partitions have now, and tries again until its time limit. Memory = the live
records of the topic; reading is one assigned consumer (no group membership, no commits).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamrl.config import Settings
from streamrl.errors import BrokerError
from streamrl.kafka import EventProducer, make_consumer
from streamrl.resources import ResourceError
from streamrl.schemas import Resource, SchemaError
from streamrl.schemas.serde import Serde
from streamrl.topics import high_watermark, require_topic

log = logging.getLogger(__name__)

__all__ = ["MIN_READ_S", "ResourceStore", "publish_resources"]

MIN_READ_S = 2.0
"""The least time, in seconds, :meth:`ResourceStore.resolve` gives one read of the topic. A read asks
the broker for end offsets; given what is left of a lookup's time limit (a few ms near its end) it
would time out and raise :class:`BrokerError` instead of the lookup's :class:`ResourceError`."""


def publish_resources(
    settings: Settings,
    records: Iterable[Resource],
    *,
    producer: EventProducer | None = None,
    serde: Serde | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Publish resources to ``resources`` (key ``name/version``) and wait until all are acknowledged.

    Args:
        producer: a producer to reuse (default: one made and closed here).
        timeout_s: how long to wait for the acknowledgements, in seconds.

    Returns:
        The keys written, in order.

    Raises:
        TopicUnavailable: the cluster cannot be reached or ``resources`` does not exist (before
            anything is produced; the message names ``streamrl topics create``).
        DeliveryError: a record was not acknowledged.
    """
    serde = serde or Serde(registry_url=settings.kafka.schema_registry_url)
    topic = settings.topics.name("resources")
    own = producer is None
    producer = producer or EventProducer(settings)
    keys = []
    try:
        require_topic(producer.producer, topic, settings.kafka.bootstrap_servers, min(timeout_s, 10.0))
        for record in records:
            producer.produce(topic, serde.encode(record, topic=topic), key=record.key())
            keys.append(record.key())
        producer.flush(timeout_s)
    finally:
        if own:
            producer.close(timeout_s)
    return keys


class ResourceStore:
    """Every resource version read from ``resources``, read on demand (thread-safe).

    Args:
        settings: cluster and topic names.
        poll_timeout_s: one consume call's wait, in seconds.
    """

    def __init__(self, settings: Settings, *, poll_timeout_s: float = 0.2) -> None:
        self.settings = settings
        self.topic = settings.topics.name("resources")
        self.poll_timeout_s = poll_timeout_s
        self.serde = Serde(registry_url=settings.kafka.schema_registry_url)
        self._records: dict[tuple[str, str], Resource] = {}
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self.bad_records = 0
        """Records that could not be decoded (logged with ``topic[partition]@offset``, skipped)."""

    def get(self, name: str, version: str) -> Resource | None:
        """The record of ``name/version`` if it has been read (no I/O)."""
        return self._records.get((name, version))

    def versions(self, name: str | None = None) -> list[Resource]:
        """Every record read so far (of ``name`` only, if given), oldest first."""
        out = [r for (n, _), r in self._records.items() if name is None or n == name]
        return sorted(out, key=lambda r: (r.created_at, r.name, r.version))

    def refresh(self, timeout_s: float = 10.0) -> int:
        """Read what arrived since the last read, up to the end offsets the partitions have now.

        Returns:
            The number of records read.

        Raises:
            TopicUnavailable: the topic does not exist or the cluster cannot be reached (a
                ``BrokerError``; the message names ``streamrl topics create`` or the address).
            BrokerError: the topic's partitions cannot be read.
        """
        with self._lock:
            deadline = time.monotonic() + timeout_s  # the end-offset reads and the reading share it
            consumer = self._consumer or self._open(timeout_s)
            parts = consumer.assignment()
            ends = {tp.partition: high_watermark(consumer, tp, timeout_s) for tp in parts}
            read = 0
            while time.monotonic() < deadline:
                positions = {tp.partition: tp.offset for tp in consumer.position(parts)}
                if all(positions[p] >= end or end == 0 for p, end in ends.items()):
                    break
                for msg in consumer.consume(num_messages=500, timeout=self.poll_timeout_s):
                    read += self._ingest(msg)
            return read

    def _open(self, timeout_s: float) -> Consumer:
        consumer = make_consumer(self.settings, self.settings.group_id("resource-readers"))
        try:
            meta = require_topic(consumer, self.topic, self.settings.kafka.bootstrap_servers, timeout_s)
        except BaseException:
            consumer.close()
            raise
        if meta.error is not None or not meta.partitions:
            consumer.close()
            raise BrokerError(f"topic {self.topic}: no partitions in the metadata ({meta.error})")
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
        self._consumer = consumer
        return consumer

    def _ingest(self, msg: object) -> int:
        err = msg.error()  # type: ignore[attr-defined]
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: %s", self.topic, err)
            return 0
        value = msg.value()  # type: ignore[attr-defined]
        if value is None:  # a tombstone: someone deleted a version; keep what was read
            return 0
        try:
            record = self.serde.decode_message(msg, Resource)
        except SchemaError as exc:
            self.bad_records += 1
            log.error("%s (skipped)", exc)
            return 0
        self._records[(record.name, record.version)] = record
        return 1

    async def resolve(self, pins: Mapping[str, str], timeout_s: float) -> dict[str, Resource]:
        """The records a sample pins (name -> version), reading the topic while some are missing.

        Concurrent callers share one read at a time. The last read starts at ``timeout_s``, so a
        version acknowledged before then is found. Each read gets at least :data:`MIN_READ_S`, so
        with a slow broker the call may return up to about that long after ``timeout_s``.

        Raises:
            ResourceError: some version is still unknown after ``timeout_s`` seconds (the message
                names them and the topic).
            BrokerError: the topic cannot be read.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        last_read = False
        while True:
            missing = [(n, v) for n, v in pins.items() if (n, v) not in self._records]
            if not missing:
                return {n: self._records[(n, v)] for n, v in pins.items()}
            if last_read:
                shown = ", ".join(f"{n}/{v}" for n, v in missing)
                raise ResourceError(
                    f"resource version(s) {shown} not found on {self.topic} after {timeout_s:g} s "
                    "(publish a resource before the samples that pin it)"
                )
            left = deadline - time.monotonic()
            last_read = left <= 0  # a read that starts at the deadline sees what was acknowledged before it
            before = len(self._records)
            await self._shared_refresh(max(min(left, 10.0), MIN_READ_S), fresh=last_read)
            if len(self._records) == before and not last_read:
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 1.0)

    async def _shared_refresh(self, timeout_s: float, *, fresh: bool = False) -> None:
        """Join the read in progress, or start one; ``fresh``: a read that starts now (after the one in
        progress, which may have read its end offsets before what the caller waits for arrived)."""
        if fresh and self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
        if self._refreshing is None or self._refreshing.done():
            loop = asyncio.get_running_loop()
            self._refreshing = loop.run_in_executor(None, self.refresh, timeout_s)
        await asyncio.shield(self._refreshing)

    def close(self) -> None:
        """Close the consumer (the records read stay readable)."""
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
