"""Topic admin: create every StreamRL topic idempotently, describe them, delete a pipeline's topics."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from streamrl.config import COMPACTED_TOPICS, TOPIC_NAMES, Settings
from streamrl.errors import BrokerError
from streamrl.kafka import make_admin, make_consumer


def topic_configs(settings: Settings, base: str) -> dict[str, str]:
    """Topic-level configs of one topic: cleanup policy, ``max.message.bytes``, retention, overrides."""
    t = settings.topics
    conf = {
        "cleanup.policy": "compact" if base in COMPACTED_TOPICS else "delete",
        "max.message.bytes": str(t.max_message_bytes),
    }
    if t.retention_ms is not None and base not in COMPACTED_TOPICS:
        conf["retention.ms"] = str(t.retention_ms)
    conf.update(t.configs.get(base, {}))
    return conf


def topic_config_value(settings: Settings, topic: str, key: str, *, timeout_s: float = 5.0) -> str | None:
    """One config of one topic as the broker holds it (e.g. ``max.message.bytes`` of a topic created
    with other settings than these), or None when it cannot be read: the principal lacks
    ``DESCRIBE_CONFIGS`` on the topic (stage principals have none, see :mod:`streamrl.acl`), the topic or
    the key does not exist, or the broker does not answer within ``timeout_s`` seconds.

    Raises:
        BrokerError: a secured cluster refused the login (:func:`streamrl.kafka.verify_login`).
    """
    from confluent_kafka.admin import ConfigResource

    admin = make_admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(
            timeout=timeout_s
        )
    except (KafkaException, TimeoutError, ValueError):  # refused, unknown topic, no answer
        return None
    entry = entries.get(key)
    return None if entry is None or entry.value is None else str(entry.value)


def ensure_topics(
    settings: Settings, *, admin: AdminClient | None = None, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create every topic of DESIGN.md that does not exist yet, and return once each new partition
    takes writes.

    Existing topics are left as they are (their partition count is checked, not changed). A new
    partition is ready once its leader answers ``ListOffsets`` (:func:`_wait_until_writable`): the
    metadata names a leader a moment before that broker leads the partition, and records produced in
    that moment can be lost (see :func:`_wait_until_writable`).

    Returns:
        ``{full topic name: "created" | "exists"}``.

    Raises:
        BrokerError: the cluster is unreachable, a creation failed, or an existing topic has a
            different partition count than configured.
    """
    admin = admin or make_admin(settings)
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerError(
            f"{settings.kafka.bootstrap_servers}: cannot list topics ({exc}); is the broker up? (`streamrl kafka status`, `streamrl kafka start`)"
        ) from exc
    result: dict[str, str] = {}
    new: list[NewTopic] = []
    for base in TOPIC_NAMES:
        name = settings.topics.name(base)
        want = settings.topics.partitions[base]
        if name in existing:
            have = len(existing[name].partitions)
            if have != want:
                raise BrokerError(
                    f"topic {name} exists with {have} partitions but topics.partitions.{base} is {want}; "
                    "use the existing count in the config or a new topic prefix"
                )
            result[name] = "exists"
            continue
        new.append(
            NewTopic(
                name,
                num_partitions=want,
                replication_factor=settings.topics.replication_factor,
                config=topic_configs(settings, base),
            )
        )
    if new:
        futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout_s)
                result[name] = "created"
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS: a concurrent creator won
                    result[name] = "exists"
                    continue
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
        # metadata first: without a leader in it, ListOffsets fails at once ("No leaders found")
        _wait_for_leaders(admin, [t.topic for t in new], timeout_s)
        _wait_until_writable(admin, {t.topic: t.num_partitions for t in new}, timeout_s)
    return result


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Block until every partition of ``names`` has a leader (a new topic needs a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(timeout=timeout_s).topics
        pending = [
            n
            for n in names
            if n not in meta
            or meta[n].error is not None
            or any(p.leader < 0 for p in meta[n].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topics {pending} have no leader after {timeout_s:.0f} s")
        time.sleep(0.1)


def _wait_until_writable(admin: AdminClient, partitions: dict[str, int], timeout_s: float) -> None:
    """Block until the leader of every partition of ``partitions`` (topic -> partition count) answers
    ``ListOffsets``.

    Why: a broker lists a new partition's leader in its metadata before that broker leads the
    partition. In between it answers ``NOT_LEADER_OR_FOLLOWER`` (measured: 186 of 400 new partitions
    right after the metadata named their leader, on the local broker under load). An idempotent
    producer writing in that moment lost the first record(s) of a partition in about 1 run of 100
    while every delivery report said delivered (``publish`` and the sampler restart test saw it; a
    likely cause: the broker takes any sequence number as the first from a producer it has no state
    for, so a later batch can land before the retried first one). After this wait it did not happen.

    Raises:
        BrokerError: a partition still not led after ``timeout_s`` seconds, or another error.
    """
    todo = [(t, p) for t, n in partitions.items() for p in range(n)]
    deadline = time.monotonic() + timeout_s
    while True:
        futures = admin.list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in todo}, request_timeout=timeout_s
        )
        answers: dict[tuple[str, int], str] = {}  # partition -> the settling error it answered
        for tp, fut in futures.items():
            try:
                fut.result()
            except KafkaException as exc:
                if not is_settling(exc):
                    raise BrokerError(
                        f"{tp.topic}[{tp.partition}]: cannot read its end offset: {exc}"
                    ) from exc
                answers[(tp.topic, tp.partition)] = exc.args[0].name()
        todo = sorted(answers)
        if not todo:
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"partitions {[f'{t}[{p}]' for t, p in todo]} are not led by a broker after "
                f"{timeout_s:.0f} s (they answer {sorted(set(answers.values()))})"
            )
        time.sleep(0.05)


