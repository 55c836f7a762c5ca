"""Static group membership on the real broker: a SIGKILLed worker restarted under its id takes its
partitions back at once (the group waited a whole session timeout for the dead member before), and
a worker stopped with SIGTERM still leaves the group, so the others take its partitions at once.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from consumers_testkit import make_sample, produce_samples, spawn_worker, wait_group

from streamrl.kafka import make_admin
from streamrl.schemas import RolloutStatus, Trajectory
from tests.support.fake_inference import FakeInferenceServer
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SESSION_TIMEOUT_S = 30.0  # long, so the timing tells static rejoin (< 1 s) from a session expiry


def _owned(settings) -> dict[str, set[int]]:
    admin = make_admin(settings)
    group = settings.group_id("workers")
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members}


def _log_events(path, offset: int) -> list[tuple[float, str]]:
    """``(time s, line)`` of the worker's consumer start and (re)assignment lines after ``offset``."""
    from datetime import datetime

    out = []
    for line in path.read_bytes()[offset:].decode(errors="replace").splitlines():
        if " assigned [" in line or " revoked [" in line or ": agent " in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, line[24:]))
    return out


def _until(cond, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout_s, f"{what} not within {timeout_s} s"
        time.sleep(0.1)  # polling the group's state on the broker
    return time.monotonic() - t0


def test_a_restarted_worker_takes_its_partitions_back_at_once(
    settings_factory, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("STREAMRL_WORKER__SESSION_TIMEOUT_MS", str(int(SESSION_TIMEOUT_S * 1000)))
    monkeypatch.setenv("STREAMRL_WORKER__MAX_POLL_INTERVAL_MS", str(int(SESSION_TIMEOUT_S * 1000)))
    s = settings_factory()
    procs: list[subprocess.Popen] = []
    with FakeInferenceServer() as inference:

        def spawn(worker_id: str) -> subprocess.Popen:
            proc = spawn_worker(s, inference.url, worker_id, tmp_path)
            procs.append(proc)
            return proc

        try:
            a, _b = spawn("w-a"), spawn("w-b")
            before = wait_group(s, 2, timeout_s=90)
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            log_a, log_b = tmp_path / "w-a.log", tmp_path / "w-b.log"
            start_a, start_b = log_a.stat().st_size, log_b.stat().st_size
            a = spawn("w-a")  # restarted under the same id (what streamrl dev and Kubernetes do)
            t_restart = time.monotonic()
            _until(
                lambda: any(" assigned [" in e for _, e in _log_events(log_a, start_a)), 90, "w-a assigned"
            )
            events = _log_events(log_a, start_a)
            started = next(t for t, e in events if ": agent " in e)  # its consumer joins from here
            assigned_at, line = next((t, e) for t, e in events if " assigned [" in e)
            rejoined = assigned_at - started
            assert line.endswith(f"assigned {sorted(before['w-a'])}"), line  # its own partitions, all
            # no rebalance: w-b was never revoked or given anything while w-a was gone and back
            assert _log_events(log_b, start_b) == []
            assert _owned(s) == before
            # the restarted worker works: samples on every partition all get a trajectory
            samples = [make_sample(f"r{i}", 0, {"question": "q"}) for i in range(24)]
            produce_samples(s, samples)
            with TopicReader(s, "trajectories", Trajectory) as reader:
                got = reader.read_until(lambda r: len(r) >= 24, timeout_s=90)
            assert sorted(t.rollout_id for t in got) == sorted(x.rollout_id for x in samples)
            assert all(t.status is RolloutStatus.succeeded for t in got)
            assert {t.worker_id for t in got} == {"w-a", "w-b"}
            print(
                f"\nrestarted w-a had its partitions {sorted(before['w-a'])} back {rejoined:.2f} s after its "
                f"consumer started ({assigned_at - (time.time() - (time.monotonic() - t_restart)):.1f} s after "
                f"the process was started, imports included; session timeout {SESSION_TIMEOUT_S:.0f} s)"
            )
            # a graceful stop still leaves the group: w-b takes every partition long before the timeout
            a.send_signal(signal.SIGTERM)
            t_term = time.monotonic()
            a.wait(60)
            left = _until(lambda: _owned(s).get("w-b") == set(range(6)), 60, "w-b owning every partition")
            print(f"after w-a's SIGTERM, w-b owned all 6 partitions {time.monotonic() - t_term:.1f} s later")
            assert rejoined < SESSION_TIMEOUT_S / 2 and left < SESSION_TIMEOUT_S / 2
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
