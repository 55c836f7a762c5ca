"""Which offsets of ``samples`` a worker may commit.

A worker runs many samples of one partition at once and they finish in any order. The offset it
commits for a partition is the smallest offset whose Trajectory is not yet acknowledged (or one past
the last offset it received when all are acknowledged), so a crash never skips a sample: every
sample at or after the committed offset is redelivered, every sample before it has a Trajectory.

Three threads touch the tracker (the consumer thread adds and commits, the producer's poll thread
acknowledges, the event loop reads counts), so every method takes one lock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

Partition = tuple[str, int]  # (topic, partition)


@dataclass
class _PartitionState:
    pending: deque[int] = field(default_factory=deque)  # received offsets, ascending, oldest first
    acked: set[int] = field(default_factory=set)  # acknowledged offsets still in `pending`
    next_offset: int | None = None  # one past the highest offset received
    committed: int | None = None  # the offset last committed (or known committed)


class OffsetTracker:
    """Per-partition watermark of acknowledged samples.

    Usage (offsets are Kafka offsets of one ``(topic, partition)``)::

        t.add(tp, 10); t.add(tp, 11)
        t.ack(tp, 11)          # 10 still running -> nothing committable
        t.ack(tp, 10)
        t.committable()        # {tp: 12}
        t.mark_committed({tp: 12})

    Offsets must be added in ascending order per partition (the order Kafka delivers them); gaps
    (compaction, transaction markers) are fine.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[Partition, _PartitionState] = {}

    def assign(self, tp: Partition) -> None:
        """Start tracking a partition (idempotent)."""
        with self._lock:
            self._parts.setdefault(tp, _PartitionState())

    def revoke(self, tp: Partition) -> None:
        """Stop tracking a partition; later acks for it are ignored (its new owner commits it)."""
        with self._lock:
            self._parts.pop(tp, None)

    def owns(self, tp: Partition) -> bool:
        """Whether the partition is tracked (assigned to this worker)."""
        with self._lock:
            return tp in self._parts

    def add(self, tp: Partition, offset: int) -> None:
        """Record that the sample at ``offset`` was received and is running.

        Raises:
            KeyError: the partition is not assigned.
            ValueError: ``offset`` is not above every offset received on this partition.
        """
        with self._lock:
            st = self._parts[tp]
            if st.next_offset is not None and offset < st.next_offset:
                raise ValueError(
                    f"{tp[0]}[{tp[1]}]@{offset}: offset received out of order (next expected >= {st.next_offset})"
                )
            st.pending.append(offset)
            st.next_offset = offset + 1

    def ack(self, tp: Partition, offset: int) -> bool:
        """Record that the Trajectory of ``offset`` is acknowledged.

        Returns:
            False when the partition is no longer assigned or the offset is unknown (ignored).
        """
        with self._lock:
            st = self._parts.get(tp)
            if st is None or offset in st.acked or not st.pending or offset < st.pending[0]:
                return False
            st.acked.add(offset)
            while st.pending and st.pending[0] in st.acked:
                st.acked.discard(st.pending.popleft())
            return True

    def in_flight(self, tp: Partition) -> int:
        """Samples of the partition received and not yet acknowledged."""
        with self._lock:
            st = self._parts.get(tp)
            return 0 if st is None else len(st.pending) - len(st.acked)

    def _commit_point(self, st: _PartitionState) -> int | None:
        if st.pending:
            return st.pending[0]
        return st.next_offset

    def committable(self, only: set[Partition] | None = None) -> dict[Partition, int]:
        """Offsets to commit now: per partition, the commit point if it moved past the last commit.

        Args:
            only: restrict to these partitions (e.g. the ones being revoked).
        """
        out: dict[Partition, int] = {}
        with self._lock:
            for tp, st in self._parts.items():
                if only is not None and tp not in only:
                    continue
                point = self._commit_point(st)
                if point is not None and (st.committed is None or point > st.committed):
                    out[tp] = point
        return out

    def mark_committed(self, offsets: dict[Partition, int]) -> None:
        """Remember offsets the broker accepted, so they are not committed again."""
        with self._lock:
            for tp, off in offsets.items():
                st = self._parts.get(tp)
                if st is not None and (st.committed is None or off > st.committed):
                    st.committed = off

    def partitions(self) -> list[Partition]:
        """The tracked partitions."""
        with self._lock:
            return list(self._parts)
