"""The join of ``requests`` with ``trajectories`` by ``rollout_id``: a pure state machine.

One state dict per ``rollout_id`` (the value of the Faust ``join`` table)::

    {"p": partition, "applied": {topic: last applied offset}, "calls": {request_id: Call},
     "trajs": {attempt_id: Traj}, "dead": [attempt ids dropped], "first_ts": s,
     "done": None | {"attempt_id", "ts", "by": [topic, offset] | None, "out": forward | None,
              "g": group_id, "rid": rollout_id},
     "lost": [{"by": [ticks topic, offset], "out": lost forward}] (until that offset is committed)}

A rollout completes when a succeeded trajectory and every call it lists have arrived; the first
completed attempt wins, later records of the rollout are counted as duplicates and ignored.

Memory: a finished rollout keeps its full state only until its forward and every input offset it
applied are committed; then a tick replaces it by one member id in its group's decided marker
(:mod:`streamrl.streams.decided`, ``JoinResult.decided``), kept ``dedup_retention_s`` after the
group's latest decision. A trajectory of a rollout in that marker is a duplicate (``decided=True``
to :func:`on_trajectory`, and to :func:`on_call` where the rollout id names its group, as the
sampler's ``<group_id>/<k>`` do; calls carry no group id, so another id's late duplicate calls wait
in a new state until their trajectory drops them (``duplicate:call``) or ``orphan_call_timeout_s``).

Replay safety (at-least-once input, state recovered from a changelog that may be *ahead* of the
committed offsets after a SIGKILL): every state remembers the last applied offset per source topic,
so a replayed record is recognised and skipped. The record that completed the rollout is remembered
(``done.by``) with the forward payload (``done.out``) until its offset is committed; replaying that
exact record re-sends the payload, so a forward lost in the producer buffer is never lost. The
group stage dedupes forwards by ``rollout_id``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamrl.streams.rows import Call, RowConfig, Traj, build_rows

#: ``committed(topic, partition) -> next offset to consume`` (None = unknown).
Committed = Callable[[str, int], int | None]


@dataclass(frozen=True)
class JoinConfig:
    """Timeouts of the join (seconds) and the row options."""

    rows: RowConfig
    join_timeout_s: float = 30.0
    orphan_call_timeout_s: float = 900.0
    dedup_retention_s: float = 3600.0


@dataclass
class JoinResult:
    """What one event did to one rollout's state.

    Attributes:
        state: the new state; None deletes the key.
        changed: whether the table must be written (or the key deleted).
        forwards: complete train rollouts to send to the group stage, and lost ones (validation
            reads val trajectories directly: a completed val rollout forwards nothing).
        dead: ``(traj, reason)`` of attempts given up (to the dead-letter topic).
        stats: counters (``duplicate:call``, ``incomplete_join``, ``abandoned_calls``, ...).
        join_latency_s: processing time minus the trajectory's record time, for completed joins.
        decided: ``(group_id, rollout_id, ts)`` to record in the group's decided marker (written
            before ``state``, which is then None: the full state is forgotten).
    """

    state: dict[str, Any] | None
    changed: bool = False
    forwards: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[Traj, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    join_latency_s: list[float] = field(default_factory=list)
    decided: tuple[str, str, float] | None = None


def new_state(partition: int, ts: float) -> dict[str, Any]:
    """An empty rollout state for table partition ``partition``, first seen at ``ts``."""
    return {"p": partition, "applied": {}, "calls": {}, "trajs": {}, "dead": [], "first_ts": ts, "done": None}


def lost_forward(rollout: dict[str, Any], reason: str, ts: float) -> dict[str, Any]:
    """The group-stage event of a train rollout that succeeded but will bring no rows.

    Args:
        rollout: a compact trajectory or a forward (``rollout_id``, ``group_id``, ``group_size``).
        reason: its group outcome's reason (``incomplete_join``, ``invalid_rows``).
        ts: event time of the decision, seconds.
    """
    return {
        "kind": "lost",
        "rollout_id": rollout["rollout_id"],
        "group_id": rollout["group_id"],
        "group_size": rollout["group_size"],
        "reason": reason,
        "last_ts": ts,
    }


def _replayed(state: dict[str, Any] | None, topic: str, offset: int, res: JoinResult) -> bool:
    """True if (topic, offset) is already in ``state``; re-sends the forwards it produced, if any."""
    if state is None or offset > state["applied"].get(topic, -1):
        return False
    done = state["done"]
    if done is not None and done["by"] == [topic, offset] and done["out"] is not None:
        res.forwards.append(done["out"])
        res.stats["reforwarded"] += 1
    for lost in state.get("lost") or []:
        if lost["by"] == [topic, offset]:
            res.forwards.append(lost["out"])
            res.stats["reforwarded"] += 1
    return True


def _prune_lost(state: dict[str, Any], partition: int, committed: Committed) -> bool:
    """Forget ``lost`` forwards whose tick offset is committed (they are delivered); True if any."""
    kept = []
    for lost in state.get("lost") or []:
        upto = committed(lost["by"][0], partition)
        if upto is None or lost["by"][1] >= upto:
            kept.append(lost)
    if len(kept) == len(state.get("lost") or []):
        return False
    state["lost"] = kept
    return True


def _all_committed(state: dict[str, Any], partition: int, committed: Committed) -> bool:
    """True if every offset ``state`` applied is below its topic's committed offset (no replay can
    bring one back)."""
    for topic, offset in state["applied"].items():
        upto = committed(topic, partition)
        if upto is None or offset >= upto:
            return False
    return True


def _complete(
    state: dict[str, Any], traj: Traj, topic: str, offset: int, now: float, cfg: JoinConfig, res: JoinResult
) -> None:
    listed = set(traj["request_ids"])
    others = [rid for rid in state["calls"] if rid not in listed]
    if others:
        res.stats["abandoned_calls"] += len(others)
    out: dict[str, Any] | None = None  # val: scored from its trajectory by the validation agent
    if traj["mode"] == "train":
        rows, stats = build_rows(traj, state["calls"], cfg.rows)
        res.stats.update(stats)
        out = {
            "kind": "train",
            "rollout_id": traj["rollout_id"],
            "attempt_id": traj["attempt_id"],
            "group_id": traj["group_id"],
            "group_size": traj["group_size"],
            "policy_version": traj["policy_version"],
            "reward": float(traj["reward"]),  # set on every succeeded trajectory (its invariants)
            "last_ts": max([traj["ts"]] + [state["calls"][rid]["ts"] for rid in listed]),
            "rows": rows,
        }
        res.forwards.append(out)
    res.join_latency_s.append(max(0.0, now - traj["ts"]))
    res.stats[f"completed:{traj['mode']}"] += 1
    state["calls"], state["trajs"], state["dead"] = {}, {}, []
    state["done"] = {
        "attempt_id": traj["attempt_id"],
        "ts": now,
        "by": [topic, offset],
        "out": out,
        "g": traj["group_id"],
        "rid": traj["rollout_id"],
    }


def _try_complete(
    state: dict[str, Any], topic: str, offset: int, now: float, cfg: JoinConfig, res: JoinResult
) -> None:
    for traj in sorted(state["trajs"].values(), key=lambda t: t["ts"]):
        if all(rid in state["calls"] for rid in traj["request_ids"]):
            _complete(state, traj, topic, offset, now, cfg, res)
            return


def on_call(
    state: dict[str, Any] | None,
    call: Call,
    *,
    topic: str,
    partition: int,
    offset: int,
    now: float,
    cfg: JoinConfig,
    decided: bool = False,
) -> JoinResult:
    """Apply one ``requests`` record (compact call) at ``topic[partition]@offset``; ``now`` in seconds.

    ``decided``: the rollout is in its group's decided marker: the call is a duplicate, not kept.
    """
    res = JoinResult(state)
    if _replayed(state, topic, offset, res):
        return res
    if decided and (state is None or state["done"] is None):
        res.stats["duplicate:call"] += 1
        return res
    state = state if state is not None else new_state(partition, call["ts"])
    state["applied"][topic] = offset
    res.state, res.changed = state, True
    if state["done"] is not None:
        res.stats["duplicate:call"] += 1
    elif call["attempt_id"] in state["dead"]:
        res.stats["abandoned_calls"] += 1
    elif call["request_id"] in state["calls"]:
        res.stats["duplicate:call"] += 1
    else:
        state["calls"][call["request_id"]] = call
        _try_complete(state, topic, offset, now, cfg, res)
    return res


def on_trajectory(
    state: dict[str, Any] | None,
    traj: Traj,
    *,
    topic: str,
    partition: int,
    offset: int,
    now: float,
    cfg: JoinConfig,
    decided: bool = False,
) -> JoinResult:
    """Apply one ``trajectories`` record (compact trajectory) at ``topic[partition]@offset``.

    ``decided``: the rollout is in its group's decided marker (it finished and its full state was
    forgotten): the trajectory is a duplicate, and so are the calls a new state holds for it.
    """
    res = JoinResult(state)
    if _replayed(state, topic, offset, res):
        return res
    if decided and (state is None or state["done"] is None):
        res.stats["duplicate:trajectory"] += 1
        if state is not None:  # the duplicate attempt's calls (and anything else) go with it
            if state["calls"]:
                res.stats["duplicate:call"] += len(state["calls"])
            if not state.get("lost"):
                res.state, res.changed = None, True
        return res
    state = state if state is not None else new_state(partition, traj["ts"])
    state["applied"][topic] = offset
    res.state, res.changed = state, True
    attempt = traj["attempt_id"]
    if state["done"] is not None or attempt in state["trajs"]:
        res.stats["duplicate:trajectory"] += 1
    elif attempt in state["dead"]:
        res.stats["duplicate:trajectory"] += 1
    elif traj["status"] != "succeeded":
        res.stats[f"failed_attempt:{traj['status']}"] += 1
        _drop_attempt(state, attempt, res)
    else:
        state["trajs"][attempt] = traj
        _try_complete(state, topic, offset, now, cfg, res)
    return res


def _drop_attempt(state: dict[str, Any], attempt: str, res: JoinResult) -> None:
    mine = [rid for rid, c in state["calls"].items() if c["attempt_id"] == attempt]
    for rid in mine:
        del state["calls"][rid]
    if mine:
        res.stats["abandoned_calls"] += len(mine)
    state["trajs"].pop(attempt, None)
    if attempt not in state["dead"]:
        state["dead"].append(attempt)


def on_tick(
    state: dict[str, Any],
    *,
    tick_ts: float,
    partition: int,
    committed: Committed,
    cfg: JoinConfig,
    topic: str = "ticks",
    offset: int = -1,
    requests_read: bool = True,
    trajectories_read: bool = True,
) -> JoinResult:
    """Apply a timer tick (event time ``tick_ts``, seconds) at ``topic[partition]@offset`` to one rollout.

    Expires succeeded attempts whose calls are still missing after ``join_timeout_s`` (dead-lettered,
    ``incomplete_join``); when a train rollout has no succeeded attempt left, forwards a ``lost``
    event to the group stage (its group outcome is ``dropped: incomplete_join``; a later attempt
    that completes is then a duplicate there). Drops calls without a trajectory after
    ``orphan_call_timeout_s`` (``abandoned_calls``), strips kept forwards once their source offset is
    committed, and replaces a finished rollout whose forward and applied offsets are all committed by
    its member id in the group's decided marker (``res.decided``; states written by earlier
    releases, without a group id, are forgotten after ``dedup_retention_s``). A tick that expired an
    attempt is remembered (``applied``), so replaying it re-sends its ``lost`` forward; other ticks
    are idempotent.

    A missing call expires only when ``requests_read``: the caller has processed its partition of
    ``requests`` up to the end offset it knows. A worker produces a trajectory only after the broker
    acknowledged all its calls, so a call missing then is missing from the log; while a backlog is
    unread (streams was down longer than ``join_timeout_s``), the call may just be further back in
    it. Likewise calls wait for their trajectory until ``trajectories_read``.
    """
    res = JoinResult(state)
    if offset >= 0 and _replayed(state, topic, offset, res):
        return res
    if _prune_lost(state, partition, committed):
        res.changed = True
    done = state["done"]
    if done is not None:
        if done["out"] is not None:
            by_topic, by_offset = done["by"]
            upto = committed(by_topic, partition)
            if upto is not None and by_offset < upto:
                done["out"], done["by"] = None, None
                res.changed = True
        if done["out"] is None and not state.get("lost"):
            if done.get("g") is not None and _all_committed(state, partition, committed):
                res.decided = (done["g"], done["rid"], done["ts"])
                res.state, res.changed = None, True
            elif tick_ts - done["ts"] > cfg.dedup_retention_s:  # offsets unknown that long: forget
                res.state, res.changed = None, True
        return res
    expired: list[Traj] = []
    for attempt, traj in sorted(state["trajs"].items()):
        if requests_read and tick_ts - traj["ts"] > cfg.join_timeout_s:
            missing = [rid for rid in traj["request_ids"] if rid not in state["calls"]]
            res.dead.append(
                (
                    traj,
                    f"rollout {traj['rollout_id']} attempt {attempt}: {len(missing)} of "
                    f"{len(traj['request_ids'])} calls missing after {cfg.join_timeout_s:g} s "
                    f"(first missing: {missing[:3]})",
                )
            )
            res.stats["incomplete_join"] += 1
            _drop_attempt(state, attempt, res)
            res.changed = True
            expired.append(traj)
    if expired and not state["trajs"] and expired[-1]["mode"] == "train":
        out = lost_forward(expired[-1], "incomplete_join", tick_ts)
        res.forwards.append(out)
        if offset >= 0:  # remembered until committed, so a replay of this tick re-sends it
            state["lost"] = [*(state.get("lost") or []), {"by": [topic, offset], "out": out}]
            state["applied"][topic] = offset
    with_traj = set(state["trajs"])
    stale = [
        rid
        for rid, c in state["calls"].items()
        if trajectories_read
        and c["attempt_id"] not in with_traj
        and tick_ts - c["ts"] > cfg.orphan_call_timeout_s
    ]
    for rid in stale:
        del state["calls"][rid]
    if stale:
        res.stats["abandoned_calls"] += len(stale)
        res.changed = True
    if not state["calls"] and not state["trajs"] and not state.get("lost"):
        last = max([state["first_ts"]] + [c["ts"] for c in state["calls"].values()])
        if not state["dead"] or tick_ts - last > cfg.dedup_retention_s:
            res.state, res.changed = None, True
    return res