#: Errors a just-created partition answers with until its leader is fully in place.
SETTLING_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.UNKNOWN_LEADER_EPOCH,
    }
)


def is_settling(exc: BaseException | None, *, retriable: bool = True) -> bool:
    """Whether ``exc`` is a Kafka error worth asking again: one of :data:`SETTLING_ERRORS`, or (with
    ``retriable``) any error librdkafka marks retriable."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and ((retriable and err.retriable()) or err.code() in SETTLING_ERRORS)


def list_topics_until_listed(
    client: Any, names: Iterable[str], wait_s: float, *, timeout_s: float
) -> dict[str, Any]:
    """``client.list_topics(timeout=timeout_s).topics`` (any confluent-kafka client), asked again every
    0.2 s for up to ``wait_s`` seconds while one of ``names`` is missing from it: on a cluster, a
    broker lists a topic created a moment ago a little later. The caller checks what is still missing.

    Raises:
        KafkaException: no metadata within ``timeout_s`` seconds.
    """
    names = list(names)
    deadline = time.monotonic() + wait_s
    while True:
        meta = client.list_topics(timeout=timeout_s).topics
        if all(n in meta for n in names) or time.monotonic() > deadline:
            return meta
        time.sleep(0.2)


TOPIC_APPEAR_WAIT_S = 3.0
"""How long :func:`require_topic` waits for a topic missing from the metadata before saying it does not
exist, in seconds (on a cluster, a broker lists a topic created a moment ago a little later)."""


class TopicUnavailable(BrokerError):
    """The cluster cannot be reached, or a topic a writer needs does not exist on it."""


def require_topic(client: Any, topic: str, bootstrap: str, timeout_s: float) -> Any:
    """Fail fast, before producing, when nothing could be delivered: a writer to a missing topic or a
    dead broker would otherwise learn it only when its flush times out. Readers use it too.

    Args:
        client: any confluent-kafka client (a ``Producer``: ``EventProducer.producer``).
        topic: the full topic name.
        bootstrap: the address the message names.
        timeout_s: how long to wait for the cluster's metadata, in seconds.

    Returns:
        The topic's metadata (confluent-kafka ``TopicMetadata``: ``.partitions``).

    Raises:
        TopicUnavailable: no metadata from ``bootstrap`` within ``timeout_s`` seconds, or ``topic``
            is still not in it after :data:`TOPIC_APPEAR_WAIT_S` seconds.
    """
    try:
        # All topics, not list_topics(topic=...): that form may auto-create the topic on clusters
        # with auto.create.topics.enable, with the broker's default partitions and cleanup policy.
        topics = list_topics_until_listed(client, [topic], TOPIC_APPEAR_WAIT_S, timeout_s=timeout_s)
    except KafkaException as exc:
        raise TopicUnavailable(
            f"cannot reach Kafka at {bootstrap} within {timeout_s:.0f} s ({exc.args[0].str()}); "
            "is the broker running (`streamrl kafka status`) and kafka.bootstrap_servers right?"
        ) from None
    if topic not in topics:
        raise TopicUnavailable(
            f"topic {topic!r} does not exist on {bootstrap}; create the topics first: `streamrl topics create`"
            " (with the same config / STREAMRL_TOPIC_PREFIX)"
        )
    return topics[topic]


@dataclass(frozen=True)
class TopicInfo:
    """One topic as ``streamrl topics list`` shows it."""

    name: str
    partitions: int
    end_offsets: tuple[int, ...]
    """High watermark of each partition (offset of the next record), in partition order."""

    @property
    def records(self) -> int:
        """Sum of end offsets (records ever written; compaction and retention not subtracted)."""
        return sum(self.end_offsets)


def high_watermark(consumer: Consumer, tp: TopicPartition, timeout_s: float) -> int:
    """High watermark of one partition, retrying while a new partition's leader settles in."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
        except KafkaException as exc:
            if not is_settling(exc) or time.monotonic() > deadline:
                raise BrokerError(f"{tp.topic}[{tp.partition}]: cannot read end offset: {exc}") from exc
            time.sleep(0.2)


