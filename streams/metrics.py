"""Prometheus metrics of the streams stage (``streamrl_streams_*``). Recording never raises."""

from __future__ import annotations

import logging
from collections import Counter as TallyCounter

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

JOIN_LATENCY = Histogram(
    "streamrl_streams_join_latency_seconds",
    "From a trajectory's record time to its completed join, in seconds.",
    buckets=_LATENCY_BUCKETS_S,
)
BATCH_EMIT_LATENCY = Histogram(
    "streamrl_streams_batch_emit_latency_seconds",
    "From the last input record of a batch to its publication, in seconds.",
    buckets=_LATENCY_BUCKETS_S,
)
ROWS_PER_BATCH = Histogram(
    "streamrl_streams_rows_per_batch",
    "Training rows per emitted batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
EVENTS = Counter(
    "streamrl_streams_events_total",
    "Aggregator events by kind: incomplete_join, groups_ready, "
    "group_dropped:zero_variance, duplicate:call, merge_break:<cause>, overlong:<action>, ...",
    ["kind"],
)
OUTCOME_ROLLOUTS = Counter(
    "streamrl_streams_group_outcome_rollouts_total",
    "Train rollouts decided in group_outcomes records, by status (batched, dropped) and reason "
    "(zero_variance, straggler, no_rows, incomplete_join, invalid_rows, late; none when batched).",
    ["status", "reason"],
)
VALIDATION_VERSION = Gauge(
    "streamrl_streams_validation_version",
    "Newest validated policy version (its ValidationResult is the gauges below).",
)
VALIDATION_REWARD = Gauge(
    "streamrl_streams_validation_reward",
    "Validation reward of the newest validated version, as published on the validation topic: mean "
    "score of its val rollouts so far, failed and timed-out ones as 0 (partial while the validation runs).",
)
VALIDATION_ROLLOUTS = Gauge(
    "streamrl_streams_validation_rollouts", "Val rollouts counted so far for the newest validated version."
)
BATCHES = Counter(
    "streamrl_streams_batches_total", "Batches published, by form (inline, claim_check, replayed).", ["form"]
)

#: Event kinds that also get their own metric name, as the issue lists them.
_NAMED = {
    "incomplete_join": Counter(
        "streamrl_streams_incomplete_joins_total",
        "Attempts dropped because their calls were missing after join_timeout_s.",
    ),
    "groups_ready": Counter(
        "streamrl_streams_groups_ready_total", "Groups complete or closed by the straggler timeout."
    ),
    "group_dropped:zero_variance": Counter(
        "streamrl_streams_zero_variance_groups_dropped_total", "Groups whose rewards were all equal, dropped."
    ),
}


SUMMARY_INTERVAL_S = 30.0
"""How often the stage logs the event kinds tallied since its last summary line, in seconds."""

_HINTS = {
    "group_dropped:zero_variance": "all rewards of the group equal: no learning signal, see streams.filter_zero_variance",
    "incomplete_join": "calls missing after streams.join_timeout_s",
}
_since_summary: TallyCounter[str] = TallyCounter()


def take_summary() -> str | None:
    """The events recorded since the last call, as one log-ready line (None if there were none).

    Metrics are off by default (``streams.metrics_port``), so without this line a pipeline whose
    every group is dropped (e.g. a reward that is always 0) would look idle rather than wrong.
    """
    if not _since_summary:
        return None
    parts = []
    for kind, n in sorted(_since_summary.items()):
        hint = _HINTS.get(kind)
        parts.append(f"{kind} {n}" + (f" ({hint})" if hint else ""))
    _since_summary.clear()
    return ", ".join(parts)


def record(stats: TallyCounter[str]) -> None:
    """Add a tally of event kinds to the counters (and to the next :func:`take_summary` line)."""
    try:
        for kind, n in stats.items():
            if n:
                _since_summary[kind] += n
                EVENTS.labels(kind).inc(n)
                if kind in _NAMED:
                    _NAMED[kind].inc(n)
    except Exception:  # metrics never crash the stage
        log.debug("streams metrics not recorded", exc_info=True)


def count_outcome(status: str, reason: str | None, rollouts: int) -> None:
    """Count the rollouts of one published group outcome; never raises."""
    try:
        OUTCOME_ROLLOUTS.labels(status, reason or "none").inc(rollouts)
    except Exception:
        log.debug("streams outcome metric not recorded", exc_info=True)


def show_validation(version: int, reward: float, rollouts: int) -> None:
    """Set the validation gauges from a published ``ValidationResult`` (an older version is ignored)."""
    try:
        if version >= VALIDATION_VERSION._value.get():
            VALIDATION_VERSION.set(version)
            VALIDATION_REWARD.set(reward)
            VALIDATION_ROLLOUTS.set(rollouts)
    except Exception:
        log.debug("streams validation gauges not set", exc_info=True)


def observe(hist: Histogram, value: float) -> None:
    """Observe one value; never raises."""
    try:
        hist.observe(value)
    except Exception:
        log.debug("streams metric not observed", exc_info=True)
