"""A long run with every kind of drop never stalls admission, and ends with nothing in flight.

The real sampler (in this process, so every emission is checked against the bound), the real
streams worker (a child process) and the real trainer (torch backend, a tiny model, in this
process) on the real broker, with a scripted agent in place of the rollout workers that produces,
task by task: groups with reward variance (batched, trained), zero-variance groups, a rollout that
fails once (re-issued), a rollout that always fails (dead-lettered by the sampler: its group is a
straggler), a straggler whose late member arrives after its group closed, an incomplete join, stale
rows (the trainer drops them), token ids the model does not have (the trainer dead-letters the
batch), and rollouts without trainable calls. The admission bound is 2 groups, so the run passes
through many policy versions; admission must keep going to the end of the epoch, never pass the
bound, and reach ``in flight == 0`` once everything is decided and consumed: no drop leaked
capacity and none was released twice.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from streamrl.kafka import EventProducer
from streamrl.producers.publish import publish_file
from streamrl.producers.sampler import Sampler
from streamrl.schemas import DeadLetter, GroupOutcome, LLMRequest, Mode, RolloutStatus, Sample, Trajectory
from streamrl.schemas.serde import Serde
from streamrl.trainer.service import TrainerService
from streamrl.trainer.torch_backend import TorchBackend
from tests.support.kafka import TopicReader, read_topic
from tests.support.processes import StreamsWorker
from tests.support.toy_policy import build_tiny_model

pytestmark = pytest.mark.integration

G, B = 2, 2  # rollouts per group, groups per batch; max_staleness 0: the bound is B x G = 4 samples
KINDS = (
    "normal",
    "zero_variance",
    "fail_once",
    "straggler_late",
    "incomplete_join",
    "stale",
    "bad_tokens",
    "dead",
    "no_rows",
)
N_TASKS = 4 * len(KINDS)
LATE_S = 3.5  # the late member's delay: past streams.straggler_timeout_s (event time of its record)
VOCAB = 32


def kind_of(task_id: str) -> str:
    return KINDS[int(task_id[1:]) % len(KINDS)]


class ScriptedAgent:
    """Answers each sample the way its task's kind says, writing requests and trajectories as the
    rollout workers and their gateway would (same keys, same attempt ids)."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.serde = Serde()
        self.producer = EventProducer(settings)
        self.later: list[tuple[float, Sample]] = []

    def answer(self, s: Sample, *, held: bool = False) -> None:
        kind, k = kind_of(s.task_id), s.k
        if kind == "straggler_late" and k == 1 and not held:
            self.later.append((time.monotonic() + LATE_S, s))
            return
        failed = (kind == "fail_once" and k == 0 and s.retry == 0) or (kind == "dead" and k == 0)
        attempt = f"{s.rollout_id}/{s.retry}"
        call_ids = []
        if not failed:
            call_id = f"{attempt}/c0"
            self._call(s, call_id, attempt, kind)
            call_ids.append(call_id)
            if kind == "incomplete_join" and k == 1:
                call_ids.append(f"{attempt}/never-recorded")
        now = datetime.now(timezone.utc)
        traj = Trajectory(
            rollout_id=s.rollout_id,
            attempt_id=attempt,
            task_id=s.task_id,
            group_id=s.group_id,
            group_size=s.group_size,
            k=k,
            epoch=s.epoch,
            retry=s.retry,
            mode=s.mode,
            status=RolloutStatus.failed if failed else RolloutStatus.succeeded,
            reward=None if failed else (1.0 if kind == "zero_variance" else float(k)),
            error="scripted failure" if failed else None,
            request_ids=call_ids,
            worker_id="scripted",
            policy_version=s.policy_version,
            started_at=now,
            finished_at=now,
        )
        self.producer.produce(
            self.settings.topics.name("trajectories"), self.serde.encode(traj), key=s.rollout_id
        )

    def _call(self, s: Sample, call_id: str, attempt: str, kind: str) -> None:
        req = LLMRequest(
            request_id=call_id,
            rollout_id=s.rollout_id,
            attempt_id=attempt,
            agent_name="helper" if kind == "no_rows" else "solver",
            sequence=0,
            model="tiny",
            prompt_token_ids=[1, 3 + int(s.task_id[1:]) % 20],
            response_token_ids=[999 if kind == "bad_tokens" else 4 + s.k],
            response_logprobs=[-0.7],
            policy_version=0 if kind == "stale" else s.policy_version,
            latency_ms=1.0,
            started_at=datetime.now(timezone.utc),
        )
        self.producer.produce(self.settings.topics.name("requests"), self.serde.encode(req), key=s.rollout_id)

    def due(self) -> None:
        """Answer the held-back samples whose time has come."""
        now = time.monotonic()
        for item in [x for x in self.later if x[0] <= now]:
            self.later.remove(item)
            self.answer(item[1], held=True)


class TopicReaderOfSamples:
    """New train/val samples as they arrive (duplicates, re-emitted after a crash, skipped)."""

    def __init__(self, settings) -> None:
        self.reader = TopicReader(settings, "samples", Sample)
        self.seen: set[tuple[str, int]] = set()
        self.done = 0

    def new(self) -> list[Sample]:
        self.reader.poll(0.05)
        out = []
        for sample in self.reader.records[self.done :]:
            if (sample.rollout_id, sample.retry) not in self.seen:
                self.seen.add((sample.rollout_id, sample.retry))
                out.append(sample)
        self.done = len(self.reader.records)
        return out

    def close(self) -> None:
        self.reader.close()


