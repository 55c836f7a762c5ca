"""Groups, batches and group outcomes: a pure, replay-deterministic state machine over one group-topic
partition.

Input: one partition of the internal group topic, a single ordered log of events (all produced by
this app): ``train`` (a complete train rollout with its rows, keyed by ``group_id``), ``lost`` (a
train rollout whose trajectory succeeded but that will bring no rows: its join timed out, or a row
was invalid) and ``tick`` (event time for the straggler and batch timeouts); ``version`` events
written by earlier releases are ignored (staleness is the trainer's decision, not this stage's).
Every decision depends only on that log and the state, never on the wall clock, so replaying the
log from the committed offset reproduces the same batches with the same ``batch_id``.

Outputs: batches, and *group outcomes* (``GroupOutcome`` records, what became of every train
rollout that reached this stage): ``batched`` (its rows are in batch ``batch_id``) or ``dropped``
with the reason: ``zero_variance``, ``straggler`` (fewer than ``min_group_size`` rollouts at the
straggler timeout), ``no_rows`` (a rollout without rows; a group with none), ``incomplete_join`` /
``invalid_rows`` (from ``lost`` events) and ``late`` (a rollout or loss that arrives after its group
closed). Each rollout of a group is decided once: a repeated rollout id is a duplicate (counted,
no outcome). The sampler's admission counts from these records.

State (values of the Faust ``groups`` table):

* one dict per ``group_id``: ``{"p", "applied", "size", "first_ts", "rollouts": {rollout_id: {...}},
  "lost": {rollout_id: reason}, "members": [member ids (:func:`streamrl.streams.decided.member_id`)
  of decided or present rollouts], "state":
  "open"|"ready"|"batched"|"dropped", "ready_at": offset, "batch_id", "closed_ts", "outcomes_at":
  offset, "outcomes": [outcomes of the group decided at that offset, batches aside]}``;
  once closed with nothing left to publish, a group is stored *compact*: only ``p``, ``applied``,
  ``state``, ``closed_ts`` and ``members`` packed in one string (:data:`COMPACT_KEYS`,
  :func:`streamrl.streams.decided.pack_members`; the rest are their empty defaults, restored on
  read), kept ``dedup_retention_s`` after it closed;
* one partition dict under :func:`partition_key`: ``{"p", "applied", "pending": [[ready_at,
  group_id], ...], "opened_ts", "emits": [{"offset", "batch_id", "groups", "ts"}], "outcomes":
  [{"offset", "outcome"}]}``, written last for every event.

Crash safety: a group is written before the partition dict, both to the same changelog partition in
order, so a recovered state is a prefix of the writes. If the partition dict already includes an
event (``applied >= offset``) the event is not applied again; the batches and outcomes it produced
are re-sent (same ids, same rows) because they stay in ``emits``/``outcomes`` until their offset is
committed. Otherwise the event is applied again from the partition dict's older state; group updates
are idempotent (rollouts are keyed by ``rollout_id``, a group's readiness remembers ``ready_at``, its
outcomes ``outcomes_at``), so a group already written re-sends the outcomes it decided at that
offset. A group enters at most one batch; a rollout at most one group: no row is ever duplicated
within or among batches, and a rollout gets one decision (a crash may repeat its record).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamrl.streams.decided import member_id, pack_members, unpack_members

PARTITION_KEY_PREFIX = "__streamrl_partition__/"

COMPACT_KEYS = ("p", "applied", "state", "closed_ts", "members")
"""What a closed group with nothing left to publish keeps (see the module docstring)."""

_GROUP_DEFAULTS: dict[str, Any] = {
    "size": 0,
    "first_ts": None,
    "ready_at": None,
    "batch_id": None,
    "outcomes_at": None,
}

ZERO_VARIANCE_TOLERANCE = 1e-12
"""Rewards within this of each other are "all equal" (a zero-variance group)."""


def partition_key(partition: int) -> str:
    """Table key of the partition dict of group-topic partition ``partition``."""
    return f"{PARTITION_KEY_PREFIX}{partition}"


def batch_id_for(policy_name: str, group_ids: list[str]) -> str:
    """Deterministic batch id: ``b-`` + the first 32 hex of sha256(policy name, sorted group ids)."""
    digest = hashlib.sha256("\n".join([policy_name, *sorted(group_ids)]).encode()).hexdigest()
    return f"b-{digest[:32]}"


def outcome(
    group_id: str,
    status: str,
    rollout_ids: list[str],
    ts: float,
    *,
    reason: str | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """One group outcome as the state stores it (``GroupOutcome`` fields; ``ts`` in seconds)."""
    return {
        "group_id": group_id,
        "status": status,
        "reason": reason,
        "batch_id": batch_id,
        "rollout_ids": sorted(rollout_ids),
        "ts": ts,
    }


@dataclass(frozen=True)
class GroupConfig:
    """Grouping, filtering and batching options (seconds for times)."""

    policy_name: str = "policy"
    train_batch_size: int = 4
    min_group_size: int = 2
    straggler_timeout_s: float = 300.0
    filter_zero_variance: bool = True
    batch_timeout_s: float = 30.0
    dedup_retention_s: float = 3600.0


@dataclass
class Batch:
    """A batch to publish: ``rows`` in group order (sorted ids), then rollout id, then call order."""

    batch_id: str
    group_ids: list[str]
    rows: list[dict[str, Any]]
    ts: float  # event time of the event that closed it, seconds
    last_event_ts: float  # latest input record time of its rollouts, seconds
    replayed: bool = False


@dataclass
class GroupResult:
    """Writes (key -> value, None deletes) in order, batches and outcomes to publish, and counters."""

    writes: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    replayed: bool = False  # the event was applied before: batches and outcomes are re-sent


def _need(ev: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = ev.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{ev.get('kind')} event: {name} must be {kind}, got {value!r}"[:300])
    return value


def _finite_ts(ev: dict[str, Any], name: str) -> float:
    value = float(_need(ev, name, (int, float)))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{ev.get('kind')} event: {name} must be a finite time in seconds, got {value}")
    return value


def check_event(ev: dict[str, Any]) -> None:
    """Check the shape of one group-topic event before :meth:`GroupMachine.on_event` applies it.

    The topic is internal, but any client of the cluster can write to it: an event the machine
    cannot apply is rejected here (the caller dead-letters it) rather than crashing the agent.
    Rows are not checked here (the caller validates them as ``TrainingRow``).

    Raises:
        ValueError: unknown kind, a missing field, a field of the wrong type, a non-finite time or
            reward, ``group_size`` < 1, rows not a list of objects.
    """
    kind = ev.get("kind")
    if kind in ("train", "lost"):
        _need(ev, "rollout_id", str)
        _need(ev, "group_id", str)
        if _need(ev, "group_size", int) < 1:
            raise ValueError(f"{kind} event: group_size must be >= 1, got {ev['group_size']}")
        _finite_ts(ev, "last_ts")
        if kind == "lost":
            _need(ev, "reason", str)
            return
        reward = float(_need(ev, "reward", (int, float)))
        if not math.isfinite(reward):
            raise ValueError(f"train event: reward must be finite, got {reward}")
        rows = _need(ev, "rows", list)
        if not all(isinstance(r, dict) for r in rows):
            raise ValueError("train event: rows must be a list of objects")
    elif kind == "tick":
        _finite_ts(ev, "ts")
    elif kind != "version":
        raise ValueError(f"unknown group event kind {kind!r}")


def new_partition_state(partition: int) -> dict[str, Any]:
    """An empty partition dict."""
    return {"p": partition, "applied": -1, "pending": [], "opened_ts": None, "emits": [], "outcomes": []}


class GroupMachine:
    """Applies group-topic events to a table-like mapping (``get(key)``) and reports the writes.

    Args:
        cfg: options.
        table_get: ``key -> value | None`` over the groups table.
        table_items: iterates ``(key, value)`` of the table (ticks scan the partition's groups).
    """

    def __init__(
        self,
        cfg: GroupConfig,
        table_get: Callable[[str], dict[str, Any] | None],
        table_items: Callable[[], list[tuple[str, dict[str, Any]]]],
    ) -> None:
        self.cfg = cfg
        self._get = table_get
        self._items = table_items

    # ----------------------------------------------------------------------------- events
    def on_event(
        self, event: dict[str, Any], *, partition: int, offset: int, committed: int | None = None
    ) -> GroupResult:
        """Apply one group-topic event at ``offset`` of ``partition``.

        Args:
            event: ``{"kind": "train", ...rollout}`` | ``{"kind": "lost", "rollout_id", "group_id",
                "group_size", "reason", "last_ts"}`` | ``{"kind": "tick", "ts"}`` (``{"kind":
                "version"}`` of earlier releases: ignored).
            committed: the group topic's committed offset for this partition (next to consume), for pruning.

        Raises:
            ValueError: unknown event kind.
        """
        res = GroupResult()
        part = self._get(partition_key(partition)) or new_partition_state(partition)
        if offset <= part["applied"]:
            res.replayed = True
            for emit in part["emits"]:
                if emit["offset"] == offset:
                    batch = self._build(emit["groups"], emit["batch_id"], emit["ts"], {})
                    batch.replayed = True
                    res.batches.append(batch)
                    res.stats["batch_replayed"] += 1
            for kept in part.get("outcomes", []):
                if kept["offset"] == offset:
                    res.outcomes.append(kept["outcome"])
            return res
        part = {
            **part,
            "pending": [list(x) for x in part["pending"]],
            "emits": list(part["emits"]),
            "outcomes": list(part.get("outcomes", [])),
        }
        kind = event.get("kind")
        staged: dict[str, dict[str, Any]] = {}
        if kind in ("train", "lost"):
            ts = float(event["last_ts"])
            self._on_member(event, part, partition, offset, ts, staged, res)
        elif kind == "tick":
            ts = float(event["ts"])
            self._on_tick(ts, part, partition, offset, staged, res, committed)
        elif kind == "version":  # written by releases whose streams judged staleness: nothing to do
            ts = float(event.get("ts", 0.0))
        else:
            raise ValueError(f"unknown group event kind {kind!r}")
        self._batch(part, offset, ts, staged, res, flush=kind == "tick")
        part["applied"] = offset
        part["outcomes"].extend({"offset": offset, "outcome": o} for o in res.outcomes)
        for o in res.outcomes:
            res.stats[f"outcome_rollouts:{o['status']}" + (f":{o['reason']}" if o["reason"] else "")] += len(
                o["rollout_ids"]
            )
        for key, value in staged.items():
            res.writes.append((key, value))
        res.writes.append((partition_key(partition), part))
        return res

    def _group(self, gid: str, staged: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        if gid in staged:
            return staged[gid]
        value = self._get(gid)
        if value is None:
            return None
        return {
            **_GROUP_DEFAULTS,
            **value,
            "outcomes": list(value.get("outcomes") or []),
            "rollouts": dict(value.get("rollouts") or {}),
            "lost": dict(value.get("lost") or {}),
            # groups written before outcomes existed have no members list: their rollouts are the members
            "members": list(unpack_members(value.get("members") or sorted(value.get("rollouts") or {}))),
        }

    @staticmethod
    def _decide(
        gid: str, group: dict[str, Any], offset: int, outcomes: list[dict[str, Any]], res: GroupResult
    ) -> None:
        """Publish ``outcomes`` of ``group`` decided at ``offset``, and remember them for a re-apply."""
        if group.get("outcomes_at") != offset:
            group["outcomes_at"], group["outcomes"] = offset, []
        group["outcomes"] = group["outcomes"] + outcomes
        res.outcomes.extend(outcomes)

    @staticmethod
    def _redo(gid: str, group: dict[str, Any], offset: int, part: dict[str, Any], res: GroupResult) -> None:
        """The group was written at ``offset`` but the partition dict was not: redo the follow-up
        (re-queue it if it became ready there; re-send the outcomes it decided there)."""
        if group.get("outcomes_at") == offset:
            res.outcomes.extend(group.get("outcomes") or [])
        if group["ready_at"] != offset or group["state"] not in ("ready", "batched"):
            return
        queued = {g for _, g in part["pending"]} | {g for e in part["emits"] for g in e["groups"]}
        if gid not in queued:
            part["pending"].append([offset, gid])
            part["pending"].sort()
            if part["opened_ts"] is None:
                part["opened_ts"] = group["closed_ts"]

    def _on_member(
        self,
        ev: dict[str, Any],
        part: dict[str, Any],
        partition: int,
        offset: int,
        ts: float,
        staged: dict[str, dict[str, Any]],
        res: GroupResult,
    ) -> None:
        """A complete rollout (``train``) or a lost one (``lost``) of a group."""
        gid, rid = ev["group_id"], ev["rollout_id"]
        group = self._group(gid, staged)
        if group is None:
            group = {
                "p": partition,
                "applied": -1,
                "size": int(ev["group_size"]),
                "first_ts": ts,
                "rollouts": {},
                "lost": {},
                "members": [],
                "state": "open",
                "ready_at": None,
                "batch_id": None,
                "closed_ts": None,
            }
        if offset <= group["applied"]:  # written before the partition dict: only its follow-up is redone
            self._redo(gid, group, offset, part, res)
            return
        group["applied"] = offset
        staged[gid] = group
        mid = member_id(gid, rid)
        if mid in group["members"] or rid in group["members"]:  # full ids: written by earlier releases
            res.stats["duplicate_rollout" if ev["kind"] == "train" else "duplicate_lost"] += 1
            return
        group["members"] = sorted([*group["members"], mid])
        lost = ev["kind"] == "lost"
        if group["state"] != "open":
            res.stats["late_lost" if lost else "late_rollout"] += 1
            reason = str(ev["reason"]) if lost else "late"
            self._decide(gid, group, offset, [outcome(gid, "dropped", [rid], ts, reason=reason)], res)
            return
        if lost:
            group["lost"][rid] = str(ev["reason"])
        else:
            group["rollouts"][rid] = {
                "reward": float(ev["reward"]),
                "rows": ev["rows"],
                "last_ts": float(ev["last_ts"]),
            }
        if len(group["rollouts"]) + len(group["lost"]) >= group["size"]:
            self._close(gid, group, part, offset, ts, res)

    def _close(
        self, gid: str, group: dict[str, Any], part: dict[str, Any], offset: int, ts: float, res: GroupResult
    ) -> None:
        """A group is complete (or its straggler timeout passed with enough rollouts): filter it,
        then queue or drop it; every member without a batch gets its outcome now."""
        cfg = self.cfg
        group["closed_ts"] = ts
        res.stats["groups_ready"] += 1
        decided = self._lost_outcomes(gid, group, ts)
        kept = {rid: ro for rid, ro in group["rollouts"].items() if ro["rows"]}
        rowless = sorted(rid for rid in group["rollouts"] if rid not in kept)
        rewards = [ro["reward"] for ro in kept.values()]
        reason = None
        if not kept:
            reason = "empty"
        elif (
            cfg.filter_zero_variance
            and len(rewards) >= 2
            and max(rewards) - min(rewards) <= ZERO_VARIANCE_TOLERANCE
        ):
            reason = "zero_variance"
        if rowless:
            decided.append(outcome(gid, "dropped", rowless, ts, reason="no_rows"))
        if reason is not None:
            res.stats[f"group_dropped:{reason}"] += 1
            if kept:
                decided.append(outcome(gid, "dropped", list(kept), ts, reason=reason))
            group.update(state="dropped", rollouts={})
        else:
            group.update(state="ready", rollouts=kept, ready_at=offset)
            part["pending"].append([offset, gid])
            part["pending"].sort()
            if part["opened_ts"] is None:
                part["opened_ts"] = ts
        if decided:
            self._decide(gid, group, offset, decided, res)

    @staticmethod
    def _lost_outcomes(gid: str, group: dict[str, Any], ts: float) -> list[dict[str, Any]]:
        """One ``dropped`` outcome per reason for the group's lost members (and forget them)."""
        by_reason: dict[str, list[str]] = {}
        for rid, reason in group["lost"].items():
            by_reason.setdefault(reason, []).append(rid)
        group["lost"] = {}
        return [outcome(gid, "dropped", rids, ts, reason=r) for r, rids in sorted(by_reason.items())]

    def _on_tick(
        self,
        ts: float,
        part: dict[str, Any],
        partition: int,
        offset: int,
        staged: dict[str, dict[str, Any]],
        res: GroupResult,
        committed: int | None,
    ) -> None:
        cfg = self.cfg
        emitted_ok = {
            e["batch_id"] for e in part["emits"] if committed is not None and e["offset"] < committed
        }
        part["emits"] = [e for e in part["emits"] if e["batch_id"] not in emitted_ok]
        if committed is not None:
            part["outcomes"] = [o for o in part["outcomes"] if o["offset"] >= committed]
        for gid, value in sorted(self._items()):
            if gid.startswith(PARTITION_KEY_PREFIX) or value.get("p") != partition:
                continue
            if "size" not in value and gid not in staged:  # compact: closed, only its expiry is left
                if ts - value["closed_ts"] > cfg.dedup_retention_s:
                    res.writes.append((gid, None))
                continue
            group = self._group(gid, staged)
            assert group is not None
            if offset <= group["applied"]:
                self._redo(gid, group, offset, part, res)
                continue
            state = group["state"]
            if state == "open" and ts - group["first_ts"] > cfg.straggler_timeout_s:
                group["applied"] = offset
                staged[gid] = group
                if len(group["rollouts"]) >= min(cfg.min_group_size, group["size"]):
                    res.stats["straggler:trained"] += 1
                    self._close(gid, group, part, offset, ts, res)
                else:
                    res.stats["straggler:dropped"] += 1
                    res.stats["straggler_rollouts_dropped"] += len(group["rollouts"])
                    decided = self._lost_outcomes(gid, group, ts)
                    if group["rollouts"]:
                        decided.append(
                            outcome(gid, "dropped", list(group["rollouts"]), ts, reason="straggler")
                        )
                    group.update(state="dropped", rollouts={}, closed_ts=ts)
                    if decided:
                        self._decide(gid, group, offset, decided, res)
            elif state == "batched" and group["batch_id"] in emitted_ok and group["rollouts"]:
                group["applied"] = offset
                group["rollouts"] = {}
                staged[gid] = group
            elif (
                state in ("batched", "dropped")
                and not group["rollouts"]
                and group["closed_ts"] is not None
                and ts - group["closed_ts"] > cfg.dedup_retention_s
            ):
                res.writes.append((gid, None))
            elif group.get("outcomes") and committed is not None and group["outcomes_at"] < committed:
                group["applied"] = offset  # its outcomes are delivered: no re-apply needs them
                group["outcomes"] = []
                staged[gid] = group
            elif state in ("batched", "dropped") and not group["rollouts"] and not group["lost"]:
                if group["closed_ts"] is not None and not group["outcomes"] and "size" in value:
                    compact = {k: group[k] for k in COMPACT_KEYS}
                    staged[gid] = {**compact, "applied": offset, "members": pack_members(group["members"])}

    def _batch(
        self,
        part: dict[str, Any],
        offset: int,
        ts: float,
        staged: dict[str, dict[str, Any]],
        res: GroupResult,
        *,
        flush: bool,
    ) -> None:
        cfg = self.cfg
        while part["pending"] and (
            len(part["pending"]) >= cfg.train_batch_size
            or (flush and part["opened_ts"] is not None and ts - part["opened_ts"] > cfg.batch_timeout_s)
        ):
            take = [gid for _, gid in part["pending"][: cfg.train_batch_size]]
            part["pending"] = part["pending"][cfg.train_batch_size :]
            batch_id = batch_id_for(cfg.policy_name, take)
            for gid in take:
                group = self._group(gid, staged)
                assert group is not None, gid
                group.update(state="batched", batch_id=batch_id)
                staged[gid] = group
                res.outcomes.append(outcome(gid, "batched", list(group["rollouts"]), ts, batch_id=batch_id))
            batch = self._build(take, batch_id, ts, staged)
            part["emits"].append({"offset": offset, "batch_id": batch_id, "groups": sorted(take), "ts": ts})
            part["opened_ts"] = ts if part["pending"] else None
            res.batches.append(batch)
            res.stats["batches"] += 1

    def _build(
        self, group_ids: list[str], batch_id: str, ts: float, staged: dict[str, dict[str, Any]]
    ) -> Batch:
        rows: list[dict[str, Any]] = []
        last = 0.0
        for gid in sorted(group_ids):
            group = self._group(gid, staged)
            if group is None:
                raise KeyError(f"group {gid!r} of batch {batch_id} is not in the table")
            for rid in sorted(group["rollouts"]):
                ro = group["rollouts"][rid]
                rows.extend(ro["rows"])
                last = max(last, ro["last_ts"])
        return Batch(batch_id=batch_id, group_ids=sorted(group_ids), rows=rows, ts=ts, last_event_ts=last)
