"""Producers benchmark: GSM8K publish rate, sampler fan-out rate, sampler recovery time.

    .venv/bin/python -m bench.publish [--file examples/gsm8k/data/train.jsonl] [--group-size 8]

Uses ``$STREAMRL_BOOTSTRAP_SERVERS`` if set, else starts a throw-away local broker. Prints figures;
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "examples" / "gsm8k" / "data" / "train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--group-size", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from streamrl.config import load_settings
    from streamrl.producers.publish import publish_file
    from streamrl.producers.sampler import Sampler
    from streamrl.topics import ensure_topics
    from tests.support.kafka import start_local_broker

    broker = None
    bootstrap = os.environ.get("STREAMRL_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = start_local_broker(Path(tempfile.mkdtemp(prefix="bench-kafka-")), heap="512m")
        bootstrap = broker.bootstrap
    try:
        settings = load_settings(
            None,
            kafka={"bootstrap_servers": bootstrap},
            topics={"prefix": f"bench{uuid.uuid4().hex[:8]}."},
            rl={"group_size": args.group_size, "train_batch_size": 1_000_000, "max_staleness": 0},
            sampler={"max_epochs": 1, "poll_interval_s": 0.05},
        )
        ensure_topics(settings)

        dry = publish_file(settings, args.file, dry_run=True)
        print(
            f"publish (dry run, read+validate+encode): {dry.published} tasks in {dry.elapsed_s:.2f} s = {dry.rate:,.0f} tasks/s"
        )
        rep = publish_file(settings, args.file)
        print(
            f"publish to Kafka (acknowledged):         {rep.published} tasks in {rep.elapsed_s:.2f} s = {rep.rate:,.0f} tasks/s"
        )

        sampler, stop = Sampler(settings), threading.Event()
        want = rep.published * args.group_size
        t0 = time.perf_counter()
        sampler.recover()
        while sampler.ledger.emitted_train < want:
            sampler.step()
        sampler.producer.flush(60)
        dt = time.perf_counter() - t0
        sampler.close()
        print(
            f"sampler fan-out (1 epoch, G={args.group_size}):      {want} samples in {dt:.2f} s = {want / dt:,.0f} samples/s"
        )

        again = Sampler(settings)
        t0 = time.perf_counter()
        summary = again.recover()
        dt = time.perf_counter() - t0
        again.consumer.close()
        again.producer.close()
        records = sum(summary["records"].values())
        print(
            f"sampler recovery (replay topics):        {records} records in {dt:.2f} s = {records / dt:,.0f} records/s"
        )
        stop.set()
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
