"""Config section of the streams stage: the Faust aggregator (join → rows → groups → batches)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from streamrl.config.base import Section
from streamrl.config.security import ServerTLSSettings


class StreamsSettings(Section):
    """How the Faust aggregator joins, builds rows, groups and batches (section ``streams``).

    Group size, groups per batch (``train_batch_size``) and the policy name come from the shared
    ``rl`` section; everything here is specific to this stage. Streams decides nothing about
    staleness: the trainer applies ``rl.staleness_policy``.
    """

    app_id: str | None = None
    """Faust application id (consumer group and changelog topic stem); None derives it from the topic
    prefix: ``<prefix>streams`` (``streamrl.streams``)."""
    row_mode: Literal["transition", "trajectory"] = "transition"
    """``transition``: one row per LLM call. ``trajectory``: consecutive calls whose prompt extends the
    previous prompt+response token-for-token are merged into one row, observation tokens masked."""
    train_agents: list[str] = Field(default_factory=list)
    """Regular expressions (full match) of agent names whose calls become rows; empty = every call."""
    reward_placement: Literal["final", "per_call"] = "final"
    """``final``: the rollout reward on the last response token of every row. ``per_call``: each primary
    reward on the last token of the call it follows (falls back to ``final`` when none was emitted)."""
    max_prompt_tokens: int = Field(4096, ge=1)
    """Longest prompt of a row, in tokens."""
    max_response_tokens: int = Field(2048, ge=1)
    """Longest response of a row (merged observations included), in tokens."""
    overlong: Literal["truncate", "drop"] = "truncate"
    """Rows over a limit: ``truncate`` (prompt keeps its last tokens, response its first) or ``drop``."""
    join_timeout_s: float = Field(30.0, gt=0)
    """Seconds a succeeded trajectory waits for the calls it lists before the attempt is dropped (dlq);
    they count once streams has read its partition of ``requests`` to the end it knows (a backlog
    after an outage is read first)."""
    orphan_call_timeout_s: float = Field(900.0, gt=0)
    """Seconds calls of an attempt without a trajectory are kept before they are dropped and counted;
    likewise counted once its partition of ``trajectories`` is read to the end."""
    straggler_timeout_s: float = Field(300.0, gt=0)
    """Seconds after a group's first complete rollout before it is closed with what it has."""
    min_group_size: int = Field(2, ge=1)
    """Complete rollouts a straggling group needs to be trained after ``straggler_timeout_s``."""
    filter_zero_variance: bool = True
    """Drop groups whose rollout rewards are all equal (no GRPO signal)."""
    batch_timeout_s: float = Field(30.0, gt=0)
    """Seconds a partial batch waits for more groups before it is emitted as it is."""
    claim_check_bytes: int = Field(1_000_000, ge=1)
    """Batches whose inline record would exceed this many bytes go to ``blob_dir`` (claim-check)."""
    blob_dir: str = "runs/blobs"
    """Where claim-check payloads are written: a local path or a ``file://`` URI."""
    state_dir: str = "runs/streams"
    """Faust data directory; also holds ``validation.json`` (per-version validation rewards)."""
    tick_interval_s: float = Field(1.0, gt=0)
    """Period of the timer that drives timeouts (join, straggler, batch), in seconds."""
    commit_interval_s: float = Field(1.0, gt=0)
    """Faust offset commit period, in seconds (outputs are flushed before every commit)."""
    producer_linger_s: float = Field(0.005, ge=0)
    """How long the Faust producer waits to fill a produce request, in seconds (Kafka's
    ``linger.ms``): every forwarded record and table changelog write went out as its own request
    with 0 (Faust's default), and the socket writes were the largest cost of the process."""
    session_timeout_s: float = Field(30.0, ge=6.0)
    """Consumer group session timeout, in seconds: how long a killed worker holds its partitions before
    the group rebalances (the broker's ``group.min.session.timeout.ms`` is 6 s by default)."""
    instance_id: str | None = None
    """Static group membership (``group.instance.id``): a restarted streams process with the same id
    takes its partitions back at once instead of after ``session_timeout_s``. Unique among the live
    members of the group (a second process with the same id fences the first). ``streamrl dev`` sets
    it; the Helm chart sets it to the StatefulSet pod's name. A crashed (SIGKILLed) process's member
    keeps its partitions until ``session_timeout_s``; a clean stop leaves the group at once
    (``leave_group_on_stop``). None = dynamic membership."""
    leave_group_on_stop: bool = True
    """A clean stop (SIGTERM/SIGINT) of a static member (``instance_id``) leaves the consumer
    group, so its partitions move at once and ``streamrl status`` reads it as stopped within
    seconds. aiokafka, like Kafka's own clients (KIP-345), does not leave for a static member;
    streams sends the LeaveGroup itself. False keeps the member until ``session_timeout_s``: a
    rolling restart of several instances then moves no partition (a restart within the session
    takes the same ones back)."""
    dedup_retention_s: float = Field(3600.0, gt=0)
    """Seconds finished rollouts and groups are remembered (compactly: a member id in a per-group
    marker, ~140 B per rollout) to drop late duplicates; counted from the group's latest decision."""
    group_partitions: int = Field(1, ge=1)
    """Partitions of the internal group topic; every partition forms its own batches."""
    web_port: int | None = Field(None, ge=1, le=65535)
    """Port of the Faust web server (``/streamrl/validation/``; Faust's own table, router and
    statistics pages are off); None disables it. With ``security.metrics_token`` set, the page needs it."""
    web_host: str = "0.0.0.0"
    """Interface the web server binds."""
    web_tls: ServerTLSSettings = Field(default_factory=ServerTLSSettings)
    """HTTPS certificate of the web server."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Prometheus port for ``streamrl_streams_*`` metrics; None or 0 disables it."""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            moved = {"staleness": "rl.staleness_policy", "stale_weight_decay": "rl.stale_weight_decay"}
            for key, where in moved.items():
                if key in data:
                    raise ValueError(
                        f"streams.{key} moved to {where}: the trainer, which alone knows the true "
                        "policy version, applies the staleness policy"
                    )
        return data

    @field_validator("train_agents")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"train_agents pattern {pattern!r} is not a regular expression: {exc}"
                ) from exc
        return patterns

    @model_validator(mode="after")
    def _timeouts_consistent(self) -> StreamsSettings:
        if self.tick_interval_s > self.join_timeout_s:
            raise ValueError(
                f"tick_interval_s ({self.tick_interval_s}) must not exceed join_timeout_s ({self.join_timeout_s}); "
                "lower tick_interval_s"
            )
        return self
