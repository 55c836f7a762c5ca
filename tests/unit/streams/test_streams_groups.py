"""The group/batch state machine: readiness, filters, batching, and crash-replay determinism."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamrl.streams.groups import GroupConfig, GroupMachine, batch_id_for


class Table(dict):
    def machine(self, cfg: GroupConfig) -> GroupMachine:
        return GroupMachine(cfg, self.get, lambda: list(self.items()))

    def apply(self, writes: list[tuple[str, Any]]) -> None:
        for key, value in writes:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def rollout(group: str, k: int, reward: float, *, size: int = 2, version: int = 0, ts: float = 0.0) -> dict:
    rid = f"{group}/{k}"
    row = {
        "rollout_id": rid,
        "group_id": group,
        "agent_name": None,
        "prompt_ids": [1],
        "response_ids": [k + 2],
        "response_mask": [1],
        "behaviour_logprobs": [-0.1],
        "token_rewards": [reward],
        "reward": reward,
        "policy_version": version,
        "weight": 1.0,
    }
    return {
        "kind": "train",
        "rollout_id": rid,
        "group_id": group,
        "group_size": size,
        "reward": reward,
        "rows": [row],
        "last_ts": ts,
    }


def lost(group: str, k: int, reason: str = "incomplete_join", *, size: int = 2, ts: float = 0.0) -> dict:
    return {
        "kind": "lost",
        "rollout_id": f"{group}/{k}",
        "group_id": group,
        "group_size": size,
        "reason": reason,
        "last_ts": ts,
    }


def run(
    table: Table,
    cfg: GroupConfig,
    events: list[dict],
    start: int = 0,
    committed: int | None = None,
    outcomes: list | None = None,
):
    """Apply ``events[start:]``; returns ``(batches, stats, writes)`` and appends ``(offset, outcome)``
    to ``outcomes`` when given."""
    machine = table.machine(cfg)
    batches, stats, writes = [], {}, []
    for offset, ev in enumerate(events[start:], start):
        res = machine.on_event(ev, partition=0, offset=offset, committed=committed)
        table.apply(res.writes)
        writes.append(res.writes)
        batches.extend((offset, b) for b in res.batches)
        if outcomes is not None:
            outcomes.extend((offset, o) for o in res.outcomes)
        for k, v in res.stats.items():
            stats[k] = stats.get(k, 0) + v
    return batches, stats, writes


def decisions(outcomes: list) -> dict[str, tuple]:
    """``rollout_id -> (status, reason, batch_id)``; fails if a rollout got two different decisions."""
    out: dict[str, tuple] = {}
    for _, o in outcomes:
        for rid in o["rollout_ids"]:
            d = (o["status"], o["reason"], o["batch_id"])
            assert out.setdefault(rid, d) == d, f"{rid}: decided {out[rid]} and {d}"
    return out


def test_full_groups_form_batches_with_deterministic_ids():
    cfg = GroupConfig(train_batch_size=2, filter_zero_variance=False)
    events = [
        rollout("g1", 0, 1.0),
        rollout("g2", 0, 1.0),
        rollout("g1", 1, 0.0),
        rollout("g1", 1, 0.0),
        rollout("g2", 1, 0.0),
    ]
    outcomes: list = []
    batches, stats, _ = run(Table(), cfg, events, outcomes=outcomes)
    [(offset, batch)] = batches
    assert offset == 4 and batch.batch_id == batch_id_for("policy", ["g2", "g1"])
    assert [r["rollout_id"] for r in batch.rows] == ["g1/0", "g1/1", "g2/0", "g2/1"]
    assert stats == {"duplicate_rollout": 1, "groups_ready": 2, "batches": 1, "outcome_rollouts:batched": 4}
    # one outcome per group, with the batch id: the duplicate rollout is not decided twice
    assert [(off, o["group_id"], o["status"], o["batch_id"], o["rollout_ids"]) for off, o in outcomes] == [
        (4, "g1", "batched", batch.batch_id, ["g1/0", "g1/1"]),
        (4, "g2", "batched", batch.batch_id, ["g2/0", "g2/1"]),
    ]


def test_filters_zero_variance_and_ignores_staleness():
    """Streams batches rows at the version they carry: staleness is the trainer's decision."""
    cfg = GroupConfig(train_batch_size=1)
    events = [
        {"kind": "version", "version": 5},  # written by earlier releases: ignored
        rollout("z", 0, 1.0, version=5),
        rollout("z", 1, 1.0, version=5),
        rollout("s", 0, 1.0, version=0),
        rollout("s", 1, 0.0, version=4),
    ]
    outcomes: list = []
    batches, stats, _ = run(Table(), cfg, events, outcomes=outcomes)
    assert stats == {
        "groups_ready": 2,
        "group_dropped:zero_variance": 1,
        "batches": 1,
        "outcome_rollouts:dropped:zero_variance": 2,
        "outcome_rollouts:batched": 2,
    }
    assert decisions(outcomes) == {
        "z/0": ("dropped", "zero_variance", None),
        "z/1": ("dropped", "zero_variance", None),
        "s/0": ("batched", None, batches[0][1].batch_id),
        "s/1": ("batched", None, batches[0][1].batch_id),
    }
    [(_, batch)] = batches
    assert [(r["rollout_id"], r["policy_version"], r["weight"]) for r in batch.rows] == [
        ("s/0", 0, 1.0),
        ("s/1", 4, 1.0),
    ]


