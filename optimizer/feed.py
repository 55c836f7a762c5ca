"""The optimizer's reads from Kafka: whole compacted topics at start, and a live feed of results.

- :func:`read_to_end`: every record of a topic up to the end offsets it has now (``tasks``,
  ``optimizer_state``), decoded; undecodable records are logged as ``topic[partition]@offset:
  reason`` and counted, never fatal.
- :class:`Feed`: a thread with one consumer *assigned* (no group, no commits) to ``trajectories``
  and ``requests`` from the run's start offsets, handing decoded records to the event loop. A
  restarted optimizer starts it from the same offsets, so it reads the same log again (outcomes are
  a function of that log: :mod:`streamrl.optimizer.evaluation`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamrl.config import Settings
from streamrl.errors import BrokerError
from streamrl.kafka import make_consumer
from streamrl.schemas import LLMRequest, SchemaError, TopRecord, Trajectory
from streamrl.schemas.serde import Serde
from streamrl.topics import high_watermark

log = logging.getLogger(__name__)

#: (topic base name, record, record time in seconds since the epoch)
Item = tuple[str, TopRecord, float]


def _assign(consumer: Consumer, topic: str, offsets: dict[int, int] | None, timeout_s: float) -> None:
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topic {topic}: {exc}") from exc
    if meta is None or meta.error is not None or not meta.partitions:
        raise BrokerError(f"topic {topic} does not exist (`streamrl topics create` makes it)")
    parts = [
        TopicPartition(topic, p, (offsets or {}).get(p, OFFSET_BEGINNING)) for p in sorted(meta.partitions)
    ]
    consumer.incremental_assign(parts)


def end_offsets(settings: Settings, base: str, timeout_s: float = 30.0) -> dict[int, int]:
    """Partition -> end offset of a topic right now.

    Raises:
        BrokerError: the topic does not exist or the cluster cannot be reached.
    """
    consumer = make_consumer(settings, settings.group_id("optimizer-reader"))
    try:
        topic = settings.topics.name(base)
        _assign(consumer, topic, None, timeout_s)
        return {tp.partition: high_watermark(consumer, tp, timeout_s) for tp in consumer.assignment()}
    finally:
        consumer.close()


def read_to_end(
    settings: Settings, base: str, record_type: type[TopRecord], serde: Serde, timeout_s: float = 60.0
) -> tuple[list[tuple[Any, TopRecord]], int]:
    """Every record of a topic up to its end offsets now, in partition/offset order.

    Returns:
        ``([(message, record), ...], bad)``: ``bad`` counts undecodable records (logged, skipped).

    Raises:
        BrokerError: the topic does not exist, the cluster cannot be reached, or the end was not
            reached within ``timeout_s``.
    """
    consumer = make_consumer(settings, settings.group_id("optimizer-reader"))
    topic = settings.topics.name(base)
    out: list[tuple[Any, TopRecord]] = []
    bad = 0
    try:
        _assign(consumer, topic, None, timeout_s)
        ends = {tp.partition: high_watermark(consumer, tp, timeout_s) for tp in consumer.assignment()}
        deadline = time.monotonic() + timeout_s
        while True:
            pos = {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())}
            if all(pos[p] >= end or end == 0 for p, end in ends.items()):
                return out, bad
            if time.monotonic() > deadline:
                raise BrokerError(f"{topic}: not read to its end offsets {ends} within {timeout_s:.0f} s")
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("%s: %s", topic, msg.error())
                    continue
                if msg.value() is None:
                    continue
                try:
                    out.append((msg, serde.decode_message(msg, record_type)))
                except SchemaError as exc:
                    bad += 1
                    log.error("%s (skipped)", exc)
    finally:
        consumer.close()


class Feed:
    """``trajectories`` and ``requests`` from given offsets, decoded, handed to ``deliver`` on the loop.

    Args:
        settings: cluster and topics.
        start: topic base name -> partition -> first offset to read.
        deliver: called on ``loop`` with a batch of :data:`Item` (in read order).
        loop: the event loop of the caller.
    """

    TOPICS = (("trajectories", Trajectory), ("requests", LLMRequest))

    def __init__(
        self,
        settings: Settings,
        start: dict[str, dict[int, int]],
        deliver: Callable[[list[Item]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.settings = settings
        self.start = start
        self.deliver = deliver
        self.loop = loop
        self.serde = Serde(registry_url=settings.kafka.schema_registry_url)
        self.bad_records = 0
        self.error: BaseException | None = None
        self._names = {settings.topics.name(b): (b, t) for b, t in self.TOPICS}
        self._positions: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = make_consumer(settings, settings.group_id("optimizer-feed"))
        for base, _ in self.TOPICS:
            _assign(self._consumer, settings.topics.name(base), start.get(base), 30.0)
        self._thread = threading.Thread(target=self._run, name="optimizer-feed", daemon=True)

    def begin(self) -> None:
        """Start reading."""
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msgs = self._consumer.consume(num_messages=500, timeout=0.2)
                items: list[Item] = []
                read: dict[tuple[str, int], int] = {}
                for msg in msgs:
                    if msg.error() is not None:
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("feed: %s", msg.error())
                        continue
                    base, record_type = self._names[msg.topic()]
                    read[(base, msg.partition())] = msg.offset() + 1
                    if msg.value() is None:
                        continue
                    try:
                        record = self.serde.decode_message(msg, record_type)
                    except SchemaError as exc:
                        self.bad_records += 1
                        log.error("%s (skipped)", exc)
                        continue
                    items.append((base, record, msg.timestamp()[1] / 1000.0))
                if items:
                    self.loop.call_soon_threadsafe(self.deliver, items)
                with self._lock:  # after the hand-over: read_past() true means delivered (or queued)
                    self._positions.update(read)
        except BaseException as exc:  # the run checks ``error`` and stops with it
            self.error = exc
            log.exception("optimizer feed stopped")
        finally:
            self._consumer.close()

    def read_past(self, ends: dict[str, dict[int, int]]) -> bool:
        """Whether every partition has been read up to ``ends`` (base -> partition -> offset)."""
        with self._lock:
            return all(
                end == 0 or self._positions.get((base, p), self.start.get(base, {}).get(p, 0)) >= end
                for base, parts in ends.items()
                for p, end in parts.items()
            )

    async def catch_up(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything written to both topics before now has been read (and delivered).

        Returns:
            False if it did not within ``timeout_s`` (the caller goes on with what it has).
        """
        loop = asyncio.get_running_loop()
        ends = {
            base: await loop.run_in_executor(None, end_offsets, self.settings, base, timeout_s)
            for base, _ in self.TOPICS
        }
        deadline = time.monotonic() + timeout_s
        while not self.read_past(ends):
            if self.error is not None or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        await asyncio.sleep(0)  # let the batches queued on the loop be delivered first
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        elif not self._thread.ident:
            self._consumer.close()
