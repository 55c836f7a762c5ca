"""Faust's table recovery, with the stream buffers cleared before the stream partitions are resumed.

faust-streaming 0.15's ``Recovery.on_recovery_completed`` resumes the stream partitions (the fetcher is
already running), seeks them to their committed offsets, and then calls ``app.flow_control.resume()``,
which clears every stream buffer (``FlowControlQueue(clear_on_resume=True)``). Records fetched and
queued for an agent in between are thrown away although the consumer's read offset has passed them;
when the same records are fetched again from the committed offset, Faust drops them as already read
(``DROPPED MESSAGE ROFF`` in its dev log). After a restart with a backlog this lost calls and
trajectories for good (tests/integration/streams/test_streams_restart.py,
``test_an_outage_longer_than_the_join_timeout_dead_letters_nothing``, failed about one run in three
under load). Here the buffers are cleared first, while nothing of the new assignment is in them.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.tables import TableManager
from faust.tables.recovery import Recovery


class ClearFirstRecovery(Recovery):
    """:class:`faust.tables.recovery.Recovery` whose completion clears the stream buffers before it
    resumes the stream partitions (otherwise Faust's ``on_recovery_completed``, unchanged)."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(
                table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
            )
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(
                f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}"
            )
            return
        self.app.flow_control.resume()  # clears the stream buffers: before, not after, records arrive
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        self.completed.set()
        consumer.resume_flow()
        await cast(Any, self.app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")


class ClearFirstTableManager(TableManager):
    """Faust's table manager with :class:`ClearFirstRecovery` (the app's ``TableManager`` setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ClearFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
