"""Helpers for the producers' broker tests: simulated workers, streams and trainer that check the
sampler's in-flight bound at every sample they observe."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streamrl.config import Settings
from streamrl.kafka import EventProducer
from streamrl.schemas import (
    GroupOutcome,
    GroupOutcomeStatus,
    Mode,
    RolloutStatus,
    Sample,
    Trajectory,
)
from streamrl.schemas.serde import Serde
from tests.support.kafka import TopicReader
from tests.support.records import verified_checkpoint


@dataclass
class TrainerSim:
    """Plays the rollout workers, streams and the trainer against a running sampler.

    It reads ``samples`` and answers each with a trajectory (``failed`` for ``(rollout_id, retry)`` in
    ``fail``). As streams, it publishes a ``GroupOutcome`` for every train group whose members all
    succeeded: ``dropped`` (``zero_variance``) for groups in ``zero_variance``, else ``batched``
    once ``train_batch_size`` groups are ready; for a group in ``dead`` (a member dead-lettered by
    the sampler) it drops the others as stragglers once they all succeeded. As the trainer, it
    writes checkpoint ``v + 1`` with ``consumed_rollouts`` for every batch. At every observed train
    sample it checks the true in-flight count ``E − failed − dropped − consumed ≤ bound`` (from what it
    wrote: the sampler cannot have read more).
    """

    settings: Settings
    fail: set[tuple[str, int]] = field(default_factory=set)
    infra: set[tuple[str, int]] = field(default_factory=set)
    """``(rollout_id, retry)`` answered ``failed`` as infrastructure failures (the inference service
    was down), which spend none of the sample's retries."""
    dead: set[str] = field(default_factory=set)
    """Group ids with a member the sampler will dead-letter: streams drops the rest as stragglers."""
    zero_variance: set[str] = field(default_factory=set)
    """Train group ids streams drops as zero-variance."""
    samples: list[Sample] = field(default_factory=list)
    version: int = 0
    emitted: int = 0
    failed: int = 0
    dropped: int = 0
    consumed: int = 0
    max_in_flight: int = 0
    answered: set[tuple[str, int]] = field(default_factory=set)
    checks: int = 0
    seen: set[tuple[str, int]] = field(default_factory=set)
    duplicates: list[Sample] = field(default_factory=list)
    succeeded_in_group: dict[str, set[str]] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)
    ready: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rl = self.settings.rl
        self.per_version = rl.train_batch_size * rl.group_size
        self.bound = (rl.max_staleness + 1) * self.per_version
        self.serde = Serde()
        self.reader = TopicReader(self.settings, "samples", Sample, serde=self.serde)
        self.producer = EventProducer(self.settings)
        self.ckpt_root = Path(tempfile.mkdtemp(prefix="trainer-sim-"))  # real checkpoints: they must verify

    @property
    def in_flight(self) -> int:
        return self.emitted - self.failed - self.dropped - self.consumed

    def drain(self, quiet_s: float = 1.0, timeout_s: float = 30.0, first_s: float = 0.0) -> int:
        """Read samples until none arrives for ``quiet_s`` (waiting up to ``first_s`` for the first one);
        checks the bound at each one. Returns how many."""
        n, start = 0, time.monotonic()
        last = start + first_s
        while time.monotonic() - last < quiet_s:
            assert time.monotonic() - start < timeout_s, "samples kept coming"
            got = self._read(0.1)
            if got:
                n += got
                last = time.monotonic()
        return n

    def drain_until(self, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Read samples (checking the bound at each) until ``done()``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, (
                f"sampler stalled: E={self.emitted} failed={self.failed} dropped={self.dropped} "
                f"consumed={self.consumed} in flight {self.in_flight} < bound {self.bound}"
            )
            self._read(0.1)

    def _read(self, timeout_s: float) -> int:
        before = len(self.reader.records)
        self.reader.poll(timeout_s)
        new = self.reader.records[before:]
        for s in new:
            if (s.rollout_id, s.retry) in self.seen:  # re-emitted after a crash: downstream dedupes it
                self.duplicates.append(s)
                continue
            self.seen.add((s.rollout_id, s.retry))
            self.samples.append(s)
            if s.mode is Mode.train:
                self.emitted += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self.checks += 1
                assert self.in_flight <= self.bound, (
                    f"in-flight bound broken at {s.rollout_id} retry {s.retry}: E={self.emitted} "
                    f"failed={self.failed} dropped={self.dropped} consumed={self.consumed} "
                    f"-> {self.in_flight} > {self.bound}"
                )
        return len(new)

    def answer(self) -> None:
        """A trajectory for every observed, unanswered sample; then the outcomes of the groups that
        completed, and a checkpoint per batch."""
        now = datetime.now(timezone.utc)
        for s in self.samples:
            key = (s.rollout_id, s.retry)
            if key in self.answered:
                continue
            self.answered.add(key)
            failed = key in self.fail or key in self.infra
            traj = Trajectory(
                rollout_id=s.rollout_id,
                attempt_id=f"a-{s.rollout_id}-{s.retry}",
                task_id=s.task_id,
                group_id=s.group_id,
                group_size=s.group_size,
                k=s.k,
                epoch=s.epoch,
                retry=s.retry,
                mode=s.mode,
                status=RolloutStatus.failed if failed else RolloutStatus.succeeded,
                reward=None if failed else float(s.k),
                error=("inference service unreachable" if key in self.infra else "injected failure")
                if failed
                else None,
                worker_id="sim",
                policy_version=s.policy_version,
                started_at=now,
                finished_at=now,
                failure_kind=("infrastructure" if key in self.infra else "agent") if failed else None,
            )
            self.producer.produce(
                self.settings.topics.name("trajectories"), self.serde.encode(traj), key=s.rollout_id
            )
            if s.mode is Mode.train:
                if failed:
                    self.failed += 1
                else:
                    self.succeeded_in_group.setdefault(s.group_id, set()).add(s.rollout_id)
        G = self.settings.rl.group_size
        for gid, done in sorted(self.succeeded_in_group.items()):
            if gid in self.decided:
                continue
            if gid in self.dead and len(done) == G - 1:
                self.outcome(gid, sorted(done), reason="straggler")
            elif len(done) == G and gid in self.zero_variance:
                self.outcome(gid, sorted(done), reason="zero_variance")
            elif len(done) == G and gid not in self.dead:
                self.decided.add(gid)
                self.ready.append((gid, sorted(done)))
        B = self.settings.rl.train_batch_size
        while len(self.ready) >= B:
            take, self.ready = self.ready[:B], self.ready[B:]
            batch_id = f"b-{self.version + 1}"
            for gid, rids in take:
                self.outcome(gid, rids, batch_id=batch_id)
            self.producer.flush(10)
            self.checkpoint(self.version + 1, self.consumed + sum(len(r) for _, r in take))
        self.producer.flush(10)

    def outcome(
        self, gid: str, rids: list[str], *, reason: str | None = None, batch_id: str | None = None
    ) -> None:
        self.decided.add(gid)
        rec = GroupOutcome(
            group_id=gid,
            status=GroupOutcomeStatus.batched if batch_id else GroupOutcomeStatus.dropped,
            reason=reason,
            batch_id=batch_id,
            rollout_ids=rids,
        )
        self.producer.produce(self.settings.topics.name("group_outcomes"), self.serde.encode(rec), key=gid)
        if reason is not None:
            self.dropped += len(rids)

    def checkpoint(self, version: int, consumed: int) -> None:
        ev = verified_checkpoint(
            self.ckpt_root, self.settings.rl.policy_name, version, consumed_rollouts=consumed
        )
        self.version, self.consumed = version, consumed
        self.producer.produce(
            self.settings.topics.name("checkpoints"), self.serde.encode(ev), key=ev.policy_name
        )
        self.producer.flush(10)

    def close(self) -> None:
        self.reader.close()
        self.producer.close()
        shutil.rmtree(self.ckpt_root, ignore_errors=True)


@pytest.fixture
def trainer_sim() -> Callable[..., TrainerSim]:
    """``trainer_sim(settings, fail=set(), dead=set(), zero_variance=set(), infra=set()) -> TrainerSim``;
    closed at teardown."""
    made: list[TrainerSim] = []

    def make(
        settings: Settings,
        fail: set[tuple[str, int]] | None = None,
        dead: set[str] | None = None,
        zero_variance: set[str] | None = None,
        infra: set[tuple[str, int]] | None = None,
    ) -> TrainerSim:
        sim = TrainerSim(
            settings,
            fail=fail or set(),
            infra=infra or set(),
            dead=dead or set(),
            zero_variance=zero_variance or set(),
        )
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.close()
