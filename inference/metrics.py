"""Prometheus metrics of the inference service (names ``streamrl_inference_*``).

Each server owns its own ``CollectorRegistry`` (exposed at ``/metrics`` of the API server), so
several servers can live in one process (tests) without clashing in the global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class InferenceMetrics:
    """The metrics of one inference server.

    Attributes:
        requests: ``streamrl_inference_requests_total{endpoint,status}`` HTTP requests by outcome.
        generated_tokens: ``streamrl_inference_generated_tokens_total`` tokens sampled (rate = tokens/s).
        tokens_per_s: ``streamrl_inference_batch_tokens_per_second`` throughput of the last batch.
        batch_size: ``streamrl_inference_batch_size`` sequences per batch.
        queue_seconds: ``streamrl_inference_queue_seconds`` time from enqueue to batch start (s).
        batch_errors: ``streamrl_inference_batch_errors_total`` batches that raised.
        version: ``streamrl_inference_policy_version`` version serving now.
        reloads: ``streamrl_inference_reloads_total{kind}`` checkpoints loaded and staged.
        reload_errors: ``streamrl_inference_reload_errors_total{reason}`` checkpoints refused.
        reload_seconds: ``streamrl_inference_reload_seconds`` time to verify and load a checkpoint (s).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if registry is None:  # process_* (CPU seconds, resident memory) like every other stage's endpoint
            ProcessCollector(registry=r)
        self.requests = Counter(
            "streamrl_inference_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.generated_tokens = Counter("streamrl_inference_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_s = Gauge(
            "streamrl_inference_batch_tokens_per_second", "Generated tokens/s of the last batch", registry=r
        )
        self.batch_size = Histogram(
            "streamrl_inference_batch_size",
            "Sequences per generation batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_seconds = Histogram(
            "streamrl_inference_queue_seconds",
            "Seconds from enqueue to the start of the batch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_errors = Counter("streamrl_inference_batch_errors", "Batches that raised", registry=r)
        self.version = Gauge("streamrl_inference_policy_version", "Policy version serving now", registry=r)
        self.reloads = Counter(
            "streamrl_inference_reloads", "Checkpoints loaded and staged, by kind", ["kind"], registry=r
        )
        self.reload_errors = Counter(
            "streamrl_inference_reload_errors", "Checkpoints refused, by reason", ["reason"], registry=r
        )
        self.reload_seconds = Histogram(
            "streamrl_inference_reload_seconds", "Seconds to verify and load a checkpoint", registry=r
        )
