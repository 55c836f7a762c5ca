"""Helpers of the streams integration tests: a real Faust worker process, record builders, a batch
reader, and waiting until the worker has processed its input."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrl.config import Settings
from streamrl.kafka import EventProducer
from streamrl.schemas import (
    CheckpointEvent,
    CheckpointKind,
    GroupOutcome,
    LLMRequest,
    Reward,
    TrainingBatch,
    Trajectory,
)
from streamrl.schemas.serde import Serde
from streamrl.streams.faust_config import streams_topics
from tests.support.kafka import TopicReader, wait_committed
from tests.support.processes import StreamsWorker as Worker

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)

#: Small timeouts so the tests stay fast; each test overrides what it exercises.
FAST_STREAMS: dict[str, Any] = {
    "tick_interval_s": 0.2,
    "commit_interval_s": 0.5,
    "join_timeout_s": 3.0,
    "straggler_timeout_s": 60.0,
    "batch_timeout_s": 60.0,
    "filter_zero_variance": False,
    "min_group_size": 1,
    "session_timeout_s": 6.0,
}


def write_config(
    settings: Settings, path: Path, streams: dict[str, Any] | None = None, rl: dict[str, Any] | None = None
) -> Path:
    """A YAML config with the test's cluster and topic prefix and the given sections."""
    cfg = {
        "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
        "topics": {"prefix": settings.topics.prefix, "partitions": dict(settings.topics.partitions)},
        "rl": {**settings.rl.model_dump(mode="json"), **(rl or {})},
        "streams": {
            **FAST_STREAMS,
            "state_dir": str(path.parent / "state"),
            "blob_dir": str(path.parent / "blobs"),
            **(streams or {}),
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Any]:
    """``make(config_path) -> Worker`` (started); every worker is killed at teardown."""
    workers: list[Worker] = []

    def make(config: Path) -> Worker:
        w = Worker(config, tmp_path / "worker.log")
        workers.append(w)
        return w.start()

    yield make
    for w in workers:
        w.kill(signal.SIGTERM)
    if workers:  # shown with a failing test's report ("Captured stdout teardown")
        print(f"--- last lines of the streams log {tmp_path / 'worker.log'} ---\n{workers[-1].tail()}")


class Feed:
    """Produces hand-built requests, trajectories and checkpoints keyed like the real stages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.serde = Serde()
        self.producer = EventProducer(settings)

    def call(
        self,
        rollout_id: str,
        request_id: str,
        prompt: list[int],
        response: list[int],
        *,
        attempt: str = "a1",
        agent: str | None = "solver",
        version: int = 0,
        seq: int = 0,
    ) -> LLMRequest:
        req = LLMRequest(
            request_id=request_id,
            rollout_id=rollout_id,
            attempt_id=attempt,
            agent_name=agent,
            sequence=seq,
            model="m",
            prompt_token_ids=prompt,
            response_token_ids=response,
            response_logprobs=[-0.25] * len(response),
            finish_reason="stop",
            policy_version=version,
            latency_ms=1.0,
            started_at=T0,
        )
        self.producer.produce(self.settings.topics.name("requests"), self.serde.encode(req), key=rollout_id)
        return req

    def traj(
        self,
        rollout_id: str,
        group_id: str,
        request_ids: list[str],
        reward: float,
        *,
        group_size: int,
        attempt: str = "a1",
        k: int = 0,
        mode: str = "train",
        status: str = "succeeded",
        version: int = 0,
        rewards: list[Reward] | None = None,
        failure_kind: str | None = None,
    ) -> Trajectory:
        t = Trajectory(
            rollout_id=rollout_id,
            attempt_id=attempt,
            task_id=group_id.split("/")[0],
            group_id=group_id,
            group_size=group_size,
            k=k,
            epoch=0,
            mode=mode,
            status=status,
            reward=reward,
            rewards=rewards or [],
            request_ids=request_ids,
            worker_id="w",
            policy_version=version,
            started_at=T0,
            finished_at=T0,
            failure_kind=failure_kind if status != "succeeded" else None,
        )
        self.producer.produce(self.settings.topics.name("trajectories"), self.serde.encode(t), key=rollout_id)
        return t

    def rollout(
        self, group_id: str, k: int, reward: float, *, group_size: int, version: int = 0, calls: int = 1
    ) -> str:
        """One single-attempt rollout with ``calls`` calls; returns its rollout id."""
        rid = f"{group_id}/{k}"
        ids = []
        prompt = [1, 2, 3]
        for i in range(calls):
            req_id = f"{rid}/c{i}"
            self.call(rid, req_id, list(prompt), [10 + i, 20 + i], version=version, seq=i)
            prompt = [*prompt, 10 + i, 20 + i, 99]
            ids.append(req_id)
        self.traj(rid, group_id, ids, reward, group_size=group_size, k=k, version=version)
        return rid

    def checkpoint(self, version: int) -> None:
        ev = CheckpointEvent(
            policy_name=self.settings.rl.policy_name,
            version=version,
            kind=CheckpointKind.full,
            uri="file:///tmp/x",
            digest="sha256:" + "0" * 64,
        )
        self.producer.produce(
            self.settings.topics.name("checkpoints"), self.serde.encode(ev), key=self.settings.rl.policy_name
        )

    def flush(self) -> None:
        self.producer.flush(30)

    def close(self) -> None:
        self.producer.close()


@pytest.fixture
def feed(settings: Settings) -> Iterator[Feed]:
    f = Feed(settings)
    yield f
    f.close()


@pytest.fixture
def outcome_reader(settings: Settings) -> Iterator[TopicReader]:
    """A reader of ``group_outcomes`` from the beginning (``GroupOutcome`` records)."""
    with TopicReader(settings, "group_outcomes", GroupOutcome) as reader:
        yield reader


@pytest.fixture
def batch_reader(settings: Settings) -> Iterator[TopicReader]:
    """A reader of ``batches`` from the beginning (``.read(n)``, ``.read_to_end()``, ``.records``)."""
    with TopicReader(settings, "batches", TrainingBatch) as reader:
        yield reader


@pytest.fixture
def wait_processed(settings: Settings) -> Callable[..., None]:
    """``wait_processed(timeout_s=60)``: wait until the streams worker committed every record now in
    its input topics, then every record its join wrote to its internal groups log.

    Faust commits an input offset only after what it produced for it is acknowledged, so afterwards
    every batch and dead letter caused by the input so far is in the log (read it to its end). Batches
    that only a timer would emit later (``batch_timeout_s``, straggler timeout) are not covered.
    """
    names = streams_topics(settings)

    def wait(timeout_s: float = 60.0) -> None:
        topics = [names.requests, names.trajectories, names.groups, names.validation]
        wait_committed(settings, names.app_id, topics, timeout_s)

    return wait


@pytest.fixture
def streams_config(settings: Settings, tmp_path: Path) -> Any:
    """``make(streams={...}, rl={...}) -> Path`` of a YAML config for ``python -m streamrl.streams``."""

    def make(streams: dict[str, Any] | None = None, rl: dict[str, Any] | None = None) -> Path:
        return write_config(settings, tmp_path / "streams.yaml", streams, rl)

    return make
