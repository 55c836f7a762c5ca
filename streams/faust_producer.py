"""Faust's producer buffer, with a flush that waits until every buffered message is handed to the driver.

Table changelog writes do not go straight to Kafka: ``Table.__setitem__`` is synchronous, so Faust puts
each write in the producer's ``ProducerBuffer`` and a background task hands them one by one to the
driver (``publish_message``, which appends to aiokafka's batch accumulator). Before every offset commit
Faust calls ``producer.flush()``: the buffer's flush, then aiokafka's, which waits only for what its
accumulator holds. faust-streaming 0.15's ``ProducerBuffer.flush`` returns too early in two cases:

* the message being handed over (taken off the queue, its ``publish_message`` not done) is not
  counted, so with the queue empty flush returns at once and that write is not in the accumulator
  when aiokafka flushes;
* when no message is handed over within 0.1 s, flush returns with the rest still queued.

Either way the commit can go ahead of changelog writes of the input it commits: a process killed
right after it recovers a table state older than its committed offsets, and the input in between is
never applied again. In the groups stage that re-opened a group that had already been batched, and
its rollouts were batched a second time (``tests/integration/streams/test_streams_restart.py``,
``test_sigkill_mid_stream_every_row_exactly_once``, failed once in a CI run; a probe in the worker
saw 2 commits in 285 whose flush returned before a write put earlier was handed over, in 4 runs of the
restart tests beside two busy loops). :class:`DrainingProducerBuffer` counts the messages put and handed over, and its flush
waits until every message put before it is handed over.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.producer import ProducerBuffer
from faust.types import ProducerT
from faust.types.tuples import FutureMessage

POLL_S = 0.1
"""How often a waiting flush looks again when no hand-over signalled (seconds)."""


class DrainingProducerBuffer(ProducerBuffer):
    """A :class:`faust.transport.producer.ProducerBuffer` whose :meth:`flush` returns only when every
    message put before it is in the driver's hands (aiokafka's accumulator, which the producer's flush
    then waits on). ``flush_atmost`` (Faust's back-pressure, ``wait_until_ebb``) is unchanged."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.queued_total = 0
        """Messages put, all time."""
        self.handed_total = 0
        """Messages handed to the driver, all time (in the order they were put: one queue, one task)."""

    def put(self, fut: FutureMessage) -> None:
        super().put(fut)
        self.queued_total += 1

    async def _send_pending(self, fut: FutureMessage) -> None:
        await super()._send_pending(fut)
        self.handed_total += 1

    async def flush(self) -> None:
        """Wait until every message put before this call is handed to the driver.

        Messages put while it waits (the agents keep processing during a commit) are not waited for:
        they belong to input the commit does not cover, and waiting for an empty queue could put a
        commit off for as long as the input keeps coming.

        Raises:
            RuntimeError: the buffer stopped (or crashed) before handing them over: they will not be
                sent.
        """
        target = self.queued_total
        while self.handed_total < target:
            if self.state != "running":
                raise RuntimeError(
                    f"cannot flush: the producer buffer is {self.state} with "
                    f"{target - self.handed_total} message(s) not handed over"
                )
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=POLL_S)
            except asyncio.TimeoutError:
                pass  # look again: a hand-over may be slow (metadata, a full accumulator)


class DrainingApp(faust.App):
    """:class:`faust.App` whose producer uses :class:`DrainingProducerBuffer` (the buffer is swapped
    right after Faust builds the producer, before it starts; a threaded producer keeps Faust's)."""

    def _new_producer(self) -> ProducerT:
        producer = super()._new_producer()
        if not self.conf.producer_threaded:
            p: Any = producer
            buffer = DrainingProducerBuffer(loop=p.loop, beacon=p.beacon)
            buffer.app = p.app
            p.buffer = buffer
        return producer
