"""OffsetTracker: commit only past acknowledged prefixes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrl.consumers.offsets import OffsetTracker

TP = ("samples", 0)


def test_commit_point_waits_for_the_oldest_unacked() -> None:
    t = OffsetTracker()
    t.assign(TP)
    assert t.committable() == {}
    for off in (10, 11, 12):
        t.add(TP, off)
    assert t.committable() == {TP: 10}  # nothing acked: commit point = first pending (not past it)
    t.mark_committed({TP: 10})
    assert t.committable() == {}
    assert t.ack(TP, 12)
    assert t.committable() == {}
    assert t.ack(TP, 10)
    assert t.committable() == {TP: 11}
    assert t.ack(TP, 11)
    assert t.committable() == {TP: 13}
    t.mark_committed({TP: 13})
    assert t.committable() == {} and t.in_flight(TP) == 0


def test_gaps_duplicates_revoke_and_order() -> None:
    t = OffsetTracker()
    t.assign(TP)
    t.add(TP, 5)
    t.add(TP, 9)  # gap (compaction / transaction markers)
    with pytest.raises(ValueError, match=r"samples\[0\]@7"):
        t.add(TP, 7)
    assert t.ack(TP, 9) and not t.ack(TP, 9)  # a second ack is ignored
    assert t.ack(TP, 5)
    assert t.committable() == {TP: 10}
    t.revoke(TP)
    assert not t.ack(TP, 10) and t.committable() == {} and not t.owns(TP)
    with pytest.raises(KeyError):
        t.add(TP, 11)


def test_only_restricts_partitions() -> None:
    t = OffsetTracker()
    a, b = ("s", 0), ("s", 1)
    for tp in (a, b):
        t.assign(tp)
        t.add(tp, 0)
        t.ack(tp, 0)
    assert t.committable({b}) == {b: 1}


@given(st.integers(min_value=1, max_value=60), st.randoms())
def test_commit_never_passes_an_unacked_offset(n: int, rnd: random.Random) -> None:
    t = OffsetTracker()
    t.assign(TP)
    offsets = sorted(rnd.sample(range(n * 3), n))
    for off in offsets:
        t.add(TP, off)
    acked: set[int] = set()
    for off in rnd.sample(offsets, len(offsets)):
        t.ack(TP, off)
        acked.add(off)
        point = t.committable().get(TP)
        if point is not None:
            assert all(o in acked for o in offsets if o < point)
            unacked = [o for o in offsets if o not in acked]
            assert point == (min(unacked) if unacked else offsets[-1] + 1)
