"""The Faust aggregator: ``requests`` ⋈ ``trajectories`` → rows → groups → ``batches``.

Agents (faust-streaming, aiokafka driver, ``at_least_once``, in-memory tables with changelogs):

* ``join`` on ``requests`` + ``trajectories`` + ``<app_id>-ticks`` (co-partitioned by ``rollout_id``),
  table ``join`` keyed by ``rollout_id`` (:mod:`streamrl.streams.join`; finished rollouts shrink to
  member ids in per-group decided markers, :mod:`streamrl.streams.decided`). Complete train rollouts (with their
  rows) go to ``<app_id>-groups`` keyed by ``group_id``; every val trajectory (any status) goes
  straight to ``<app_id>-validation`` keyed by its policy version.
* ``groups`` on ``<app_id>-groups`` (rollouts, lost rollouts and ticks in one ordered log per
  partition), table ``groups`` (:mod:`streamrl.streams.groups`); publishes ``batches`` keyed by
  ``batch_id`` and ``group_outcomes`` keyed by ``group_id`` (what became of every train rollout).
* ``validation`` on ``<app_id>-validation`` (one partition), table ``validation`` keyed by version
  (:mod:`streamrl.streams.validation`, the one computation of the validation reward); publishes the
  version's ``ValidationResult`` to the compacted ``validation`` topic on every val trajectory.
* a timer (``tick_interval_s``) writes event-time ticks into every assigned ticks/groups partition
  (tables can only be written while processing an event) and refreshes ``validation.json``.

Every value is raw bytes; records are decoded with ``streamrl.schemas.serde`` inside the agents, and a record
that cannot be decoded or is invalid goes to ``dlq`` (DeadLetter envelope) and is counted. All
outputs are produced with Faust's producer, which Faust flushes before every offset commit, so an
input offset is committed only after its outputs (and dead letters) are acknowledged; table changelog
writes too, once :mod:`streamrl.streams.faust_producer` makes that flush wait for them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faust
from faust.types import TP
from pydantic import ValidationError

from streamrl.config import Settings
from streamrl.dlq import DeadLetterSink
from streamrl.schemas import (
    GroupOutcome,
    GroupOutcomeStatus,
    LLMRequest,
    Mode,
    SchemaError,
    TrainingRow,
    Trajectory,
)
from streamrl.schemas.claim_check import uri_path
from streamrl.schemas.scoring import counts
from streamrl.schemas.serde import Serde
from streamrl.security import bearer_token, credentials, server_ssl_context, token_matches
from streamrl.streams import metrics
from streamrl.streams.convert import batch_record, call_of, traj_of
from streamrl.streams.decided import add_decided, done_key, is_decided, is_done_key, marker_expired
from streamrl.streams.faust_config import StreamsTopics, faust_broker, streams_topics
from streamrl.streams.faust_producer import DrainingApp
from streamrl.streams.faust_recovery import ClearFirstTableManager
from streamrl.streams.groups import Batch, GroupConfig, GroupMachine, check_event
from streamrl.streams.join import JoinConfig, JoinResult, lost_forward, on_call, on_tick, on_trajectory
from streamrl.streams.rows import RowConfig
from streamrl.streams.validation import add_outcome, result, summary, write_json

log = logging.getLogger("streams")

READY_MARKER = "STREAMS-READY"


def internal_event(value: bytes | None) -> dict[str, Any]:
    """Decode one record of an internal topic (ticks, groups, validation): a JSON object.

    Raises:
        ValueError: null, not UTF-8, not JSON, nested too deeply, or not an object (the caller
            dead-letters it; an internal topic is writable by any client of the cluster).
    """
    if value is None:
        raise ValueError("null value (tombstone)")
    try:
        ev = json.loads(value)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(ev, dict):
        raise ValueError(f"not a JSON object (got {type(ev).__name__})")
    return ev


MAX_TICK_AHEAD_S = 300.0
"""A tick more than this ahead of the wall clock is rejected (it would expire every join and group)."""


def _not_ahead(ts: float, now: float) -> None:
    if ts > now + MAX_TICK_AHEAD_S:
        raise ValueError(
            f"tick time {ts:.3f} is {ts - now:.0f} s ahead of the clock (max {MAX_TICK_AHEAD_S:g} s)"
        )


class _FaustProducer:
    """Lets :class:`DeadLetterSink` publish through Faust's producer (flushed before each commit)."""

    def __init__(self, topic: faust.TopicT) -> None:
        self._topic = topic

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        **_: Any,
    ) -> None:
        self._topic.send_soon(key=key.encode() if isinstance(key, str) else key, value=value, headers=headers)


