"""Config sections of the producers stage: ``publish`` (dataset → ``tasks``) and ``sampler`` (``tasks`` → ``samples``).

Shared RL knobs (``group_size``, ``train_batch_size``, ``max_staleness``, ``policy_name``, ``seed``)
live in ``settings.rl``; only what the producers alone read is here.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from streamrl.config.base import Section


class PublishSettings(Section):
    """``streamrl publish``: how dataset rows become ``Task`` records."""

    max_task_bytes: int = Field(900_000, ge=256)
    """Largest encoded Task record in bytes; bigger rows are reported as invalid and skipped.
    Keep it below ``topics.max_message_bytes``."""
    id_hash_chars: int = Field(24, ge=16, le=64)
    """Hex characters of the SHA-256 row hash used as ``task_id`` when no ``--id-field`` is given
    (24 hex = 96 bits: collision odds ~1e-15 for 10M rows)."""
    flush_timeout_s: float = Field(60.0, gt=0)
    """Seconds to wait for the broker to acknowledge every record at the end."""


class SamplerSettings(Section):
    """``streamrl sampler``: group fan-out, epochs, admission control, validation and retries."""

    max_epochs: int | None = Field(None, ge=1)
    """Passes over the train split of ``tasks``; None = endless."""
    shuffle: bool = True
    """Shuffle the task order of every epoch (seeded by ``rl.seed`` and the epoch); False = by task_id."""
    val_every: int = Field(0, ge=0)
    """Publish the val split once every this many policy versions (version % val_every == 0); 0 = never."""
    val_at_start: bool = True
    """With ``val_every > 0``: also validate version 0 (the initial policy)."""
    val_samples_per_task: int = Field(1, ge=1)
    """Rollouts per val task per validation."""
    fence_session_timeout_s: float = Field(10.0, ge=6.0, le=300.0)
    """Session timeout of the sampler's fence (one sampler per topic prefix): a sampler that stops
    heartbeating for this long loses the fence, which then passes to a waiting successor. At least the
    broker's ``group.min.session.timeout.ms`` (6 s by default)."""
    fence_timeout_s: float = Field(25.0, gt=0)
    """How long a starting sampler waits for the fence before it exits naming the sampler that holds
    it; longer than ``fence_session_timeout_s``, so a crashed predecessor's fence is released in time."""
    verify_checkpoints: bool = True
    """Adopt a ``CheckpointEvent`` (its version, its ``consumed_rollouts``) only once its directory
    exists here and matches its digest (the sampler must see the trainer's checkpoint directory; each
    version is hashed once, on a background thread). False trusts the trainer's own check."""
    max_retries: int = Field(2, ge=0)
    """Re-issues of a rollout after failures of the task's own (``failure_kind`` agent or request:
    an exception, a bad reward, its time limit, a refused request); after that the sample goes to
    ``dlq``. Infrastructure failures do not count here (``max_infra_retries``)."""
    max_infra_retries: int = Field(20, ge=0)
    """Re-issues of a rollout after infrastructure failures (inference unreachable, 5xx, timeouts to
    it, a worker stopping), counted apart from ``max_retries``; a bound for a service that always
    fails one sample. Workers take no samples while the inference service is unhealthy, so an outage
    costs each running rollout about one."""
    retry_backoff_s: float = Field(1.0, ge=0)
    """Delay before re-issuing a failed rollout, in seconds, doubling with each failure of the same
    kind (0 = re-issue at once)."""
    retry_backoff_max_s: float = Field(30.0, ge=0)
    """Longest delay before a re-issue, in seconds."""
    infra_retry_backoff_max_s: float = Field(1.0, ge=0)
    """Longest delay before re-issuing a rollout after an infrastructure failure, in seconds: the
    workers' circuit breakers already hold samples back while the inference service is down, so a
    longer delay only slows the resume once it is back."""
    poll_interval_s: float = Field(0.2, gt=0)
    """Longest wait for new records in one poll of ``tasks``/``checkpoints``/``trajectories``, in seconds."""
    commit_interval_s: float = Field(5.0, gt=0)
    """How often the sampler commits its consumer positions (they show its lag; state is rebuilt
    from the topics on restart), in seconds."""
    flush_interval_s: float = Field(1.0, gt=0)
    """How often emitted samples are flushed and their delivery reports checked, in seconds."""
    exit_when_done: bool = True
    """With ``max_epochs``: exit once every epoch is emitted and every emitted sample has a final
    outcome (succeeded, or dead-lettered). False keeps serving (validation, late retries)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of the Prometheus ``/metrics`` endpoint; None or 0 = off."""
    snapshot_interval_s: float = Field(30.0, ge=0)
    """Write a snapshot of the sampler's state to ``sampler_state`` at least this often while it
    changes, in seconds (and when the sampler stops); a restarted sampler loads it and replays only
    the records after it. 0 = no snapshots: every start replays every topic from the beginning."""
    snapshot_every_groups: int = Field(256, ge=1)
    """Also write a snapshot once this many groups finished since the last one (their books are
    pruned then)."""

    @model_validator(mode="after")
    def _fence_waits_out_a_session(self) -> SamplerSettings:
        if self.fence_timeout_s <= self.fence_session_timeout_s:
            raise ValueError(
                f"fence_timeout_s={self.fence_timeout_s:g} must exceed fence_session_timeout_s="
                f"{self.fence_session_timeout_s:g}, or a restarted sampler gives up before its crashed "
                "predecessor's fence is released"
            )
        return self