def test_straggler_timeout_and_partial_batch_timeout():
    cfg = GroupConfig(
        train_batch_size=4,
        min_group_size=2,
        straggler_timeout_s=10,
        batch_timeout_s=5,
        filter_zero_variance=False,
    )
    events = [
        rollout("a", 0, 1.0, size=4, ts=0),
        rollout("a", 1, 0.0, size=4, ts=1),
        rollout("b", 0, 1.0, size=4, ts=1),
        {"kind": "tick", "ts": 9.0},
        {"kind": "tick", "ts": 11.0},
        {"kind": "tick", "ts": 15.0},
        {"kind": "tick", "ts": 16.5},
        rollout("a", 2, 0.0, size=4, ts=17),
    ]
    outcomes: list = []
    batches, stats, _ = run(Table(), cfg, events, outcomes=outcomes)
    [(offset, batch)] = batches
    assert offset == 6 and batch.group_ids == ["a"] and len(batch.rows) == 2
    assert stats["straggler:trained"] == 1 and stats["straggler:dropped"] == 1 and stats["late_rollout"] == 1
    assert decisions(outcomes) == {
        "a/0": ("batched", None, batch.batch_id),
        "a/1": ("batched", None, batch.batch_id),
        "b/0": ("dropped", "straggler", None),  # below min_group_size at the straggler timeout
        "a/2": ("dropped", "late", None),  # after its group closed
    }
    assert [off for off, _ in outcomes] == [5, 6, 7]  # b dropped at tick 15; a batched at 16.5; a/2 late


def test_every_member_is_decided_lost_rowless_late_and_duplicates():
    cfg = GroupConfig(train_batch_size=1, min_group_size=2, straggler_timeout_s=10, filter_zero_variance=True)
    no_rows = {**rollout("c", 2, 0.0, size=4), "rows": []}
    events = [
        rollout("c", 0, 1.0, size=4),
        lost("c", 1, size=4),  # its join timed out: the group need not wait for it
        no_rows,  # succeeded with no training row (e.g. no call matched train_agents)
        rollout("c", 3, 0.0, size=4),  # 4 of 4 decided: the group closes without a straggler wait
        rollout("c", 1, 1.0, size=4),  # a later attempt of the lost rollout completed: a duplicate
        lost("c", 0, size=4),  # a loss of a rollout already in the group: a duplicate too
        lost("c", 5, "invalid_rows", size=4),  # a member that arrives after the close: late, own reason
        rollout("c", 6, 0.5, size=4),  # late
        rollout("d", 0, 1.0),
        lost("d", 1),
        lost("e", 0),
        lost("e", 1, "invalid_rows"),  # a group with no rollout at all
    ]
    outcomes: list = []
    batches, stats, _ = run(Table(), cfg, events, outcomes=outcomes)
    [(c_at, batch), (d_at, d_batch)] = batches
    assert (c_at, d_at) == (3, 9)
    assert [r["rollout_id"] for r in batch.rows] == ["c/0", "c/3"]
    assert [r["rollout_id"] for r in d_batch.rows] == ["d/0"]
    assert decisions(outcomes) == {
        "c/0": ("batched", None, batch.batch_id),
        "c/3": ("batched", None, batch.batch_id),
        "c/1": ("dropped", "incomplete_join", None),
        "c/2": ("dropped", "no_rows", None),
        "c/5": ("dropped", "invalid_rows", None),
        "c/6": ("dropped", "late", None),
        "d/1": ("dropped", "incomplete_join", None),
        "e/0": ("dropped", "incomplete_join", None),
        "e/1": ("dropped", "invalid_rows", None),
        # d/0 alone with reward variance 0 by itself: a group of one trains (the filter needs two)
        "d/0": ("batched", None, d_batch.batch_id),
    }
    assert stats["duplicate_rollout"] == 1 and stats["duplicate_lost"] == 1
    assert stats["late_rollout"] == 1 and stats["late_lost"] == 1
    assert stats["group_dropped:empty"] == 1  # e: every member lost


