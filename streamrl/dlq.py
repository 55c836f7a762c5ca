"""The dead-letter topic: records a stage cannot process go there with the reason, and are counted.

The value is a ``schemas.DeadLetter`` envelope (original topic, partition, offset, key and value
bytes, stage, error type, reason); the same facts travel in headers (``streamrl.original.*``,
``streamrl.error.*``) so tools that cannot read Avro still see why.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Message

from streamrl.config import Settings
from streamrl.kafka import DeliveryCallback, EventProducer
from streamrl.metrics import DLQ_RECORDS
from streamrl.schemas import DeadLetter
from streamrl.schemas.serde import Serde

log = logging.getLogger(__name__)


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


class DeadLetterSink:
    """Sends unprocessable records to ``dlq``.

    Args:
        settings: StreamRL settings (topic prefix).
        producer: the stage's :class:`EventProducer` (the caller flushes it before committing).
        stage: name of the stage that gave up (``sampler``, ``worker``, ``streams``, ``trainer``...).
        serde: the stage's serde (one is made if omitted).
    """

    def __init__(
        self, settings: Settings, producer: EventProducer, stage: str, serde: Serde | None = None
    ) -> None:
        self.topic = settings.topics.name("dlq")
        self.producer = producer
        self.stage = stage
        self.serde = serde or Serde(registry_url=settings.kafka.schema_registry_url)

    def send(
        self,
        record: Message | None = None,
        reason: str = "",
        error: BaseException | None = None,
        *,
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
        key: bytes | str | None = None,
        value: bytes | None = None,
        on_delivery: DeliveryCallback | None = None,
        error_type: str | None = None,
    ) -> DeadLetter:
        """Publish one dead letter.

        Args:
            record: the consumed Kafka message that failed (its topic/partition/offset/key/value are
                used); or pass ``topic``/``partition``/``offset``/``key``/``value`` explicitly for
                records that did not come from Kafka (e.g. a sample given up after ``max_retries``).
            reason: why it could not be processed (human-readable; include ids).
            error: the exception, if any; its type name becomes ``error_type``.
            on_delivery: ``(err, msg)`` called on the producer's poll thread once the dead letter is
                acknowledged or failed (e.g. to commit the original offset only after it is safe).
            error_type: the envelope's ``error_type`` when no exception says it (e.g. the sampler's
                ``agent_failure``/``infrastructure_failure``); default the exception's class name,
                else ``Rejected``.

        Returns:
            The envelope that was queued (the caller's next ``producer.flush`` confirms it).
        """
        if record is not None:
            topic, partition, offset = record.topic() or "", record.partition() or 0, record.offset()
            key, value = record.key(), record.value()
        if error_type is None:
            error_type = type(error).__name__ if error is not None else "Rejected"
        if not reason:
            reason = str(error) if error is not None else "rejected"
        envelope = DeadLetter(
            original_topic=topic,
            original_partition=partition,
            original_offset=offset,
            original_key=_as_bytes(key),
            original_value=value,
            stage=self.stage,
            error_type=error_type,
            reason=reason,
            failed_at=datetime.now(timezone.utc),
        )
        headers = [
            ("streamrl.original.topic", topic.encode()),
            ("streamrl.original.partition", str(partition).encode()),
            ("streamrl.original.offset", str(offset).encode()),
            ("streamrl.error.stage", self.stage.encode()),
            ("streamrl.error.type", error_type.encode()),
            ("streamrl.error.reason", reason.encode()[:4096]),
        ]
        self.producer.produce(
            self.topic,
            self.serde.encode(envelope),
            key=_as_bytes(key),
            headers=headers,
            on_delivery=on_delivery,
        )
        try:
            DLQ_RECORDS.labels(self.stage, error_type).inc()
        except Exception:  # metrics never crash a stage
            log.debug("dlq metric not recorded", exc_info=True)
        log.warning("%s[%d]@%d -> dlq (%s): %s", topic or "?", partition, offset, error_type, reason)
        return envelope
