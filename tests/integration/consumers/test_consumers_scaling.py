"""Consumer-group scaling on the real broker: 3 worker processes, 6 partitions, one SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState
from consumers_testkit import make_sample, produce_samples, workers_committed

from streamrl.kafka import make_admin
from streamrl.schemas import RolloutStatus, Trajectory
from tests.support.fake_inference import FakeInferenceServer
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def _spawn(settings, upstream: str, worker_id: str, log_dir: Path) -> subprocess.Popen:
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
    log = open(log_dir / f"{worker_id}.log", "wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamrl.cli",
            "worker",
            "--agent",
            "consumers_test_agents:sleepy",
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


def _wait_group(settings, members: int, timeout_s: float = 60.0) -> dict[str, set[int]]:
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


def test_three_workers_share_samples_and_survive_a_sigkill(settings_factory, tmp_path) -> None:
    s = settings_factory()
    with FakeInferenceServer() as inference:
        procs = {f"w{i}": _spawn(s, inference.url, f"w{i}", tmp_path) for i in range(3)}
        try:
            owned = _wait_group(s, 3)
            # phase 1: no failures -> every sample exactly one trajectory, spread over the 3 workers
            first = [make_sample(f"a{i}", 0, {"question": "q", "sleep_s": 0.05}) for i in range(60)]
            produce_samples(s, first)
            reader = TopicReader(s, "trajectories", Trajectory)
            got = reader.read_until(lambda r: len(r) >= 60, timeout_s=60)
            assert sorted(t.rollout_id for t in got) == sorted(x.rollout_id for x in first)
            assert all(t.status == RolloutStatus.succeeded for t in got)
            assert {t.worker_id for t in got} == {"w0", "w1", "w2"}

            # phase 2: kill w0 mid-rollout
            second = [make_sample(f"b{i}", 0, {"question": "q", "sleep_s": 1.0}) for i in range(60)]
            where = produce_samples(s, second)
            reader.read_until(
                lambda r: sum(t.worker_id == "w0" and t.rollout_id.startswith("b") for t in r) >= 4,
                timeout_s=30,
            )
            procs["w0"].send_signal(signal.SIGKILL)
            procs["w0"].wait(10)
            committed_at_kill = workers_committed(s)
            killed_parts = owned["w0"]
            ids = {x.rollout_id for x in second}
            reader.read_until(lambda r: ids <= {t.rollout_id for t in r}, timeout_s=90)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
    reader.read_to_end()  # every worker has exited: late duplicates, if any, are all in the log now
    by_rollout: dict[str, list[Trajectory]] = defaultdict(list)
    for t in reader.records:
        by_rollout[t.rollout_id].append(t)
    reader.close()
    assert ids <= set(by_rollout), f"lost samples: {sorted(ids - set(by_rollout))}"
    redelivered = 0
    for rid in ids:
        ts = by_rollout[rid]
        part, off = where[rid]
        if len(ts) > 1:
            assert len(ts) == 2 and ts[0].attempt_id != ts[1].attempt_id
            assert part in killed_parts and off >= committed_at_kill[part], (
                rid,
                part,
                off,
                committed_at_kill,
            )
            assert {t.worker_id for t in ts} != {"w0"}
        if part in killed_parts and off >= committed_at_kill[part] and all(t.worker_id != "w0" for t in ts):
            redelivered += 1
    assert redelivered >= 1, "the killed worker's running samples were not redelivered to the others"
    for rid in {x.rollout_id for x in first}:
        assert len(by_rollout[rid]) == 1
