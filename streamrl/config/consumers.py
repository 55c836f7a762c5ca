"""Config sections of the consumers stage: the rollout worker (``worker``) and the gateway (``gateway``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, model_validator

from streamrl.config.base import Section
from streamrl.config.security import ServerTLSSettings


class WorkerSettings(Section):
    """A rollout worker: one member of the consumer group ``<prefix>workers`` on ``samples``."""

    agent: str | None = None
    """The agent to run, ``package.module:function`` (or ``:Class`` for an ``Agent`` subclass).
    ``streamrl worker --agent`` overrides it. Which code runs is never read from a record."""
    concurrency: int = Field(8, ge=1, le=4096)
    """Rollouts run at once by this worker; partitions are paused while it is at capacity."""
    sync_threads: int | None = Field(None, ge=1)
    """Threads for synchronous agents; None = ``concurrency``. A sync agent still running when its
    rollout times out keeps its thread (Python cannot stop it): the thread is written off and
    replaced, so the pool keeps this many live threads."""
    max_abandoned_threads: int = Field(16, ge=0)
    """Most written-off sync agent threads (agents that never returned) a worker tolerates; past it the
    worker stops with an error, for its supervisor to restart it (the only way to reclaim them)."""
    rollout_timeout_s: float = Field(600.0, gt=0)
    """Wall-clock limit of one rollout, in seconds, from when its agent starts (a sync agent waiting for
    a free thread is not timed yet); past it the rollout becomes a ``timeout`` trajectory."""
    shutdown_timeout_s: float = Field(60.0, ge=0)
    """On SIGTERM, how long running rollouts may still run before they are timed out, in seconds."""
    poll_timeout_s: float = Field(0.05, gt=0, le=5)
    """Longest block of one consumer poll, in seconds (bounds the reaction time to capacity changes)."""
    commit_interval_s: float = Field(0.2, ge=0)
    """Least time between two offset commits, in seconds (commits are also made on revoke and shutdown)."""
    revoke_grace_s: float = Field(5.0, ge=0)
    """On a rebalance, how long running rollouts of revoked partitions may finish before the last
    commit for those partitions, in seconds. Rollouts still running afterwards are re-run by the
    partition's new owner (with a fresh ``attempt_id``)."""
    session_timeout_ms: int = Field(45_000, ge=1_000)
    """Kafka ``session.timeout.ms``: a worker whose heartbeats stop this long is removed from the group."""
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    """Kafka ``max.poll.interval.ms``. The poll loop keeps running while rollouts run, so a rollout
    may last longer than this."""
    delivery_timeout_s: float = Field(30.0, gt=0)
    """How long a finished rollout waits for its LLMRequest records to be acknowledged before its
    Trajectory is produced, in seconds; past it the rollout is failed with the reason."""
    resource_timeout_s: float = Field(30.0, gt=0)
    """How long a rollout waits for the resource versions its sample pins to appear on ``resources``,
    in seconds (a version is read once and cached); still missing after it, the rollout fails."""
    breaker_failures: int = Field(3, ge=1)
    """Rollout attempts in a row failed by the inference service (unreachable, 5xx, timing out) after
    which the worker takes no samples until the service answers its health probe. One such failure
    already triggers a probe; a failed probe stops the worker at once."""
    breaker_probe_s: float = Field(0.5, gt=0)
    """First health-probe interval once the worker stopped taking samples, in seconds; it doubles up
    to ``breaker_probe_max_s``."""
    breaker_probe_max_s: float = Field(1.0, gt=0)
    """Longest interval between health probes of an unhealthy inference service, in seconds (so the
    worker resumes at most this long after the service is back)."""
    health_probe_timeout_s: float = Field(2.0, gt=0)
    """Time limit of one health probe (``GET /health`` of the inference service), in seconds."""
    model: str | None = None
    """Model name handed to agents (``llm.model``); None = ``rl.policy_name``."""
    sampling: dict[str, Any] = Field(default_factory=dict)
    """Sampling defaults handed to agents (``llm.sampling``), e.g. ``{temperature: 1.0, max_tokens: 256}``."""
    worker_id: str | None = None
    """Name of this worker in trajectories and logs; None = ``<hostname>-<pid>``. When set, it is also
    the worker's static group membership (``group.instance.id``): a restarted worker with the same id
    takes its partitions back at once instead of after ``session_timeout_ms`` (``streamrl dev`` sets
    ``<run id>-worker-<i>``, the Helm chart the pod name). It must be unique among live workers: a
    second one with the same id fences the first. On SIGTERM the worker still leaves the group."""
    gateway_port: int = Field(0, ge=0, le=65535)
    """Port of the in-process gateway on ``gateway.host``; 0 = an ephemeral port."""
    gateway_url: str | None = None
    """Base URL of a standalone gateway (``streamrl gateway``) to use instead of the in-process one,
    e.g. ``http://10.0.0.5:8100``."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Prometheus port of the worker; None or 0 = off."""
    consumer_properties: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka properties of the samples consumer."""

    @model_validator(mode="after")
    def _poll_interval_covers_session(self) -> WorkerSettings:
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError(
                f"worker.max_poll_interval_ms ({self.max_poll_interval_ms}) must be >= "
                f"worker.session_timeout_ms ({self.session_timeout_ms}); raise it or lower the session timeout"
            )
        if self.breaker_probe_max_s < self.breaker_probe_s:
            raise ValueError(
                f"worker.breaker_probe_max_s ({self.breaker_probe_max_s}) must be >= worker.breaker_probe_s "
                f"({self.breaker_probe_s})"
            )
        return self


class GatewaySettings(Section):
    """The recording OpenAI-compatible gateway between agents and the inference service."""

    host: str = "127.0.0.1"
    """Address the gateway binds to (in-process and standalone)."""
    port: int = Field(8100, ge=0, le=65535)
    """Port of the standalone gateway (``streamrl gateway``); 0 = an ephemeral port."""
    advertise_host: str | None = None
    """Host put in the ``base_url`` given to agents; None = ``host`` (set it when binding 0.0.0.0)."""
    upstream_url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the inference service's OpenAI API (vLLM or the CPU server), ending in ``/v1``.
    Left at this default, ``streamrl dev`` points it at the server it starts (``inference.port``)."""
    upstream_api_key: SecretStr | None = None
    """Bearer token sent to the inference service; None = ``security.admin_token`` (if any). The
    agent's own key is its attempt token and never leaves the gateway."""
    upstream_timeout_s: float = Field(600.0, gt=0)
    """Total time limit of one upstream call, in seconds; past it the agent gets HTTP 504."""
    max_connections: int = Field(512, ge=1)
    """Size of the pooled upstream connection pool."""
    force_token_ids: bool = True
    """Force ``return_token_ids`` and ``logprobs`` on every forwarded generation request (training needs them)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Prometheus port of the standalone gateway; None or 0 = off."""
    tls: ServerTLSSettings = Field(default_factory=ServerTLSSettings)
    """HTTPS certificate of the standalone gateway (``streamrl gateway``). A worker's in-process
    gateway serves plain HTTP on ``host`` (loopback by default) to the agent in its own process."""
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest request body an agent may send, in bytes; a larger one is HTTP 413."""
    max_choices: int = Field(64, ge=1, le=1024)
    """Largest ``n`` (choices per call) an agent may ask for; each choice becomes one recorded
    LLMRequest. A larger one is HTTP 400."""
