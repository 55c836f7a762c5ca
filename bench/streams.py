"""Streams aggregator benchmark: rollouts/s through the Faust worker and group → batch latency.

Runs the real worker (``python -m streamrl.streams``) against a real broker: ``$STREAMRL_BOOTSTRAP_SERVERS`` if
set, else a local Apache Kafka started for the run (free ports, temporary data dir). Each rollout has
``--calls`` LLM calls (``--tokens`` prompt and response tokens each) and a trajectory; groups of
``rl.group_size`` rollouts, batches of ``rl.train_batch_size`` groups, transition mode.

Phases:

1. throughput: ``--rollouts`` rollouts produced as fast as possible; rollouts/s = rollouts / (last batch
   record time − first input record time).
2. latency: ``--paced-groups`` groups produced one at a time every ``--pace-ms``; latency of a group =
   its batch record's timestamp − the timestamp of the group's last input record (its last
   trajectory), both Kafka record timestamps on this host. Reported per group (includes waiting
   for the other groups of its batch) and per batch (from the event that completed the batch).

Run: ``.venv/bin/python -m bench.streams [--rollouts 1024]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from streamrl.config import Settings, load_settings
from streamrl.kafka import EventProducer, make_consumer
from streamrl.schemas import LLMRequest, TrainingBatch, Trajectory
from streamrl.schemas.serde import Serde
from streamrl.topics import ensure_topics
from tests.support.kafka import start_local_broker

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[1]


class Producer:
    """Produces rollouts and remembers each trajectory's record timestamp (ms) by group."""

    def __init__(self, settings: Settings, calls: int, tokens: int) -> None:
        self.settings, self.calls, self.tokens = settings, calls, tokens
        self.serde = Serde()
        self.p = EventProducer(settings)
        self.last_ts_ms: dict[str, int] = {}
        self.first_ts_ms: int | None = None

    def _on_traj(self, group: str) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is None:
                ts = msg.timestamp()[1]
                self.last_ts_ms[group] = max(self.last_ts_ms.get(group, 0), ts)
                self.first_ts_ms = ts if self.first_ts_ms is None else min(self.first_ts_ms, ts)

        return cb

    def group(self, group: str, size: int) -> None:
        req_topic, traj_topic = (
            self.settings.topics.name("requests"),
            self.settings.topics.name("trajectories"),
        )
        for k in range(size):
            rid = f"{group}/{k}"
            prompt = list(range(self.tokens))
            ids = []
            for c in range(self.calls):
                response = [(k + c + i) % 500 for i in range(self.tokens)]
                req = LLMRequest(
                    request_id=f"{rid}/{c}",
                    rollout_id=rid,
                    attempt_id="a",
                    agent_name="agent",
                    sequence=c,
                    model="m",
                    prompt_token_ids=prompt,
                    response_token_ids=response,
                    response_logprobs=[-0.5] * len(response),
                    policy_version=0,
                    latency_ms=1.0,
                    started_at=T0,
                )
                self.p.produce(req_topic, self.serde.encode(req), key=rid)
                ids.append(req.request_id)
                prompt = prompt + response + [7]
            t = Trajectory(
                rollout_id=rid,
                attempt_id="a",
                task_id=group,
                group_id=group,
                group_size=size,
                k=k,
                epoch=0,
                mode="train",
                status="succeeded",
                reward=float(k % 2),
                request_ids=ids,
                worker_id="bench",
                policy_version=0,
                started_at=T0,
                finished_at=T0,
            )
            self.p.produce(traj_topic, self.serde.encode(t), key=rid, on_delivery=self._on_traj(group))


