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


def run(table: Table, cfg: GroupConfig, events: list[dict], start: int = 0, committed: int | None = None):
    machine = table.machine(cfg)
    batches, stats, writes = [], {}, []
    for offset, ev in enumerate(events[start:], start):
        res = machine.on_event(ev, partition=0, offset=offset, committed=committed)
        table.apply(res.writes)
        writes.append(res.writes)
        batches.extend((offset, b) for b in res.batches)
        for k, v in res.stats.items():
            stats[k] = stats.get(k, 0) + v
    return batches, stats, writes


def test_full_groups_form_batches_with_deterministic_ids():
    cfg = GroupConfig(train_batch_size=2, filter_zero_variance=False)
    events = [
        rollout("g1", 0, 1.0),
        rollout("g2", 0, 1.0),
        rollout("g1", 1, 0.0),
        rollout("g1", 1, 0.0),
        rollout("g2", 1, 0.0),
    ]
    batches, stats, _ = run(Table(), cfg, events)
    [(offset, batch)] = batches
    assert offset == 4 and batch.batch_id == batch_id_for("policy", ["g2", "g1"])
    assert [r["rollout_id"] for r in batch.rows] == ["g1/0", "g1/1", "g2/0", "g2/1"]
    assert stats == {"duplicate_rollout": 1, "groups_ready": 2, "batches": 1}


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
    batches, stats, _ = run(Table(), cfg, events)
    assert stats == {"groups_ready": 2, "group_dropped:zero_variance": 1, "batches": 1}
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
    batches, stats, _ = run(Table(), cfg, events)
    [(offset, batch)] = batches
    assert offset == 6 and batch.group_ids == ["a"] and len(batch.rows) == 2
    assert stats["straggler:trained"] == 1 and stats["straggler:dropped"] == 1 and stats["late_rollout"] == 1


def _events(seed_groups: list[int]) -> list[dict]:
    events, ts = [], 0.0
    for i, n in enumerate(seed_groups):
        ts += 1.0
        if n == 0:
            events.append({"kind": "tick", "ts": ts})
        elif n == 1:
            events.append({"kind": "version", "version": i, "ts": ts})
        else:
            g = f"g{n % 7}"
            events.append(rollout(g, n % 3, float(n % 2), size=3, version=i, ts=ts))
    return events


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=5, max_size=60), st.data())
def test_crash_at_any_point_never_duplicates_or_loses_rows(seq, data):
    cfg = GroupConfig(
        train_batch_size=2,
        straggler_timeout_s=8,
        batch_timeout_s=3,
        min_group_size=1,
        filter_zero_variance=False,
        dedup_retention_s=20,
    )
    events = _events(seq) + [{"kind": "tick", "ts": 1000.0 + i} for i in range(3)]
    reference, _, _ = run(Table(), cfg, events)
    ref_rows = sorted(r["rollout_id"] for _, b in reference for r in b.rows)

    crash = data.draw(st.integers(0, len(events)), label="crash after event")
    committed = data.draw(st.integers(0, crash), label="committed offset")
    table = Table()
    first, _, writes = run(table, cfg, events[:crash])
    # the changelog kept every write of committed events and then any prefix of the rest
    flat = [w for ws in writes for w in ws]
    floor = sum(len(ws) for ws in writes[:committed])
    kept = data.draw(st.integers(floor, len(flat)), label="writes kept")
    recovered = Table()
    recovered.apply(flat[:kept])
    # batches of committed events were delivered; any subset of the later ones too
    delivered = [b for off, b in first if off < committed or data.draw(st.booleans())]
    second, _, _ = run(recovered, cfg, events, start=committed, committed=committed)
    delivered += [b for _, b in second]

    by_id: dict[str, list[str]] = {}
    for b in delivered:
        rows = [r["rollout_id"] for r in b.rows]
        assert by_id.setdefault(b.batch_id, rows) == rows, "same batch id, different rows"
    all_rows = sorted(r for rows in by_id.values() for r in rows)
    assert len(all_rows) == len(set(all_rows)), "a row in two batches"
    assert all_rows == ref_rows
