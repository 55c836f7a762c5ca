"""The trainer service: consume ``batches``, train one step (one policy version: ``ppo_epochs`` x
``ppo_mini_batches`` optimizer steps) per batch, checkpoint, publish ``checkpoints``.

Exactly-once effect on the policy (DESIGN.md "Invariants"):

- The checkpoint is the truth. It records the next offset of every ``batches`` partition and the ids
  of the batches the saved weights have seen (the lineage). On start the trainer loads the latest
  complete checkpoint and seeks ``batches`` to those offsets, so the saved weights never see a batch
  twice and every batch after the checkpoint is (re)trained. A ``batch_id`` already in the lineage
  (a re-delivered batch at a later offset) is skipped.
- The group's committed offsets follow the checkpoints (committed after the event is acknowledged);
  they serve lag monitoring and the first start without a checkpoint.
- A checkpoint written but not acknowledged as published (no ``PUBLISHED`` marker) is published again
  on restart: consumers of ``checkpoints`` must treat a repeated version as a no-op.

Bad batches go to ``dlq`` with the reason (``topic[partition]@offset: reason``) and are skipped; a
non-finite loss abandons the step with the weights untouched and is reported the same way.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from verl import DataProto

from streamrl.config import Settings
from streamrl.dlq import DeadLetterSink
from streamrl.errors import BrokerError, DeliveryError
from streamrl.kafka import EventProducer, make_consumer
from streamrl.schemas import CheckpointEvent, CheckpointKind, SchemaError, TrainingBatch, utc_now
from streamrl.schemas.serde import Serde
from streamrl.trainer import metrics as m
from streamrl.trainer.batch import prepare_batch
from streamrl.trainer.checkpoint import CheckpointInfo, CheckpointManager
from streamrl.trainer.errors import BadBatchError, NonFiniteLossError, RejectedRowError
from streamrl.trainer.torch_backend import StepResult

log = logging.getLogger("trainer")


class Backend(Protocol):
    """What the service needs from a training backend (``torch`` or ``verl``)."""

    kind: str
    vocab_size: int
    max_positions: int | None
    pad_token_id: int
    base_model_path: Path

    def train_step(self, data: DataProto) -> StepResult: ...
    def save_model(self, model_dir: Path) -> None: ...
    def save_state(self, path: Path, extra: dict[str, Any]) -> None: ...
    def load(self, ckpt_dir: Path) -> dict[str, Any]: ...


class TrainerService:
    """One trainer process.

    Args:
        settings: StreamRL settings (``trainer``, ``rl``, topics, kafka).
        backend: the training backend (already holding the initial model).
        serde: record serde; default from settings.

    Attributes:
        version: trainer version (= steps trained into the current weights).
        lineage: ids of the batches in the current weights, oldest first (last ``dedupe_window``).
    """

    def __init__(self, settings: Settings, backend: Backend, serde: Serde | None = None) -> None:
        self.settings = settings
        self.ts = settings.trainer
        self.backend = backend
        self.serde = serde or Serde(registry_url=settings.kafka.schema_registry_url)
        self.topic = settings.topics.name("batches")
        self.ckpt_topic = settings.topics.name("checkpoints")
        self.manager = CheckpointManager(self.ts.checkpoint_dir, settings.rl.policy_name, self.ts.keep_last)
        self.version = 0
        self.saved_version = 0
        self.lineage: deque[str] = deque(maxlen=self.ts.dedupe_window)
        self._seen: set[str] = set()
        self.dead_lettered: deque[str] = deque(maxlen=self.ts.dedupe_window)
        self._dead_seen: set[str] = set()
        self.consumed_rollouts = 0
        self.offsets: dict[int, int] = {}
        self.last_batch: tuple[str, int, int] | None = None  # (batch_id, partition, offset)
        self.last_metrics: dict[str, float] = {}
        self._stop = threading.Event()
        self.producer: EventProducer | None = None
        self.consumer: Consumer | None = None

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the loop to finish the current step and exit (checkpointing if ``save_on_exit``)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT -> :meth:`stop` (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def _remember(self, batch_id: str) -> None:
        if len(self.lineage) == self.lineage.maxlen:
            self._seen.discard(self.lineage[0])
        self.lineage.append(batch_id)
        self._seen.add(batch_id)

    def _remember_dead(self, batch_id: str) -> None:
        """A batch sent to ``dlq``: a re-delivered copy is skipped, so it is never trained after its
        dead letter told the sampler it was consumed."""
        if len(self.dead_lettered) == self.dead_lettered.maxlen:
            self._dead_seen.discard(self.dead_lettered[0])
        self.dead_lettered.append(batch_id)
        self._dead_seen.add(batch_id)

    def resume(self) -> CheckpointInfo | None:
        """Load the latest valid checkpoint (if any) into the backend and the service state."""
        removed = self.manager.clean_temp()
        if removed:
            log.warning("removed %d interrupted checkpoint write(s) in %s", removed, self.manager.dir)
        ckpt = self.manager.latest_valid()
        if ckpt is None:
            log.info(
                "no checkpoint in %s: starting from %s at version 0",
                self.manager.dir,
                self.backend.base_model_path,
            )
            return None
        self.backend.load(ckpt.path)
        meta = ckpt.meta
        self.version = self.saved_version = ckpt.version
        self.offsets = {int(p): int(o) for p, o in meta.get("offsets", {}).items()}
        for bid in meta.get("trained_batch_ids", []):
            self._remember(bid)
        for bid in meta.get("dead_lettered_batch_ids", []):
            self._remember_dead(bid)
        if "consumed_rollouts" in meta:
            self.consumed_rollouts = int(meta["consumed_rollouts"])
        else:  # written before the trainer counted them: one full batch per version
            rl = self.settings.rl
            self.consumed_rollouts = ckpt.version * rl.train_batch_size * rl.group_size
            log.warning(
                "checkpoint %d has no consumed_rollouts: estimating %d (version x train_batch_size x group_size)",
                ckpt.version,
                self.consumed_rollouts,
            )
        if meta.get("last_batch_id") is not None:
            self.last_batch = (
                meta["last_batch_id"],
                int(meta["last_batch_partition"]),
                int(meta["last_batch_offset"]),
            )
        self.last_metrics = dict(meta.get("metrics", {}))
        log.info(
            "resumed from %s: version %d, next offsets %s, %d batch ids remembered",
            ckpt.path,
            ckpt.version,
            self.offsets,
            len(self.lineage),
        )
        return ckpt

    def run(self) -> int:
        """Resume, then train until stopped or ``max_steps``; returns the final version.

        Raises:
            DeliveryError / BrokerError / KafkaException: the broker is unusable (the process should restart).
        """
        self.producer = EventProducer(self.settings)
        dlq = DeadLetterSink(self.settings, self.producer, stage="trainer", serde=self.serde)
        try:
            ckpt = self.resume()
            if ckpt is not None and not ckpt.published:
                log.warning(
                    "checkpoint %d was written but its event not acknowledged: publishing again", ckpt.version
                )
                self._publish(ckpt)
            m.record_start(self.version, self.consumed_rollouts, self.last_metrics)
            self.consumer = make_consumer(self.settings, self.settings.group_id("trainer"))
            self._assign()
            while not self._stop.is_set():
                if self.ts.max_steps is not None and self.version >= self.ts.max_steps:
                    log.info("max_steps=%d reached", self.ts.max_steps)
                    break
                msg = self.consumer.poll(self.ts.poll_timeout_s)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    if msg.error().fatal():
                        raise BrokerError(f"{self.topic}: fatal consumer error: {msg.error()}")
                    log.warning("%s: consumer error: %s", self.topic, msg.error())
                    continue
                self.handle(msg, dlq)
            if self.ts.save_on_exit and self.version > self.saved_version:
                self.save_and_publish()
            self.producer.flush()
        finally:
            if self.consumer is not None:
                self.consumer.close()
            try:
                self.producer.close()
            except DeliveryError as exc:
                log.error("on close: %s", exc)
        return self.version

    def _assign(self) -> None:
        """Assign every ``batches`` partition at the checkpoint's offset, else the group's committed one, else 0."""
        assert self.consumer is not None
        md = self.consumer.list_topics(self.topic, timeout=30)
        tmeta = md.topics.get(self.topic)
        if tmeta is None or tmeta.error is not None:
            raise BrokerError(
                f"topic {self.topic} not available ({tmeta.error if tmeta else 'missing'}); "
                "run `streamrl topics create` first"
            )
        parts = sorted(tmeta.partitions)
        missing = [p for p in parts if p not in self.offsets]
        start = dict(self.offsets)
        if missing:
            for tp in self._committed(missing):
                start[tp.partition] = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        self.consumer.assign([TopicPartition(self.topic, p, start[p]) for p in parts])
        shown = {p: ("beginning" if o == OFFSET_BEGINNING else o) for p, o in start.items()}
        log.info("consuming %s partitions %s from offsets %s", self.topic, parts, shown)

    def _committed(self, parts: list[int], timeout_s: float = 60.0) -> list[TopicPartition]:
        """The group's committed offsets, retried while the group coordinator is not ready (fresh brokers)."""
        assert self.consumer is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.consumer.committed([TopicPartition(self.topic, p) for p in parts], timeout=10)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("%s: committed offsets not available yet (%s); retrying", self.topic, exc)
                time.sleep(1.0)

    # ------------------------------------------------------------------ one record
    def handle(self, msg: Message, dlq: DeadLetterSink) -> bool:
        """Process one ``batches`` record; returns True if a step was trained."""
        part, off = msg.partition(), msg.offset()
        where = f"{self.topic}[{part}]@{off}"
        self.offsets[part] = off + 1
        try:
            batch = self.serde.decode_message(msg, TrainingBatch)
        except SchemaError as exc:
            log.error("%s: undecodable batch: %s", where, exc.reason)
            dlq.send(msg, reason=f"{where}: {exc.reason}", error=exc)
            m.count(m.SKIPPED, reason="schema")
            return False
        if batch.batch_id in self._seen:
            log.info("%s: batch %s already trained: skipped", where, batch.batch_id)
            m.count(m.SKIPPED, reason="duplicate")
            return False
        if batch.batch_id in self._dead_seen:
            log.info("%s: batch %s already dead-lettered: skipped", where, batch.batch_id)
            m.count(m.SKIPPED, reason="duplicate_dead_lettered")
            return False
        if batch.policy_name != self.settings.rl.policy_name:
            reason = f"{where}: batch {batch.batch_id} is for policy {batch.policy_name!r}, this trainer trains {self.settings.rl.policy_name!r}"
            log.error(reason)
            dlq.send(msg, reason=reason)
            m.count(m.SKIPPED, reason="policy_mismatch")
            return False
        try:
            data = prepare_batch(
                batch,
                serde=self.serde,
                trainer_version=self.version,
                max_staleness=self.settings.rl.max_staleness,
                staleness_policy=self.settings.rl.staleness_policy,
                stale_weight_decay=self.settings.rl.stale_weight_decay,
                vocab_size=self.backend.vocab_size,
                max_positions=self.backend.max_positions,
                pad_token_id=self.backend.pad_token_id,
            )
            m.count(m.ROWS_DROPPED, data.meta_info["dropped_stale"], reason="stale")
            m.count(m.STALE_ROWS_WEIGHTED, data.meta_info["weighted_stale"])
            m.count(m.ROWS_DROPPED, data.meta_info["dropped_no_tokens"], reason="no_tokens")
            self._reject_rows(msg, batch.batch_id, where, data.meta_info["rejected"], dlq)
            result = self.backend.train_step(data)
            # the staleness of what was trained, in the step's metrics (and so in the checkpoint event)
            result.metrics["staleness/mean"] = float(data.meta_info["staleness_mean"])
            result.metrics["staleness/max"] = float(data.meta_info["staleness_max"])
        except BadBatchError as exc:
            log.error("%s: bad batch, sent to dlq: %s", where, exc)
            dlq.send(msg, reason=f"{where}: {exc}", error=exc)
            self._remember_dead(batch.batch_id)
            m.count(m.SKIPPED, reason="bad_batch")
            return False
        except NonFiniteLossError as exc:
            log.error("%s: %s", where, exc)
            dlq.send(msg, reason=f"{where}: {exc}", error=exc)
            self._remember_dead(batch.batch_id)
            m.count(m.SKIPPED, reason="nonfinite_loss")
            return False
        self.version += 1
        # every rollout of the batch is consumed, its stale-dropped rows too (the sampler's admission
        # counts it; a dead-lettered batch is counted by the sampler from its dead letter instead)
        self.consumed_rollouts += int(data.meta_info["num_rollouts"])
        m.set_gauge(m.CONSUMED_ROLLOUTS, self.consumed_rollouts)
        self._remember(batch.batch_id)
        self.last_batch = (batch.batch_id, part, off)
        self.last_metrics = dict(result.metrics)
        self._log_step(batch.batch_id, where, result)
        m.record_step(self.version, result.metrics, result.step_time_s, result.num_tokens)
        if self.version % self.ts.save_every == 0:
            self.save_and_publish()
        return True

    def _reject_rows(
        self,
        msg: Message,
        batch_id: str,
        where: str,
        rejected: list[tuple[int, str, str]],
        dlq: DeadLetterSink,
    ) -> None:
        """Dead-letter rows the model cannot take, one record each, keyed by rollout id."""
        for index, rollout_id, reason in rejected:
            err = RejectedRowError(batch_id, index, rollout_id, reason)
            log.error("%s: %s", where, err)
            dlq.send(
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                key=rollout_id,
                value=None,
                reason=f"{where}: {err}",
                error=err,
            )
        m.count(m.ROWS_DROPPED, len(rejected), reason="model_limits")

    def _log_step(self, batch_id: str, where: str, r: StepResult) -> None:
        mt = r.metrics
        kl = mt.get("actor/kl_loss", mt.get("actor/ppo_kl", 0.0))
        log.info(
            "step %d | batch %s (%s) | rows %d | loss %.4f | pg_clipfrac %.3f | kl %.4f | entropy %.3f nats | "
            "grad_norm %.3f | reward_mean %.3f | lr %.2e | %.0f tok/s | dt %.0f ms",
            self.version,
            batch_id,
            where,
            r.num_rows,
            mt.get("actor/loss", float("nan")),
            mt.get("actor/pg_clipfrac", 0.0),
            kl,
            mt.get("actor/entropy", float("nan")),
            mt.get("actor/grad_norm", float("nan")),
            mt.get("reward/mean", float("nan")),
            mt.get("actor/lr", 0.0),
            r.num_tokens / r.step_time_s if r.step_time_s > 0 else 0.0,
            r.step_time_s * 1000,
        )

    # ------------------------------------------------------------------ checkpoints
    def save_and_publish(self) -> CheckpointInfo:
        """Write checkpoint ``version``, publish its event, commit offsets, prune old checkpoints.

        Raises:
            CheckpointError: the write failed (training state is intact; the caller may retry later).
        """
        assert self.producer is not None
        # dead letters of skipped batches must be durable before the offsets that skip them are
        self.producer.flush()
        last_id, last_part, last_off = self.last_batch if self.last_batch else (None, None, None)
        state = {
            "version": self.version,
            "consumed_rollouts": self.consumed_rollouts,
            "offsets": {str(p): o for p, o in self.offsets.items()},
            "last_batch_id": last_id,
            "last_batch_partition": last_part,
            "last_batch_offset": last_off,
        }
        meta = {
            **state,
            "policy_name": self.settings.rl.policy_name,
            "kind": self.backend.kind,
            "base_model": str(self.backend.base_model_path),
            "trained_batch_ids": list(self.lineage),
            "dead_lettered_batch_ids": list(self.dead_lettered),
            "metrics": {k: float(v) for k, v in self.last_metrics.items() if math.isfinite(float(v))},
            "created_at": utc_now().isoformat(),
        }
        t0 = time.perf_counter()
        try:
            ckpt = self.manager.write(
                self.version,
                self.backend.save_model,
                lambda p: self.backend.save_state(p, state),
                meta,
                base_model_dir=self.backend.base_model_path,
            )
        except Exception:
            m.count(m.CHECKPOINTS, outcome="failed")
            raise
        m.count(m.CHECKPOINTS, outcome="written")
        self.saved_version = self.version
        log.info(
            "checkpoint %d written to %s in %.0f ms (%s)",
            ckpt.version,
            ckpt.path,
            (time.perf_counter() - t0) * 1000,
            ckpt.digest,
        )
        if self._publish(ckpt):
            self._commit()
            for p in self.manager.prune():
                log.info("pruned old checkpoint %s", p)
        return ckpt

    def _publish(self, ckpt: CheckpointInfo) -> bool:
        """Produce the CheckpointEvent and wait for its acknowledgement; mark it published."""
        assert self.producer is not None
        meta = ckpt.meta
        event = CheckpointEvent(
            policy_name=self.settings.rl.policy_name,
            version=ckpt.version,
            kind=CheckpointKind(meta.get("kind", "full")),
            uri=str(ckpt.model_dir.resolve()),
            digest=ckpt.digest,
            base_model=meta.get("base_model"),
            metrics={k: float(v) for k, v in meta.get("metrics", {}).items()},
            last_batch_id=meta.get("last_batch_id"),
            last_batch_offset=meta.get("last_batch_offset"),
            created_at=utc_now(),
            consumed_rollouts=meta.get("consumed_rollouts"),
        )
        self.producer.produce(
            self.ckpt_topic, self.serde.encode(event, topic=self.ckpt_topic), key=self.settings.rl.policy_name
        )
        try:
            self.producer.flush()
        except DeliveryError as exc:
            log.error(
                "checkpoint %d: event not delivered (will publish again on restart or next save): %s",
                ckpt.version,
                exc,
            )
            m.count(m.CHECKPOINTS, outcome="publish_failed")
            return False
        self.manager.mark_published(ckpt)
        m.count(m.CHECKPOINTS, outcome="published")
        log.info(
            "published CheckpointEvent %s v%d -> %s", self.settings.rl.policy_name, ckpt.version, event.uri
        )
        return True

    def _commit(self) -> None:
        if self.consumer is None or not self.offsets:
            return
        tps = [TopicPartition(self.topic, p, o) for p, o in self.offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except Exception as exc:  # commits only serve monitoring; the checkpoint holds the truth
            log.warning("committing offsets %s failed: %s", self.offsets, exc)
