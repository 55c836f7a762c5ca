"""A worker on the real broker with a real OpenAI-compatible HTTP server: records, ids, clients."""

from __future__ import annotations

import json

import pytest
from consumers_testkit import (
    WorkerThread,
    make_sample,
    produce_samples,
    requests_of,
    workers_committed,
)

from streamrl.schemas import LLMRequest, RolloutStatus, Trajectory
from tests.support.fake_inference import FakeInferenceServer, fake_logprob, render_chat, tokenize
from tests.support.kafka import TopicReader, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def inference():
    with FakeInferenceServer(policy_version=7) as srv:
        yield srv


def _settings(settings_factory, inference, **worker):
    return settings_factory(
        worker={"concurrency": 4, "session_timeout_ms": 6000, "max_poll_interval_ms": 6000, **worker},
        gateway={"upstream_url": inference.url},
    )


def test_rollout_records_exact_tokens_ids_and_agent(settings_factory, inference) -> None:
    s = _settings(settings_factory, inference)
    samples = [
        make_sample(f"task{i}", 0, {"question": f"what is {i}?", "answer": str(i * 11)}) for i in range(4)
    ]
    where = produce_samples(s, samples)
    trajs, reqs = TopicReader(s, "trajectories", Trajectory), TopicReader(s, "requests", LLMRequest)
    with WorkerThread(s, "consumers_test_agents:two_calls") as w:
        got = trajs.read_until(lambda r: len(r) >= 4)
        records = reqs.read_until(lambda r: len(r) >= 8)
    assert sorted(t.rollout_id for t in got) == sorted(x.rollout_id for x in samples)
    by_sample = {x.rollout_id: x for x in samples}
    for t in got:
        assert t.status == RolloutStatus.succeeded, t.error
        assert t.reward == 1.0 and t.worker_id == w.worker.worker_id and t.policy_version == 2
        assert [(r.name, r.value, r.primary) for r in t.rewards] == [
            ("format", 0.25, False),
            ("reward", 1.0, True),
        ]
        calls = requests_of(records, t)
        assert [c.sequence for c in calls] == [0, 1]
        assert t.rewards[0].request_id == calls[0].request_id  # emitted after call 0, before call 1
        assert t.rewards[1].request_id == calls[1].request_id
        q = by_sample[t.rollout_id]
        task = json.loads(q.payload)
        msgs = [{"role": "user", "content": task["question"]}]
        for c in calls:
            assert (c.rollout_id, c.attempt_id, c.agent_name) == (t.rollout_id, t.attempt_id, "solver")
            assert c.policy_version == 7 and c.model == "policy" and c.finish_reason == "stop"
            assert c.latency_ms > 0 and c.choice_index == 0
        assert calls[0].prompt_token_ids == tokenize(render_chat(msgs))
        assert calls[0].response_token_ids == tokenize("ok")
        assert calls[0].ttft_ms is None
        msgs2 = [
            *msgs,
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "again REPLY:" + task["answer"]},
        ]
        assert calls[1].prompt_token_ids == tokenize(render_chat(msgs2))
        assert calls[1].response_token_ids == tokenize(task["answer"])
        assert calls[1].response_logprobs == pytest.approx(
            [fake_logprob(t) for t in tokenize(task["answer"])]
        )
        assert calls[1].ttft_ms is not None  # streamed
    # every offset committed once the worker stopped (its trajectories were acknowledged)
    ends = {}
    for p, o in where.values():
        ends[p] = max(ends.get(p, -1), o + 1)
    committed = workers_committed(s)
    for p, end in ends.items():
        assert committed[p] == end
    assert inference.last_request is not None and inference.last_request["return_token_ids"] is True
    trajs.close()
    reqs.close()


def test_clients_failures_and_class_agent(settings_factory, inference) -> None:
    s = _settings(settings_factory, inference, rollout_timeout_s=60.0)
    kinds = [
        "openai_sync",
        "openai_sync_stream",
        "openai_async",
        "openai_async_stream",
        "langchain",
        "langchain_stream",
        "openai_tools",
    ]
    samples = [
        make_sample(f"c-{k}", 0, {"client": k, "question": "hi REPLY:yes CALL:lookup", "answer": "yes"})
        for k in kinds
    ]
    produce_samples(s, samples)
    trajs, reqs = TopicReader(s, "trajectories", Trajectory), TopicReader(s, "requests", LLMRequest)
    with WorkerThread(s, "consumers_test_agents:sync_client_zoo"):
        got = trajs.read_until(lambda r: len(r) >= len(kinds))
        records = reqs.read_until(lambda r: len(r) >= len(kinds))
    assert len(got) == len(kinds)
    for t in got:
        assert t.status == RolloutStatus.succeeded, (t.rollout_id, t.error)
        assert t.reward == 1.0, t.rollout_id
        (call,) = requests_of(records, t)
        assert call.attempt_id == t.attempt_id and call.agent_name is None
        expected = '{"name": "lookup"}' if t.rollout_id.startswith("c-openai_tools") else "yes"
        assert call.response_token_ids == tokenize(expected)
        assert call.finish_reason == ("tool_calls" if "tools" in t.rollout_id else "stop")

    # failures become trajectories with reasons; a sleeping agent times out; the worker survives
    s2 = _settings(settings_factory, inference, rollout_timeout_s=1.0)
    bad = [
        make_sample("b-raise", 0, {"mode": "raise"}),
        make_sample("b-nan", 0, {"mode": "nan"}),
        make_sample("b-ok", 0, {"mode": "ok"}),
    ]
    produce_samples(s2, bad)
    produce_samples(s2, [make_sample("b-slow", 0, {"mode": "sleep", "sleep_s": 5})])
    reader = TopicReader(s2, "trajectories", Trajectory)
    with WorkerThread(s2, "consumers_test_agents:broken"):
        out = {t.rollout_id: t for t in reader.read_until(lambda r: len(r) >= 4)}
    assert out["b-raise/0/0"].status == RolloutStatus.failed
    assert "agent exploded on purpose" in out["b-raise/0/0"].error
    assert out["b-nan/0/0"].status == RolloutStatus.failed and "finite" in out["b-nan/0/0"].error
    assert out["b-ok/0/0"].status == RolloutStatus.succeeded and out["b-ok/0/0"].reward == 1.0
    assert (
        out["b-slow/0/0"].status == RolloutStatus.timeout and "time limit of 1 s" in out["b-slow/0/0"].error
    )
    reader.close()


