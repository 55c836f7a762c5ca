"""The monitor of ``streamrl dev`` and ``streamrl status``: reads a pipeline's topics and measures lag.

A consumer *assigned* (no group membership, no commits) to every partition of ``tasks``,
``samples``, ``requests``, ``trajectories``, ``batches``, ``checkpoints``, ``dlq`` and ``validation``
(or a subset) decodes the records it needs and feeds :class:`streamrl.dev.stats.RunStats`: in a background thread
(:meth:`Monitor.start`, ``streamrl dev``) or in the caller's thread up to the end offsets
(:meth:`Monitor.read_to_end`, ``streamrl status``). Lag is measured in the caller's thread: for
every consumer group of the pipeline (group ids with the prefix stem, and the streams app id)
committed offsets are compared with the partitions' end offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec

from streamrl.config import Settings
from streamrl.dev.stats import RunStats
from streamrl.kafka import COORDINATOR_REQUEST_TIMEOUT_S, client_config, coordinator_results, make_admin
from streamrl.producers.fence import FENCE_GROUP
from streamrl.schemas import (
    CheckpointEvent,
    DeadLetter,
    GroupOutcome,
    LLMRequest,
    Sample,
    SchemaError,
    Task,
    Trajectory,
    ValidationResult,
)
from streamrl.schemas.serde import Serde
from streamrl.topics import list_topics_until_listed

log = logging.getLogger(__name__)

#: Topic base name → record type decoded by the monitor (None = only counted).
DECODED: dict[str, type | None] = {
    "tasks": Task,
    "samples": Sample,
    "requests": LLMRequest,
    "trajectories": Trajectory,
    "checkpoints": CheckpointEvent,
    "group_outcomes": GroupOutcome,
    "batches": None,
    "dlq": DeadLetter,  # counted, and its stage and reason kept (RunStats.on_dead_letter)
    "validation": ValidationResult,
}


METADATA_WAIT_S = 15.0
"""How long :meth:`Monitor.start` waits for a topic missing from the cluster's metadata, in seconds."""


@dataclass(frozen=True)
class GroupState:
    """A consumer group of the pipeline as the broker reports it."""

    group: str
    """Full group id."""
    state: str
    """``STABLE``, ``EMPTY``, ``PREPARING_REBALANCING``, ``COMPLETING_REBALANCING``, ``DEAD`` or ``UNKNOWN``."""
    members: int
    """Connected members (0 when the group is empty: its stage is not running)."""
    assigned: tuple[tuple[str, int], ...] = ()
    """``(topic, partition)`` assigned to its members now, internal topics included (empty when the
    group is empty or its assignment cannot be read)."""


