"""An inference outage seen by a worker on the real broker: classified, and no samples burnt.

The inference service (a real HTTP server) goes away mid-run: the rollouts that were running fail
as ``infrastructure`` (the sampler re-issues those without spending retries), the worker's breaker
stops it taking samples (so the outage costs at most the rollouts that were running), and once the
service answers ``/health`` again every sample left runs and succeeds.
"""

from __future__ import annotations

import time

import pytest
from consumers_testkit import WorkerThread, make_sample, produce_samples

from streamrl.schemas import FailureKind, RolloutStatus, Trajectory
from tests.support.fake_inference import FakeInferenceServer
from tests.support.kafka import TopicReader, free_port

pytestmark = pytest.mark.integration

CONCURRENCY = 4


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.05)  # polling a state of the worker, not ordering the test by time


def test_an_outage_fails_running_rollouts_as_infrastructure_and_pauses_the_worker(settings_factory) -> None:
    port = free_port()
    server = FakeInferenceServer(port=port)
    server.start()
    s = settings_factory(
        worker={
            "concurrency": CONCURRENCY,
            "session_timeout_ms": 6000,
            "max_poll_interval_ms": 6000,
            "breaker_probe_s": 0.2,
            "breaker_probe_max_s": 1.0,
        },
        gateway={"upstream_url": server.url},
    )
    trajs = TopicReader(s, "trajectories", Trajectory)
    first = [make_sample(f"a{i}", 0, {"question": "q", "answer": "ok"}) for i in range(4)]
    produce_samples(s, first)
    with WorkerThread(s, "consumers_test_agents:two_calls") as w:
        trajs.read(4)
        assert all(t.status is RolloutStatus.succeeded for t in trajs.records)
        breaker = w.worker.breaker
        assert breaker is not None and not breaker.is_open
        # the outage: every call is refused from now on, while samples keep coming
        server.stop()
        t_down = time.monotonic()
        later = [make_sample(f"b{i}", 0, {"question": "q", "answer": "ok"}) for i in range(24)]
        produce_samples(s, later)
        _wait(lambda: breaker.is_open, 60, "the worker stopped taking samples")
        opened_s = time.monotonic() - t_down
        # what was running fails (the agent's client retries 5xx, then raises): infrastructure
        _wait(lambda: w.worker._active == 0, 60, "the running rollouts ended")
        failed = trajs.read_to_end()[4:]
        assert failed and len(failed) <= 2 * CONCURRENCY, [t.rollout_id for t in failed]
        for t in failed:
            assert t.status is not RolloutStatus.succeeded
            assert t.failure() is FailureKind.infrastructure, t.error
            assert "inference service" in t.error
        probes = breaker.probes
        _wait(lambda: breaker.probes >= probes + 3, 30, "three more failed health probes")
        assert breaker.is_open and len(trajs.read_to_end()) == 4 + len(failed)  # nothing else started
        # the service is back on the same address: the next probe closes the breaker
        server = FakeInferenceServer(port=port)
        server.start()
        t_up = time.monotonic()
        ran = {t.rollout_id for t in failed}
        left = [x for x in later if x.rollout_id not in ran]
        trajs.read(4 + len(failed) + len(left), timeout_s=120)
        resumed_s = time.monotonic() - t_up
        after = trajs.records[4 + len(failed) :]
        assert sorted(t.rollout_id for t in after) == sorted(x.rollout_id for x in left)
        assert all(t.status is RolloutStatus.succeeded for t in after), [t.error for t in after]
        assert not breaker.is_open and breaker.trips == 1
    server.stop()
    print(
        f"\noutage: breaker open {opened_s:.1f} s after the service went away; {len(failed)} running "
        f"rollout(s) failed as infrastructure; the {len(left)} others all ran {resumed_s:.1f} s after it came back"
    )
