"""Produce records from asyncio code and await their acknowledgement.

``KafkaSink.publish`` encodes a record, queues it on the shared :class:`streamrl.kafka.EventProducer`
and returns an ``asyncio.Future`` resolved (on the loop thread) when the broker acknowledges it, or
failed with :class:`streamrl.errors.DeliveryError` (also when the client refuses the record at once,
e.g. one over ``topics.max_message_bytes``: the reason names its size). Delivery callbacks run on the producer's poll
thread; they queue their result and hop to the loop with one ``call_soon_threadsafe`` per batch of
acknowledgements (not one per record), which resolves every queued future.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message

from streamrl.errors import DeliveryError

__all__ = ["KafkaSink", "RecordSink"]


class RecordSink(Protocol):
    """Where the gateway and the worker put their records."""

    def publish(
        self, topic: str, key: str, record: Any, on_ack: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        """Queue ``record`` on ``topic`` (base name) with ``key``; the future completes on acknowledgement.

        ``on_ack`` (optional) runs on the producer's poll thread right at acknowledgement.
        """
        ...


class KafkaSink:
    """A :class:`RecordSink` over an ``EventProducer`` and a ``Serde``.

    Args:
        producer: a started :class:`streamrl.kafka.EventProducer` (shared; closed by its owner).
        serde: the record encoder (``streamrl.schemas.serde.Serde``).
        topic_name: maps a base topic name to the full one (``settings.topics.name``).
        loop: the event loop futures belong to.
    """

    def __init__(
        self, producer: Any, serde: Any, topic_name: Callable[[str], str], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._producer = producer
        self._serde = serde
        self._topic_name = topic_name
        self._topics: dict[str, str] = {}
        self._loop = loop
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[None], KafkaError | None, str, str]] = []  # acks to resolve

    def publish(
        self, topic: str, key: str, record: Any, on_ack: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        """See :meth:`RecordSink.publish`. Encoding errors raise ``SchemaError`` right here."""
        full = self._topics.get(topic)
        if full is None:
            full = self._topics[topic] = self._topic_name(topic)
        value = self._serde.encode(record)
        fut: asyncio.Future[None] = self._loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None and on_ack is not None:
                on_ack()
            with self._lock:
                self._done.append((fut, err, full, key))
                first = len(self._done) == 1
            if first:  # the hop already queued resolves this one too
                self._loop.call_soon_threadsafe(self._resolve_done)

        try:
            self._producer.produce(full, value, key=key, on_delivery=delivered)
        except KafkaException as exc:  # refused by the client itself: over message.max.bytes, ...
            err = exc.args[0]
            reason = f"refused by the producer: {err.str() if isinstance(err, KafkaError) else err}"
            if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                reason += (
                    f": the record is {len(value)} bytes, over topics.max_message_bytes (message.max.bytes)"
                )
            fut.set_exception(DeliveryError([(full, key, reason)]))
        return fut

    def _resolve_done(self) -> None:
        """Loop: resolve every acknowledgement queued by the poll thread so far."""
        with self._lock:
            done, self._done = self._done, []
        for fut, err, topic, key in done:
            _resolve(fut, err, topic, key)


def _resolve(fut: asyncio.Future[None], err: KafkaError | None, topic: str, key: str) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(DeliveryError([(topic, key, str(err))]))
