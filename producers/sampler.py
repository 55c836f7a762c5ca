"""The sampler service: ``tasks`` → ``samples`` with group fan-out, epochs, admission control,
validation rounds and retries. Restart-safe without local state.

Loop: poll ``tasks`` / ``checkpoints`` / ``trajectories`` / ``group_outcomes`` / ``dlq`` → update
the :class:`~streamrl.producers.ledger.Ledger` → emit what is allowed, in this order: re-issues of
failed rollouts, validation samples, then train samples of the current epoch while the in-flight
bound has room. Admission counts from facts only (see :mod:`streamrl.producers.ledger`): streams'
group outcomes say which rollouts were dropped, the trainer's checkpoints and dead letters which
were consumed; no rule of another stage is copied here.

Recovery (every start): load the newest snapshot of this sampler from ``sampler_state``
(:mod:`streamrl.producers.snapshot`; none, or one it cannot use: from the beginning), read
``samples`` and the sampler's own ``dlq`` records from the snapshot's offsets to their end offsets
(what was emitted and dead-lettered), then ``tasks`` and ``checkpoints`` whole and ``trajectories``,
``group_outcomes`` and ``dlq`` from the snapshot's offsets to their end offsets (dataset, trainer
version and consumption, outcomes). Snapshots are written after recovery, every
``snapshot_every_groups`` outcomes or ``snapshot_interval_s`` and at a stop. The current epoch is the
highest epoch with a train sample; its missing ``(task, k)`` samples are emitted in the same seeded
order (:mod:`streamrl.producers.plan`), failed rollouts without a re-issue are re-issued, and the loop goes on
live from the recovered positions. A sample produced but not acknowledged before a crash is emitted
again with the same ``rollout_id`` and ``retry`` (downstream dedupes by rollout id); nothing is
skipped. One sampler per topic prefix, enforced by a fence (:mod:`streamrl.producers.fence`): a
second one exits naming the first.
"""

from __future__ import annotations

import heapq
import logging
import signal
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from streamrl.config import Settings
from streamrl.dlq import DeadLetterSink
from streamrl.errors import BrokerError
from streamrl.kafka import EventProducer, make_admin, make_consumer
from streamrl.producers import metrics as m
from streamrl.producers import snapshot as snap
from streamrl.producers.checkpoints import CheckpointGate, Verdict
from streamrl.producers.fence import SamplerFence
from streamrl.producers.ledger import DeadLetter as DeadLetterAction
from streamrl.producers.ledger import Ledger, Reissue
from streamrl.producers.plan import (
    EpochCursor,
    epoch_order,
    train_group_id,
    train_rollout_id,
    val_group_id,
    val_rollout_id,
)
from streamrl.producers.replay import partitions, read_to_end
from streamrl.schemas import (
    CheckpointEvent,
    DeadLetter,
    GroupOutcome,
    Mode,
    Sample,
    SchemaError,
    Split,
    Task,
    Trajectory,
    utc_now,
)
from streamrl.schemas.serde import Serde

__all__ = ["MAX_EMIT_PER_STEP", "Sampler", "read_to_end", "run_sampler"]

log = logging.getLogger(__name__)

MAX_EMIT_PER_STEP = 2000
"""Samples emitted per loop iteration at most, so polling (checkpoints, trajectories) stays timely."""