def test_straggler_drop_decides_its_lost_members_with_their_own_reason():
    cfg = GroupConfig(train_batch_size=1, min_group_size=2, straggler_timeout_s=5)
    events = [rollout("s", 0, 1.0, size=4, ts=0), lost("s", 1, size=4, ts=1), {"kind": "tick", "ts": 6.0}]
    outcomes: list = []
    run(Table(), cfg, events, outcomes=outcomes)
    assert decisions(outcomes) == {
        "s/0": ("dropped", "straggler", None),
        "s/1": ("dropped", "incomplete_join", None),
    }


def _events(seed_groups: list[int]) -> list[dict]:
    events, ts = [], 0.0
    for i, n in enumerate(seed_groups):
        ts += 1.0
        if n == 0:
            events.append({"kind": "tick", "ts": ts})
        elif n == 1:
            events.append({"kind": "version", "version": i, "ts": ts})  # of earlier releases: ignored
        elif n % 11 == 0:
            events.append(lost(f"g{n % 7}", n % 3, size=3, ts=ts))
        else:
            g = f"g{n % 7}"
            ev = rollout(g, n % 3, float(n % 2), size=3, version=i, ts=ts)
            events.append({**ev, "rows": []} if n % 13 == 0 else ev)
    return events


def _frozen(outcome: dict) -> tuple:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(outcome.items()))


def _recover(cfg: GroupConfig, events: list[dict], crash: int, committed: int, kept, deliver):
    """Run ``events[:crash]``, crash with the changelog holding ``kept(floor, n)`` of the writes
    (every write of committed events, then any prefix of the rest) and the outputs of events at or
    after ``committed`` delivered where ``deliver()``; recover and run ``events[committed:]``.

    Returns:
        ``(batches, outcomes)`` delivered over both runs.
    """
    table = Table()
    first_outcomes: list = []
    first, _, writes = run(table, cfg, events[:crash], outcomes=first_outcomes)
    flat = [w for ws in writes for w in ws]
    floor = sum(len(ws) for ws in writes[:committed])
    recovered = Table()
    recovered.apply(flat[: kept(floor, len(flat))])
    delivered = [b for off, b in first if off < committed or deliver()]
    told = [o for off, o in first_outcomes if off < committed or deliver()]
    second_outcomes: list = []
    second, _, _ = run(recovered, cfg, events, start=committed, committed=committed, outcomes=second_outcomes)
    return delivered + [b for _, b in second], told + [o for _, o in second_outcomes]


def _check_against_reference(cfg: GroupConfig, events: list[dict], delivered: list, told: list) -> None:
    ref_outcomes: list = []
    reference, _, _ = run(Table(), cfg, events, outcomes=ref_outcomes)
    ref_rows = sorted(r["rollout_id"] for _, b in reference for r in b.rows)
    # every outcome of the reference is published (a replay may repeat one), and none other
    assert {_frozen(o) for o in told} == {_frozen(o) for _, o in ref_outcomes}
    by_id: dict[str, list[str]] = {}
    for b in delivered:
        rows = [r["rollout_id"] for r in b.rows]
        assert by_id.setdefault(b.batch_id, rows) == rows, "same batch id, different rows"
    all_rows = sorted(r for rows in by_id.values() for r in rows)
    assert len(all_rows) == len(set(all_rows)), "a row in two batches"
    assert all_rows == ref_rows


CRASH_CFG = GroupConfig(
    train_batch_size=2,
    straggler_timeout_s=8,
    batch_timeout_s=3,
    min_group_size=1,
    filter_zero_variance=False,
    dedup_retention_s=20,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=5, max_size=60), st.data())