def _read_batches(consumer: Any, serde: Serde, want_groups: set[str], timeout_s: float) -> dict[str, int]:
    """group id -> batch record timestamp (ms), until every wanted group is seen."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while not want_groups <= set(seen) and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        batch = serde.decode(msg.value(), TrainingBatch)
        for row in batch.rows or []:
            seen.setdefault(row.group_id, msg.timestamp()[1])
    return seen


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=1024)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--batch-groups", type=int, default=4)
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--paced-groups", type=int, default=24)
    ap.add_argument("--pace-ms", type=float, default=400.0)
    args = ap.parse_args(argv)

    broker = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    bootstrap = os.environ.get("STREAMRL_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = start_local_broker(tmp / "kafka", heap="512m")
        bootstrap = broker.bootstrap
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    rl = {"group_size": args.group_size, "train_batch_size": args.batch_groups}
    streams = {
        "tick_interval_s": 0.5,
        "commit_interval_s": 1.0,
        "filter_zero_variance": False,
        "state_dir": str(tmp / "state"),
        "blob_dir": str(tmp / "blobs"),
        "batch_timeout_s": 5.0,
    }
    cfg_path = tmp / "streams.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": bootstrap},
                "topics": {"prefix": prefix},
                "rl": rl,
                "streams": streams,
            }
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STREAMRL_BOOTSTRAP_SERVERS", "STREAMRL_TOPIC_PREFIX")
    }
    settings = load_settings(cfg_path)
    ensure_topics(settings)
    log = (tmp / "worker.log").open("wb")
    profile = (
        ["-m", "cProfile", "-o", os.environ["BENCH_STREAMS_PROFILE"]]
        if os.environ.get("BENCH_STREAMS_PROFILE")
        else []
    )
    worker = subprocess.Popen(
        [sys.executable, *profile, "-m", "streams", "-c", str(cfg_path)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while b"STREAMS-READY" not in (tmp / "worker.log").read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start: {(tmp / 'worker.log').read_text()[-3000:]}")
            time.sleep(0.2)
        consumer = make_consumer(settings, f"bench-{uuid.uuid4().hex[:6]}")
        consumer.subscribe([settings.topics.name("batches")])
        serde = Serde()

        # phase 1: throughput from a burst
        prod = Producer(settings, args.calls, args.tokens)
        n_groups = max(args.batch_groups, args.rollouts // args.group_size)
        groups = [f"burst{i}/0" for i in range(n_groups)]
        t_start, cpu_start = time.perf_counter(), _cpu_s(worker.pid)
        for g in groups:
            prod.group(g, args.group_size)
        prod.p.flush(60)
        t_produced = time.perf_counter()
        seen = _read_batches(consumer, serde, set(groups), timeout_s=300)
        if len(seen) < len(groups):
            raise SystemExit(f"only {len(seen)}/{len(groups)} groups batched; see {tmp / 'worker.log'}")
        span_s = (max(seen.values()) - (prod.first_ts_ms or 0)) / 1000
        cpu_s = _cpu_s(worker.pid) - cpu_start
        rollouts = n_groups * args.group_size
        print(
            f"streams throughput: {rollouts} rollouts ({args.calls} calls x {args.tokens}+{args.tokens} tokens) "
            f"in {span_s:.2f} s = {rollouts / span_s:.0f} rollouts/s "
            f"({rollouts * (args.calls + 1) / span_s:.0f} input records/s; produce took "
            f"{t_produced - t_start:.2f} s); worker CPU {cpu_s:.1f} s = {rollouts / cpu_s:.0f} rollouts per CPU-second"
        )

        # phase 2: latency, one group every pace_ms
        paced = [f"paced{i}/0" for i in range(args.paced_groups)]
        for g in paced:
            prod.group(g, args.group_size)
            prod.p.flush(10)
            time.sleep(args.pace_ms / 1000)
        seen = _read_batches(consumer, serde, set(paced), timeout_s=120)
        per_group = [seen[g] - prod.last_ts_ms[g] for g in paced if g in seen and g in prod.last_ts_ms]
        per_batch: dict[int, list[int]] = {}
        for g in paced:
            if g in seen:
                per_batch.setdefault(seen[g], []).append(prod.last_ts_ms[g])
        closing = [ts - max(lasts) for ts, lasts in per_batch.items()]
        print(
            f"streams latency (last event of a group -> its batch record, {len(per_group)} groups paced every "
            f"{args.pace_ms:.0f} ms, {args.batch_groups} groups/batch): p50 {_pct(per_group, 0.5):.0f} ms, "
            f"p99 {_pct(per_group, 0.99):.0f} ms"
        )
        print(
            f"streams latency (event completing a batch -> batch record, {len(closing)} batches): "
            f"p50 {_pct(closing, 0.5):.0f} ms, p99 {_pct(closing, 0.99):.0f} ms"
        )
        consumer.close()
        prod.p.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
