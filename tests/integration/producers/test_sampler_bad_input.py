"""Bad-input catalogue, sampler: one sampler on the real broker gets every kind on its input topics
while it runs a group; each is dead-lettered (``topic[p]@o: reason``) or ignored as documented, no
bad checkpoint moves its version, and it goes on admitting and emitting (the next group is stamped
with the version of the one checkpoint that verified)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from streamrl.config import Settings
from streamrl.kafka import EventProducer
from streamrl.producers.publish import publish_file
from streamrl.producers.sampler import Sampler
from streamrl.schemas import (
    DeadLetter,
    GroupOutcome,
    GroupOutcomeStatus,
    Mode,
    RolloutStatus,
    Sample,
    Trajectory,
    utc_now,
)
from streamrl.schemas.serde import Serde
from tests.support.bad_input import Kind, encode_unchecked, kinds
from tests.support.kafka import TopicReader
from tests.support.records import verified_checkpoint

pytestmark = pytest.mark.integration

FAST_FENCE = {"fence_session_timeout_s": 6.0, "fence_timeout_s": 8.0}


@dataclass
class Run:
    settings: Settings
    sampler: Sampler
    where: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # kind -> (topic, partition, offset)
    dead: list[DeadLetter] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    second: subprocess.CompletedProcess[str] | None = None
    holder: str = ""

    def dead_at(self, kind_id: str) -> list[DeadLetter]:
        topic, part, off = self.where[kind_id]
        return [
            d
            for d in self.dead
            if (d.original_topic, d.original_partition, d.original_offset) == (topic, part, off)
        ]


def _traj(s: Sample, status: str, reward: float | None, kind: str | None = None) -> Trajectory:
    now = utc_now()
    return Trajectory(
        rollout_id=s.rollout_id, attempt_id=f"a-{s.rollout_id}", task_id=s.task_id, group_id=s.group_id,
        group_size=s.group_size, k=s.k, epoch=s.epoch, retry=s.retry, mode=s.mode, status=RolloutStatus(status),
        reward=reward, error=None if status == "succeeded" else "HTTP 400: maximum context length",
        failure_kind=kind, worker_id="sim", policy_version=s.policy_version, started_at=now, finished_at=now,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(shared_settings_factory: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("sampler-bad-input")
    s = shared_settings_factory(
        rl={"group_size": 2, "train_batch_size": 1, "max_staleness": 0, "seed": 1},
        sampler={**FAST_FENCE, "shuffle": False, "exit_when_done": False, "poll_interval_s": 0.05,
                 "flush_interval_s": 0.1, "max_retries": 2},
    )  # fmt: skip
    data = tmp / "tasks.jsonl"
    data.write_text("".join(json.dumps({"id": t, "q": t}) + "\n" for t in ("a0", "a1", "z-deleted")))
    assert publish_file(s, data, id_field="id").published == 3
    serde, producer = Serde(), EventProducer(s)
    r = Run(s, Sampler(s))
    stop, errors = threading.Event(), []

    def main() -> None:
        try:
            r.sampler.run(stop)
        except BaseException as exc:  # surfaced by the tests
            errors.append(exc)
        finally:
            r.sampler.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    samples = TopicReader(s, "samples", Sample)
    dlq = TopicReader(s, "dlq", DeadLetter)
    try:
        group_a = samples.read(2, timeout_s=90)  # a0's group fills the bound (one group in flight)
        assert {x.rollout_id for x in group_a} == {"a0/0/0", "a0/0/1"}

        def put(kind_id: str, base: str, value: bytes | None, key: str) -> None:
            topic = s.topics.name(base)

            def delivered(err: Any, msg: Any) -> None:
                assert err is None, err
                r.where[kind_id] = (topic, msg.partition(), msg.offset())

            producer.produce(topic, value, key=key, on_delivery=delivered)

        bogus = verified_checkpoint(tmp, "policy", 5, consumed_rollouts=1000)
        missing = bogus.model_copy(update={"uri": str(tmp / "no-such-dir"), "version": 5})
        wrong = bogus.model_copy(update={"digest": "sha256:" + "0" * 64, "version": 6})
        nulled = Trajectory.model_construct(**{**_traj(group_a[0], "failed", None).__dict__, "status": RolloutStatus.succeeded, "error": None, "failure_kind": None})  # fmt: skip
        put("sampler-garbage-task", "tasks", b"\x00\x00\x00\x00\x07garbage", "g1")
        put("sampler-task-tombstone", "tasks", None, "z-deleted")
        put("sampler-garbage-trajectory", "trajectories", b"not a trajectory", group_a[0].rollout_id)
        put("sampler-trajectory-tombstone", "trajectories", None, group_a[1].rollout_id)
        put(
            "sampler-succeeded-without-reward",
            "trajectories",
            encode_unchecked(serde, nulled),
            nulled.rollout_id,
        )
        put("sampler-garbage-outcome", "group_outcomes", b"\xc3\x01garbage", "a0/0")
        put("sampler-garbage-checkpoint", "checkpoints", b"{}", "policy")
        put("sampler-checkpoint-missing-dir", "checkpoints", serde.encode(missing), "policy")
        put("sampler-checkpoint-wrong-digest", "checkpoints", serde.encode(wrong), "policy")
        producer.flush(30)
        # now answer a0's group as workers, streams and the trainer would: the next group is admitted
        for x in group_a:
            producer.produce(
                s.topics.name("trajectories"), serde.encode(_traj(x, "succeeded", 1.0)), key=x.rollout_id
            )
        outcome = GroupOutcome(group_id="a0/0", status=GroupOutcomeStatus.batched, batch_id="b-1",
                               rollout_ids=[x.rollout_id for x in group_a])  # fmt: skip
        producer.produce(s.topics.name("group_outcomes"), serde.encode(outcome), key="a0/0")
        good = verified_checkpoint(tmp, "policy", 1, consumed_rollouts=2)
        producer.produce(s.topics.name("checkpoints"), serde.encode(good), key="policy")
        producer.flush(30)
        group_b = samples.read(4, timeout_s=60)[2:]
        assert {x.rollout_id for x in group_b} == {"a1/0/0", "a1/0/1"}
        # a deterministic 4xx: dead-lettered at once, never re-issued
        first = min(group_b, key=lambda x: x.k)
        put("sampler-request-failure", "trajectories", serde.encode(_traj(first, "failed", None, "request")), first.rollout_id)  # fmt: skip
        producer.flush(30)
        dlq.read_until(lambda got: any("request failure" in d.reason for d in got), timeout_s=60)
        # a second sampler on the same prefix, as an operator would start it
        cfg = tmp / "second.yaml"
        cfg.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": s.kafka.bootstrap_servers},
                                       "topics": {"prefix": s.topics.prefix}, "sampler": FAST_FENCE}))  # fmt: skip
        r.second = subprocess.run(
            [sys.executable, "-m", "streamrl.cli", "sampler", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        r.holder = r.sampler.fence.client_id if r.sampler.fence is not None else ""
        assert thread.is_alive() and not errors, errors  # the first one goes on
        assert "z-deleted" not in r.sampler.tasks  # the tombstone deleted it
        r.where["sampler-second-sampler"] = ("", -1, -1)
    finally:
        stop.set()
        thread.join(30)
        producer.close()
    assert not errors, errors
    r.dead = dlq.read_to_end()
    r.samples = samples.read_to_end()
    samples.close()
    dlq.close()
    return r


EXPECT: dict[str, list[str]] = {
    # kind -> what its dead letter's reason says (after ``topic[p]@o:``)
    "sampler-garbage-task": ["Task: Confluent-framed bytes"],
    "sampler-garbage-trajectory": ["Trajectory"],
    "sampler-trajectory-tombstone": ["Trajectory: empty value (None or 0 bytes)"],
    "sampler-succeeded-without-reward": ["status succeeded needs a reward (got null)"],
    "sampler-garbage-outcome": ["GroupOutcome"],
    "sampler-garbage-checkpoint": ["CheckpointEvent"],
    "sampler-checkpoint-missing-dir": ["checkpoint v5 not adopted", "no-such-dir is not a directory here"],
    "sampler-checkpoint-wrong-digest": ["checkpoint v6 not adopted", "the event says sha256:0000"],
    "sampler-request-failure": ["request failure: rollout a1/0/0", "not retried", "maximum context length"],
}


@pytest.mark.parametrize("kind", kinds("sampler"), ids=lambda k: k.id)
def test_sampler_bad_input(kind: Kind, run: Run) -> None:
    if kind.id == "sampler-second-sampler":
        out = run.second
        assert out is not None and out.returncode == 1, out
        assert "another sampler holds the fence of topic prefix" in out.stderr and run.holder in out.stderr
        assert "Traceback" not in out.stderr
    elif kind.id == "sampler-task-tombstone":
        assert run.dead_at(kind.id) == []  # a deletion, not an error
    elif kind.id == "sampler-request-failure":
        (d,) = [d for d in run.dead if "request failure" in d.reason]
        assert d.stage == "sampler" and d.error_type == "request_failure" and d.original_key == b"a1/0/0"
        for text in EXPECT[kind.id]:
            assert text in d.reason, d.reason
        assert not [x for x in run.samples if x.rollout_id == "a1/0/0" and x.retry > 0]  # never re-issued
    else:
        dead = run.dead_at(kind.id)
        topic, part, off = run.where[kind.id]
        assert len(dead) == 1, (kind.id, dead)
        assert dead[0].stage == "sampler" and dead[0].reason.startswith(f"{topic}[{part}]@{off}: "), dead[
            0
        ].reason
        for text in EXPECT[kind.id]:
            assert text in dead[0].reason, dead[0].reason
    # no bad checkpoint moved the version: the next group carries the verified checkpoint's version
    train = [x for x in run.samples if x.mode is Mode.train]
    assert {(x.rollout_id, x.policy_version) for x in train if x.retry == 0} == {
        ("a0/0/0", 0), ("a0/0/1", 0), ("a1/0/0", 1), ("a1/0/1", 1)
    }  # fmt: skip
    assert run.sampler.ledger.version == 1
