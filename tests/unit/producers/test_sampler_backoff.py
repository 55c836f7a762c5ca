"""The sampler's re-issue back-off: doubling per failure of a kind, capped; infrastructure failures
capped lower (the workers' breakers hold samples back during an outage)."""

from __future__ import annotations

from types import SimpleNamespace

from streamrl.config.producers import SamplerSettings
from streamrl.producers.sampler import Sampler


def backoff(failures: int, kind: str = "agent", **cfg) -> float:
    return Sampler.backoff_s(SimpleNamespace(cfg=SamplerSettings(**cfg)), failures, kind)


def test_backoff_doubles_and_infrastructure_failures_wait_at_most_their_cap() -> None:
    assert [backoff(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff(10) == 30.0
    assert [backoff(n, "infrastructure") for n in range(4)] == [0.0, 1.0, 1.0, 1.0]
    assert backoff(3, "infrastructure", infra_retry_backoff_max_s=5.0) == 4.0
    assert backoff(3, retry_backoff_s=0) == 0.0