def describe_topics(settings: Settings, *, timeout_s: float = 15.0) -> list[TopicInfo]:
    """Partition counts and end offsets of every StreamRL topic that exists.

    Raises:
        BrokerError: the cluster is unreachable.
    """
    consumer = make_consumer(settings, settings.group_id("admin-describe"))
    try:
        try:
            meta = consumer.list_topics(timeout=timeout_s).topics
        except KafkaException as exc:
            raise BrokerError(
                f"{settings.kafka.bootstrap_servers}: cannot list topics ({exc}); is the broker up? (`streamrl kafka status`, `streamrl kafka start`)"
            ) from exc
        out = []
        for base in TOPIC_NAMES:
            name = settings.topics.name(base)
            if name not in meta:
                continue
            ends = [
                high_watermark(consumer, TopicPartition(name, p), timeout_s)
                for p in sorted(meta[name].partitions)
            ]
            out.append(TopicInfo(name, len(ends), tuple(ends)))
        return out
    finally:
        consumer.close()


#: Kafka's UNKNOWN_TOPIC_OR_PARTITION: deleting a topic that is already gone.
_UNKNOWN_TOPIC = 3


def pipeline_topics(settings: Settings, existing: Iterable[str], app_id: str | None = None) -> list[str]:
    """The topics of the pipeline under ``topics.prefix`` that exist: every topic of DESIGN.md
    (``<prefix>tasks``, ...), then, with ``app_id`` (streams' application id), the streams
    application's own topics (``<app_id>-...``: ticks, repartition and changelog topics).

    Another pipeline whose prefix starts with this one (``streamrl.<run_id>.`` under ``streamrl.``)
    is not included: only exact names and ``<app_id>-`` count.
    """
    names = set(existing)
    out = [settings.topics.name(b) for b in TOPIC_NAMES if settings.topics.name(b) in names]
    if app_id:
        out += sorted(t for t in names if t.startswith(f"{app_id}-"))
    return out


def delete_topics(
    settings: Settings, names: list[str], *, admin: AdminClient | None = None, timeout_s: float = 30.0
) -> None:
    """Delete ``names`` and wait until the cluster's metadata no longer lists them (so they can be
    created again at once). A topic already gone is not an error.

    Raises:
        BrokerError: the cluster is unreachable, a deletion failed, or the topics are still listed
            after ``timeout_s`` seconds.
    """
    if not names:
        return
    admin = admin or make_admin(settings)
    futures = admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == _UNKNOWN_TOPIC:
                continue
            raise BrokerError(f"cannot delete topic {name}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            left = [n for n in names if n in admin.list_topics(timeout=timeout_s).topics]
        except KafkaException as exc:
            raise BrokerError(f"{settings.kafka.bootstrap_servers}: cannot list topics ({exc})") from exc
        if not left:
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topics still listed {timeout_s:.0f} s after their deletion: {left}")
        time.sleep(0.2)  # polling the cluster's metadata for the deletion to complete