def test_rollout_longer_than_max_poll_interval_keeps_the_worker_in_its_group(
    settings_factory, inference
) -> None:
    # max.poll.interval.ms = 6 s (the broker's minimum session timeout); the rollout sleeps 8 s at capacity 1.
    s = _settings(settings_factory, inference, concurrency=1)
    where = produce_samples(
        s,
        [
            make_sample("long", 0, {"question": "q", "sleep_s": 8.0}),
            make_sample("short", 0, {"question": "q", "sleep_s": 0.0}),
        ],
    )
    reader = TopicReader(s, "trajectories", Trajectory)
    with WorkerThread(s, "consumers_test_agents:sleepy") as w:
        w.wait_assigned(6)
        got = reader.read_until(lambda r: len(r) >= 2, timeout_s=40)
        assert w.worker.consumer is not None
        assert w.worker.consumer.revocations == 0, (
            "the worker lost or gave up partitions during the long rollout"
        )
        assert len(w.worker.consumer.assigned) == 6
    got = reader.read_to_end()  # the worker has stopped: a redelivered rollout would be in the log now
    assert sorted(t.rollout_id for t in got) == ["long/0/0", "short/0/0"]  # each once: no redelivery
    assert all(t.status == RolloutStatus.succeeded for t in got)
    committed = workers_committed(s)
    for p, o in where.values():
        assert committed[p] >= o + 1
    reader.close()


def test_worker_with_a_standalone_gateway_process(settings_factory, inference) -> None:
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    gw_url = f"http://127.0.0.1:{port}"
    s = _settings(settings_factory, inference, gateway_url=gw_url)
    env = {
        **os.environ,
        "STREAMRL_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "STREAMRL_TOPIC_PREFIX": s.topics.prefix,
        "STREAMRL_GATEWAY__UPSTREAM_URL": inference.url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrl.cli", "gateway", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(gw_url + "/healthz", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "standalone gateway did not start"
                time.sleep(0.1)
        produce_samples(s, [make_sample("remote", 0, {"question": "q REPLY:7", "answer": "7"})])
        trajs, reqs = TopicReader(s, "trajectories", Trajectory), TopicReader(s, "requests", LLMRequest)
        with WorkerThread(s, "consumers_test_agents:two_calls"):
            (t,) = trajs.read_until(lambda r: len(r) >= 1)
            records = reqs.read_until(lambda r: len(r) >= 2)
    finally:
        proc.terminate()
        proc.wait(30)
    assert t.status == RolloutStatus.succeeded and t.reward == 1.0, t.error
    calls = requests_of(records, t)
    assert [c.sequence for c in calls] == [0, 1] and all(c.attempt_id == t.attempt_id for c in calls)
    assert t.rewards[0].request_id == calls[0].request_id
    trajs.close()
    reqs.close()


def test_an_undecodable_sample_is_dead_lettered_and_its_partition_moves_on(
    settings_factory, inference
) -> None:
    from confluent_kafka import Producer

    from streamrl.kafka import client_config
    from streamrl.schemas import DeadLetter

    s = settings_factory(topics={"partitions": {"samples": 1}}, gateway={"upstream_url": inference.url})
    producer = Producer(client_config(s))
    producer.produce(s.topics.name("samples"), b"not an avro record", key=b"garbage")
    assert producer.flush(10) == 0
    sample = make_sample("task-after-garbage", 0, {"sleep_s": 0})
    where = produce_samples(s, [sample])
    dlq, trajs = TopicReader(s, "dlq", DeadLetter), TopicReader(s, "trajectories", Trajectory)
    with WorkerThread(s, "consumers_test_agents:sleepy_sync"):
        letters = dlq.read_until(lambda r: len(r) >= 1)
        got = trajs.read_until(lambda r: len(r) >= 1)
    assert letters[0].stage == "worker" and letters[0].original_offset == 0
    assert letters[0].original_value == b"not an avro record" and "cannot decode Sample" in letters[0].reason
    assert got[0].rollout_id == sample.rollout_id and got[0].status == RolloutStatus.succeeded
    # the dead-lettered offset does not hold back the partition's commits
    assert workers_committed(s)[0] == where[sample.rollout_id][1] + 1 == 2
    dlq.close()
    trajs.close()
