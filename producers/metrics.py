"""Prometheus metrics of the producers stage (``streamrl_publish_*``, ``streamrl_sampler_*``).

Registered once per process in the default registry, like ``streamrl.metrics``; served by
``streamrl.metrics.serve_metrics(port)``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PUBLISH_PUBLISHED = Counter("streamrl_publish_tasks_published_total", "Tasks published and acknowledged.")
PUBLISH_SKIPPED = Counter(
    "streamrl_publish_rows_skipped_total", "Rows skipped: task_id already seen in the same run."
)
PUBLISH_INVALID = Counter("streamrl_publish_rows_invalid_total", "Rows that could not become a Task.")

TASKS_READ = Counter(
    "streamrl_sampler_tasks_read_total", "Task records read from the tasks topic (tombstones included)."
)
SAMPLES_EMITTED = Counter(
    "streamrl_sampler_samples_emitted_total",
    "Samples emitted, by mode and whether it is a re-issue.",
    ["mode", "reissue"],
)
IN_FLIGHT = Gauge(
    "streamrl_sampler_in_flight",
    "Train samples admitted and not yet consumed by the trainer (F = U + W - C).",
)
IN_FLIGHT_BOUND = Gauge(
    "streamrl_sampler_in_flight_bound", "(max_staleness + 1) x train_batch_size x group_size."
)
ADMISSION_WAITS = Counter(
    "streamrl_sampler_admission_waits_total",
    "Times the sampler had train work but the in-flight bound was full.",
)
ADMISSION_WAIT_SECONDS = Counter(
    "streamrl_sampler_admission_wait_seconds_total",
    "Seconds spent with train work blocked by the in-flight bound.",
)
EPOCH = Gauge("streamrl_sampler_epoch", "Epoch being emitted (0-based).")
POLICY_VERSION = Gauge(
    "streamrl_sampler_policy_version", "Latest trainer version adopted from a verified checkpoint."
)
CHECKPOINTS_REFUSED = Counter(
    "streamrl_sampler_checkpoints_refused_total",
    "CheckpointEvents not adopted because their checkpoint does not exist or verify here, by reason "
    "(missing, digest, uri).",
    ["reason"],
)
TRAJECTORIES_READ = Counter(
    "streamrl_sampler_trajectories_read_total", "Trajectories read, by status.", ["status"]
)
RUNNING = Gauge("streamrl_sampler_running", "Train samples emitted without a final trajectory yet (U).")
WAITING = Gauge(
    "streamrl_sampler_waiting",
    "Train rollouts that succeeded and were not dropped by streams (W; consumed ones included, see C).",
)
CONSUMED = Gauge(
    "streamrl_sampler_consumed_rollouts",
    "Train rollouts the trainer consumed (C): its latest checkpoint's count plus dead-lettered batches.",
)
GROUP_OUTCOMES_READ = Counter(
    "streamrl_sampler_group_outcomes_read_total", "GroupOutcome records read, by status.", ["status"]
)
DEAD_LETTERED = Counter(
    "streamrl_sampler_dead_lettered_total",
    "Samples sent to dlq after max_retries (or max_infra_retries); the dead letter's error_type names the kind.",
)
FAILURES_READ = Counter(
    "streamrl_sampler_rollout_failures_total",
    "Failed or timed-out trajectories read, by failure kind (agent, request, infrastructure).",
    ["kind"],
)
REISSUES = Counter(
    "streamrl_sampler_reissues_total",
    "Failed rollouts re-issued, by the kind of the failure (infrastructure ones spend no retries).",
    ["kind"],
)
BAD_RECORDS = Counter(
    "streamrl_sampler_bad_records_total", "Undecodable input records sent to dlq, by topic.", ["topic"]
)
SNAPSHOTS_WRITTEN = Counter(
    "streamrl_sampler_snapshots_written_total", "Snapshots of the sampler's state written to sampler_state."
)
SNAPSHOT_FAILURES = Counter(
    "streamrl_sampler_snapshot_failures_total",
    "Snapshots not written, by reason (broker: the topics' ends unreadable; too_large: over "
    "topics.max_message_bytes).",
    ["reason"],
)
SNAPSHOT_FALLBACKS = Counter(
    "streamrl_sampler_snapshot_fallbacks_total",
    "Starts that replayed every topic from the beginning because the newest snapshot could not be used, "
    "by reason (undecodable, foreign, settings, offsets, state, no_topic).",
    ["reason"],
)
SNAPSHOT_BYTES = Gauge("streamrl_sampler_snapshot_bytes", "Size of the last snapshot written, in bytes.")
GROUP_BOOKS = Gauge(
    "streamrl_sampler_group_books", "Group books the sampler keeps (after pruning finished groups)."
)
GROUPS_PRUNED = Counter(
    "streamrl_sampler_groups_pruned_total", "Books of finished groups pruned before a snapshot."
)
