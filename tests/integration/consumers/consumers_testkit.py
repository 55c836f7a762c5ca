"""Helpers of the consumers integration tests: produce samples, read topics, run a worker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from streamrl.config import Settings
from streamrl.kafka import client_config, make_producer
from streamrl.schemas import LLMRequest, Mode, Sample, Trajectory
from streamrl.schemas.serde import Serde

SERDE = Serde()


def make_sample(task_id: str, k: int, payload: dict, *, epoch: int = 0, group_size: int = 8) -> Sample:
    return Sample(
        rollout_id=f"{task_id}/{epoch}/{k}",
        task_id=task_id,
        group_id=f"{task_id}/{epoch}",
        group_size=group_size,
        k=k,
        epoch=epoch,
        mode=Mode.train,
        payload=json.dumps(payload),
        policy_version=2,
    )


def produce_samples(settings: Settings, samples: list[Sample]) -> dict[str, tuple[int, int]]:
    """Produce samples (key rollout_id); returns rollout_id -> (partition, offset)."""
    p = make_producer(settings)
    where: dict[str, tuple[int, int]] = {}

    def cb(err, msg) -> None:
        assert err is None, err
        where[msg.key().decode()] = (msg.partition(), msg.offset())

    topic = settings.topics.name("samples")
    for s in samples:
        p.produce(topic, SERDE.encode(s), key=s.rollout_id, on_delivery=cb)
    assert p.flush(30) == 0
    return where


class TopicReader:
    """Reads a topic from the beginning (own group, no commits) and decodes its records."""

    def __init__(self, settings: Settings, base: str, record_type: type) -> None:
        conf = client_config(settings)
        conf.update(
            {
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self.consumer = Consumer(conf)
        self.consumer.subscribe([settings.topics.name(base)])
        self.record_type = record_type
        self.records: list = []

    def read_until(self, done: Callable[[list], bool], timeout_s: float = 60.0) -> list:
        deadline = time.monotonic() + timeout_s
        while not done(self.records) and time.monotonic() < deadline:
            for msg in self.consumer.consume(500, 0.2):
                if msg.error() is None:
                    self.records.append(SERDE.decode(msg.value(), self.record_type))
        return self.records

    def close(self) -> None:
        self.consumer.close()


def committed_offsets(settings: Settings, partitions: int) -> dict[int, int]:
    """Committed offsets of the workers group on samples (partition -> offset; -1001 = none)."""
    conf = client_config(settings)
    conf.update({"group.id": settings.group_id("workers"), "enable.auto.commit": False})
    c = Consumer(conf)
    try:
        tps = [TopicPartition(settings.topics.name("samples"), p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()


class WorkerThread:
    """An in-process RolloutWorker on its own event loop thread."""

    def __init__(self, settings: Settings, agent: str) -> None:
        from streamrl.consumers.runner import load_agent
        from streamrl.consumers.worker import RolloutWorker

        self.worker = RolloutWorker(settings, load_agent(agent), worker_id=f"w-{uuid.uuid4().hex[:6]}")
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def go() -> None:
            self.stop_event = asyncio.Event()
            await self.worker.run(self.stop_event)

        try:
            self.loop.run_until_complete(go())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while self.stop_event is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def wait_assigned(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            c = self.worker.consumer
            if c is not None and len(c.assigned) >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"worker got fewer than {n} partitions in {timeout_s} s")

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()


def requests_of(records: list[LLMRequest], traj: Trajectory) -> list[LLMRequest]:
    by_id = {r.request_id: r for r in records}
    return [by_id[i] for i in traj.request_ids]
