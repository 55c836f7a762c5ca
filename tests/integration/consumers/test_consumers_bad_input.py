"""Bad-input catalogue, worker and gateway: one worker on the real broker, in front of a real HTTP
inference server that misbehaves on demand, runs one sample of every kind among healthy ones. Bad
samples are dead-lettered and committed past; a misbehaving agent or server fails its rollout with
the reason and the failure kind, records nothing it should not, and every healthy sample succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from consumers_test_agents import BIG
from consumers_testkit import SERDE, WorkerThread, make_sample, produce_samples, workers_committed

from streamrl.config import Settings
from streamrl.kafka import make_producer
from streamrl.schemas import DeadLetter, LLMRequest, RolloutStatus, Trajectory
from tests.support.bad_input import Kind, kinds
from tests.support.fake_inference import FakeInferenceServer
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROLLOUT_TIMEOUT_S = 8.0
UPSTREAM_TIMEOUT_S = 3.0  # the gateway's wait for the inference service (healthy calls take ms)

# kind -> the sample's payload (the catalogue agent in consumers_test_agents.py acts on it)
PAYLOADS: dict[str, dict[str, Any]] = {
    "worker-agent-raises": {"do": "raise"},
    "worker-nan-reward": {"do": "nan"},
    "worker-str-reward": {"do": "str"},
    "worker-huge-reward": {"do": "huge"},
    "worker-no-reward": {"do": "none"},
    "worker-sync-agent-hangs": {"do": "hang"},
    "worker-inference-400": {"do": "call", "q": "hi ERROR:400"},
    "worker-inference-500": {"do": "call", "q": "hi ERROR:500"},
    "worker-inference-timeout": {"do": "call", "q": f"hi SLEEP:{2 * UPSTREAM_TIMEOUT_S:g}"},
    "worker-stream-dies": {"do": "call", "q": "hi REPLY:abcdef BREAK:die", "stream": True},
    "worker-stream-without-done": {"do": "call", "q": "hi REPLY:abc BREAK:no_done", "stream": True},
    "worker-fewer-ids-than-usage": {"do": "call", "q": "hi REPLY:ab BREAK:short_ids"},
    "worker-positive-logprob": {"do": "call", "q": "hi BREAK:positive_logprob"},
    "worker-nonfinite-logprob": {"do": "call", "q": "hi REPLY:abc BREAK:nan_logprob"},
    "worker-no-token-ids": {"do": "call", "q": "hi BREAK:no_ids"},
    "worker-big-integer-payload": {"do": "int", "n": BIG},
}
RAW: dict[str, bytes | None] = {
    "worker-garbage-sample": b"\x00\x00\x00\x00\x05 not a sample",
    "worker-truncated-sample": None,  # filled in: a real Sample's bytes cut short
    "worker-tombstone-sample": None,
}
# kind -> (status, failure kind, what the error says); every one of these records no call
FAILS: dict[str, tuple[str, str, list[str]]] = {
    "worker-agent-raises": ("failed", "agent", ["ValueError: the agent's own bug", "in catalogue"]),
    "worker-nan-reward": ("failed", "agent", ["reward must be finite, got nan"]),
    "worker-str-reward": ("failed", "agent", ["reward must be a finite float, got str 'great'"]),
    "worker-huge-reward": ("failed", "agent", ["reward must be finite, got int beyond float range"]),
    "worker-no-reward": ("failed", "agent", ["no reward"]),
    "worker-sync-agent-hangs": ("timeout", "agent", [f"exceeded its time limit of {ROLLOUT_TIMEOUT_S:g} s"]),
    "worker-inference-400": ("failed", "request", ["refused the attempt's last call", "maximum context length"]),
    "worker-inference-500": ("failed", "infrastructure", ["failed the attempt's last call"]),
    "worker-inference-timeout": ("failed", "infrastructure", ["failed the attempt's last call", "TimeoutError", "Error code: 504"]),
    "worker-stream-dies": ("failed", "infrastructure", ["the inference stream broke", "the agent: ", "APIError"]),
    "worker-stream-without-done": (
        "failed", "infrastructure", ["ended without data: [DONE]", "the agent: ", "APIError"]
    ),
    "worker-fewer-ids-than-usage": (
        "failed", "infrastructure", ["usage.completion_tokens=2 but the response carries 1 token ids"]
    ),
    "worker-positive-logprob": ("failed", "infrastructure", ["response_logprobs[0] = 0.5 > 0: not a log-probability"]),
    "worker-nonfinite-logprob": ("failed", "infrastructure", ["response_logprobs[1] must be finite float32, got -inf"]),
    "worker-no-token-ids": ("failed", "infrastructure", ["has no token_ids; the inference server must support"]),
}  # fmt: skip


@dataclass
class Run:
    settings: Settings
    trajs: dict[str, Trajectory] = field(default_factory=dict)  # kind or "healthy-<i>" -> its trajectory
    requests: list[LLMRequest] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    raw_at: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (partition, offset)
    committed: dict[int, int] = field(default_factory=dict)
    abandoned: int = 0


def _settings(factory: Callable[..., Settings], inference: FakeInferenceServer, **worker: Any) -> Settings:
    return factory(
        worker={"concurrency": 4, "sync_threads": 2, "rollout_timeout_s": ROLLOUT_TIMEOUT_S,
                "session_timeout_ms": 6000, "max_poll_interval_ms": 6000, "shutdown_timeout_s": 2.0,
                "delivery_timeout_s": 10.0, "commit_interval_s": 0.2, **worker},
        gateway={"upstream_url": inference.url, "upstream_timeout_s": UPSTREAM_TIMEOUT_S},
    )  # fmt: skip


@pytest.fixture(scope="module")
def inference() -> Any:
    with FakeInferenceServer(policy_version=7) as srv:
        yield srv


@pytest.fixture(scope="module")
def run(shared_settings_factory: Callable[..., Settings], inference: FakeInferenceServer) -> Run:
    s = _settings(shared_settings_factory, inference)
    r = Run(s)
    # the hung agent first (it holds one of the 2 sync threads for good), then every other kind,
    # then healthy samples: they must all run although the hung one never returns
    samples = {kind: make_sample(kind, 0, payload) for kind, payload in PAYLOADS.items()}
    healthy = {
        f"healthy-{i}": make_sample(f"healthy-{i}", 0, {"do": "call", "q": "hi REPLY:yes"}) for i in range(6)
    }
    ordered = [samples.pop("worker-sync-agent-hangs"), *samples.values(), *healthy.values()]
    raw = {**RAW, "worker-truncated-sample": SERDE.encode(ordered[-1])[:-7]}
    producer = make_producer(s)
    topic = s.topics.name("samples")
    for kind, value in raw.items():

        def delivered(err: Any, msg: Any, kind: str = kind) -> None:
            assert err is None, err
            r.raw_at[kind] = (msg.partition(), msg.offset())

        producer.produce(topic, value, key=kind, on_delivery=delivered)
    assert producer.flush(30) == 0
    where = produce_samples(s, ordered)
    trajs, reqs = TopicReader(s, "trajectories", Trajectory), TopicReader(s, "requests", LLMRequest)
    dlq = TopicReader(s, "dlq", DeadLetter)
    with WorkerThread(s, "consumers_test_agents:catalogue") as w:
        got = trajs.read_until(lambda t: len({x.rollout_id for x in t}) >= len(ordered), timeout_s=120)
        dlq.read(3, timeout_s=60)
        # every offset before the last sample committed: the dead-lettered ones are not in the way
        ends: dict[int, int] = {}
        for p, o in [*where.values(), *r.raw_at.values()]:
            ends[p] = max(ends.get(p, 0), o + 1)
        deadline = time.monotonic() + 60
        while any(workers_committed(s).get(p, -1) < end for p, end in ends.items()):
            assert time.monotonic() < deadline, (workers_committed(s), ends)
            time.sleep(0.2)  # polling the group's committed offsets (a state), not ordering the test
        r.committed = workers_committed(s)
        r.abandoned = w.worker._executor.abandoned
    r.trajs = {t.task_id: t for t in got}
    r.requests = reqs.read_to_end()
    r.dead = dlq.read_to_end()
    for reader in (trajs, reqs, dlq):
        reader.close()
    return r


def _sigterm_with_a_hung_agent(
    factory: Callable[..., Settings], inference: FakeInferenceServer, tmp: Path
) -> float:
    """``streamrl worker`` with a sync agent stuck forever: SIGTERM ends it within seconds."""
    s = _settings(factory, inference, rollout_timeout_s=600.0)
    mark = tmp / "running"
    produce_samples(s, [make_sample("hang", 0, {"do": "hang", "mark": str(mark)})])
    cfg = tmp / "worker.yaml"
    cfg.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": s.kafka.bootstrap_servers},
                                   "topics": {"prefix": s.topics.prefix},
                                   "worker": s.worker.model_dump(mode="json", exclude={"api_key"}),
                                   "gateway": {"upstream_url": inference.url}}))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = (tmp / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrl.cli", "worker", "-c", str(cfg), "--agent", "consumers_test_agents:catalogue"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():  # the agent is running (and will never return)
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "worker.log").read_text()
            time.sleep(0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.mark.parametrize("kind", kinds("worker"), ids=lambda k: k.id)
def test_worker_bad_input(
    kind: Kind,
    run: Run,
    shared_settings_factory: Callable[..., Settings],
    inference: FakeInferenceServer,
    tmp_path: Path,
) -> None:
    if kind.id in RAW:
        p, off = run.raw_at[kind.id]
        (d,) = [d for d in run.dead if (d.original_partition, d.original_offset) == (p, off)]
        topic = run.settings.topics.name("samples")
        assert d.stage == "worker" and d.reason.startswith(f"{topic}[{p}]@{off}: cannot decode Sample"), (
            d.reason
        )
        if kind.id == "worker-tombstone-sample":
            assert "tombstone (null value)" in d.reason
        assert run.committed[p] > off  # committed past it: the partition is not stuck
    elif kind.id in FAILS:
        status, failure, says = FAILS[kind.id]
        t = run.trajs[kind.id]
        assert (t.status.value, t.failure_kind) == (status, failure), (t.status, t.failure_kind, t.error)
        for text in says:
            assert text in (t.error or ""), t.error
        assert t.reward is None and t.request_ids == []  # nothing recorded, nothing to train
        assert not [q for q in run.requests if q.rollout_id == t.rollout_id]
        if kind.id == "worker-sync-agent-hangs":
            assert run.abandoned >= 1  # its thread written off and replaced
            stopped_in = _sigterm_with_a_hung_agent(shared_settings_factory, inference, tmp_path)
            print(f"worker stopped {stopped_in:.1f} s after SIGTERM with a hung sync agent")
            assert stopped_in < 30, f"SIGTERM took {stopped_in:.1f} s with a hung sync agent"
    elif kind.id == "worker-big-integer-payload":
        t = run.trajs[kind.id]
        assert t.status is RolloutStatus.succeeded and t.reward == 1.0, t.error
        assert json.loads(make_sample("x", 0, {"n": BIG}).payload)["n"] == BIG
    else:
        raise AssertionError(f"no check for {kind.id}")
    # nothing lost beside it: every healthy sample ran and was recorded
    for i in range(6):
        t = run.trajs[f"healthy-{i}"]
        assert t.status is RolloutStatus.succeeded and len(t.request_ids) == 1, t.error
