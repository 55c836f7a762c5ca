"""The join state machine: completion, duplicates, attempts, timeouts, replay after a crash."""

from __future__ import annotations

from streamrl.streams.join import JoinConfig, on_call, on_tick, on_trajectory
from streamrl.streams.rows import RowConfig

CFG = JoinConfig(rows=RowConfig(), join_timeout_s=10.0, orphan_call_timeout_s=100.0, dedup_retention_s=1000.0)
REQ, TRJ = "p.requests", "p.trajectories"


def _never(_topic: str, _partition: int) -> None:
    return None


def test_completes_when_trajectory_and_all_listed_calls_arrived(b):
    res = on_trajectory(
        None, b.traj("ro", ["c1", "c2"], ts=5.0), topic=TRJ, partition=0, offset=0, now=6.0, cfg=CFG
    )
    assert res.changed and not res.forwards
    res = on_call(res.state, b.call("c1", [1], [2]), topic=REQ, partition=0, offset=0, now=6.0, cfg=CFG)
    assert not res.forwards
    res = on_call(res.state, b.call("c2", [1, 2, 3], [4]), topic=REQ, partition=0, offset=1, now=7.5, cfg=CFG)
    [out] = res.forwards
    assert out["rollout_id"] == "ro" and out["group_id"] == "t1/0" and len(out["rows"]) == 2
    assert res.join_latency_s == [2.5]
    assert res.state["done"]["by"] == [REQ, 1] and res.state["calls"] == {}


def test_a_completed_val_rollout_drops_its_calls_and_forwards_nothing(b):
    """Validation scores val trajectories straight from ``trajectories`` (streams/validation.py)."""
    s = on_call(None, b.call("c1", [1], [2]), topic=REQ, partition=0, offset=0, now=1, cfg=CFG).state
    res = on_trajectory(s, b.traj("vo", ["c1"], mode="val"), topic=TRJ, partition=0, offset=0, now=2, cfg=CFG)
    assert not res.forwards and res.stats["completed:val"] == 1
    assert res.state["calls"] == {} and res.state["done"]["out"] is None
    replay = on_trajectory(
        res.state, b.traj("vo", ["c1"], mode="val"), topic=TRJ, partition=0, offset=0, now=3, cfg=CFG
    )
    assert not replay.forwards  # nothing to re-send on a replay either


def test_duplicates_and_later_attempts_are_counted_and_ignored(b):
    s = on_call(None, b.call("c1", [1], [2]), topic=REQ, partition=0, offset=0, now=1, cfg=CFG).state
    res = on_call(s, b.call("c1", [1], [2]), topic=REQ, partition=0, offset=1, now=1, cfg=CFG)
    assert res.stats == {"duplicate:call": 1}
    res = on_trajectory(res.state, b.traj("ro", ["c1"]), topic=TRJ, partition=0, offset=0, now=1, cfg=CFG)
    assert len(res.forwards) == 1
    res = on_call(
        res.state, b.call("c9", [1], [3], attempt="a2"), topic=REQ, partition=0, offset=2, now=2, cfg=CFG
    )
    res = on_trajectory(
        res.state, b.traj("ro", ["c9"], attempt="a2"), topic=TRJ, partition=0, offset=1, now=2, cfg=CFG
    )
    assert not res.forwards and res.stats == {"duplicate:trajectory": 1}


def test_first_completed_attempt_wins_and_other_calls_are_abandoned(b):
    s = on_trajectory(
        None, b.traj("ro", ["x1", "x2"], attempt="x"), topic=TRJ, partition=0, offset=0, now=1, cfg=CFG
    ).state
    s = on_call(
        s, b.call("x1", [1], [2], attempt="x"), topic=REQ, partition=0, offset=0, now=1, cfg=CFG
    ).state
    s = on_call(
        s, b.call("y1", [1], [5], attempt="y"), topic=REQ, partition=0, offset=1, now=1, cfg=CFG
    ).state
    res = on_trajectory(
        s, b.traj("ro", ["y1"], attempt="y"), topic=TRJ, partition=0, offset=1, now=1, cfg=CFG
    )
    [out] = res.forwards
    assert out["attempt_id"] == "y" and out["rows"][0]["response_ids"] == [5]
    assert res.stats["abandoned_calls"] == 1


def test_failed_attempt_is_dropped_and_its_late_calls_too(b):
    res = on_trajectory(
        None,
        b.traj("ro", ["x1"], attempt="x", status="failed"),
        topic=TRJ,
        partition=0,
        offset=0,
        now=1,
        cfg=CFG,
    )
    assert res.stats == {"failed_attempt:failed": 1} and not res.forwards
    res = on_call(
        res.state, b.call("x1", [1], [2], attempt="x"), topic=REQ, partition=0, offset=0, now=1, cfg=CFG
    )
    assert res.stats == {"abandoned_calls": 1} and res.state["calls"] == {}


