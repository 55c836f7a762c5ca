"""Helpers of the consumers integration tests: produce samples, committed offsets, run a worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import ConsumerGroupState

from streamrl.config import Settings
from streamrl.kafka import make_admin, make_producer
from streamrl.schemas import LLMRequest, Mode, Sample, Trajectory
from streamrl.schemas.serde import Serde
from tests.support.kafka import committed_offsets
from tests.support.workers import WorkerThread  # noqa: F401  (the consumers tests import it from here)

SERDE = Serde()
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


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


def workers_committed(settings: Settings) -> dict[int, int]:
    """Committed offsets of the workers group on ``samples`` (partition -> offset; -1001 = none)."""
    return committed_offsets(settings, settings.group_id("workers"), settings.topics.name("samples"))


def requests_of(records: list[LLMRequest], traj: Trajectory) -> list[LLMRequest]:
    by_id = {r.request_id: r for r in records}
    return [by_id[i] for i in traj.request_ids]


def spawn_worker(
    settings, upstream: str, worker_id: str, log_dir: Path, agent: str = "consumers_test_agents:sleepy"
) -> subprocess.Popen:
    """``streamrl worker --worker-id <worker_id>`` as a process (session timeout 6 s), its output
    appended to ``<log_dir>/<worker_id>.log``."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}",
            "STREAMRL_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "STREAMRL_TOPIC_PREFIX": settings.topics.prefix,
            "STREAMRL_WORKER__SESSION_TIMEOUT_MS": "6000",
            "STREAMRL_WORKER__MAX_POLL_INTERVAL_MS": "6000",
            "STREAMRL_WORKER__COMMIT_INTERVAL_S": "0.2",
            "STREAMRL_GATEWAY__UPSTREAM_URL": upstream,
        }
    )
    log = open(log_dir / f"{worker_id}.log", "ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamrl.cli",
            "worker",
            "--agent",
            agent,
            "--concurrency",
            "4",
            "--worker-id",
            worker_id,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_group(settings, members: int, timeout_s: float = 60.0) -> dict[str, set[int]]:
    """Wait until the workers group is stable with ``members`` members owning all 6 partitions."""
    admin = make_admin(settings)
    group = settings.group_id("workers")
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
            last = desc
            owned = {
                m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members
            }
            if (
                desc.state == ConsumerGroupState.STABLE
                and len(desc.members) == members
                and sum(len(v) for v in owned.values()) == 6
            ):
                return owned
        except Exception:  # group not there yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"group not stable with {members} members in {timeout_s} s: {last}")
