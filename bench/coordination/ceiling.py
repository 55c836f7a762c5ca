"""Part C, the ceiling: a bare confluent-kafka producer and consumer moving the pipeline's event mix.

Per rollout three records go through the same broker: one ``samples``, one ``requests`` and one
``trajectories`` record, with the bytes part B wrote (or, without a part-B run, records built the
same way; see ``workload.synthetic_mix``). The producer is ``streamrl.kafka.make_producer`` (the
pipeline's config: idempotent, ``acks=all``, lz4, ``linger.ms=2``); the consumer, in a separate
process like a real downstream stage, is ``make_consumer``'s config with the partitions assigned
directly (no group join inside the measurement).

events/s = 3 × rollouts / (last record consumed − first record produced), wall clock of one machine.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.coordination.harness import BenchError, Pipeline, make_run_dir, remove_tree
from bench.coordination.workload import EventMix

__all__ = ["run_ceiling"]

KINDS = (("samples", "sample"), ("requests", "request"), ("trajectories", "trajectory"))


def _consume(conf: dict[str, Any], parts: list[tuple[str, int]], expected: int, out: Any, ready: Any) -> None:
    """Consumer process: read ``expected`` records, put ``(last consumed time.time(), count)`` on ``out``."""
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(t, p, 0) for t, p in parts])
    consumer.consume(num_messages=1, timeout=0.5)  # connect and fetch metadata before the clock starts
    ready.set()
    count, last, deadline = 0, 0.0, time.monotonic() + 300
    while count < expected and time.monotonic() < deadline:
        msgs = consumer.consume(num_messages=1000, timeout=0.1)
        for m in msgs:
            if m.error() is None:
                count += 1
        if msgs:
            last = time.time()
    consumer.close()
    out.put((last * 1000.0, count))


def run_ceiling(bootstrap: str, mix: EventMix, rollouts: int, *, work_root: Path | None = None,
                timeout_s: float = 120.0) -> dict[str, Any]:  # fmt: skip
    """Move ``rollouts`` × (sample, request, trajectory) through a fresh pipeline's topics.

    Returns:
        ``events_per_s`` (produce → consume), ``produce_events_per_s`` (until every ack), the event
        count, mean record sizes and where the bytes came from.

    Raises:
        BenchError: the consumer did not get every record within ``timeout_s``.
    """
    run_dir = make_run_dir(work_root, "C")
    pipe = Pipeline(bootstrap, run_dir)
    ctx = mp.get_context("spawn")
    try:
        from streamrl.kafka import consumer_config, make_producer

        conf = consumer_config(pipe.settings, f"{pipe.prefix}ceiling")
        parts = [(pipe.topic(b), p) for b, _ in KINDS for p in range(pipe.settings.topics.partitions[b])]
        expected = 3 * rollouts
        out, ready = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=_consume, args=(conf, parts, expected, out, ready), daemon=True)
        proc.start()
        if not ready.wait(60):
            raise BenchError("ceiling consumer did not start within 60 s")
        producer = make_producer(pipe.settings)
        topics = [(pipe.topic(base), getattr(mix, kind)) for base, kind in KINDS]
        producer.produce(pipe.topic("dlq"), value=b"warm-up", key="warm-up")  # idempotence PID, metadata
        if producer.flush(30):
            raise BenchError("ceiling producer could not reach the broker within 30 s")
        t0 = time.time() * 1000.0
        for i in range(rollouts):
            key = f"c-{i:07d}"
            for topic, values in topics:
                value = values[i % len(values)][1]
                while True:
                    try:
                        producer.produce(topic, value=value, key=key)
                        break
                    except BufferError:
                        producer.poll(0.005)
            if i % 64 == 0:
                producer.poll(0)
        left = producer.flush(timeout_s)
        t_acked = time.time() * 1000.0
        if left:
            raise BenchError(f"ceiling producer: {left} record(s) unacknowledged after {timeout_s:.0f} s")
        try:
            last_ms, count = out.get(timeout=timeout_s)
        except Exception as exc:
            raise BenchError(f"ceiling consumer gave no result within {timeout_s:.0f} s") from exc
        proc.join(10)
        if count < expected:
            raise BenchError(f"ceiling consumer read {count} of {expected} records")
        return {
            "events": expected,
            "events_per_s": expected * 1000.0 / (last_ms - t0),
            "produce_events_per_s": expected * 1000.0 / (t_acked - t0),
            "bytes_source": mix.source,
            **mix.sizes(),
        }
    finally:
        pipe.close()
        remove_tree(run_dir)
