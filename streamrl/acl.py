"""Least privilege on Kafka: which stage may read and write which topic and consumer group.

:data:`ACCESS` is the one table: ``streamrl kafka acls`` turns it into Kafka ACLs (one principal per
stage, :func:`acl_bindings`), and ``docs/SECURITY.md`` shows it as rendered by :func:`access_markdown`
(a test keeps the two equal), so the documentation and the ACLs cannot drift apart.

Operations granted (Kafka implies ``DESCRIBE`` from ``READ`` and ``WRITE``):

- a topic a stage reads: ``READ``; a topic it writes: ``WRITE`` (idempotent producers need nothing
  more since Kafka 3.0, KIP-679);
- its consumer groups: ``READ`` on the groups whose id starts with ``settings.group_id(name)``
  (prefixed, so the sampler's recovery group and every inference server's own group are covered);
- streams: ``READ``/``WRITE``/``CREATE``/``DESCRIBE_CONFIGS`` on its internal topics (prefix
  ``<app_id>-``: changelogs, ticks, groups, validation) and ``READ`` on its group (the app id);
- the monitor (``streamrl status``, ``streamrl dev``'s display): ``READ`` on every pipeline topic,
  ``DESCRIBE`` on the pipeline's groups, ``READ`` on its own groups.

Creating the pipeline's topics (``streamrl topics create``) and these ACLs takes an administrator
(a super user of the cluster), never a stage principal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamrl.config.kafka import TOPIC_NAMES
from streamrl.errors import BrokerError, ConfigError

if TYPE_CHECKING:
    from streamrl.config import Settings

__all__ = [
    "ACCESS",
    "ROLES",
    "StageAccess",
    "access_markdown",
    "acl_bindings",
    "apply_acls",
    "grants",
    "principals",
]


@dataclass(frozen=True)
class StageAccess:
    """What one stage's principal may do.

    Attributes:
        role: the stage (``sampler``, ``worker`` ...); its default principal is ``User:<stem>-<role>``.
        runs: which command runs under it (for the docs).
        reads: base names of the topics it reads.
        writes: base names of the topics it writes.
        groups: ``settings.group_id(...)`` names (prefixes) of its consumer groups.
        internal: it owns the streams app's internal topics and group (``<app_id>-*``, ``<app_id>``).
        monitor: it reads every pipeline topic and describes every pipeline group.
    """

    role: str
    runs: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    internal: bool = False
    monitor: bool = False


ACCESS: tuple[StageAccess, ...] = (
    StageAccess("publish", "`streamrl publish`, `streamrl resources put`", writes=("tasks", "resources")),
    StageAccess(
        "sampler",
        "`streamrl sampler`",
        reads=("tasks", "samples", "trajectories", "group_outcomes", "checkpoints", "dlq", "sampler_state"),
        writes=("samples", "dlq", "sampler_state"),
        groups=("sampler",),
    ),
    StageAccess(
        "worker",
        "`streamrl worker` (its in-process gateway records calls)",
        reads=("samples", "resources"),
        writes=("requests", "trajectories", "dlq"),
        groups=("workers",),
    ),
    StageAccess("gateway", "`streamrl gateway` (standalone)", writes=("requests",)),
    StageAccess(
        "streams",
        "`streamrl streams` (Faust)",
        reads=("requests", "trajectories"),
        writes=("batches", "group_outcomes", "validation", "dlq"),
        internal=True,
    ),
    StageAccess(
        "trainer",
        "`streamrl trainer`",
        reads=("batches",),
        writes=("checkpoints", "dlq"),
        groups=("trainer",),
    ),
    StageAccess(
        "inference", "`streamrl inference`", reads=("checkpoints",), writes=("dlq",), groups=("inference",)
    ),
    StageAccess(
        "optimizer",
        "`streamrl optimize` (prompt optimization)",
        reads=("tasks", "trajectories", "requests", "resources", "optimizer_state"),
        writes=("samples", "resources", "optimizer_events", "optimizer_state", "dlq"),
        groups=("optimizer",),
    ),
    StageAccess(
        "monitor",
        "`streamrl status`, `streamrl dev`'s display",
        reads=tuple(TOPIC_NAMES),
        groups=("dev-monitor", "status"),
        monitor=True,
    ),
)
ROLES: tuple[str, ...] = tuple(a.role for a in ACCESS)


def principals(settings: Settings, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The principal of every role: ``User:<stem>-<role>`` (``User:streamrl-sampler``) unless overridden.

    Raises:
        ConfigError: an override names an unknown role or is not ``Type:name``.
    """
    stem = settings.group_id("").rstrip("-")
    out = {role: f"User:{stem}-{role}" for role in ROLES}
    for role, principal in (overrides or {}).items():
        if role not in out:
            raise ConfigError(f"--principal {role}=...: unknown role; roles are {', '.join(ROLES)}")
        if ":" not in principal:
            raise ConfigError(f"--principal {role}={principal}: expected Type:name, e.g. User:{principal}")
        out[role] = principal
    return out