class Aggregator:
    """The streams stage as a Faust app. ``Aggregator(settings).app`` is what the worker runs.

    Args:
        settings: StreamRL settings (``streams`` and ``rl`` sections, topics, cluster).
    """

    def __init__(self, settings: Settings) -> None:
        s = settings.streams
        self.settings = settings
        self.names: StreamsTopics = streams_topics(settings)
        self.serde = Serde(registry_url=settings.kafka.schema_registry_url)
        self.join_cfg = JoinConfig(
            rows=RowConfig.from_settings(s),
            join_timeout_s=s.join_timeout_s,
            orphan_call_timeout_s=s.orphan_call_timeout_s,
            dedup_retention_s=s.dedup_retention_s,
        )
        rl = settings.rl
        self.group_cfg = GroupConfig(
            policy_name=rl.policy_name,
            train_batch_size=rl.train_batch_size,
            min_group_size=s.min_group_size,
            straggler_timeout_s=s.straggler_timeout_s,
            filter_zero_variance=s.filter_zero_variance,
            batch_timeout_s=s.batch_timeout_s,
            dedup_retention_s=s.dedup_retention_s,
        )
        uri_path(s.blob_dir)  # fail at start on an unsupported URI (ClaimCheckError)
        self.state_dir = Path(s.state_dir)
        self.validation_path = self.state_dir / "validation.json"
        (self.state_dir / "faust").mkdir(parents=True, exist_ok=True)
        n = self.names
        self.app = DrainingApp(
            n.app_id,
            **faust_broker(settings),
            store="memory://",
            processing_guarantee="at_least_once",
            topic_partitions=n.join_partitions,
            topic_replication_factor=settings.topics.replication_factor,
            topic_disable_leader=True,
            table_standby_replicas=0,
            datadir=str(self.state_dir / "faust"),
            web_enabled=s.web_port is not None,
            web_port=s.web_port or 6066,
            web_bind=s.web_host,
            web_ssl_context=server_ssl_context(s.web_tls),
            # Faust's own pages would serve table contents (token ids, rewards) to anyone: off
            web_router_enabled=False,
            web_tables_enabled=False,
            web_graph_enabled=False,
            web_stats_enabled=False,
            web_metrics_enabled=False,
            broker_commit_interval=s.commit_interval_s,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
            consumer_group_instance_id=s.instance_id,
            consumer_auto_offset_reset="earliest",
            producer_max_request_size=settings.topics.max_message_bytes,
            producer_acks=-1,
            producer_linger=s.producer_linger_s,
            key_serializer="raw",
            value_serializer="raw",
            autodiscover=False,
            TableManager=ClearFirstTableManager,
        )
        app = self.app
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        as_json = faust.Schema(key_serializer="json", value_serializer="json")
        self.join_table = app.Table("join", partitions=n.join_partitions, schema=as_json)
        self.group_table = app.Table("groups", partitions=n.group_partitions, schema=as_json)
        self.val_table = app.Table("validation", partitions=1, schema=as_json)
        self.join_source = app.topic(n.requests, n.trajectories, n.ticks, **raw)
        self.ticks_topic = app.topic(n.ticks, **raw)
        self.groups_topic = app.topic(n.groups, **raw)
        self.val_topic = app.topic(n.validation, **raw)
        self.val_results_topic = app.topic(n.validation_results, **raw)
        self._val_dirty = True  # validation.json is rewritten on the next tick
        self.batches_topic = app.topic(n.batches, **raw)
        self.outcomes_topic = app.topic(n.group_outcomes, **raw)
        self.dlq_topic = app.topic(n.dlq, **raw)
        self.dlq = DeadLetterSink(
            settings,
            _FaustProducer(self.dlq_topic),
            stage="streams",  # type: ignore[arg-type]
            serde=self.serde,
        )
        self.machine = GroupMachine(self.group_cfg, self._group_get, lambda: list(self.group_table.items()))
        self._ready_logged = False
        self._last_summary = time.time()
        # the offset of the last record the join processed, per partition of requests / trajectories
        self._join_read: dict[TP, int] = {}
        app.on_partitions_revoked.connect(self._on_revoked)
        app.agent(self.join_source, name="streams.join")(self._join_agent)
        app.agent(self.groups_topic, name="streams.groups")(self._groups_agent)
        app.agent(self.val_topic, name="streams.validation")(self._val_agent)
        app.timer(s.tick_interval_s, name="streams.tick")(self._tick)
        if s.web_port is not None:
            token = credentials(settings.security).metrics_token

            async def validation_view(
                web: Any, request: Any
            ) -> Any:  # a plain function: Faust binds it to a View
                if token is not None and not token_matches(
                    bearer_token(request.headers.get("Authorization")), token
                ):
                    return web.json(
                        {"error": "this page needs security.metrics_token: Authorization: Bearer <token>"},
                        status=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                return web.json(self.validation_summary())

            app.page("/streamrl/validation/")(validation_view)

    # ------------------------------------------------------------------ helpers
    def _group_get(self, key: str) -> dict[str, Any] | None:
        return self.group_table.get(key)

    def _committed(self, topic: str, partition: int) -> int | None:
        """Committed offset (next to consume) of ``topic[partition]``; None when unknown.

        Reads Faust's consumer bookkeeping (``_committed_offset``, updated after each successful
        commit); without it nothing is pruned early, which is safe.
        """
        try:
            return self.app.consumer._committed_offset.get(TP(topic, partition))
        except Exception:
            return None

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        for tp in revoked:  # on reassignment, the partition is read again from its committed offset
            self._join_read.pop(tp, None)

    def _read_to_end(self, topic: str, partition: int) -> bool:
        """True when the join has processed ``topic[partition]`` up to the end offset its consumer
        last fetched (the high watermark); False while a backlog is unread or nothing is known yet."""
        tp = TP(topic, partition)
        try:
            end = self.app.consumer.highwater(tp)
        except Exception:  # not assigned (any more), or no consumer yet
            return False
        if end is None:
            return False
        last = self._join_read.get(tp)
        upto = last + 1 if last is not None else self._committed(topic, partition)
        return end == 0 or (upto is not None and upto >= end)

    def _dead(self, msg: Any, reason: str, error: BaseException | None = None) -> None:
        self.dlq.send(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            reason=f"{msg.topic}[{msg.partition}]@{msg.offset}: {reason}",
            error=error,
        )

    # ------------------------------------------------------------------ join
    async def _join_agent(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            now = time.time()
            if msg.topic == self.names.ticks:
                await self._join_tick(msg, now)
                continue
            self._join_read[TP(msg.topic, msg.partition)] = msg.offset
            key = msg.key.decode(errors="replace") if isinstance(msg.key, bytes) else msg.key
            try:
                if msg.topic == self.names.requests:
                    req = self.serde.decode(
                        msg.value, LLMRequest, topic=msg.topic, partition=msg.partition, offset=msg.offset
                    )
                    self._check_key(key, req.rollout_id)
                    rollout_id = req.rollout_id
                    # a call names no group: the sampler's ids are <group_id>/<k>, so try that one
                    group_id = rollout_id.rpartition("/")[0]
                    marker = self.join_table.get(done_key(msg.partition, group_id)) if group_id else None
                    res = on_call(
                        self.join_table.get(rollout_id),
                        call_of(req, msg.timestamp, self.settings.inference.logprobs_mode),
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        now=now,
                        cfg=self.join_cfg,
                        decided=is_decided(marker, group_id, rollout_id),
                    )
                else:
                    t = self.serde.decode(
                        msg.value, Trajectory, topic=msg.topic, partition=msg.partition, offset=msg.offset
                    )
                    self._check_key(key, t.rollout_id)
                    rollout_id = t.rollout_id
                    # a val rollout is scored from the trajectory alone (no join with its calls); an
                    # infrastructure failure is not the policy's: it scores nothing (it is re-issued)
                    if t.mode is Mode.val and counts(t):
                        await self._send_val(t, msg.timestamp)
                    marker = self.join_table.get(done_key(msg.partition, t.group_id))
                    res = on_trajectory(
                        self.join_table.get(rollout_id),
                        traj_of(t, msg.timestamp, msg.offset),
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        now=now,
                        cfg=self.join_cfg,
                        decided=is_decided(marker, t.group_id, rollout_id),
                    )
            except (SchemaError, ValueError, ValidationError) as exc:
                self._dead(msg, f"undecodable or invalid record: {exc}", exc)
                continue
            await self._apply_join(rollout_id, res, msg)

    @staticmethod
    def _check_key(key: str | None, rollout_id: str) -> None:
        if key is not None and key != rollout_id:
            raise ValueError(
                f"record key {key!r} != rollout_id {rollout_id!r} (the join is keyed by rollout_id)"
            )

    async def _join_tick(self, msg: Any, now: float) -> None:
        try:
            ev = internal_event(msg.value)
            if ev.get("kind") != "tick":
                raise ValueError(f"not a tick (kind {ev.get('kind')!r})")
            check_event(ev)
            tick_ts = float(ev["ts"])
            _not_ahead(tick_ts, now)
        except (ValueError, KeyError, TypeError) as exc:
            self._dead(msg, f"bad tick: {exc}", exc)
            return
        retention_s = self.join_cfg.dedup_retention_s
        requests_read = self._read_to_end(self.names.requests, msg.partition)
        trajectories_read = self._read_to_end(self.names.trajectories, msg.partition)
        for key, state in list(self.join_table.items()):
            if state.get("p") != msg.partition:
                continue
            if is_done_key(key):
                if marker_expired(state, tick_ts, retention_s):
                    self.join_table.pop(key, None)
                continue
            done = state["done"]
            if (
                done is not None
                and done.get("g") is None
                and done["out"] is None
                and not state.get("lost")
                and tick_ts - done["ts"] <= retention_s
            ):
                continue  # fast path: a finished rollout of an earlier release, not yet expired
            res = on_tick(
                state,
                tick_ts=tick_ts,
                partition=msg.partition,
                committed=self._committed,
                cfg=self.join_cfg,
                topic=msg.topic,
                offset=msg.offset,
                requests_read=requests_read,
                trajectories_read=trajectories_read,
            )
            await self._apply_join(key, res, msg)

    async def _apply_join(self, key: str, res: JoinResult, msg: Any) -> None:
        for traj, reason in res.dead:
            self.dlq.send(
                topic=self.names.trajectories,
                partition=msg.partition,
                offset=traj.get("offset", -1),
                key=traj["rollout_id"],
                value=None,
                reason=reason,
            )
        for out in res.forwards:
            await self._forward(out, msg)
        if res.decided is not None:  # written before the rollout's state goes: a crash keeps one of them
            group_id, rollout_id, ts = res.decided
            marker_key = done_key(msg.partition, group_id)
            self.join_table[marker_key] = add_decided(
                self.join_table.get(marker_key), msg.partition, group_id, rollout_id, ts
            )
        if res.changed:
            if res.state is None:
                self.join_table.pop(key, None)
            else:
                self.join_table[key] = res.state
        metrics.record(res.stats)
        for dt in res.join_latency_s:
            metrics.observe(metrics.JOIN_LATENCY, dt)

    async def _forward(self, out: dict[str, Any], msg: Any) -> None:
        """Send a complete (or lost) train rollout to the group stage, keyed by its group id."""
        await self.groups_topic.send(key=out["group_id"].encode(), value=json.dumps(out).encode(), force=True)

    # ------------------------------------------------------------------ groups and batches
    async def _groups_agent(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                ev = internal_event(msg.value)
                check_event(ev)
                if ev["kind"] == "tick":
                    _not_ahead(float(ev["ts"]), time.time())
                elif ev["kind"] == "train":
                    ev = self._checked_rows(ev, msg)
                res = self.machine.on_event(
                    ev,
                    partition=msg.partition,
                    offset=msg.offset,
                    committed=self._committed(msg.topic, msg.partition),
                )
            except (ValueError, KeyError, TypeError) as exc:
                self._dead(msg, f"bad group event: {exc!r}", exc)
                continue
            for key, value in res.writes:
                if value is None:
                    self.group_table.pop(key, None)
                else:
                    self.group_table[key] = value
            for batch in res.batches:
                await self._publish(batch)
            for decided in res.outcomes:
                await self._publish_outcome(decided, replayed=res.replayed)
            metrics.record(res.stats)

    def _checked_rows(self, ev: dict[str, Any], msg: Any) -> dict[str, Any]:
        """A train event whose rows are all valid ``TrainingRow``s, or (rows dead-lettered) the
        ``lost`` event that tells the group stage the rollout brings nothing (``invalid_rows``).

        This is where rows enter the group stage, so the one place they are checked: a bad row
        never reaches a batch, and its group still decides every member.
        """
        try:
            for row in ev["rows"]:
                TrainingRow(**row)
        except (ValidationError, ValueError, TypeError) as exc:
            self._dead(msg, f"rollout {ev['rollout_id']}: a training row is invalid: {exc}", exc)
            metrics.record({"invalid_rows": 1})  # type: ignore[arg-type]
            return lost_forward(ev, "invalid_rows", ev["last_ts"])
        return ev

    async def _publish_outcome(self, decided: dict[str, Any], *, replayed: bool) -> None:
        """Publish one group outcome (``GroupOutcome``, key ``group_id``) to ``group_outcomes``."""
        record = GroupOutcome(
            group_id=decided["group_id"],
            status=GroupOutcomeStatus(decided["status"]),
            reason=decided["reason"],
            batch_id=decided["batch_id"],
            rollout_ids=decided["rollout_ids"],
            decided_at=datetime.fromtimestamp(decided["ts"], tz=timezone.utc),
        )
        await self.outcomes_topic.send(
            key=record.group_id.encode(), value=self.serde.encode(record), force=True
        )
        if not replayed:
            metrics.count_outcome(record.status.value, record.reason, len(record.rollout_ids))

    async def _publish(self, batch: Batch) -> None:
        s = self.settings.streams
        record, data = batch_record(
            batch,
            policy_name=self.group_cfg.policy_name,
            serde=self.serde,
            claim_check_bytes=s.claim_check_bytes,
            blob_dir=s.blob_dir,
        )
        await self.batches_topic.send(key=batch.batch_id.encode(), value=data, force=True)
        form = "replayed" if batch.replayed else ("claim_check" if record.claim_check else "inline")
        try:
            metrics.BATCHES.labels(form).inc()
        except Exception:
            log.debug("batch metric not recorded", exc_info=True)
        if not batch.replayed:
            metrics.observe(metrics.ROWS_PER_BATCH, len(batch.rows))
            metrics.observe(metrics.BATCH_EMIT_LATENCY, max(0.0, time.time() - batch.last_event_ts))
        log.info(
            "batch %s: %d groups, %d rows, %s%s",
            batch.batch_id,
            len(batch.group_ids),
            len(batch.rows),
            form,
            f" ({len(data)} B)",
        )

    # ------------------------------------------------------------------ validation
    async def _send_val(self, t: Trajectory, ts: float) -> None:
        """Forward one val trajectory's outcome (record time ``ts``, seconds) to the validation agent."""
        value = {
            "rollout_id": t.rollout_id,
            "version": int(t.policy_version),
            "status": t.status.value,
            "reward": t.reward,
            "ts": ts,
        }
        await self.val_topic.send(
            key=str(t.policy_version).encode(), value=json.dumps(value).encode(), force=True
        )

    async def _val_agent(self, stream: faust.StreamT) -> None:
        policy = self.settings.rl.policy_name
        async for event in stream.events():
            msg = event.message
            try:
                ev = internal_event(msg.value)
                version, rollout_id, status = int(ev["version"]), str(ev["rollout_id"]), str(ev["status"])
                reward = None if ev["reward"] is None else float(ev["reward"])
                ts = float(ev["ts"])
                if status == "succeeded" and (reward is None or not math.isfinite(reward)):
                    raise ValueError(f"succeeded without a finite reward ({ev['reward']!r})")
            except (ValueError, KeyError, TypeError) as exc:
                self._dead(msg, f"bad validation event: {exc!r}", exc)
                continue
            entry = add_outcome(self.val_table.get(str(version)), rollout_id, status, reward, ts)
            if entry is None:
                metrics.record({"duplicate:val": 1})  # type: ignore[arg-type]
                entry = self.val_table.get(str(version))
            else:
                self.val_table[str(version)] = entry
                self._val_dirty = True
            # published on duplicates too: a replayed event re-sends a record lost with a crash
            rec = result(policy, version, entry)
            await self.val_results_topic.send(
                key=rec.key().encode(), value=self.serde.encode(rec), force=True
            )
            metrics.show_validation(rec.policy_version, rec.mean, rec.count)

    def validation_summary(self) -> dict[str, dict[str, Any]]:
        """The figures of every validated version (:func:`streamrl.streams.validation.summary`)."""
        return summary(self.settings.rl.policy_name, self.val_table.items())

    # ------------------------------------------------------------------ timer
    async def _tick(self) -> None:
        assigned = self.app.assignor.assigned_actives()
        now = time.time()
        value = json.dumps({"kind": "tick", "ts": now}).encode()
        tps = sorted(tp for tp in assigned if tp.topic in (self.names.ticks, self.names.groups))
        for tp in tps:
            topic = self.ticks_topic if tp.topic == self.names.ticks else self.groups_topic
            await topic.send(value=value, partition=tp.partition, force=True)
        if self._val_dirty and TP(self.names.validation, 0) in assigned:
            try:
                write_json(self.validation_path, self.validation_summary())
                self._val_dirty = False
            except OSError as exc:
                log.warning("cannot write %s: %s", self.validation_path, exc)
        if now - self._last_summary >= metrics.SUMMARY_INTERVAL_S:
            line = metrics.take_summary()
            if line:
                log.info("events in the last %.0f s: %s", now - self._last_summary, line)
            self._last_summary = now
        if tps and not self._ready_logged:
            self._ready_logged = True
            log.info(
                "%s app=%s partitions=%s",
                READY_MARKER,
                self.names.app_id,
                [f"{tp.topic}[{tp.partition}]" for tp in tps],
            )
