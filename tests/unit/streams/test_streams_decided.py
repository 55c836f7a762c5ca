"""Decided markers: the compact memory of finished rollouts, one per (partition, group)."""

from __future__ import annotations

from streamrl.streams.decided import (
    add_decided,
    done_key,
    is_decided,
    is_done_key,
    marker_expired,
    member_id,
    pack_members,
    unpack_members,
)


def test_member_ids_are_short_for_the_samplers_rollout_ids_and_whole_otherwise():
    assert member_id("task-1/0", "task-1/0/7") == "/7"
    assert member_id("task-1/0", "task-1/07") == "task-1/07"  # not "<group>/<k>": the whole id
    assert member_id("g", "other") == "other"


def test_a_marker_records_members_idempotently_and_keeps_the_latest_decision_time():
    m = add_decided(None, 2, "g/0", "g/0/1", 10.0)
    m = add_decided(m, 2, "g/0", "g/0/1", 5.0)
    m = add_decided(m, 2, "g/0", "odd-id", 12.0)
    assert m == {"p": 2, "ts": 12.0, "r": "/1\nodd-id"}
    assert is_decided(m, "g/0", "g/0/1") and is_decided(m, "g/0", "odd-id")
    assert not is_decided(m, "g/0", "g/0/2") and not is_decided(None, "g/0", "g/0/1")
    assert is_done_key(done_key(2, "g/0")) and not is_done_key("g/0/1")
    assert unpack_members(m["r"]) == ["/1", "odd-id"] and unpack_members(pack_members([])) == []
    assert not marker_expired(m, 12.0 + 100, 100) and marker_expired(m, 12.0 + 100.5, 100)