def grants(settings: Settings) -> list[tuple[str, str, str, str, str]]:
    """``(role, resource type, pattern type, name, operation)`` of every grant, in table order."""
    out = []
    app_id = settings.streams.app_id or f"{settings.topics.prefix}streams"
    for a in ACCESS:
        for t in a.reads:
            out.append((a.role, "TOPIC", "LITERAL", settings.topics.name(t), "READ"))
        for t in a.writes:
            out.append((a.role, "TOPIC", "LITERAL", settings.topics.name(t), "WRITE"))
        for g in a.groups:
            out.append((a.role, "GROUP", "PREFIXED", settings.group_id(g), "READ"))
        if a.internal:
            for op in ("READ", "WRITE", "CREATE", "DESCRIBE_CONFIGS"):
                out.append((a.role, "TOPIC", "PREFIXED", f"{app_id}-", op))
            out.append((a.role, "GROUP", "LITERAL", app_id, "READ"))
        if a.monitor:
            out.append((a.role, "GROUP", "PREFIXED", settings.group_id(""), "DESCRIBE"))
            out.append((a.role, "GROUP", "LITERAL", app_id, "DESCRIBE"))
    return out


def acl_bindings(settings: Settings, principal_of: Mapping[str, str]) -> list[Any]:
    """The ``confluent_kafka.admin.AclBinding`` of every grant of :data:`ACCESS` (host ``*``, ALLOW).

    Args:
        settings: topic prefix, group stem and streams app id.
        principal_of: role -> principal (:func:`principals`).
    """
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return [
        AclBinding(
            ResourceType[rtype],
            name,
            ResourcePatternType[pattern],
            principal_of[role],
            "*",
            AclOperation[op],
            AclPermissionType.ALLOW,
        )
        for role, rtype, pattern, name, op in grants(settings)
    ]


def apply_acls(settings: Settings, principal_of: Mapping[str, str], timeout_s: float = 30.0) -> int:
    """Create the ACLs of :func:`acl_bindings` (creating an existing one is a no-op).

    Returns:
        How many bindings were sent.

    Raises:
        BrokerError: the cluster refused one (no authorizer configured, or the client is not allowed
            to alter ACLs: run as a super user).
    """
    from confluent_kafka import KafkaException

    from streamrl.kafka import make_admin

    bindings = acl_bindings(settings, principal_of)
    admin = make_admin(settings)
    futures = admin.create_acls(bindings, request_timeout=timeout_s)
    for binding, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            raise BrokerError(f"cannot create ACL {binding}: {exc.args[0].str()}") from exc
    return len(bindings)


def access_markdown() -> str:
    """The table of :data:`ACCESS` as Markdown (the one in ``docs/SECURITY.md``), for the default
    prefix: topics by base name, groups by ``<stem>-<name>*``."""
    lines = [
        "| principal (default) | runs | reads | writes | consumer groups |",
        "|---|---|---|---|---|",
    ]
    for a in ACCESS:
        groups = [f"`<stem>-{g}*`" for g in a.groups]
        if a.internal:
            groups.append("`<app_id>` (+ its internal topics `<app_id>-*`: read, write, create)")
        if a.monitor:
            groups.append("describe every `<stem>-*` group and `<app_id>`")
        reads = "every topic" if a.monitor else ", ".join(f"`{t}`" for t in a.reads) or "—"
        lines.append(
            f"| `User:<stem>-{a.role}` | {a.runs} | {reads} | "
            f"{', '.join(f'`{t}`' for t in a.writes) or '—'} | {', '.join(groups) or '—'} |"
        )
    return "\n".join(lines) + "\n"