class Monitor:
    """Feeds a :class:`RunStats` from a pipeline's topics.

    Args:
        settings: the pipeline's settings (its topic prefix).
        stats: the aggregate to fill; read it under :attr:`lock`.
        poll_timeout_s: longest block of one poll, in seconds.
        topics: base names to read (default: all of :data:`DECODED`); ``requests`` is the largest.
    """

    def __init__(
        self,
        settings: Settings,
        stats: RunStats,
        *,
        poll_timeout_s: float = 0.2,
        topics: Iterable[str] | None = None,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.lock = threading.Lock()
        self.poll_timeout_s = poll_timeout_s
        self.serde = Serde(settings.kafka.schema_registry_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        bases = list(DECODED) if topics is None else [b for b in topics if b in DECODED]
        self._topics = {settings.topics.name(b): b for b in bases}
        self.error: BaseException | None = None
        self._admin: Any = None
        self._consumer: Consumer | None = None
        self.last_record_ms: dict[str, int] = {}
        """Topic base name → broker timestamp (ms since the epoch) of the newest record read."""

    # -- consumption ------------------------------------------------------------------------------
    def _consumer_(self) -> Consumer:
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
        meta = list_topics_until_listed(consumer, self._topics, METADATA_WAIT_S, timeout_s=15.0)
        missing = [name for name in self._topics if name not in meta]
        if missing:
            consumer.close()
            raise KafkaException(
                KafkaError(
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    f"topic {missing[0]} does not exist (still missing after {METADATA_WAIT_S:.0f} s)",
                )
            )
        parts = []
        for name in self._topics:
            parts += [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta[name].partitions]
        consumer.assign(parts)
        return consumer

    @property
    def started(self) -> bool:
        """Whether the consuming thread was started."""
        return self._thread is not None

    def start(self) -> None:
        """Start the consuming thread.

        Raises:
            KafkaException: ``UNKNOWN_TOPIC_OR_PART`` when one of its topics is still missing from the
                cluster's metadata after :data:`METADATA_WAIT_S` seconds (the topics must exist).
        """
        consumer = self._consumer_()
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

    def read_to_end(self, timeout_s: float = 30.0) -> bool:
        """Read in the caller's thread up to the end offsets the partitions have now (incremental:
        a second call reads only what arrived since).

        Returns:
            True when every partition was read to its end offset within ``timeout_s``.

        Raises:
            KafkaException: a topic does not exist or the cluster cannot be reached.
        """
        if self._consumer is None:
            self._consumer = self._consumer_()
        consumer = self._consumer
        ends = self._list_offsets(list(consumer.assignment()), OffsetSpec.latest(), timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            behind = [tp for tp in consumer.position(consumer.assignment()) if _before(tp, ends)]
            if not behind:
                return True
            msgs = consumer.consume(num_messages=500, timeout=self.poll_timeout_s)
            with self.lock:
                for msg in msgs:
                    self._ingest(msg)
        return False

    def _ingest(self, msg: Any) -> None:
        if msg.error() is not None:
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("monitor: %s[%s]: %s", msg.topic(), msg.partition(), msg.error())
            return
        base = self._topics.get(msg.topic())
        if base is not None:
            ts_type, ts = msg.timestamp()
            if ts_type and ts > self.last_record_ms.get(base, 0):
                self.last_record_ms[base] = ts
        record_type = DECODED.get(base) if base else None
        s = self.stats
        if base == "batches":
            key = msg.key()
            s.on_batch(key.decode(errors="replace") if isinstance(key, bytes) else str(key))
            return
        if base == "dlq":
            s.dlq += 1
            try:
                dead = self.serde.decode_message(msg, DeadLetter)
            except SchemaError:  # counted; a dead letter that is no envelope has no reason to show
                return
            s.on_dead_letter(dead.stage, dead.error_type, dead.reason)
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
        elif isinstance(record, ValidationResult):
            if record.policy_name == self.settings.rl.policy_name:
                s.on_validation(record)
        elif isinstance(record, GroupOutcome):
            s.on_group_outcome(record)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._consumer is not None:
            self._consumer.close()
        self._consumer = None
        self._drop_admin()

    # -- lag ------------------------------------------------------------------------------------
    def measure_lag(self, timeout_s: float = 5.0) -> dict[tuple[str, str], int]:
        """Records behind per (consumer group, topic) for every group of this run, stored in the stats.

        Lag of a partition = end offset − committed offset. A partition assigned to a member but
        with nothing committed yet (a stage that just started, or one that has not committed since)
        counts from the log start offset: what the group, which starts at the earliest offset, still
        has to read. Groups are those whose id starts with the run's group stem
        (``settings.group_id("")``); the monitor's own group is left out, and so is, for this
        reading, a group that could not be described (its coordinator is moving or does not answer).
        Each admin call waits up to ``timeout_s`` seconds.

        Returns:
            ``{(group id, topic base name): lag}``. Errors are logged and give ``{}``.
        """
        stem = self.settings.group_id("")
        names = {self.settings.topics.name(b): b for b in DECODED}
        fence = self.settings.group_id(FENCE_GROUP)
        try:
            groups, undescribed = self._groups(timeout_s)
            committed: dict[str, list[TopicPartition]] = {}
            for g in groups:
                if g.group in undescribed:
                    continue
                futures = self._admin_().list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(g.group)], request_timeout=COORDINATOR_REQUEST_TIMEOUT_S
                )
                listed = self._coordinator_results(futures, timeout_s)[g.group]
                if isinstance(listed, KafkaException):
                    raise listed
                tps = list(listed.topic_partitions or [])
                # the broker lists only partitions with a commit; add the assigned ones without one
                # (not the sampler's fence: it holds a partition it never reads)
                have = {(tp.topic, tp.partition) for tp in tps}
                if g.group != fence:
                    tps += [
                        TopicPartition(t, p, -1) for t, p in g.assigned if t in names and (t, p) not in have
                    ]
                committed[g.group] = tps
        except KafkaException as exc:
            log.warning("monitor: cannot list consumer group offsets: %s", exc)
            return {}
        tps_all = [tp for tps in committed.values() for tp in tps if tp.topic in names]
        ends = self._offsets_or_empty(tps_all, OffsetSpec.latest(), "end", timeout_s)
        uncommitted = [tp for tp in tps_all if tp.offset < 0]
        starts = self._offsets_or_empty(uncommitted, OffsetSpec.earliest(), "log start", timeout_s)
        lag: dict[tuple[str, str], int] = {}
        for g, tps in committed.items():
            for tp in tps:
                base = names.get(tp.topic)
                if base is None or (tp.topic, tp.partition) not in ends:
                    continue
                end = ends[(tp.topic, tp.partition)]
                behind = end - (tp.offset if tp.offset >= 0 else starts.get((tp.topic, tp.partition), 0))
                key = (g.removeprefix(stem) if g.startswith(stem) else g, base)
                lag[key] = lag.get(key, 0) + max(0, behind)
        with self.lock:
            self.stats.lag = lag
        return lag

    def _admin_(self) -> Any:
        """The monitor's admin client (made at first use, and again after :meth:`_drop_admin`)."""
        if self._admin is None:
            self._admin = make_admin(self.settings)
        return self._admin

    def _drop_admin(self) -> None:
        """Drop the admin client after one of its calls failed or was given up on; the next call makes
        a new one.

        Destroying the client ends the coordinator calls it still has pending, which librdkafka would
        otherwise finish by aborting the process
        (:data:`~streamrl.kafka.COORDINATOR_REQUEST_TIMEOUT_S`). A new client also looks every group's
        coordinator and every partition's leader up again: an admin client never does so by itself,
        so after a coordinator moved (a broker died, stalled or came back) each call would keep going
        to the old one, and a ``NOT_COORDINATOR`` answer to ``list_consumer_group_offsets`` crashes
        the process (segfault, https://github.com/confluentinc/librdkafka/issues/5040: an admin
        client has no consumer group to hand the error to), while a partition's stale leader epoch
        fails every ``list_offsets`` with ``FENCED_LEADER_EPOCH``.
        """
        self._admin = None  # an AdminClient has no close(); the last reference gone destroys it

    def _coordinator_results(self, futures: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """:func:`~streamrl.kafka.coordinator_results`, dropping the client when a call failed or timed
        out."""
        results = coordinator_results(futures, timeout_s)
        if any(isinstance(r, KafkaException) for r in results.values()):
            self._drop_admin()
        return results

    def _is_pipeline_group(self, group: str) -> bool:
        if group == self.settings.group_id("dev-monitor"):
            return False
        app_id = self.settings.streams.app_id or f"{self.settings.topics.prefix}streams"
        return group.startswith(self.settings.group_id("")) or group == app_id

    def groups(self, timeout_s: float = 5.0) -> list[GroupState]:
        """The pipeline's consumer groups with their state and member count, sorted by id; a group
        that could not be described is ``UNKNOWN`` with no members. Each admin call waits up to
        ``timeout_s`` seconds.

        Raises:
            KafkaException: the cluster cannot be reached.
        """
        return self._groups(timeout_s)[0]

    def _groups(self, timeout_s: float) -> tuple[list[GroupState], set[str]]:
        """:meth:`groups`, and the ids of the groups that could not be described."""
        try:
            listed = self._admin_().list_consumer_groups(request_timeout=timeout_s).result()
        except KafkaException:
            self._drop_admin()
            raise
        ids = sorted(g.group_id for g in listed.valid if self._is_pipeline_group(g.group_id))
        if not ids:
            return [], set()
        described = self._admin_().describe_consumer_groups(
            ids, request_timeout=COORDINATOR_REQUEST_TIMEOUT_S
        )
        results = self._coordinator_results(described, timeout_s)
        out: list[GroupState] = []
        undescribed: set[str] = set()
        for gid in ids:
            d = results[gid]
            if isinstance(d, KafkaException):
                log.warning("monitor: cannot describe group %s: %s", gid, d)
                out.append(GroupState(gid, "UNKNOWN", 0))
                undescribed.add(gid)
                continue
            state = getattr(d.state, "name", str(d.state))
            assigned = sorted(
                {
                    (tp.topic, tp.partition)
                    for m in d.members
                    if m.assignment is not None
                    for tp in m.assignment.topic_partitions or []
                }
            )
            out.append(GroupState(gid, state, len(d.members), tuple(assigned)))
        return out, undescribed

    def _list_offsets(
        self, tps: list[TopicPartition], spec: OffsetSpec, timeout_s: float
    ) -> dict[tuple[str, int], int]:
        """One ListOffsets request per broker for every partition (``get_watermark_offsets`` costs a
        round trip per partition: seconds for a few dozen on a busy broker)."""
        if not tps:
            return {}
        futures = self._admin_().list_offsets(
            {TopicPartition(t.topic, t.partition): spec for t in tps}, request_timeout=timeout_s
        )
        try:
            return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        except KafkaException:
            self._drop_admin()
            raise

    def count_since(
        self, base: str, since_ms: int, timeout_s: float = 10.0, *, topic: str | None = None
    ) -> int:
        """Records of topic ``base`` (or of the topic named ``topic`` in full, e.g. an internal topic of
        streams) whose broker timestamp is at or after ``since_ms`` (ms since the epoch), summed over its
        partitions from the offsets for that time and the end offsets; 0 for a topic that does not exist.

        Raises:
            KafkaException: the cluster cannot be reached.
        """
        topic = topic or self.settings.topics.name(base)
        try:
            meta = self._admin_().list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException:
            self._drop_admin()
            raise
        if meta is None or meta.error is not None:
            return 0
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        since = self._list_offsets(tps, OffsetSpec.for_timestamp(since_ms), timeout_s)
        ends = self._list_offsets(tps, OffsetSpec.latest(), timeout_s)
        # offset -1: no record at or after since_ms in that partition
        return sum(max(0, ends[k] - off) for k, off in since.items() if off >= 0)

    def _offsets_or_empty(
        self, tps: list[TopicPartition], spec: OffsetSpec, what: str, timeout_s: float
    ) -> dict[tuple[str, int], int]:
        """:meth:`_list_offsets`, with an error logged (naming ``what``) and answered by ``{}``."""
        try:
            return self._list_offsets(tps, spec, timeout_s)
        except KafkaException as exc:
            log.warning("monitor: cannot read %s offsets: %s", what, exc)
            return {}


def _before(tp: TopicPartition, ends: dict[tuple[str, int], int]) -> bool:
    """Whether the consumer's position on ``tp`` is short of the end offset captured in ``ends``."""
    end = ends.get((tp.topic, tp.partition), 0)
    low = 0 if tp.offset < 0 else tp.offset
    return end > 0 and low < end
