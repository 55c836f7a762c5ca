"""Prometheus metrics of the rollout worker (``streamrl_worker_*``) and the gateway (``streamrl_gateway_*``).

Defined once per process (prometheus-client's default registry); served by
``streamrl.metrics.serve_metrics(port)`` when ``worker.metrics_port``/``gateway.metrics_port`` is set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Summary

_LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_OVERHEAD_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)

ROLLOUTS_RUNNING = Gauge("streamrl_worker_rollouts_running", "Rollouts running now in this process")
ROLLOUTS = Counter("streamrl_worker_rollouts_total", "Finished rollout attempts by status", ["status"])
ROLLOUT_SECONDS = Histogram(
    "streamrl_worker_rollout_duration_seconds",
    "Wall-clock duration of one rollout attempt",
    buckets=_LATENCY_BUCKETS_S,
)
REWARD = Summary(
    "streamrl_worker_reward",
    "Primary reward of succeeded train rollouts (mode=train); mean = rate(_sum) / rate(_count). The "
    "validation reward is streams' (streamrl_streams_validation_reward, the validation topic).",
    ["mode"],
)
POLICY_VERSION = Gauge(
    "streamrl_worker_policy_version", "Policy version of the last sample this worker finished (the sampler's)"
)
SAMPLES_RECEIVED = Counter(
    "streamrl_worker_samples_received_total", "Samples received from the samples topic"
)
SAMPLES_DEAD_LETTERED = Counter(
    "streamrl_worker_samples_dead_lettered_total", "Samples that could not be decoded and went to the DLQ"
)
TRAJECTORY_DELIVERY_FAILURES = Counter(
    "streamrl_worker_trajectory_delivery_failures_total", "Trajectories the broker did not acknowledge"
)
ROLLOUT_FAILURES = Counter(
    "streamrl_worker_rollout_failures_total",
    "Failed or timed-out rollout attempts by failure kind: agent (the task's own), request (a call the "
    "inference service refused), infrastructure (the service unreachable/5xx/timing out, a record not "
    "delivered, the worker stopping)",
    ["kind"],
)
INFERENCE_HEALTHY = Gauge(
    "streamrl_worker_inference_healthy",
    "1 while the worker takes samples, 0 while its circuit breaker holds the inference service unhealthy",
)
BREAKER_TRIPS = Counter(
    "streamrl_worker_breaker_trips_total",
    "Times the worker stopped taking samples: inference service unhealthy",
)
INFERENCE_UNHEALTHY_SECONDS = Counter(
    "streamrl_worker_inference_unhealthy_seconds_total",
    "Seconds the worker took no samples because the inference service was unhealthy (counted when it recovers)",
)
COMMITS = Counter("streamrl_worker_commits_total", "Offset commits of the samples consumer", ["outcome"])
ABANDONED_THREADS = Gauge(
    "streamrl_worker_abandoned_threads",
    "Sync agent threads written off because their rollout timed out while the agent still ran "
    "(they cannot be stopped; the worker exits past worker.max_abandoned_threads)",
)
PAUSED = Gauge("streamrl_worker_paused", "1 while the worker is at capacity and its partitions are paused")

LLM_CALLS = Counter(
    "streamrl_gateway_llm_calls_total",
    "LLM calls through the gateway by endpoint and outcome",
    ["endpoint", "outcome"],
)
LLM_RECORDS = Counter("streamrl_gateway_records_total", "LLMRequest records produced")
RECORDING_ERRORS = Counter(
    "streamrl_gateway_recording_errors_total", "Calls whose response could not be recorded", ["reason"]
)
VERSION_MISSING = Counter(
    "streamrl_gateway_policy_version_missing_total",
    "Calls whose response had no policy version (the sample's version was recorded instead)",
)
UPSTREAM_SECONDS = Histogram(
    "streamrl_gateway_upstream_seconds",
    "Time from forwarding a call to its last response byte",
    buckets=_LATENCY_BUCKETS_S,
)
OVERHEAD_SECONDS = Histogram(
    "streamrl_gateway_overhead_seconds",
    "Time the gateway adds to a call (handling before and after the upstream call)",
    buckets=_OVERHEAD_BUCKETS_S,
)


def observe_rollout(
    mode: str, status: str, reward: float | None, policy_version: int, duration_s: float
) -> None:
    """Count one finished rollout attempt: status, duration, reward by mode, the sample's version."""
    ROLLOUTS.labels(status).inc()
    ROLLOUT_SECONDS.observe(duration_s)
    POLICY_VERSION.set(policy_version)
    if mode == "train" and status == "succeeded" and reward is not None:
        REWARD.labels(mode).observe(reward)
