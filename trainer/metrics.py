"""Prometheus metrics of the trainer (``streamrl_trainer_*``). Recording them never raises."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

STEPS = Counter("streamrl_trainer_steps_total", "Policy-update steps completed.")
VERSION = Gauge("streamrl_trainer_version", "Current trainer version (= step).")
CONSUMED_ROLLOUTS = Gauge(
    "streamrl_trainer_consumed_rollouts",
    "Train rollouts in the batches trained into the current weights, cumulative (published in "
    "CheckpointEvent.consumed_rollouts; the sampler's admission counts from it).",
)
SKIPPED = Counter(
    "streamrl_trainer_batches_skipped_total",
    "Batches not trained, by reason (duplicate, duplicate_dead_lettered, bad_batch, schema, "
    "policy_mismatch, nonfinite_loss).",
    ["reason"],
)
ROWS_DROPPED = Counter(
    "streamrl_trainer_rows_dropped_total",
    "Rows filtered out of batches, by reason (stale: rl.staleness_policy drop, no_tokens, "
    "model_limits: token ids outside the vocabulary or longer than the positions, dead-lettered).",
    ["reason"],
)
STALE_ROWS_WEIGHTED = Counter(
    "streamrl_trainer_stale_rows_weighted_total",
    "Rows staler than rl.max_staleness kept with a decayed weight (rl.staleness_policy: weight).",
)
STEP_SECONDS = Histogram(
    "streamrl_trainer_step_seconds",
    "Wall time of one policy-update step, in seconds.",
    buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300),
)
TOKENS_PER_S = Gauge(
    "streamrl_trainer_tokens_per_second", "Prompt+response tokens per second of the last step."
)
LOSS = Gauge("streamrl_trainer_loss", "Actor loss of the last step.")
PG_CLIPFRAC = Gauge(
    "streamrl_trainer_pg_clipfrac", "Fraction of tokens whose PPO ratio was clipped (last step)."
)
KL = Gauge(
    "streamrl_trainer_kl",
    "KL estimate of the last step: to the reference if KL loss is on, else pi_old vs pi.",
)
ENTROPY = Gauge(
    "streamrl_trainer_entropy_nats", "Mean token entropy of the policy on the batch (last step), nats."
)
GRAD_NORM = Gauge("streamrl_trainer_grad_norm", "Global L2 gradient norm before clipping (last step).")
LR = Gauge("streamrl_trainer_lr", "Learning rate of the last step (after warmup and schedule).")
STALENESS = Gauge(
    "streamrl_trainer_staleness",
    "Staleness of the last trained batch's rows (trainer version - row policy_version, in versions), by "
    "stat (mean, max); set on every step, 0 when every row is fresh, and at start-up from the resumed "
    "checkpoint (0 without one).",
    ["stat"],
)
STALENESS_STATS = ("mean", "max")
"""The ``stat`` label values of :data:`STALENESS` (the keys ``staleness/<stat>`` of the step metrics)."""
REWARD_MEAN = Gauge("streamrl_trainer_reward_mean", "Mean rollout reward of the last batch.")
CHECKPOINTS = Counter("streamrl_trainer_checkpoints_total", "Checkpoints written, by outcome.", ["outcome"])


def record_start(version: int, consumed_rollouts: int, metrics: dict[str, float]) -> None:
    """Set the gauges that describe the current weights when the trainer starts: ``version`` and
    ``consumed_rollouts`` from the resumed checkpoint (0 for a fresh start) and the staleness of the
    batch trained last (``metrics``: the checkpoint's step metrics; 0 without them). So every series
    exists from the first scrape, and a restart does not read as version 0. Never raises."""
    try:
        VERSION.set(version)
        CONSUMED_ROLLOUTS.set(consumed_rollouts)
        for stat in STALENESS_STATS:
            STALENESS.labels(stat).set(metrics.get(f"staleness/{stat}", 0.0))
    except Exception as exc:  # metrics never crash the trainer
        log.warning("recording trainer metrics failed: %s", exc)


def record_step(version: int, metrics: dict[str, float], step_time_s: float, tokens: int) -> None:
    """Update the per-step gauges from one step's ``metrics`` (``actor/*``, ``reward/mean``,
    ``staleness/mean`` and ``staleness/max``: the staleness gauge is set on every step, 0 when every
    row was fresh); failures are logged, never raised."""
    try:
        STEPS.inc()
        VERSION.set(version)
        STEP_SECONDS.observe(step_time_s)
        TOKENS_PER_S.set(tokens / step_time_s if step_time_s > 0 else 0.0)
        LOSS.set(metrics.get("actor/loss", float("nan")))
        PG_CLIPFRAC.set(metrics.get("actor/pg_clipfrac", 0.0))
        KL.set(metrics.get("actor/kl_loss", metrics.get("actor/ppo_kl", 0.0)))
        ENTROPY.set(metrics.get("actor/entropy", float("nan")))
        GRAD_NORM.set(metrics.get("actor/grad_norm", float("nan")))
        REWARD_MEAN.set(metrics.get("reward/mean", float("nan")))
        LR.set(metrics.get("actor/lr", float("nan")))
        for stat in STALENESS_STATS:
            STALENESS.labels(stat).set(metrics.get(f"staleness/{stat}", 0.0))
    except Exception as exc:  # metrics never crash the trainer
        log.warning("recording trainer metrics failed: %s", exc)


def count(counter: Counter, n: float = 1.0, **labels: str) -> None:
    """``counter.labels(**labels).inc(n)`` that never raises."""
    try:
        (counter.labels(**labels) if labels else counter).inc(n)
    except Exception as exc:
        log.warning("recording trainer metric failed: %s", exc)


def set_gauge(gauge: Gauge, value: float) -> None:
    """``gauge.set(value)`` that never raises."""
    try:
        gauge.set(value)
    except Exception as exc:
        log.warning("recording trainer metric failed: %s", exc)