class Sampler(snap.Snapshots):
    """The sampler process state. Use :meth:`recover` once, then :meth:`step` in a loop (or :meth:`run`).

    Args:
        settings: StreamRL settings (``rl`` knobs, ``sampler`` section, topics, cluster).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cfg = settings.sampler
        rl = settings.rl
        self.group_size = rl.group_size
        self.ledger = Ledger(
            group_size=rl.group_size,
            train_batch_size=rl.train_batch_size,
            max_staleness=rl.max_staleness,
            max_retries=self.cfg.max_retries,
            max_infra_retries=self.cfg.max_infra_retries,
        )
        self.topic = {
            name: settings.topics.name(name)
            for name in (
                "tasks",
                "samples",
                "trajectories",
                "group_outcomes",
                "checkpoints",
                "dlq",
                "batches",
                "sampler_state",
            )
        }
        self.serde = Serde(registry_url=settings.kafka.schema_registry_url)
        self.producer = EventProducer(settings)
        self.dlq = DeadLetterSink(settings, self.producer, stage="sampler", serde=self.serde)
        self.consumer = make_consumer(
            settings, settings.group_id("sampler"), **{"enable.partition.eof": False}
        )
        self.gate = CheckpointGate(self.cfg.verify_checkpoints)
        self.admin = make_admin(settings)  # watermarks of many partitions in one request
        self.fence: SamplerFence | None = None  # held by run()
        self.tasks: dict[str, Task] = {}
        self.epoch = 0
        self.cursor: EpochCursor | None = None
        self.train_done = False
        self.retry_queue: list[tuple[float, int, Sample]] = []
        """Re-issues waiting for their backoff: a heap of ``(due, seq, sample)``, ``due`` in
        ``time.monotonic()`` seconds."""
        self._retry_seq = 0
        self.val_queue: deque[Sample] = deque()
        self._epoch_emitted = -1  # newest epoch with a first-issue train sample, and its (task_id, k)
        self._emitted_keys: set[tuple[str, int]] = set()
        self._where: dict[tuple[str, int], tuple[int, int]] = {}  # (rollout_id, retry) -> (partition, offset)
        self._dead_lettered: set[tuple[str, int, int]] = set()  # (group_id, k, retry) sent to dlq
        self._dlq_sources: set[tuple[str, int, int]] = set()
        self._replaying = False
        self._wait_since: float | None = None
        self._last_flush = self._last_commit = time.monotonic()
        self.sampler_id = settings.group_id("sampler")
        """Key of this sampler's snapshots on ``sampler_state`` (one sampler per topic prefix)."""
        self._settings_digest = snap.settings_digest(settings)
        self._snapshots_on = self.cfg.snapshot_interval_s > 0
        self._snapshot_seq = 0
        self._snapshot_at = time.monotonic()
        self._changes = 0  # records read and samples emitted since the last snapshot
        self._outcomes = 0  # group outcomes read since the last snapshot
        self._positions: dict[tuple[str, int], int] = {}  # next offset of each input partition
        self._refused: str | None = None  # why the newest snapshot was not used, if it was not

    # ------------------------------------------------------------------------------------ recovery
    def recover(self) -> dict[str, Any]:
        """Rebuild the state from the topics (see the module docstring); returns a summary for the log."""
        t0 = time.perf_counter()
        reader = make_consumer(
            self.settings, self.settings.group_id("sampler-recovery"), **{"enable.partition.eof": False}
        )
        emitted = [self.topic["samples"], self.topic["dlq"]]
        inputs = [self.topic[t] for t in ("tasks", "checkpoints", "trajectories", "group_outcomes", "dlq")]
        marks = partitions(self.admin, [*emitted, self.topic["trajectories"], self.topic["group_outcomes"]])
        emitted_marks = {tp: m for tp, m in marks.items() if tp[0] in emitted}
        try:
            loaded = self._load_snapshot(
                reader, emitted_marks, {tp: m for tp, m in marks.items() if tp[0] in inputs}
            )
            read = read_to_end(
                reader,
                emitted,
                self._replay_emitted,
                start=loaded[0] if loaded else None,
                marks=emitted_marks,
            )
        finally:
            reader.close()
        self._replaying = True
        try:
            marks |= partitions(self.admin, [self.topic["tasks"], self.topic["checkpoints"]])
            read |= read_to_end(
                self.consumer,
                inputs,
                self._on_message,
                start=loaded[1] if loaded else None,
                positions=self._positions,
                marks={tp: m for tp, m in marks.items() if tp[0] in inputs},
            )
        finally:
            self._replaying = False
        for group_id, k, retry in self._dead_lettered:
            self.ledger.on_dead_lettered(group_id, k, retry)
        for action in self.ledger.pending_actions():
            self._act(action)
        self.epoch = max(self._epoch_emitted, 0)
        self._schedule_validation_after_recovery()
        self._update_gauges()
        summary = {
            "records": read,
            "epoch": self.epoch,
            "emitted_in_epoch": len(self._emitted_keys) if self._epoch_emitted == self.epoch else 0,
            "version": self.ledger.version,
            "in_flight": self.ledger.in_flight,
            "consumed": self.ledger.consumed,
            "released_by_outcome": self.ledger.released_by_outcome,
            "owed_reissues": len(self.retry_queue),
            "tasks": len(self.tasks),
            "groups": len(self.ledger.groups),
            "snapshot": loaded[2] if loaded else None,
            "snapshot_refused": self._refused,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        log.info("sampler recovered: %s", summary)
        return summary

    def _replay_emitted(self, msg: Message) -> None:
        if msg.topic() == self.topic["dlq"]:
            try:
                dl = self.serde.decode_message(msg, DeadLetter)
            except SchemaError:
                return  # another stage's problem
            if dl.stage != "sampler":
                return
            self._dlq_sources.add((dl.original_topic, dl.original_partition, dl.original_offset))
            if dl.original_topic == self.topic["samples"] and dl.original_value:
                try:
                    s = self.serde.decode(dl.original_value, Sample)
                except SchemaError:
                    return
                self._dead_lettered.add((s.group_id, s.k, s.retry))
            return
        try:
            sample = self.serde.decode_message(msg, Sample)
        except SchemaError as exc:
            log.error("%s (not ours? skipped in recovery)", exc)
            return
        self._where[(sample.rollout_id, sample.retry)] = (msg.partition(), msg.offset())
        self.ledger.on_emitted(sample)
        self._note_emitted(sample)

    def _note_emitted(self, sample: Sample) -> None:
        """Keep the ``(task_id, k)`` of the newest epoch's first-issue train samples (where a
        restarted sampler resumes the epoch)."""
        if sample.mode is not Mode.train or sample.retry != 0 or sample.epoch < self._epoch_emitted:
            return
        if sample.epoch > self._epoch_emitted:
            self._epoch_emitted, self._emitted_keys = sample.epoch, set()
        self._emitted_keys.add((sample.task_id, sample.k))

    # ------------------------------------------------------------------------------------ inputs
    def _on_message(self, msg: Message) -> None:
        topic = msg.topic()
        self._positions[(topic, msg.partition())] = msg.offset() + 1
        self._changes += 1
        try:
            if topic == self.topic["tasks"]:
                self._on_task(msg)
            elif topic == self.topic["checkpoints"]:
                self._on_checkpoint(msg)
            elif topic == self.topic["trajectories"]:
                self._on_trajectory(msg)
            elif topic == self.topic["group_outcomes"]:
                self._on_outcome(msg)
            elif topic == self.topic["dlq"]:
                self._on_dead_letter(msg)
        except SchemaError as exc:
            self._bad_record(msg, exc)

    def _bad_record(self, msg: Message, exc: SchemaError) -> None:
        m.BAD_RECORDS.labels(msg.topic()).inc()
        if (msg.topic(), msg.partition(), msg.offset()) in self._dlq_sources:
            return  # dead-lettered before a restart
        self.dlq.send(msg, reason=str(exc), error=exc)

    def _on_task(self, msg: Message) -> None:
        m.TASKS_READ.inc()
        key = msg.key().decode() if msg.key() else None
        if msg.value() is None:  # tombstone: the task is deleted
            if key is not None:
                self.tasks.pop(key, None)
                if self.cursor is not None:
                    self.cursor.drop(key)
            return
        task = self.serde.decode_message(msg, Task)
        self.tasks[task.task_id] = task

    def _on_checkpoint(self, msg: Message) -> None:
        """A checkpoint of our policy moves the version only once it verifies (:mod:`.checkpoints`):
        in place while recovering, on the gate's thread when live (adopted in :meth:`_adopt_verified`)."""
        if msg.key() is not None and msg.key().decode(errors="replace") != self.settings.rl.policy_name:
            return
        event = self.serde.decode_message(msg, CheckpointEvent)
        if event.policy_name != self.settings.rl.policy_name or event.version < self.ledger.version:
            return  # another policy's, or older than the version adopted: moves nothing
        if self._replaying:
            self._adopt(Verdict(event, msg, self.gate.check(event)))
        else:
            self.gate.submit(event, msg)

    def _adopt_verified(self) -> None:
        for verdict in self.gate.ready():
            self._adopt(verdict)

    def _adopt(self, verdict: Verdict) -> None:
        event, msg, error = verdict.event, verdict.msg, verdict.error
        if error is not None:
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            if self._replaying:  # e.g. rotated away by the trainer since: a newer one follows
                log.warning("%s: checkpoint v%d not adopted: %s", where, event.version, error)
                return
            m.CHECKPOINTS_REFUSED.labels(error.reason).inc()
            log.error(
                "%s: checkpoint v%d not adopted (version stays %d): %s",
                where,
                event.version,
                self.ledger.version,
                error,
            )
            if (msg.topic(), msg.partition(), msg.offset()) not in self._dlq_sources:
                self.dlq.send(
                    msg, reason=f"{where}: checkpoint v{event.version} not adopted: {error}", error=error
                )
            return
        prev = self.ledger.version
        if self.ledger.on_checkpoint(event.version, event.consumed_rollouts) and not self._replaying:
            log.info(
                "trainer version %d: in flight %d / bound %d, epoch %d",
                event.version,
                self.ledger.in_flight,
                self.ledger.bound,
                self.epoch,
            )
            every = self.cfg.val_every
            if every and event.version // every > prev // every:
                self._schedule_validation(event.version)

    def _on_trajectory(self, msg: Message) -> None:
        traj = self.serde.decode_message(msg, Trajectory)
        m.TRAJECTORIES_READ.labels(traj.status.value).inc()
        failure = traj.failure()
        if failure is not None:
            m.FAILURES_READ.labels(failure.value).inc()
        action = self.ledger.on_trajectory(
            traj.group_id,
            traj.k,
            traj.retry,
            traj.status.value,
            traj.error,
            failure.value if failure is not None else None,
        )
        if action is None:
            self._where.pop((traj.rollout_id, traj.retry), None)  # finished: its location is not needed
        elif not self._replaying:
            self._act(action)

    def _on_outcome(self, msg: Message) -> None:
        outcome = self.serde.decode_message(msg, GroupOutcome)
        self._outcomes += 1
        m.GROUP_OUTCOMES_READ.labels(outcome.status.value).inc()
        self.ledger.on_outcome(outcome.group_id, outcome.status.value, outcome.rollout_ids, outcome.batch_id)

    def _on_dead_letter(self, msg: Message) -> None:
        """A batch the trainer dead-lettered is consumed: the ledger counts its rollouts."""
        try:
            dl = self.serde.decode_message(msg, DeadLetter)
        except SchemaError:
            return  # not ours to judge (and never dead-letter the dead-letter topic into itself)
        if dl.stage == "trainer" and dl.original_topic == self.topic["batches"] and dl.original_key:
            self.ledger.on_batch_dead_lettered(dl.original_key.decode(errors="replace"))

    def backoff_s(self, failures: int, kind: str = "agent") -> float:
        """Delay of a re-issue after ``failures`` failures of one kind, in seconds:
        ``retry_backoff_s × 2^(failures − 1)``, at most ``retry_backoff_max_s``, and at most
        ``infra_retry_backoff_max_s`` for infrastructure failures (workers' circuit breakers hold
        re-issues back while the inference service is down, so a long delay would only slow the
        resume after it); 0 when off."""
        base = self.cfg.retry_backoff_s
        if base <= 0 or failures < 1:
            return 0.0
        cap = self.cfg.retry_backoff_max_s
        if kind == "infrastructure":
            cap = min(cap, self.cfg.infra_retry_backoff_max_s)
        return min(cap, base * 2.0 ** min(failures - 1, 30))

    def _act(self, action: Reissue | DeadLetterAction) -> None:
        sample: Sample = action.sample
        where = self._where.pop((sample.rollout_id, action.retry), (-1, -1))
        if isinstance(action, Reissue):
            again = sample.model_copy(
                update={
                    "retry": action.retry + 1,
                    "policy_version": self.ledger.version,
                    "created_at": utc_now(),
                }
            )
            delay = 0.0 if self._replaying else self.backoff_s(action.failures, action.kind)
            self._retry_seq += 1
            heapq.heappush(self.retry_queue, (time.monotonic() + delay, self._retry_seq, again))
            m.REISSUES.labels(action.kind).inc()
            return
        partition, offset = where
        self.dlq.send(
            None,
            reason=action.reason,
            topic=self.topic["samples"],
            partition=partition,
            offset=offset,
            key=sample.rollout_id,
            value=self.serde.encode(sample),
            error_type=f"{action.kind}_failure",
        )
        m.DEAD_LETTERED.inc()
        self.ledger.on_dead_lettered(action.group_id, action.k, action.retry)

    # ------------------------------------------------------------------------------------ validation
    def _schedule_validation_after_recovery(self) -> None:
        every, v = self.cfg.val_every, self.ledger.version
        if not every or (v // every == 0 and not self.cfg.val_at_start):
            return
        start = (v // every) * every
        started = [
            u
            for u in range(start, v + 1)
            if any(self.ledger.has_group(val_group_id(u, t)) for t in self.tasks)
        ]
        self._schedule_validation(max(started) if started else v)

    def _schedule_validation(self, version: int) -> None:
        """Queue the val samples of ``version`` that are not emitted yet (one pass over the val split).

        Val samples: ``group_id = val/<version>/<task_id>``, ``rollout_id = <group_id>/<k>``,
        ``group_size = sampler.val_samples_per_task``, ``policy_version = version``, ``epoch`` = the
        train epoch being emitted (informational). They are not counted against the in-flight bound.
        """
        n = self.cfg.val_samples_per_task
        queued = 0
        for task_id in sorted(t for t, task in self.tasks.items() if task.split is Split.val):
            for k in range(n):
                rid = val_rollout_id(version, task_id, k)
                if self.ledger.has_emitted(rid, 0):
                    continue
                self.val_queue.append(
                    Sample(
                        rollout_id=rid,
                        task_id=task_id,
                        group_id=val_group_id(version, task_id),
                        group_size=n,
                        k=k,
                        epoch=self.epoch,
                        retry=0,
                        mode=Mode.val,
                        payload=self.tasks[task_id].payload,
                        policy_version=version,
                    )
                )
                queued += 1
        if queued:
            log.info("validation of version %d: %d val sample(s) queued", version, queued)

    # ------------------------------------------------------------------------------------ output
    def _emit(self, sample: Sample) -> None:
        key = (sample.rollout_id, sample.retry)

        def delivered(err: KafkaError | None, msg: Message, key: tuple[str, int] = key) -> None:
            if err is None and key in self._where:  # not finished already
                self._where[key] = (msg.partition(), msg.offset())

        self._where[key] = (-1, -1)
        self.producer.produce(
            self.topic["samples"], self.serde.encode(sample), key=sample.rollout_id, on_delivery=delivered
        )
        self.ledger.on_emitted(sample)
        self._note_emitted(sample)
        self._changes += 1
        m.SAMPLES_EMITTED.labels(sample.mode.value, str(sample.retry > 0).lower()).inc()

    def _ensure_cursor(self) -> EpochCursor | None:
        while not self.train_done:
            if self.cursor is not None and not self.cursor.done:
                return self.cursor
            if self.cursor is not None:  # epoch fully emitted
                log.info(
                    "epoch %d fully emitted (%d tasks x %d)",
                    self.epoch,
                    len(self.cursor.order),
                    self.group_size,
                )
                self.epoch += 1
                self.cursor = None
            if self.cfg.max_epochs is not None and self.epoch >= self.cfg.max_epochs:
                self.train_done = True
                log.info("all %d epoch(s) emitted", self.cfg.max_epochs)
                return None
            train_ids = [t for t, task in self.tasks.items() if task.split is Split.train]
            if not train_ids:
                return None  # wait for tasks
            order = epoch_order(train_ids, self.epoch, self.settings.rl.seed, self.cfg.shuffle)
            self.cursor = EpochCursor(
                self.epoch,
                order,
                self.group_size,
                emitted=set(self._emitted_keys) if self._epoch_emitted == self.epoch else set(),
            )
            if not self.cursor.done:
                log.info(
                    "epoch %d: %d train tasks, %d sample(s) to emit",
                    self.epoch,
                    len(order),
                    sum(1 for _ in self.cursor.remaining()),
                )
        return None

    def emit_ready(self) -> int:
        """Emit what is allowed now: re-issues, val samples, then whole train groups under the bound,
        where train re-issues still waiting for their back-off count as in flight (a new group never
        takes the place of a failed rollout's re-issue).

        Returns:
            samples emitted.
        """
        n = 0
        blocked = False
        now = time.monotonic()
        while self.retry_queue and self.retry_queue[0][0] <= now and n < MAX_EMIT_PER_STEP:
            due = self.retry_queue[0][2]
            if not self.ledger.owes_reissue(due.group_id, due.k, due.retry - 1):
                heapq.heappop(self.retry_queue)  # the rollout succeeded meanwhile (another attempt)
                continue
            if due.mode is Mode.train and not self.ledger.can_admit():
                blocked = True
                break
            self._emit(heapq.heappop(self.retry_queue)[2])
            n += 1
        while self.val_queue and n < MAX_EMIT_PER_STEP:
            self._emit(self.val_queue.popleft())
            n += 1
        # re-issues waiting for their back-off keep their place under the bound: new groups taking
        # it would hold them back until the trainer consumes (their groups wait, and streams sends a
        # partial batch only at its batch timeout)
        owed = sum(1 for _, _, s in self.retry_queue if s.mode is Mode.train)
        while n < MAX_EMIT_PER_STEP and (cursor := self._ensure_cursor()) is not None:
            nxt = cursor.peek()
            if nxt is None:
                continue
            task_id, k = nxt
            # a group is admitted whole: its members k..G-1 must all fit, or a half-admitted group
            # would wait at streams for members admitted only after its straggler timeout
            if not self.ledger.can_admit(self.group_size - k + owed):
                blocked = True
                break
            cursor.mark(task_id, k)
            task = self.tasks.get(task_id)
            if task is None:  # deleted after the epoch began: its remaining samples are not emitted
                continue
            self._emit(
                Sample(
                    rollout_id=train_rollout_id(task_id, cursor.epoch, k),
                    task_id=task_id,
                    group_id=train_group_id(task_id, cursor.epoch),
                    group_size=self.group_size,
                    k=k,
                    epoch=cursor.epoch,
                    retry=0,
                    mode=Mode.train,
                    payload=task.payload,
                    policy_version=self.ledger.version,
                )
            )
            n += 1
        now = time.monotonic()
        if blocked and self._wait_since is None:
            self._wait_since = now
            m.ADMISSION_WAITS.inc()
        elif not blocked and self._wait_since is not None:
            m.ADMISSION_WAIT_SECONDS.inc(now - self._wait_since)
            self._wait_since = None
        return n

    # ------------------------------------------------------------------------------------ loop
    @property
    def done(self) -> bool:
        """Every epoch is emitted and every emitted rollout has a final outcome (with ``max_epochs``)."""
        return (
            self.train_done and not self.retry_queue and not self.val_queue and self.ledger.open_rollouts == 0
        )

    def step(self) -> int:
        """One iteration: poll inputs, emit what is allowed, flush/commit on their intervals. Returns samples emitted.

        Raises:
            FenceError: this sampler lost its prefix's fence (:meth:`run` holds it): nothing more is emitted.
        """
        if self.fence is not None:
            self.fence.check()
        self._adopt_verified()
        emitted = self.emit_ready()
        timeout = 0.0 if emitted else self.cfg.poll_interval_s
        for msg in self.consumer.consume(num_messages=1000, timeout=timeout):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                if msg.error().fatal():
                    raise BrokerError(f"sampler consumer: fatal error: {msg.error()}")
                log.warning("sampler consumer: %s", msg.error())
                continue
            self._on_message(msg)
        emitted += self.emit_ready()
        now = time.monotonic()
        if now - self._last_flush >= self.cfg.flush_interval_s:
            self.producer.flush(60.0)
            self._last_flush = now
        if now - self._last_commit >= self.cfg.commit_interval_s:
            self._commit()
            self._last_commit = now
        if self._snapshot_due():
            self.write_snapshot()
        self._update_gauges()
        return emitted

    def _commit(self) -> None:
        """Commit the consumer positions (they show the sampler's lag; recovery does not depend on them)."""
        try:
            positions = [tp for tp in self.consumer.position(self.consumer.assignment()) if tp.offset >= 0]
            if positions:
                self.consumer.commit(offsets=positions, asynchronous=True)
        except KafkaException as exc:
            log.warning("sampler: offset commit failed: %s", exc)

    def _update_gauges(self) -> None:
        m.IN_FLIGHT.set(self.ledger.in_flight)
        m.IN_FLIGHT_BOUND.set(self.ledger.bound)
        m.EPOCH.set(self.epoch)
        m.POLICY_VERSION.set(self.ledger.version)
        m.RUNNING.set(self.ledger.running_train)
        m.WAITING.set(self.ledger.waiting_train)
        m.CONSUMED.set(self.ledger.consumed)

    def run(self, stop: threading.Event | None = None) -> None:
        """Hold the fence (:mod:`.fence`), :meth:`recover`, then :meth:`step` until ``stop`` is set or
        :attr:`done` (with ``exit_when_done``).

        Raises:
            FenceError: another sampler holds this prefix's fence, or this one lost it.
        """
        stop = stop or threading.Event()
        self.fence = SamplerFence(self.settings)
        self.fence.acquire()  # one sampler per topic prefix: FenceError names the one that holds it
        log.info(
            "sampler %s holds the fence of topic prefix %r", self.fence.client_id, self.settings.topics.prefix
        )
        self.recover()
        self.write_snapshot()  # the next start replays from here
        while not stop.is_set():
            self.step()
            if self.cfg.exit_when_done and self.done:
                log.info(
                    "sampler done: %d epoch(s) emitted, every rollout finished", self.cfg.max_epochs or 0
                )
                break
        if self._changes:
            self.write_snapshot()

    def close(self) -> None:
        """Flush every emitted sample (raises ``DeliveryError`` on a failed one), commit, close the clients."""
        self.gate.close()
        if self.fence is not None:
            self.fence.close()
        try:
            self.producer.close(60.0)
            self._commit()
        finally:
            self.consumer.close()


def run_sampler(settings: Settings, stop: threading.Event | None = None) -> None:
    """Run the sampler until SIGINT/SIGTERM or done; serves metrics on ``sampler.metrics_port``."""
    from streamrl.metrics import serve_metrics
    from streamrl.security import credentials

    serve_metrics(settings.sampler.metrics_port, token=credentials(settings.security).metrics_token)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    sampler = Sampler(settings)
    try:
        sampler.run(stop)
    finally:
        sampler.close()
