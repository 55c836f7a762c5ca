"""Sampler snapshots: the state that recovery would rebuild, written to the compacted
``sampler_state`` topic (key: the sampler's id, ``<stem>-sampler``) so that a restarted sampler
replays only the records after it.

What a snapshot holds (``SamplerSnapshot``, ``schemas/avsc/SamplerSnapshot``): the offsets it covers
(``emitted_offsets``: ``samples`` and ``dlq`` as the sampler's own output; ``input_offsets``:
``trajectories``, ``group_outcomes`` and ``dlq`` as its input; ``tasks`` and ``checkpoints`` are
compacted and always read whole) and ``state``, zlib-compressed JSON of this layout (version
:data:`STATE_LAYOUT`)::

    {"layout": 1,
     "ledger": Ledger.to_state(...),          # counts, open group books (Samples as JSON), batches
     "epoch": e, "emitted": {task_id: mask},  # the newest epoch with a first-issue train sample and
                                              # which k of each task it emitted (bit k)
     "where": [[rollout_id, retry, partition, offset], ...]}  # samples of running emissions

It is taken between two loop steps, after a flush (every emitted sample and dead letter is
acknowledged, so the ends of ``samples`` and ``dlq`` are past them) and after the books of finished
groups are pruned. State and offsets then describe one moment: replaying the records after the
offsets onto the state gives what a replay from the beginning gives (the ledger's counts depend
only on the set of records read, :mod:`streamrl.producers.ledger`).

A snapshot is not used, and the sampler replays everything (``streamrl_sampler_snapshot_fallbacks_total``
by reason), when it cannot be decoded (``undecodable``), belongs to another sampler (``foreign``),
was taken under other settings (``settings``: policy, seed, shuffle, group and batch size,
staleness, retry budgets, topic names and partition counts), covers offsets the topics no longer
have (``offsets``: a topic recreated or truncated, or records deleted by retention before they were
covered), or holds a state this code cannot read (``state``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from typing import Any

from confluent_kafka import KafkaException, Message

from streamrl.config import Settings
from streamrl.errors import BrokerError, StreamRLError
from streamrl.producers import metrics as m
from streamrl.producers.ledger import Ledger
from streamrl.producers.replay import partitions, read_to_end
from streamrl.schemas import Sample, SamplerSnapshot, SchemaError
from streamrl.schemas.sampler_state import offset_key, parse_offset_key

log = logging.getLogger("streamrl.producers.sampler")

STATE_LAYOUT = 1
"""Version of the JSON layout inside ``SamplerSnapshot.state``."""

Partition = tuple[str, int]


class SnapshotRefused(StreamRLError):
    """A snapshot that cannot be used; recovery replays every topic instead.

    Attributes:
        reason: ``undecodable``, ``foreign``, ``settings``, ``offsets`` or ``state``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def settings_digest(settings: Settings) -> str:
    """``sha256:<hex>`` over the settings a sampler's state depends on (the module docstring lists them)."""
    rl, cfg, topics = settings.rl, settings.sampler, settings.topics
    fields = {
        "policy_name": rl.policy_name,
        "seed": rl.seed,
        "shuffle": cfg.shuffle,
        "group_size": rl.group_size,
        "train_batch_size": rl.train_batch_size,
        "max_staleness": rl.max_staleness,
        "max_retries": cfg.max_retries,
        "max_infra_retries": cfg.max_infra_retries,
        "val_samples_per_task": cfg.val_samples_per_task,
        "topics": {
            base: [topics.name(base), topics.partitions[base]]
            for base in ("tasks", "samples", "trajectories", "group_outcomes", "checkpoints", "dlq")
        },
    }
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def encode_state(
    ledger: Ledger,
    epoch: int,
    emitted: set[tuple[str, int]],
    where: dict[tuple[str, int], tuple[int, int]],
) -> bytes:
    """The ``state`` bytes of a snapshot (layout in the module docstring)."""
    masks: dict[str, int] = {}
    for task_id, k in emitted:
        masks[task_id] = masks.get(task_id, 0) | 1 << k
    state = {
        "layout": STATE_LAYOUT,
        "ledger": ledger.to_state(lambda s: s.model_dump(mode="json")),
        "epoch": epoch,
        "emitted": masks,
        "where": [[rid, retry, p, o] for (rid, retry), (p, o) in where.items() if p >= 0],
    }
    return zlib.compress(json.dumps(state, separators=(",", ":")).encode(), 6)


