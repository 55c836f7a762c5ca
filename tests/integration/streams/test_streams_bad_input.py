"""Bad-input catalogue, streams: one real worker process gets every kind on its input and internal
topics between good rollouts; each is dead-lettered (``topic[p]@o: reason``), nothing trains from it,
the rollouts around it still batch, and no agent crashes (the worker's log has no traceback)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from streamrl.config import Settings
from streamrl.kafka import EventProducer
from streamrl.schemas import (
    DeadLetter,
    GroupOutcome,
    LLMRequest,
    Mode,
    RolloutStatus,
    TrainingBatch,
    Trajectory,
)
from streamrl.schemas.serde import Serde
from streamrl.streams.faust_config import streams_topics
from tests.support.bad_input import Kind, encode_unchecked, kinds
from tests.support.kafka import TopicReader
from tests.support.processes import StreamsWorker

from .conftest import T0, Feed, write_config

pytestmark = pytest.mark.integration


@dataclass
class Run:
    settings: Settings
    where: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # kind -> its record's place
    dead: list[DeadLetter] = field(default_factory=list)
    trained: set[str] = field(default_factory=set)  # rollout ids with rows in a batch
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # rollout -> (status, reason)
    log: str = ""

    def dead_at(self, kind_id: str) -> list[DeadLetter]:
        topic, part, off = self.where[kind_id]
        return [
            d
            for d in self.dead
            if (d.original_topic, d.original_partition, d.original_offset) == (topic, part, off)
        ]


def _request(rollout_id: str, request_id: str, logprobs: list[float]) -> LLMRequest:
    """An LLMRequest built without its checks (what another producer could write)."""
    return LLMRequest.model_construct(
        schema_version=2, request_id=request_id, rollout_id=rollout_id, attempt_id="a1", agent_name="solver",
        sequence=0, model="m", prompt_token_ids=[1, 2, 3], response_token_ids=[10, 20][: len(logprobs)],
        response_logprobs=logprobs, finish_reason="stop", policy_version=0, latency_ms=1.0, started_at=T0,
        choice_index=0, ttft_ms=None,
    )  # fmt: skip


def _trajectory(rollout_id: str, group_id: str, k: int, request_ids: list[str]) -> Trajectory:
    """A succeeded Trajectory whose reward is null, built without its checks."""
    return Trajectory.model_construct(
        schema_version=2, rollout_id=rollout_id, attempt_id="a1", task_id=group_id.split("/")[0], group_id=group_id,
        group_size=2, k=k, epoch=0, retry=0, mode=Mode.train, status=RolloutStatus.succeeded, reward=None,
        rewards=[], request_ids=request_ids, error=None, worker_id="w", policy_version=0, started_at=T0,
        finished_at=T0, failure_kind=None,
    )  # fmt: skip


def _train_event(rollout_id: str, group_id: str, logprob: float) -> dict[str, Any]:
    """A group-stage train event as the join writes it (one row)."""
    row = {"rollout_id": rollout_id, "group_id": group_id, "agent_name": "solver", "prompt_ids": [1, 2],
           "response_ids": [3, 4], "response_mask": [1, 1], "behaviour_logprobs": [-0.5, logprob],
           "token_rewards": [0.0, 1.0], "reward": 1.0, "policy_version": 0, "weight": 1.0}  # fmt: skip
    return {"kind": "train", "rollout_id": rollout_id, "attempt_id": "a1", "group_id": group_id, "group_size": 2,
            "policy_version": 0, "reward": 1.0, "last_ts": time.time(), "rows": [row]}  # fmt: skip


@pytest.fixture(scope="module")
def run(shared_settings_factory: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("streams-bad-input")
    s = shared_settings_factory(rl={"group_size": 2, "train_batch_size": 1})
    cfg = write_config(
        s,
        tmp / "streams.yaml",
        streams={
            "join_timeout_s": 2.0,
            "straggler_timeout_s": 4.0,
            "min_group_size": 1,
            "batch_timeout_s": 1.0,
        },
        rl={"group_size": 2, "train_batch_size": 1},
    )
    worker = StreamsWorker(cfg, tmp / "worker.log").start()
    names = streams_topics(s)
    serde, feed, producer = Serde(), Feed(s), EventProducer(s)
    r = Run(s)
    outcomes = TopicReader(s, "group_outcomes", GroupOutcome)
    try:

        def put(kind_id: str, topic: str, value: bytes | None, key: str | None) -> None:
            def delivered(err: Any, msg: Any) -> None:
                assert err is None, err
                r.where[kind_id] = (topic, msg.partition(), msg.offset())

            producer.produce(topic, value, key=key, on_delivery=delivered)

        for k in range(2):
            feed.rollout("before/0", k, float(k), group_size=2)
        put("streams-garbage-request", names.requests, b"\x00\x00\x00\x00\x09junk", "before/0/0")
        put("streams-garbage-trajectory", names.trajectories, b"junk", "before/0/1")
        put("streams-tombstone-request", names.requests, None, "before/0/0")
        # g1: member 0's only call has a positive logprob; member 1 is fine
        feed.call("g1/0/1", "g1/0/1/c0", [1, 2, 3], [10, 20])
        bad = _request("g1/0/0", "g1/0/0/c0", [-0.25, 0.5])
        put("streams-positive-logprob-request", names.requests, encode_unchecked(serde, bad), "g1/0/0")
        feed.traj("g1/0/0", "g1/0", ["g1/0/0/c0"], 1.0, group_size=2, k=0)
        feed.traj("g1/0/1", "g1/0", ["g1/0/1/c0"], 0.0, group_size=2, k=1)
        # g2: member 0's trajectory says succeeded with a null reward; member 1 is fine
        feed.call("g2/0/0", "g2/0/0/c0", [1, 2, 3], [10, 20])
        nulled = _trajectory("g2/0/0", "g2/0", 0, ["g2/0/0/c0"])
        put("streams-succeeded-without-reward", names.trajectories, encode_unchecked(serde, nulled), "g2/0/0")
        feed.rollout("g2/0", 1, 1.0, group_size=2)
        mismatch = _request("km/0/0", "km/0/0/c0", [-0.25, -0.5])
        put("streams-key-mismatch", names.requests, serde.encode(mismatch), "not-the-rollout-id")
        put("streams-bytes-on-ticks", names.ticks, b"\xff\xfe not a tick", None)
        future = json.dumps({"kind": "tick", "ts": time.time() + 86_400}).encode()
        put("streams-tick-from-the-future", names.ticks, future, None)
        put("streams-bytes-on-groups", names.groups, b"[1, 2", "gx/0")
        forged = _train_event("gx/0/0", "gx/0", 0.5)  # its row breaks the row rules
        put("streams-bad-row-on-groups", names.groups, json.dumps(forged).encode(), "gx/0")
        producer.produce(names.groups, json.dumps(_train_event("gx/0/1", "gx/0", -0.5)).encode(), key="gx/0")
        put("streams-bytes-on-validation", names.validation, b"{not json", "0")
        for k in range(2):  # after everything: still joined, grouped and batched
            feed.rollout("after/0", k, float(k), group_size=2)
        feed.flush()
        producer.flush(30)
        want = {
            "before/0/0",
            "before/0/1",
            "g1/0/0",
            "g1/0/1",
            "g2/0/1",
            "gx/0/0",
            "gx/0/1",
            "after/0/0",
            "after/0/1",
        }
        got = outcomes.read_until(
            lambda outs: want <= {rid for o in outs for rid in o.rollout_ids}, timeout_s=120
        )
        for o in got:
            for rid in o.rollout_ids:
                r.outcomes.setdefault(rid, (o.status.value, o.reason))
        r.trained = {
            row.rollout_id
            for b in TopicReader(s, "batches", TrainingBatch).read_to_end()
            for row in b.rows or []
        }
        places = set(r.where.values())
        r.dead = TopicReader(s, "dlq", DeadLetter).read_until(
            lambda dead: (
                places <= {(d.original_topic, d.original_partition, d.original_offset) for d in dead}
            ),
            timeout_s=60,
        )
    finally:
        worker.kill()  # SIGKILL: only its log is wanted now
        outcomes.close()
        feed.close()
        producer.close()
    r.log = (tmp / "worker.log").read_text(errors="replace")
    return r


EXPECT: dict[str, list[str]] = {
    "streams-garbage-request": ["undecodable or invalid record"],
    "streams-garbage-trajectory": ["undecodable or invalid record"],
    "streams-tombstone-request": [
        "undecodable or invalid record",
        "LLMRequest: empty value (None or 0 bytes)",
    ],
    "streams-positive-logprob-request": ["response_logprobs[1] = 0.5 > 0: not a log-probability"],
    "streams-succeeded-without-reward": ["status succeeded needs a reward"],
    "streams-key-mismatch": ["record key 'not-the-rollout-id' != rollout_id 'km/0/0'"],
    "streams-bytes-on-ticks": ["bad tick"],
    "streams-tick-from-the-future": ["bad tick", "ahead of the clock"],
    "streams-bytes-on-groups": ["bad group event", "not JSON"],
    "streams-bad-row-on-groups": [
        "rollout gx/0/0: a training row is invalid",
        "0.5 > 0: not a log-probability",
    ],
    "streams-bytes-on-validation": ["bad validation event", "not JSON"],
}
NOT_TRAINED = {
    "streams-positive-logprob-request": "g1/0/0",
    "streams-succeeded-without-reward": "g2/0/0",
    "streams-bad-row-on-groups": "gx/0/0",
}


@pytest.mark.parametrize("kind", kinds("streams"), ids=lambda k: k.id)
def test_streams_bad_input(kind: Kind, run: Run) -> None:
    dead = run.dead_at(kind.id)
    topic, part, off = run.where[kind.id]
    assert len(dead) == 1, (kind.id, dead)
    assert dead[0].stage == "streams" and dead[0].reason.startswith(f"{topic}[{part}]@{off}: "), dead[
        0
    ].reason
    for text in EXPECT[kind.id]:
        assert text in dead[0].reason, dead[0].reason
    rid = NOT_TRAINED.get(kind.id)
    if rid is not None:
        assert rid not in run.trained  # nothing trained from it
    if kind.id == "streams-positive-logprob-request":  # its rollout lost its call: decided as such
        assert run.outcomes["g1/0/0"] == ("dropped", "incomplete_join")
    if kind.id == "streams-bad-row-on-groups":
        assert run.outcomes["gx/0/0"] == ("dropped", "invalid_rows") and "gx/0/1" in run.trained
    # nothing lost beside it, and the worker never crashed
    assert {"before/0/0", "before/0/1", "g1/0/1", "g2/0/1", "after/0/0", "after/0/1"} <= run.trained
    assert "Traceback" not in run.log and "crashed" not in run.log.lower()
