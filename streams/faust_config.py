"""Settings → Faust: broker URLs, credentials, app id, internal topic names; internal topic creation.

Faust's aiokafka driver does not read librdkafka properties, so :func:`faust_broker` translates
``streamrl.kafka.client_config(settings)`` (bootstrap servers and security) into Faust's ``broker`` and
``broker_credentials``. Internal topics (ticks, groups, validation) are created here with the
confluent admin client before the worker starts; Faust creates its changelog topics itself.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from streamrl.config import Settings
from streamrl.errors import BrokerError, ConfigError
from streamrl.kafka import client_config, make_admin

log = logging.getLogger(__name__)

#: librdkafka properties that :func:`faust_broker` understands; others are logged and ignored.
_KNOWN = {
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
}


@dataclass(frozen=True)
class StreamsTopics:
    """Full names and partition counts of every topic the aggregator reads or writes."""

    app_id: str
    requests: str
    trajectories: str
    batches: str
    group_outcomes: str
    dlq: str
    ticks: str  # join timer ticks, co-partitioned with requests
    groups: str  # complete train rollouts keyed by group_id, plus group ticks
    validation: str  # val trajectories' outcomes, one partition
    validation_results: str  # the public, compacted `validation` topic (ValidationResult records)
    join_partitions: int
    group_partitions: int


def streams_topics(settings: Settings) -> StreamsTopics:
    """Topic names derived from the prefix: the app id is ``streams.app_id`` or ``<prefix>streams``."""
    t = settings.topics
    app_id = settings.streams.app_id or f"{t.prefix}streams"
    return StreamsTopics(
        app_id=app_id,
        requests=t.name("requests"),
        trajectories=t.name("trajectories"),
        batches=t.name("batches"),
        group_outcomes=t.name("group_outcomes"),
        dlq=t.name("dlq"),
        ticks=f"{app_id}-ticks",
        groups=f"{app_id}-groups",
        validation=f"{app_id}-validation",
        validation_results=t.name("validation"),
        join_partitions=t.partitions["requests"],
        group_partitions=settings.streams.group_partitions,
    )


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's changelog topic name of ``table``: ``<app_id>-<table>-changelog``."""
    return f"{app_id}-{table}-changelog"


def _ssl_context(conf: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=conf.get("ssl.ca.location"))
    cert = conf.get("ssl.certificate.location")
    if cert:
        ctx.load_cert_chain(cert, keyfile=conf.get("ssl.key.location"), password=conf.get("ssl.key.password"))
    return ctx


def faust_broker(settings: Settings) -> dict[str, Any]:
    """Faust app kwargs ``broker`` (list of ``kafka://host:port``) and ``broker_credentials``.

    Raises:
        ConfigError: a security setting Faust's aiokafka driver cannot express (OAUTHBEARER).
    """
    import faust

    conf = client_config(settings)
    ignored = sorted(set(conf) - _KNOWN)
    if ignored:
        log.warning("streams: librdkafka properties %s have no aiokafka equivalent and are ignored", ignored)
    hosts = [h.strip() for h in str(conf["bootstrap.servers"]).split(",") if h.strip()]
    out: dict[str, Any] = {"broker": [f"kafka://{h}" for h in hosts]}
    protocol = conf.get("security.protocol", "PLAINTEXT")
    if protocol == "SSL":
        out["broker_credentials"] = faust.SSLCredentials(_ssl_context(conf))
    elif protocol.startswith("SASL"):
        mechanism = conf.get("sasl.mechanism", "PLAIN")
        ctx = _ssl_context(conf) if protocol == "SASL_SSL" else None
        if mechanism == "GSSAPI":
            out["broker_credentials"] = faust.GSSAPICredentials(ssl_context=ctx)
        elif mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            out["broker_credentials"] = faust.SASLCredentials(
                username=conf.get("sasl.username"),
                password=conf.get("sasl.password"),
                mechanism=mechanism,
                ssl_context=ctx,
            )
        else:
            raise ConfigError(
                f"kafka.sasl_mechanism={mechanism}: not supported by the streams stage (Faust/aiokafka)"
            )
    return out


def ensure_streams_topics(settings: Settings, timeout_s: float = 30.0) -> StreamsTopics:
    """Create the internal topics if missing and check co-partitioning of ``requests``/``trajectories``.

    Raises:
        BrokerError: unreachable cluster, a source or output topic is missing, partition counts differ from the
            config, or a topic cannot be created.
    """
    names = streams_topics(settings)
    admin = make_admin(settings)
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerError(f"{settings.kafka.bootstrap_servers}: cannot list topics: {exc}") from exc
    for source in (names.requests, names.trajectories):
        if source not in existing:
            raise BrokerError(f"topic {source} does not exist; run `streamrl topics create` first")
        have = len(existing[source].partitions)
        if have != names.join_partitions:
            raise BrokerError(
                f"topic {source} has {have} partitions, config says {names.join_partitions}: "
                "requests and trajectories must be co-partitioned with the join table"
            )
    for output in (names.batches, names.validation_results):  # else a send would auto-create it, uncompacted
        if output not in existing:
            raise BrokerError(f"topic {output} does not exist; run `streamrl topics create` first")
    retention = str(int(max(3600.0, 10 * settings.streams.dedup_retention_s) * 1000))
    wanted = {
        names.ticks: (names.join_partitions, {"retention.ms": "3600000"}),
        names.groups: (names.group_partitions, {"retention.ms": retention}),
        names.validation: (1, {"retention.ms": retention}),
    }
    # Faust would create its changelogs itself, but a freshly created topic can be missing from its
    # consumer's metadata for minutes (PartitionsMismatch "changelog has 0 partitions"): create them first.
    compact = {"cleanup.policy": "compact"}
    for table, partitions in (
        ("join", names.join_partitions),
        ("groups", names.group_partitions),
        ("validation", 1),
    ):
        wanted[changelog_topic(names.app_id, table)] = (partitions, compact)
    new = []
    for name, (partitions, config) in wanted.items():
        config = {**config, "max.message.bytes": str(settings.topics.max_message_bytes)}
        if name in existing:
            have = len(existing[name].partitions)
            if have != partitions:
                raise BrokerError(
                    f"internal topic {name} has {have} partitions, expected {partitions}; "
                    "use a new streams.app_id or topic prefix"
                )
            continue
        new.append(
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=settings.topics.replication_factor,
                config=config,
            )
        )
    if new:
        for name, fut in admin.create_topics(
            new, operation_timeout=timeout_s, request_timeout=timeout_s
        ).items():
            try:
                fut.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS
                    continue
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    return names