def _in_thread(name: str, target, errors: list[BaseException]) -> threading.Thread:
    def main() -> None:
        try:
            target()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(240)
def test_a_long_run_with_every_kind_of_drop_never_stalls_admission(settings_factory, tmp_path: Path) -> None:
    s = settings_factory(
        rl={"group_size": G, "train_batch_size": B, "max_staleness": 0, "staleness_policy": "drop"},
        sampler={
            "max_epochs": 1,
            "max_retries": 1,
            "shuffle": False,
            "exit_when_done": False,
            "val_every": 0,
            "poll_interval_s": 0.05,
            "flush_interval_s": 0.05,
        },
        streams={
            "tick_interval_s": 0.2,
            "commit_interval_s": 0.5,
            "session_timeout_s": 6.0,
            "join_timeout_s": 1.0,
            "straggler_timeout_s": 2.0,
            "batch_timeout_s": 1.0,
            "min_group_size": 2,
            "filter_zero_variance": True,
            "train_agents": ["solver"],
            "state_dir": str(tmp_path / "streams"),
            "blob_dir": str(tmp_path / "blobs"),
        },
        trainer={
            "model_path": str(
                build_tiny_model(tmp_path / "model", vocab_size=VOCAB, hidden_size=32, num_heads=2)
            ),
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "save_every": 1,
            "keep_last": 2,
            "lr": 1e-3,
            "micro_batch_size": 8,
            "poll_timeout_s": 0.1,
            "torch_threads": 1,
        },
    )
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(f'{{"id": "t{i:02d}", "q": {i}}}\n' for i in range(N_TASKS)))
    assert publish_file(s, data, id_field="id").published == N_TASKS
    config = tmp_path / "streamrl.yaml"
    config.write_text(yaml.safe_dump(s.model_dump(mode="json")))
    streams = StreamsWorker(config, tmp_path / "streams.log").start()

    errors: list[BaseException] = []
    trainer = TrainerService(s, TorchBackend(s.trainer, rollout_n=G, seed=0))
    sampler = Sampler(s)
    stop_sampler = threading.Event()
    peak = [0]
    emit = sampler._emit

    def checked_emit(sample: Sample) -> None:  # the bound, at every single admission
        emit(sample)
        if sample.mode is Mode.train:
            peak[0] = max(peak[0], sampler.ledger.in_flight)
            assert sampler.ledger.in_flight <= sampler.ledger.bound, (
                sampler.ledger.in_flight,
                sample.rollout_id,
            )

    sampler._emit = checked_emit  # type: ignore[method-assign]
    stale_before = (
        REGISTRY.get_sample_value("streamrl_trainer_rows_dropped_total", {"reason": "stale"}) or 0.0
    )
    threads = [
        _in_thread("trainer", trainer.run, errors),
        _in_thread("sampler", lambda: sampler.run(stop_sampler), errors),
    ]
    agent = ScriptedAgent(s)
    samples = TopicReaderOfSamples(s)
    t0 = time.monotonic()
    try:
        while True:
            assert not errors, errors
            assert time.monotonic() - t0 < 180, (
                f"stalled: epoch done={sampler.train_done}, in flight {sampler.ledger.in_flight}, "
                f"open {sampler.ledger.open_rollouts}, version {sampler.ledger.version}\n{streams.tail()}"
            )
            for sample in samples.new():
                agent.answer(sample)
            agent.due()
            agent.producer.flush(10)
            led = sampler.ledger
            if sampler.train_done and not agent.later and led.open_rollouts == 0 and led.in_flight == 0:
                break
        wall_s = time.monotonic() - t0
    finally:
        stop_sampler.set()
        trainer.stop()
        for t in threads:
            t.join(30)
        sampler.close()
        samples.close()
        agent.producer.close()
        streams.kill()
    assert not errors, errors

    led = sampler.ledger
    assert peak[0] == led.bound, f"the bound was never reached ({peak[0]} < {led.bound}): a weak test"
    assert led.emitted_train == N_TASKS * G + N_TASKS // len(KINDS) * 2  # + fail_once's and dead's re-issues
    outcomes = read_topic(s, "group_outcomes", GroupOutcome)
    reasons = {o.reason for o in outcomes if o.status.value == "dropped"}
    assert reasons >= {"zero_variance", "straggler", "late", "incomplete_join", "no_rows"}, reasons
    # groups are admitted whole: only the scripted ones straggle (a group split by admission would
    # wait at streams for members admitted later, and be dropped as a straggler with late members)
    for o in outcomes:
        if o.reason in ("straggler", "late"):
            expected = {"straggler_late", "dead"} if o.reason == "straggler" else {"straggler_late"}
            assert kind_of(o.group_id.split("/")[0]) in expected, o
    dead = read_topic(s, "dlq", DeadLetter)
    assert any(d.stage == "sampler" for d in dead), "no sample dead-lettered"
    assert any(d.stage == "trainer" and "vocabulary" in d.reason for d in dead), "no batch dead-lettered"
    stale = (
        REGISTRY.get_sample_value("streamrl_trainer_rows_dropped_total", {"reason": "stale"}) or 0.0
    ) - stale_before
    assert stale > 0, "no stale row dropped"
    assert trainer.version >= 8, f"only {trainer.version} versions"
    print(
        f"{N_TASKS} groups, {led.emitted_train} train samples, {trainer.version} versions in {wall_s:.0f} s; "
        f"released by outcome {led.released_by_outcome}, consumed {led.consumed} "
        f"({led.consumed_dead_lettered} by dead-lettered batches); reasons {sorted(reasons)}"
    )
