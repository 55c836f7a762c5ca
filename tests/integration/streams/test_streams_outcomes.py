"""Group outcomes from the real worker process: every train rollout that succeeded is decided once
(batched with its batch id, or dropped with the reason), late members included."""

from __future__ import annotations

import pytest

from tests.support.records import outcome_decisions

pytestmark = pytest.mark.integration


def _decided(outcomes) -> set[str]:
    return {rid for o in outcomes for rid in o.rollout_ids}


def test_every_rollout_gets_one_outcome(
    streams_config, worker_factory, feed, batch_reader, outcome_reader, wait_processed
):
    cfg = streams_config(
        streams={
            "filter_zero_variance": True,
            "min_group_size": 2,
            "straggler_timeout_s": 3.0,
            "join_timeout_s": 1.0,
            "batch_timeout_s": 1.0,
            "train_agents": ["solver"],
        },
        rl={"group_size": 3, "train_batch_size": 2},
    )
    worker_factory(cfg)
    for k, reward in enumerate((1.0, 0.0, 0.5)):  # batched
        feed.rollout("ok/0", k, reward, group_size=3)
    for k in range(3):  # all rewards equal
        feed.rollout("zero/0", k, 1.0, group_size=3)
    feed.rollout("strag/0", 0, 1.0, group_size=3)  # alone at the straggler timeout: dropped
    # one member's join never completes (a call it lists is never recorded), one has no trainable
    # call (agent not in train_agents), one trains: the group closes without waiting, with one row
    feed.rollout("mixed/0", 0, 1.0, group_size=3)
    feed.call("mixed/0/1", "mixed/0/1/c0", [1, 2], [3, 4], agent="helper")
    feed.traj("mixed/0/1", "mixed/0", ["mixed/0/1/c0"], 0.0, group_size=3, k=1)
    feed.traj("mixed/0/2", "mixed/0", ["never-recorded"], 0.5, group_size=3, k=2)
    # a group closed by the straggler timeout with two rollouts; its third arrives later
    feed.rollout("late/0", 0, 1.0, group_size=3)
    feed.rollout("late/0", 1, 0.0, group_size=3)
    feed.flush()
    outcome_reader.read_until(lambda outs: {"late/0/0", "strag/0/0", "mixed/0/2"} <= _decided(outs))
    feed.rollout("late/0", 2, 0.5, group_size=3)
    feed.flush()
    outcome_reader.read_until(lambda outs: "late/0/2" in _decided(outs))
    wait_processed()  # every record so far processed: nothing more is on its way
    decisions = outcome_decisions(outcome_reader.read_to_end())
    batches = {b.batch_id: b for b in batch_reader.read_to_end()}
    batched = {rid: bid for rid, (status, _, bid) in decisions.items() if status == "batched"}
    assert sorted(batched) == ["late/0/0", "late/0/1", "mixed/0/0", "ok/0/0", "ok/0/1", "ok/0/2"]
    for rid, bid in batched.items():  # each batched outcome names the batch that holds its rows
        assert rid in {r.rollout_id for r in batches[bid].rows or []}
    assert {rid: d[:2] for rid, d in decisions.items() if d[0] == "dropped"} == {
        "zero/0/0": ("dropped", "zero_variance"),
        "zero/0/1": ("dropped", "zero_variance"),
        "zero/0/2": ("dropped", "zero_variance"),
        "strag/0/0": ("dropped", "straggler"),
        "mixed/0/1": ("dropped", "no_rows"),
        "mixed/0/2": ("dropped", "incomplete_join"),
        "late/0/2": ("dropped", "late"),
    }