def decode_state(
    data: bytes, ledger: Ledger
) -> tuple[int, set[tuple[str, int]], dict[tuple[str, int], tuple[int, int]]]:
    """Load ``state`` bytes into ``ledger``; returns ``(epoch, emitted, where)``.

    Raises:
        SnapshotRefused: (``state``) not zlib JSON of :data:`STATE_LAYOUT`, or a part missing or malformed.
    """
    try:
        state = json.loads(zlib.decompress(data))
        if not isinstance(state, dict) or state.get("layout") != STATE_LAYOUT:
            layout = state.get("layout") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"layout {layout!r}, this sampler reads layout {STATE_LAYOUT}")
        epoch = int(state["epoch"])
        emitted = {
            (str(task_id), k)
            for task_id, mask in state["emitted"].items()
            for k in range(int(mask).bit_length())
            if int(mask) >> k & 1
        }
        where = {(str(rid), int(r)): (int(p), int(o)) for rid, r, p, o in state["where"]}
        ledger.from_state(state["ledger"], Sample.model_validate)
    except (zlib.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotRefused("state", f"its state cannot be read: {type(exc).__name__}: {exc}") from exc
    return epoch, emitted, where


def check_offsets(
    snapshot: SamplerSnapshot,
    emitted: dict[Partition, tuple[int, int]],
    inputs: dict[Partition, tuple[int, int]],
) -> tuple[dict[Partition, int], dict[Partition, int]]:
    """The snapshot's offsets as start positions, checked against the partitions' watermarks now.

    Args:
        emitted, inputs: ``(topic, partition) -> (low, high)`` of the partitions recovery reads on
            each side (:func:`streamrl.producers.replay.partitions`).

    Returns:
        ``(emitted start, input start)``: ``(topic, partition) -> offset``.

    Raises:
        SnapshotRefused: (``offsets``) a partition missing from the snapshot or unknown to the
            cluster, an offset past the partition's end (the topic was recreated or truncated) or
            before its start (records deleted before the snapshot covered them).
    """
    out = []
    for name, offsets, marks in (
        ("emitted_offsets", snapshot.emitted_offsets, emitted),
        ("input_offsets", snapshot.input_offsets, inputs),
    ):
        start = {parse_offset_key(key): offset for key, offset in offsets.items()}
        if set(start) != set(marks):
            missing = sorted(offset_key(*tp) for tp in set(marks) - set(start))
            unknown = sorted(offset_key(*tp) for tp in set(start) - set(marks))
            raise SnapshotRefused(
                "offsets",
                f"{name} do not match the topics' partitions (missing {missing}, unknown {unknown})",
            )
        for tp, offset in sorted(start.items()):
            low, high = marks[tp]
            if offset > high:
                raise SnapshotRefused(
                    "offsets",
                    f"{name}[{offset_key(*tp)}] = {offset} is past the partition's end {high} "
                    "(the topic was recreated or truncated)",
                )
            if offset < low:
                raise SnapshotRefused(
                    "offsets",
                    f"{name}[{offset_key(*tp)}] = {offset} is before the partition's first record {low} "
                    "(records it did not cover were deleted)",
                )
        out.append(start)
    return out[0], out[1]


def make_snapshot(
    *,
    sampler_id: str,
    seq: int,
    digest: str,
    emitted_offsets: dict[Partition, int],
    input_offsets: dict[Partition, int],
    groups: int,
    state: bytes,
) -> SamplerSnapshot:
    """A ``SamplerSnapshot`` record from positions keyed by ``(topic, partition)``."""
    return SamplerSnapshot(
        sampler_id=sampler_id,
        seq=seq,
        settings_digest=digest,
        emitted_offsets={offset_key(*tp): o for tp, o in sorted(emitted_offsets.items())},
        input_offsets={offset_key(*tp): o for tp, o in sorted(input_offsets.items())},
        groups=groups,
        state=state,
    )


def describe(snapshot: SamplerSnapshot, where: str) -> dict[str, Any]:
    """What the recovery summary says of a snapshot it used."""
    return {
        "at": where,
        "seq": snapshot.seq,
        "created_at": snapshot.created_at.isoformat(),
        "groups": snapshot.groups,
        "state_bytes": len(snapshot.state),
    }


class Snapshots:
    """The sampler's snapshot methods (a mixin of :class:`streamrl.producers.sampler.Sampler`,
    whose attributes they use: ``ledger``, ``producer``, ``consumer``, ``serde``, ``topic``,
    ``cfg``, ``settings``, the emitted-epoch keys, ``_where`` and ``_positions``)."""

    def _load_snapshot(
        self,
        reader: Any,
        emitted_marks: dict[Partition, tuple[int, int]],
        input_marks: dict[Partition, tuple[int, int]],
    ) -> tuple[dict, dict, dict[str, Any]] | None:
        """Read ``sampler_state`` and load this sampler's newest snapshot into the ledger and the
        epoch (:mod:`.snapshot`). Returns ``(emitted start, input start, description)``, or None
        when there is none, snapshots are off, or it cannot be used (then the reason is logged with
        its place, counted in ``streamrl_sampler_snapshot_fallbacks_total`` and every topic is
        replayed from the beginning)."""
        if not self._snapshots_on:
            return None
        topic = self.topic["sampler_state"]
        try:
            meta = reader.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise BrokerError(f"cannot list topics: {exc}") from exc
        if topic not in meta or meta[topic].error is not None:
            log.warning("topic %s does not exist (`streamrl topics create`): no snapshots this run", topic)
            self._snapshots_on = False
            self._refused = "no_topic"
            m.SNAPSHOT_FALLBACKS.labels("no_topic").inc()
            return None
        newest: list[Message] = []
        own = self.sampler_id.encode()

        def keep(msg: Message) -> None:
            if msg.key() == own and msg.value() is not None:
                newest[:] = [msg]

        read_to_end(reader, [topic], keep, marks=partitions(self.admin, [topic]))
        if not newest:
            return None
        msg = newest[0]
        where = f"{topic}[{msg.partition()}]@{msg.offset()}"
        try:
            try:
                record = self.serde.decode_message(msg, SamplerSnapshot)
            except SchemaError as exc:
                raise SnapshotRefused("undecodable", str(exc)) from exc
            if record.sampler_id != self.sampler_id:
                raise SnapshotRefused(
                    "foreign", f"it is sampler {record.sampler_id!r}'s, this is {self.sampler_id!r}"
                )
            if record.settings_digest != self._settings_digest:
                raise SnapshotRefused(
                    "settings",
                    "it was taken under other settings (policy, seed, shuffle, group/batch size, "
                    "staleness, retry budgets or topics differ)",
                )
            emitted, inputs = check_offsets(
                record,
                emitted_marks,
                {
                    tp: m
                    for tp, m in input_marks.items()
                    if tp[0] in (self.topic["trajectories"], self.topic["group_outcomes"], self.topic["dlq"])
                },
            )
            epoch, keys, where_map = decode_state(record.state, self.ledger)
        except SnapshotRefused as exc:
            self._refused = exc.reason
            m.SNAPSHOT_FALLBACKS.labels(exc.reason).inc()
            log.error(
                "%s: snapshot not used (%s), replaying every topic from the beginning: %s",
                where,
                exc.reason,
                exc,
            )
            return None
        self._epoch_emitted, self._emitted_keys, self._where = epoch, keys, where_map
        self._snapshot_seq = record.seq
        return emitted, inputs, describe(record, where)

    def _snapshot_due(self) -> bool:
        if not self._snapshots_on or not self._changes:
            return False
        return (
            self._outcomes >= self.cfg.snapshot_every_groups
            or time.monotonic() - self._snapshot_at >= self.cfg.snapshot_interval_s
        )

    def _keep_book(self, group_id: str, book: Any) -> bool:
        """Whether a finished group's book stays: the val groups of the newest validation round
        (recovery asks which of its versions started)."""
        if book.train or not self.cfg.val_every:
            return False
        parts = group_id.split("/")
        every = self.cfg.val_every
        return (
            len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) >= self.ledger.version // every * every
        )

    def write_snapshot(self) -> bool:
        """Flush, prune the books of finished groups, and write the state with the offsets it covers
        to ``sampler_state`` (:mod:`.snapshot`). Returns whether one was written: not when snapshots
        are off, the topics' ends cannot be read (retried at the next interval), or the record is
        over ``topics.max_message_bytes`` (logged; recovery then replays from the last one).

        Raises:
            DeliveryError: an emitted sample, dead letter or the snapshot itself was not acknowledged.
        """
        if not self._snapshots_on:
            return False
        t0 = time.perf_counter()
        self.producer.flush(60.0)  # everything emitted is in samples/dlq, before the ends read next
        self._last_flush = self._snapshot_at = time.monotonic()
        try:
            ends = partitions(self.admin, [self.topic["samples"], self.topic["dlq"]])
        except BrokerError as exc:
            m.SNAPSHOT_FAILURES.labels("broker").inc()
            log.warning("sampler snapshot skipped: %s", exc)
            return False
        inputs = (self.topic["trajectories"], self.topic["group_outcomes"], self.topic["dlq"])
        pruned = self.ledger.prune(self._keep_book)
        m.GROUPS_PRUNED.inc(pruned)
        record = make_snapshot(
            sampler_id=self.sampler_id,
            seq=self._snapshot_seq + 1,
            digest=self._settings_digest,
            emitted_offsets={tp: high for tp, (_, high) in ends.items()},
            input_offsets={tp: o for tp, o in self._positions.items() if tp[0] in inputs},
            groups=len(self.ledger.groups),
            state=encode_state(self.ledger, self._epoch_emitted, self._emitted_keys, self._where),
        )
        value = self.serde.encode(record)
        if len(value) > self.settings.topics.max_message_bytes:
            m.SNAPSHOT_FAILURES.labels("too_large").inc()
            log.error(
                "sampler snapshot %d not written: %d bytes > topics.max_message_bytes %d (%d group books)",
                record.seq,
                len(value),
                self.settings.topics.max_message_bytes,
                record.groups,
            )
            return False
        self.producer.produce(self.topic["sampler_state"], value, key=self.sampler_id)
        self.producer.flush(60.0)
        self._snapshot_seq = record.seq
        self._changes = self._outcomes = 0
        m.SNAPSHOTS_WRITTEN.inc()
        m.SNAPSHOT_BYTES.set(len(value))
        m.GROUP_BOOKS.set(record.groups)
        log.info(
            "sampler snapshot %d: %d group book(s) (%d pruned), %d bytes, %.0f ms",
            record.seq,
            record.groups,
            pruned,
            len(value),
            (time.perf_counter() - t0) * 1000,
        )
        return True
