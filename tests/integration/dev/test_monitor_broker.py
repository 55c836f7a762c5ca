"""The run monitor on the real broker: consumer lag counts a partition a member is assigned but has not
committed yet from its log start (the broker lists only committed partitions), a commit brings the lag
down, and the monitor waits for topics the cluster does not list yet."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import TopicPartition

from streamrl.config import Settings
from streamrl.dev.monitor import Monitor
from streamrl.dev.stats import RunStats
from streamrl.kafka import make_consumer, make_producer
from streamrl.producers.fence import FENCE_GROUP, SamplerFence
from streamrl.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_lag_counts_assigned_partitions_before_their_first_commit(settings: Settings) -> None:
    samples = settings.topics.name("samples")
    producer = make_producer(settings)
    for i in range(7):
        producer.produce(samples, b"x", key=f"k{i}")
    assert producer.flush(10) == 0
    consumer = make_consumer(settings, settings.group_id("workers"))
    monitor = Monitor(settings, RunStats())
    try:
        consumer.subscribe([samples])
        read: list = []
        deadline = time.monotonic() + 60
        while len(read) < 7:  # assigned and read, nothing committed
            assert time.monotonic() < deadline, f"read {len(read)} of 7 records"
            read += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
        groups = {g.group: g for g in monitor.groups()}
        assigned = groups[settings.group_id("workers")].assigned
        assert sorted(p for t, p in assigned if t == samples) == list(
            range(settings.topics.partitions["samples"])
        )
        assert monitor.measure_lag() == {("workers", "samples"): 7}
        last: dict[int, int] = {}
        for m in read[:4]:
            last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
        # commit the first four records read (up to the highest offset read per partition)
        done = [TopicPartition(samples, p, o + 1) for p, o in last.items()]
        consumer.commit(offsets=done, asynchronous=False)
        behind = 7 - sum(o + 1 for _, o in last.items())
        assert monitor.measure_lag() == {("workers", "samples"): behind}
        assert behind < 7
    finally:
        consumer.close()
        monitor.stop()


def test_lag_of_an_empty_group_is_what_it_committed(settings: Settings) -> None:
    """A stopped stage (no members, so no assignment): the committed partitions only."""
    samples = settings.topics.name("samples")
    producer = make_producer(settings)
    for _ in range(5):
        producer.produce(samples, b"x", key="same", partition=0)
    assert producer.flush(10) == 0
    consumer = make_consumer(settings, settings.group_id("workers"))
    consumer.commit(offsets=[TopicPartition(samples, 0, 2)], asynchronous=False)
    consumer.close()
    monitor = Monitor(settings, RunStats())
    try:
        assert monitor.measure_lag() == {("workers", "samples"): 3}
    finally:
        monitor.stop()


def test_start_waits_for_topics_the_cluster_does_not_list_yet(settings_factory) -> None:
    """dev starts its monitor right after creating the topics; on a cluster another broker may not list
    them for a moment. The monitor waits for them instead of ending the run."""
    settings = settings_factory(create_topics=False)
    timer = threading.Timer(1.5, ensure_topics, args=(settings,))
    timer.start()
    monitor = Monitor(settings, RunStats(), topics=["tasks", "samples"])
    try:
        monitor.start()  # the topics appear 1.5 s later
        assert monitor.started and monitor.error is None
    finally:
        timer.join()
        monitor.stop()


def test_the_sampler_fence_has_no_lag(settings: Settings) -> None:
    """The fence group holds ``checkpoints`` partition 0 but never reads it: no lag, however many
    checkpoints there are."""
    checkpoints = settings.topics.name("checkpoints")
    producer = make_producer(settings)
    for v in range(3):
        producer.produce(checkpoints, b"x", key=f"v{v}")
    assert producer.flush(10) == 0
    fence = SamplerFence(settings, client_id="sampler-test")
    monitor = Monitor(settings, RunStats())
    try:
        fence.acquire()
        groups = {g.group: g for g in monitor.groups()}
        assert (checkpoints, 0) in groups[settings.group_id(FENCE_GROUP)].assigned
        assert monitor.measure_lag() == {}
    finally:
        fence.close()
        monitor.stop()
