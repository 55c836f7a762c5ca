"""Consumer-group scaling on the real broker: 3 worker processes, 6 partitions, one SIGKILL."""

from __future__ import annotations

import signal
import subprocess
from collections import defaultdict

import pytest
from consumers_testkit import make_sample, produce_samples, spawn_worker, wait_group, workers_committed

from streamrl.schemas import RolloutStatus, Trajectory
from tests.support.fake_inference import FakeInferenceServer
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_three_workers_share_samples_and_survive_a_sigkill(settings_factory, tmp_path) -> None:
    s = settings_factory()
    with FakeInferenceServer() as inference:
        procs = {f"w{i}": spawn_worker(s, inference.url, f"w{i}", tmp_path) for i in range(3)}
        try:
            owned = wait_group(s, 3)
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