def _half_joined(b, now: float) -> dict:
    """Join state read at ``now``: trajectory ``ro`` (attempt a1) with calls c1 and c2, of which only
    c1 came, and an orphan call z1 (attempt z) without a trajectory; every record stamped 100.0."""
    s = on_trajectory(
        None, b.traj("ro", ["c1", "c2"], ts=100.0), topic=TRJ, partition=0, offset=0, now=now, cfg=CFG
    ).state
    s = on_call(s, b.call("c1", [1], [2], ts=100.0), topic=REQ, partition=0, offset=0, now=now, cfg=CFG).state
    return on_call(
        s, b.call("z1", [1], [2], attempt="z", ts=100.0), topic=REQ, partition=0, offset=1, now=now, cfg=CFG
    ).state


def test_join_timeout_dead_letters_the_attempt_and_orphans_expire(b):
    s = _half_joined(b, now=100)
    res = on_tick(s, tick_ts=105.0, partition=0, committed=_never, cfg=CFG)
    assert not res.dead and not res.changed
    res = on_tick(s, tick_ts=111.0, partition=0, committed=_never, cfg=CFG)
    [(traj, reason)] = res.dead
    assert traj["attempt_id"] == "a1" and "1 of 2 calls missing" in reason and "c2" in reason
    assert res.stats == {"incomplete_join": 1, "abandoned_calls": 1}
    res = on_tick(res.state, tick_ts=201.0, partition=0, committed=_never, cfg=CFG)
    assert res.stats == {"abandoned_calls": 1} and res.state["calls"] == {}


def test_nothing_expires_while_its_partition_has_an_unread_backlog(b):
    # streams was down longer than the timeouts: the trajectory is read, its calls are still behind
    # in the unread backlog of requests (and an orphan call's trajectory in that of trajectories)
    s = _half_joined(b, now=500)
    res = on_tick(
        s, tick_ts=500.0, partition=0, committed=_never, cfg=CFG, requests_read=False, trajectories_read=False
    )
    assert not res.dead and not res.changed and res.stats == {}
    res = on_tick(s, tick_ts=500.0, partition=0, committed=_never, cfg=CFG, trajectories_read=False)
    assert len(res.dead) == 1 and res.stats == {"incomplete_join": 1, "abandoned_calls": 1}
    assert list(res.state["calls"]) == ["z1"]  # the orphan waits for the backlog of trajectories
    res = on_tick(res.state, tick_ts=500.0, partition=0, committed=_never, cfg=CFG)
    assert res.stats == {"abandoned_calls": 1} and res.state["calls"] == {}


def test_replay_after_crash_reforwards_until_committed(b):
    s = on_call(None, b.call("c1", [1], [2]), topic=REQ, partition=3, offset=7, now=1, cfg=CFG).state
    done = on_trajectory(s, b.traj("ro", ["c1"]), topic=TRJ, partition=3, offset=4, now=1, cfg=CFG)
    # the recovered state already includes both records; the input is replayed from older offsets
    res = on_call(done.state, b.call("c1", [1], [2]), topic=REQ, partition=3, offset=7, now=2, cfg=CFG)
    assert not res.changed and not res.forwards and not res.stats  # replayed, not a duplicate
    res = on_trajectory(done.state, b.traj("ro", ["c1"]), topic=TRJ, partition=3, offset=4, now=2, cfg=CFG)
    assert res.forwards == done.forwards and not res.changed
    # once the completing offset is committed, the kept forward is dropped; the marker stays
    res = on_tick(
        done.state, tick_ts=10, partition=3, committed=lambda t, p: 5 if (t, p) == (TRJ, 3) else None, cfg=CFG
    )
    assert res.changed and res.state["done"]["out"] is None
    res = on_tick(res.state, tick_ts=2000, partition=3, committed=_never, cfg=CFG)
    assert res.changed and res.state is None


TCK = "p.ticks"