def test_crash_at_any_point_never_duplicates_or_loses_rows(seq, data):
    cfg = CRASH_CFG
    events = _events(seq) + [{"kind": "tick", "ts": 1000.0 + 10 * i} for i in range(3)]
    ref_outcomes: list = []
    reference, _, _ = run(Table(), cfg, events, outcomes=ref_outcomes)
    ref_rows = sorted(r["rollout_id"] for _, b in reference for r in b.rows)
    # every rollout that reached the stage is decided; the batched ones are exactly the batches' rows
    members = {ev["rollout_id"] for ev in events if ev["kind"] in ("train", "lost")}
    assert {rid for _, o in ref_outcomes for rid in o["rollout_ids"]} == members
    batched = sorted(rid for _, o in ref_outcomes if o["status"] == "batched" for rid in o["rollout_ids"])
    assert batched == ref_rows

    crash = data.draw(st.integers(0, len(events)), label="crash after event")
    committed = data.draw(st.integers(0, crash), label="committed offset")
    delivered, told = _recover(
        cfg,
        events,
        crash,
        committed,
        lambda lo, hi: data.draw(st.integers(lo, hi), label="writes kept"),
        lambda: data.draw(st.booleans()),
    )
    _check_against_reference(cfg, events, delivered, told)


def test_crash_at_every_point_of_a_run_with_every_kind_of_outcome():
    """Exhaustive over crash point, committed offset and changelog prefix, delivering nothing (or
    everything) produced after the commit: each decision (rowless, lost, zero-variance, straggler,
    late, batched) is published again where it was lost."""
    cfg = GroupConfig(
        train_batch_size=2, straggler_timeout_s=5, batch_timeout_s=2, min_group_size=2, dedup_retention_s=50
    )
    events = [
        rollout("a", 0, 1.0, ts=1),
        {**rollout("a", 1, 0.0, ts=2), "rows": []},  # a closes: a/1 no_rows, a ready (one row left)
        rollout("z", 0, 1.0, ts=3),
        rollout("z", 1, 1.0, ts=3),  # zero variance: dropped
        lost("b", 0, ts=4),
        rollout("b", 1, 0.5, ts=4),  # b closes with one rollout: batch of a and b
        rollout("s", 0, 1.0, size=3, ts=5),
        {"kind": "tick", "ts": 11.0},  # s: straggler, dropped (below min_group_size)
        rollout("s", 1, 0.0, size=3, ts=12),  # late
        lost("s", 2, "invalid_rows", size=3, ts=12),  # late, its own reason
        rollout("c", 0, 1.0, ts=13),
        rollout("c", 1, 0.0, ts=13),  # c ready alone
        {"kind": "tick", "ts": 16.0},  # the partial batch of c after batch_timeout_s
    ]
    for crash in range(len(events) + 1):
        for committed in range(crash + 1):
            for prefix in range(200):
                stop = []

                def kept(lo: int, hi: int, prefix: int = prefix, stop: list = stop) -> int:
                    if lo + prefix >= hi:
                        stop.append(True)
                    return min(lo + prefix, hi)

                for deliver in (False, True):
                    delivered, told = _recover(cfg, events, crash, committed, kept, lambda d=deliver: d)
                    _check_against_reference(cfg, events, delivered, told)
                if stop:
                    break


def test_a_closed_group_is_stored_compact_and_still_drops_a_late_duplicate():
    cfg = GroupConfig(train_batch_size=1, min_group_size=2, dedup_retention_s=100)
    table = Table()
    events = [rollout("t/0", 0, 1.0, ts=1), rollout("t/0", 1, 0.0, ts=1)]  # batched at offset 1
    [(_, _batch)], _, _ = run(table, cfg, events)
    # ticks after the batch's offset is committed: its rows go, then all but the compact keys
    run(table, cfg, [*events, {"kind": "tick", "ts": 2.0}, {"kind": "tick", "ts": 3.0}], start=2, committed=2)
    assert table["t/0"] == {"p": 0, "applied": 3, "state": "batched", "closed_ts": 1, "members": "/0\n/1"}
    out: list = []
    _, stats, _ = run(table, cfg, [*events, {}, {}, rollout("t/0", 1, 0.5, ts=5)], start=4, outcomes=out)
    assert stats == {"duplicate_rollout": 1} and not out
    # forgotten dedup_retention_s after it closed
    run(table, cfg, [{}] * 5 + [{"kind": "tick", "ts": 101.5}], start=5, committed=5)
    assert "t/0" not in table
