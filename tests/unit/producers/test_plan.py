"""Epoch order and cursor: seeded, per-epoch, stable under task additions, resumable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamrl.producers.plan import EpochCursor, epoch_order, train_rollout_id, val_rollout_id


def test_ids_follow_the_contract() -> None:
    assert train_rollout_id("t1", 2, 3) == "t1/2/3"
    assert val_rollout_id(5, "t1", 0) == "val/5/t1/0"


def test_order_is_seeded_per_epoch_and_deterministic() -> None:
    ids = [f"t{i}" for i in range(50)]
    a0, a1 = epoch_order(ids, 0, seed=1), epoch_order(ids, 1, seed=1)
    assert sorted(a0) == sorted(ids) and a0 != a1
    assert epoch_order(reversed(ids), 0, seed=1) == a0
    assert epoch_order(ids, 0, seed=2) != a0
    assert epoch_order(ids, 0, seed=1, shuffle=False) == sorted(ids)


@given(st.sets(st.text(min_size=1, max_size=8), min_size=2, max_size=40), st.integers(0, 5))
def test_adding_a_task_keeps_the_relative_order_of_the_others(ids: set[str], epoch: int) -> None:
    base = epoch_order(ids, epoch, seed=7)
    extra = epoch_order([*ids, "new-task-xyz"], epoch, seed=7)
    assert [t for t in extra if t != "new-task-xyz"] == base


def test_cursor_walks_groups_and_skips_what_was_emitted() -> None:
    c = EpochCursor(epoch=0, order=["a", "b"], group_size=3, emitted={("a", 1), ("b", 0)})
    got = []
    while (nxt := c.peek()) is not None:
        got.append(nxt)
        c.mark(*nxt)
    assert got == [("a", 0), ("a", 2), ("b", 1), ("b", 2)]
    assert c.done and c.position == 2


@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_resumed_cursor_emits_exactly_the_missing_samples(
    n_tasks: int, group_size: int, data: st.DataObject
) -> None:
    order = [f"t{i}" for i in range(n_tasks)]
    everything = [(t, k) for t in order for k in range(group_size)]
    cut = data.draw(st.integers(0, len(everything)))
    c = EpochCursor(0, list(order), group_size, emitted=set(everything[:cut]))
    assert list(c.remaining()) == everything[cut:]
    rest = []
    while (nxt := c.peek()) is not None:
        rest.append(nxt)
        c.mark(*nxt)
    assert rest == everything[cut:]


def test_drop_removes_a_deleted_task_ahead_of_the_cursor() -> None:
    c = EpochCursor(0, ["a", "b", "c"], 1)
    c.drop("c")
    out = []
    while (nxt := c.peek()) is not None:
        out.append(nxt)
        c.mark(*nxt)
    assert out == [("a", 0), ("b", 0)]