def test_join_timeout_tells_the_group_stage_the_rollout_is_lost_and_a_replay_tells_it_again(b):
    s = on_trajectory(
        None, b.traj("ro", ["c1"], ts=100.0), topic=TRJ, partition=2, offset=0, now=100, cfg=CFG
    )
    expired = on_tick(s.state, tick_ts=111.0, partition=2, committed=_never, cfg=CFG, topic=TCK, offset=9)
    [lost] = expired.forwards
    assert lost == {
        "kind": "lost",
        "rollout_id": "ro",
        "group_id": "t1/0",
        "group_size": 2,
        "reason": "incomplete_join",
        "last_ts": 111.0,
    }
    # the recovered state already has the expiry; the tick is replayed: the lost event is sent again
    again = on_tick(expired.state, tick_ts=111.0, partition=2, committed=_never, cfg=CFG, topic=TCK, offset=9)
    assert again.forwards == [lost] and not again.dead and not again.changed
    # a later tick does nothing more; once the tick's offset is committed the kept forward goes
    later = on_tick(
        expired.state, tick_ts=112.0, partition=2, committed=_never, cfg=CFG, topic=TCK, offset=10
    )
    assert not later.forwards and not later.changed
    pruned = on_tick(
        expired.state, tick_ts=113.0, partition=2, committed=lambda t, p: 10 if t == TCK else None, cfg=CFG,
        topic=TCK, offset=11,
    )  # fmt: skip
    assert pruned.changed and pruned.state["lost"] == [] and not pruned.forwards


def test_no_lost_event_while_another_attempt_may_complete_nor_for_val(b):
    s = on_trajectory(
        None, b.traj("ro", ["c1"], ts=100.0), topic=TRJ, partition=0, offset=0, now=100, cfg=CFG
    )
    s = on_trajectory(
        s.state,
        b.traj("ro", ["c9"], attempt="a2", ts=105.0),
        topic=TRJ,
        partition=0,
        offset=1,
        now=105,
        cfg=CFG,
    )
    res = on_tick(s.state, tick_ts=111.0, partition=0, committed=_never, cfg=CFG, topic=TCK, offset=0)
    assert len(res.dead) == 1 and not res.forwards  # attempt a2 may still complete
    res = on_tick(res.state, tick_ts=116.0, partition=0, committed=_never, cfg=CFG, topic=TCK, offset=1)
    assert len(res.dead) == 1 and [f["kind"] for f in res.forwards] == ["lost"]
    v = on_trajectory(
        None, b.traj("vo", ["c1"], mode="val", ts=100.0), topic=TRJ, partition=0, offset=2, now=100, cfg=CFG
    )
    res = on_tick(v.state, tick_ts=111.0, partition=0, committed=_never, cfg=CFG, topic=TCK, offset=2)
    assert len(res.dead) == 1 and not res.forwards  # validation rollouts have no group outcome


def test_a_finished_rollout_shrinks_to_its_group_marker_once_every_offset_is_committed(b):
    s = on_call(None, b.call("c1", [1], [2]), topic=REQ, partition=1, offset=7, now=1, cfg=CFG).state
    done = on_trajectory(s, b.traj("t1/0/3", ["c1"]), topic=TRJ, partition=1, offset=4, now=2, cfg=CFG)
    # the forward is delivered (trajectories committed) but the call's offset is not: a replay of
    # it must still be recognised, so the full state stays
    only_trj = on_tick(
        done.state, tick_ts=3, partition=1, committed=lambda t, p: 5 if t == TRJ else 7, cfg=CFG
    )
    assert only_trj.state is not None and only_trj.decided is None
    assert only_trj.state["done"]["out"] is None
    res = on_tick(only_trj.state, tick_ts=4, partition=1, committed=lambda t, p: {TRJ: 5, REQ: 8}[t], cfg=CFG)
    assert res.changed and res.state is None and res.decided == ("t1/0", "t1/0/3", 2)


def test_a_trajectory_of_a_decided_rollout_is_a_duplicate_and_takes_its_calls_with_it(b):
    # the rollout finished and was forgotten but for its marker; a redelivered attempt's call
    # arrives first (calls carry no group id), then its trajectory
    s = on_call(None, b.call("c9", [1], [2], attempt="a2"), topic=REQ, partition=0, offset=9, now=1, cfg=CFG)
    assert s.state["calls"]  # held: nothing tells a call's rollout is decided
    res = on_trajectory(
        s.state,
        b.traj("ro", ["c9"], attempt="a2"),
        topic=TRJ,
        partition=0,
        offset=5,
        now=2,
        cfg=CFG,
        decided=True,
    )
    assert not res.forwards and res.state is None and res.changed
    assert res.stats == {"duplicate:trajectory": 1, "duplicate:call": 1}
    # a call whose rollout id names its group (<group>/<k>) is looked up too: counted, not kept
    res = on_call(
        None,
        b.call("c8", [1], [2], attempt="a3"),
        topic=REQ,
        partition=0,
        offset=10,
        now=3,
        cfg=CFG,
        decided=True,
    )
    assert not res.changed and res.state is None and res.stats == {"duplicate:call": 1}
    # without any state (the worker re-sent the trajectory): counted, nothing stored
    res = on_trajectory(
        None, b.traj("ro", ["c9"]), topic=TRJ, partition=0, offset=6, now=2, cfg=CFG, decided=True
    )
    assert not res.forwards and not res.changed and res.stats == {"duplicate:trajectory": 1}
