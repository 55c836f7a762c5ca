"""Kafka connection, security, local broker and topic settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from streamrl.config.base import Section

#: Every topic of DESIGN.md, by base name (the configured prefix is prepended).
TOPIC_NAMES: tuple[str, ...] = (
    "tasks",
    "samples",
    "requests",
    "trajectories",
    "batches",
    "group_outcomes",
    "checkpoints",
    "dlq",
    "validation",
    "resources",
    "optimizer_events",
    "optimizer_state",
    "sampler_state",
)
#: Topics whose cleanup policy is ``compact``: the latest record per key is the state (``resources``:
#: one immutable record per ``name/version``, so compaction never drops a version). Not
#: ``group_outcomes``: a group has several records (its batch, members dropped for their own
#: reasons, late members), each an event the sampler must count; compaction by ``group_id`` would
#: keep only the last.
COMPACTED_TOPICS: frozenset[str] = frozenset(
    {"tasks", "checkpoints", "validation", "resources", "optimizer_state", "sampler_state"}
)


#: Default partition count of every topic.
DEFAULT_PARTITIONS: dict[str, int] = {
    "tasks": 4,
    "samples": 6,
    "requests": 6,
    "trajectories": 6,
    "batches": 1,
    "group_outcomes": 1,
    "checkpoints": 1,
    "dlq": 1,
    "validation": 1,
    "resources": 1,
    "optimizer_events": 1,
    "optimizer_state": 1,
    "sampler_state": 1,
}


def _default_home() -> Path:
    return Path.home() / ".cache" / "streamrl"


class LocalBrokerSettings(Section):
    """The single-node Apache Kafka that ``streamrl kafka start`` runs (KRaft, combined mode)."""

    kafka_version: str = "4.1.1"
    """Version of ``org.apache.kafka:kafka_2.13`` resolved from Maven Central."""
    log4j_version: str = "2.25.3"
    """Version of the log4j2 binding (``log4j-core``, ``log4j-slf4j2-impl``)."""
    host: str = "127.0.0.1"
    """Address the broker listens on and advertises."""
    port: int = Field(9092, ge=1, le=65535)
    """Broker (client) listener port."""
    controller_port: int = Field(9093, ge=1, le=65535)
    """KRaft controller listener port."""
    home: Path = Field(default_factory=_default_home)
    """Directory outside the repo for the jar cache (``lib/``), data (``kafka-data/``) and logs."""
    heap: str = "768m"
    """JVM heap (``-Xms``/``-Xmx``), e.g. ``512m`` or ``1g``."""
    start_timeout_s: float = Field(90.0, gt=0)
    """How long ``start`` waits for the broker to answer a metadata request."""
    listener_security: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """The client listener: ``PLAINTEXT``, or ``SASL_SSL`` (TLS with the certificate in ``tls_dir``,
    SCRAM-SHA-512 logins of ``scram_users``). Clients then need ``kafka.security_protocol: SASL_SSL``,
    ``sasl_mechanism: SCRAM-SHA-512``, a user and ``ssl_ca_location: <tls_dir>/ca.pem``."""
    tls_dir: Path | None = None
    """With SASL_SSL: the broker's development CA and certificate (``streamrl tls dev-ca`` files),
    made on first start if missing; None = ``<home>/tls``."""
    scram_users: dict[str, SecretStr] = Field(default_factory=dict)
    """With SASL_SSL: SCRAM-SHA-512 users (name -> password), created when the storage is formatted
    (``kafka-storage format --add-scram``) and upserted at every start. Must include ``super_users[0]``."""
    super_users: list[str] = Field(default_factory=lambda: ["admin"])
    """User names allowed everything (``super.users``); the first one carries the broker's own
    inter-broker traffic. Stage principals should not be super users."""
    authorizer: bool = False
    """Run Kafka's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: only super
    users and what ACLs allow (``streamrl kafka acls --apply``)."""

    @model_validator(mode="after")
    def _sasl_ssl_needs_users(self) -> LocalBrokerSettings:
        if self.listener_security == "SASL_SSL":
            if not self.super_users or self.super_users[0] not in self.scram_users:
                raise ValueError(
                    "listener_security=SASL_SSL needs scram_users with a password for super_users[0] "
                    f"({self.super_users[0] if self.super_users else 'none given'!r}), the broker's own login"
                )
            if "streamrl-local-broker" in self.scram_users:
                raise ValueError(
                    "scram_users: 'streamrl-local-broker' is the broker's own certificate principal"
                )
            for name, pw in self.scram_users.items():
                bad = set(name + pw.get_secret_value()) & set(',[]="\\ ')
                if bad or not name or not pw.get_secret_value():
                    raise ValueError(
                        f'scram_users.{name}: names and passwords must be non-empty, without any of , [ ] = " \\ or spaces'
                    )
        elif self.authorizer:
            raise ValueError(
                "authorizer needs listener_security: SASL_SSL (PLAINTEXT logins have no identity)"
            )
        return self


class KafkaSettings(Section):
    """How every StreamRL client reaches the cluster.

    ``STREAMRL_BOOTSTRAP_SERVERS`` overrides ``bootstrap_servers`` for every command.
    """

    bootstrap_servers: str = Field("127.0.0.1:9092", json_schema_extra={"derived": True})
    """Comma-separated ``host:port`` list. When not given, ``kafka.local``'s ``host:port`` (the local broker)."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka ``security.protocol``; passed to every client."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    """``sasl.mechanism`` when the protocol is SASL_*."""
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    """CA bundle to verify the brokers (``ssl.ca.location``)."""
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    compression_type: Literal["zstd", "lz4", "snappy", "gzip", "none"] = "lz4"
    """Producer compression codec."""
    client_properties: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka properties passed verbatim to every confluent-kafka client."""
    schema_registry_url: str | None = None
    """Confluent Schema Registry URL; when set, records use its framing instead of single-object encoding."""
    local: LocalBrokerSettings = Field(default_factory=LocalBrokerSettings)

    @model_validator(mode="before")
    @classmethod
    def _bootstrap_defaults_to_local_broker(cls, data: Any) -> Any:
        # ``kafka: {local: {port: 19092}}`` alone must reach the broker ``streamrl kafka start`` runs.
        if isinstance(data, dict) and "bootstrap_servers" not in data and isinstance(data.get("local"), dict):
            local = data["local"]
            host = local.get("host", LocalBrokerSettings.model_fields["host"].default)
            port = local.get("port", LocalBrokerSettings.model_fields["port"].default)
            data = {**data, "bootstrap_servers": f"{host}:{port}"}
        return data

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol={self.security_protocol} needs kafka.sasl_mechanism (e.g. PLAIN or SCRAM-SHA-512)"
            )
        return self


class TopicsSettings(Section):
    """Names and layout of the StreamRL topics. ``STREAMRL_TOPIC_PREFIX`` overrides ``prefix``."""

    prefix: str = "streamrl."
    """Prepended to every topic name (and consumer group id), so pipelines can share a cluster."""
    partitions: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PARTITIONS))
    """Partition count per topic (base name); a topic not listed keeps its default. ``requests`` and
    ``trajectories`` must be equal."""
    replication_factor: int = Field(1, ge=1)
    """Replication factor of every topic (1 for the local single-node broker)."""
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """``max.message.bytes`` of every topic and ``message.max.bytes`` of producers, in bytes."""
    retention_ms: int | None = None
    """``retention.ms`` of the non-compacted topics; None keeps the broker default (7 days)."""
    configs: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Extra topic configs per base name, e.g. ``{samples: {retention.ms: "86400000"}}``."""

    @field_validator("partitions", mode="before")
    @classmethod
    def _defaults_for_unlisted_topics(cls, value: Any) -> Any:
        return {**DEFAULT_PARTITIONS, **value} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check_topics(self) -> TopicsSettings:
        unknown = sorted(set(self.partitions) | set(self.configs) - set(TOPIC_NAMES))
        unknown = [t for t in unknown if t not in TOPIC_NAMES]
        if unknown:
            raise ValueError(f"unknown topic name(s) {unknown}; topics are {list(TOPIC_NAMES)}")
        for name, count in self.partitions.items():
            if count < 1:
                raise ValueError(f"partitions.{name} must be >= 1, got {count}")
        if self.partitions["requests"] != self.partitions["trajectories"]:
            raise ValueError(
                "partitions.requests and partitions.trajectories must be equal (the join by rollout_id "
                f"is co-partitioned); got {self.partitions['requests']} and {self.partitions['trajectories']}"
            )
        return self

    def name(self, base: str) -> str:
        """Full topic name of a base name: ``name("samples") -> "streamrl.samples"``.

        Raises:
            KeyError: ``base`` is not a StreamRL topic.
        """
        if base not in TOPIC_NAMES:
            raise KeyError(f"unknown topic {base!r}; topics are {list(TOPIC_NAMES)}")
        return f"{self.prefix}{base}"
