"""The monitor of ``streamrl dev``: reads the run's topics from the beginning and measures lag.

One background thread owns a consumer *assigned* (no group membership, no commits) to every
partition of ``tasks``, ``samples``, ``requests``, ``trajectories``, ``batches``, ``checkpoints``
and ``dlq``, decodes the records it needs and feeds :class:`streamrl.dev.stats.RunStats`. Lag is
measured in the caller's thread: for every consumer group of the run (group ids with the run's
prefix stem) committed offsets are compared with the partitions' end offsets.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from streamrl.config import Settings
from streamrl.dev.stats import RunStats
from streamrl.kafka import client_config, make_admin
from streamrl.schemas import CheckpointEvent, LLMRequest, Sample, SchemaError, Task, Trajectory
from streamrl.schemas.serde import Serde

log = logging.getLogger(__name__)

#: Topic base name → record type decoded by the monitor (None = only counted).
DECODED: dict[str, type | None] = {
    "tasks": Task,
    "samples": Sample,
    "requests": LLMRequest,
    "trajectories": Trajectory,
    "checkpoints": CheckpointEvent,
    "batches": None,
    "dlq": None,
}


class Monitor:
    """Feeds a :class:`RunStats` from the run's topics in a background thread.

    Args:
        settings: the run's settings (its topic prefix).
        stats: the aggregate to fill; read it under :attr:`lock`.
        poll_timeout_s: longest block of one poll, in seconds.
    """

    def __init__(self, settings: Settings, stats: RunStats, *, poll_timeout_s: float = 0.2) -> None:
        self.settings = settings
        self.stats = stats
        self.lock = threading.Lock()
        self.poll_timeout_s = poll_timeout_s
        self.serde = Serde(settings.kafka.schema_registry_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._topics = {settings.topics.name(b): b for b in DECODED}
        self.error: BaseException | None = None
        self._admin: Any = None
        self._offsets: Consumer | None = None

    # -- consumption ------------------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        conf = client_config(self.settings)
        conf.update(
            {
                "group.id": self.settings.group_id("dev-monitor"),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": max(self.settings.topics.max_message_bytes * 2, 52428800),
                "max.partition.fetch.bytes": self.settings.topics.max_message_bytes,
            }
        )
        consumer = Consumer(conf)
        meta = consumer.list_topics(timeout=15.0).topics
        parts = []
        for name in self._topics:
            if name not in meta:
                raise KafkaException(
                    KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {name} does not exist")
                )
            parts += [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta[name].partitions]
        consumer.assign(parts)
        return consumer

    @property
    def started(self) -> bool:
        """Whether the consuming thread was started."""
        return self._thread is not None

    def start(self) -> None:
        """Start the consuming thread (topics must exist)."""
        consumer = self._consumer()
        self._thread = threading.Thread(target=self._run, args=(consumer,), name="dev-monitor", daemon=True)
        self._thread.start()

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=500, timeout=self.poll_timeout_s)
                if not msgs:
                    continue
                with self.lock:
                    for msg in msgs:
                        self._ingest(msg)
        except BaseException as exc:  # reported by the caller; the run goes on without a display
            self.error = exc
            log.exception("dev monitor stopped")
        finally:
            consumer.close()

    def _ingest(self, msg: Any) -> None:
        if msg.error() is not None:
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("monitor: %s[%s]: %s", msg.topic(), msg.partition(), msg.error())
            return
        base = self._topics.get(msg.topic())
        record_type = DECODED.get(base) if base else None
        s = self.stats
        if base == "batches":
            s.batches += 1
            return
        if base == "dlq":
            s.dlq += 1
            return
        if record_type is None:
            return
        try:
            record = self.serde.decode_message(msg, record_type)
        except SchemaError as exc:
            s.decode_errors += 1
            log.warning("monitor: cannot decode %s", exc)
            return
        if isinstance(record, Trajectory):
            s.on_trajectory(record)
        elif isinstance(record, LLMRequest):
            s.on_request(record)
        elif isinstance(record, Sample):
            s.on_sample(record)
        elif isinstance(record, CheckpointEvent):
            s.on_checkpoint(record)
        elif isinstance(record, Task):
            s.on_task(record)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None
        self._admin = None  # an AdminClient has no close(); dropping it ends its connections

    # -- lag ------------------------------------------------------------------------------------
    def measure_lag(self, timeout_s: float = 5.0) -> dict[tuple[str, str], int]:
        """Records behind per (consumer group, topic) for every group of this run, stored in the stats.

        Lag of a partition = end offset − committed offset (the whole end offset when nothing is
        committed yet). Groups are those whose id starts with the run's group stem
        (``settings.group_id("")``); the monitor's own group is left out.

        Returns:
            ``{(group id, topic base name): lag}``. Errors are logged and give ``{}``.
        """
        stem = self.settings.group_id("")
        if self._admin is None:
            self._admin = make_admin(self.settings)
        admin = self._admin
        try:
            listed = admin.list_consumer_groups(request_timeout=timeout_s).result()
            groups = [g.group_id for g in listed.valid if g.group_id.startswith(stem)]
            groups = [g for g in groups if g != self.settings.group_id("dev-monitor")]
            committed: dict[str, list[TopicPartition]] = {}
            for g in groups:
                fut = admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(g)], request_timeout=timeout_s
                )
                committed[g] = list(fut[g].result().topic_partitions or [])
        except KafkaException as exc:
            log.warning("monitor: cannot list consumer group offsets: %s", exc)
            return {}
        ends = self._end_offsets([tp for tps in committed.values() for tp in tps], timeout_s)
        lag: dict[tuple[str, str], int] = {}
        for g, tps in committed.items():
            for tp in tps:
                base = self._topics.get(tp.topic)
                if base is None or (tp.topic, tp.partition) not in ends:
                    continue
                end = ends[(tp.topic, tp.partition)]
                behind = end - tp.offset if tp.offset >= 0 else end
                key = (g.removeprefix(stem), base)
                lag[key] = lag.get(key, 0) + max(0, behind)
        with self.lock:
            self.stats.lag = lag
        return lag

    def _end_offsets(self, tps: list[TopicPartition], timeout_s: float) -> dict[tuple[str, int], int]:
        if self._offsets is None:
            conf = client_config(self.settings)
            conf.update({"group.id": self.settings.group_id("dev-monitor"), "enable.auto.commit": False})
            self._offsets = Consumer(conf)
        try:
            out = {}
            for tp in {(t.topic, t.partition) for t in tps}:
                _, high = self._offsets.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s)
                out[tp] = high
            return out
        except KafkaException as exc:
            log.warning("monitor: cannot read end offsets: %s", exc)
            return {}
