"""Open rollout attempts known to a gateway, and what their LLM calls produced.

The worker opens an attempt before it calls the agent and closes it when the agent returns; the
gateway rejects calls for attempts it does not know (HTTP 404). Each call takes the next
``sequence`` number when it arrives; its records' delivery futures are kept so the worker can wait
until every LLMRequest of the attempt is acknowledged before it produces the Trajectory.
All methods run on the event loop thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AttemptRegistry", "AttemptResult", "AttemptState", "request_id_for"]


def request_id_for(attempt_id: str, sequence: int, choice_index: int) -> str:
    """The id of one recorded choice: unique because ``attempt_id`` is (``<attempt>-<seq>-<choice>``)."""
    return f"{attempt_id}-{sequence}-{choice_index}"


@dataclass
class AttemptResult:
    """What an attempt's calls left behind, once every record is settled.

    Attributes:
        request_ids: ids of the recorded LLMRequests, ordered by (sequence, choice_index).
        completed_at: wall-clock completion time (s since epoch) of each call's first choice id,
            used to attach rewards to the last call made before them.
        errors: reasons records could not be made or delivered (empty when all is well).
    """

    request_ids: list[str]
    completed_at: dict[str, float]
    errors: list[str]


@dataclass
class AttemptState:
    """One open attempt (rollout_id, attempt_id) and its calls."""

    rollout_id: str
    attempt_id: str
    agent_name: str | None
    policy_version: int
    next_sequence: int = 0
    closed: bool = False
    ids_by_sequence: dict[int, list[str]] = field(default_factory=dict)
    completed_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    pending: set[asyncio.Future[None]] = field(default_factory=set)
    calls_in_progress: int = 0
    responses: dict[str, Any] = field(default_factory=dict)
    """Responses API objects of this attempt by id (``StoredResponse``), for ``previous_response_id``;
    they live as long as the attempt."""
    _idle: asyncio.Event | None = None

    def begin_call(self) -> int:
        """Reserve the next sequence number for a call that just arrived."""
        seq = self.next_sequence
        self.next_sequence += 1
        self.calls_in_progress += 1
        if self._idle is not None:
            self._idle.clear()
        return seq

    def end_call(self) -> None:
        """A call's handler is done (its records, if any, are queued in ``pending``)."""
        self.calls_in_progress -= 1
        if self.calls_in_progress == 0 and self._idle is not None:
            self._idle.set()

    def add_records(self, sequence: int, request_ids: list[str], futures: list[asyncio.Future[None]]) -> None:
        """Remember the records of one call and the futures of their deliveries."""
        self.ids_by_sequence[sequence] = request_ids
        for fut in futures:
            self.pending.add(fut)
            fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future[None]) -> None:
        self.pending.discard(fut)
        if fut.cancelled():
            self.errors.append("an LLMRequest delivery was cancelled")
        elif fut.exception() is not None:
            self.errors.append(f"LLMRequest not delivered: {fut.exception()}")

    def ordered_request_ids(self) -> list[str]:
        """Request ids ordered by (sequence, choice_index)."""
        return [rid for seq in sorted(self.ids_by_sequence) for rid in self.ids_by_sequence[seq]]

    async def settle(self, timeout_s: float) -> AttemptResult:
        """Wait (up to ``timeout_s`` seconds) for calls in progress and record deliveries.

        Calls still in flight after the timeout, and records not acknowledged, become ``errors``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self.calls_in_progress:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                self.errors.append(
                    f"{self.calls_in_progress} LLM call(s) still in progress {timeout_s:g} s after the rollout ended"
                )
        if self.pending:
            _, not_done = await asyncio.wait(set(self.pending), timeout=max(0.0, deadline - loop.time()))
            if not_done:
                self.errors.append(
                    f"{len(not_done)} LLMRequest record(s) not acknowledged within {timeout_s:g} s"
                )
        return AttemptResult(self.ordered_request_ids(), dict(self.completed_at), list(self.errors))


class AttemptRegistry:
    """The open attempts of one gateway, by ``(rollout_id, attempt_id)``."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], AttemptState] = {}

    def open(
        self, rollout_id: str, attempt_id: str, agent_name: str | None = None, policy_version: int = 0
    ) -> AttemptState:
        """Open an attempt; its calls are accepted from now on.

        Raises:
            ValueError: the attempt is already open (attempt ids must be fresh).
        """
        key = (rollout_id, attempt_id)
        if key in self._open:
            raise ValueError(f"attempt {attempt_id!r} of rollout {rollout_id!r} is already open")
        state = AttemptState(rollout_id, attempt_id, agent_name, policy_version)
        self._open[key] = state
        return state

    def get(self, rollout_id: str, attempt_id: str) -> AttemptState | None:
        """The open attempt, or None if unknown or closed."""
        return self._open.get((rollout_id, attempt_id))

    def close(self, rollout_id: str, attempt_id: str) -> AttemptState | None:
        """Close an attempt: later calls get 404. Returns its state (None if it was not open)."""
        state = self._open.pop((rollout_id, attempt_id), None)
        if state is not None:
            state.closed = True
        return state

    def __len__(self) -> int:
        return len(self._open)
