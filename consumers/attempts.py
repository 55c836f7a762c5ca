"""Open rollout attempts known to a gateway, and what their LLM calls produced.

The worker opens an attempt before it calls the agent and closes it when the agent returns; the
gateway rejects calls for attempts it does not know (HTTP 404). Each attempt gets an unguessable
token (``secrets.token_urlsafe``, 256 bits) that the agent sends as its API key; a call without it
(another attempt's token included) is HTTP 401. Each call takes the next
``sequence`` number when it arrives; its records' delivery futures are kept so the worker can wait
until every LLMRequest of the attempt is acknowledged before it produces the Trajectory.
All methods run on the event loop thread.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "INFRASTRUCTURE",
    "REQUEST",
    "AttemptRegistry",
    "AttemptResult",
    "AttemptState",
    "request_id_for",
    "upstream_failure_kind",
]


def request_id_for(attempt_id: str, sequence: int, choice_index: int) -> str:
    """The id of one recorded choice: unique because ``attempt_id`` is (``<attempt>-<seq>-<choice>``)."""
    return f"{attempt_id}-{sequence}-{choice_index}"


INFRASTRUCTURE = "infrastructure"
"""A call the inference service failed for reasons outside the request (``FailureKind`` value)."""
REQUEST = "request"
"""A call the inference service refused deterministically (``FailureKind`` value)."""


def upstream_failure_kind(status: int) -> str:
    """Whose failure an HTTP error answer of the inference service is.

    5xx, 408 (request timeout) and 429 (too many requests) are the service's state: ``infrastructure``
    (retrying later may succeed). Any other 4xx refuses the request itself (a prompt longer than the
    context, a bad parameter): ``request`` (retrying the same call fails the same way).
    """
    return INFRASTRUCTURE if status >= 500 or status in (408, 429) else REQUEST


@dataclass
class AttemptResult:
    """What an attempt's calls left behind, once every record is settled.

    Attributes:
        request_ids: ids of the recorded LLMRequests, ordered by (sequence, choice_index).
        completed_at: wall-clock completion time (s since epoch) of each call's first choice id,
            used to attach rewards to the last call made before them.
        errors: reasons records could not be made or delivered (empty when all is well): the
            Trajectory must not name calls streams cannot find, so the attempt fails (infrastructure).
        calls_ok: calls the inference service answered with HTTP 200.
        infra_failures: calls it failed for infrastructure reasons (unreachable, 5xx, 408/429,
            timeout, a broken stream), recovered or not.
        unrecovered: ``(kind, detail)`` of the last failed call when no call of the attempt succeeded
            after it (``kind`` ``infrastructure`` or ``request``); None when the last call succeeded.
        in_progress: calls still running when the attempt was closed and settled (the agent returned
            or timed out without waiting for them); ``in_progress_error`` says so.
    """

    request_ids: list[str]
    completed_at: dict[str, float]
    errors: list[str]
    calls_ok: int = 0
    infra_failures: int = 0
    unrecovered: tuple[str, str] | None = None
    in_progress: int = 0
    in_progress_error: str | None = None


@dataclass
class AttemptState:
    """One open attempt (rollout_id, attempt_id) and its calls."""

    rollout_id: str
    attempt_id: str
    agent_name: str | None
    policy_version: int
    token: str = field(default="", repr=False)
    """The attempt's API key (``llm.api_key``): calls must carry it (``Authorization: Bearer`` or
    ``x-api-key``)."""
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
    calls_ok: int = 0
    infra_failures: int = 0
    unrecovered: tuple[str, str] | None = None
    _idle: asyncio.Event | None = None

    def upstream_ok(self) -> None:
        """The inference service answered a call of this attempt (HTTP 200)."""
        self.calls_ok += 1
        self.unrecovered = None

    def upstream_failed(self, kind: str, detail: str) -> None:
        """The inference service failed a call of this attempt: ``kind`` is ``infrastructure`` or
        ``request`` (:func:`upstream_failure_kind`), ``detail`` what the agent was told."""
        if kind == INFRASTRUCTURE:
            self.infra_failures += 1
        self.unrecovered = (kind, detail[:1000])

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
        in_progress_error = None
        if self.calls_in_progress:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                in_progress_error = f"{self.calls_in_progress} LLM call(s) still in progress {timeout_s:g} s after the rollout ended"
        if self.pending:
            _, not_done = await asyncio.wait(set(self.pending), timeout=max(0.0, deadline - loop.time()))
            if not_done:
                self.errors.append(
                    f"{len(not_done)} LLMRequest record(s) not acknowledged within {timeout_s:g} s"
                )
        return AttemptResult(
            self.ordered_request_ids(),
            dict(self.completed_at),
            list(self.errors),
            calls_ok=self.calls_ok,
            infra_failures=self.infra_failures,
            unrecovered=self.unrecovered,
            in_progress=self.calls_in_progress,
            in_progress_error=in_progress_error,
        )


class AttemptRegistry:
    """The open attempts of one gateway, by ``(rollout_id, attempt_id)``."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], AttemptState] = {}

    def open(
        self, rollout_id: str, attempt_id: str, agent_name: str | None = None, policy_version: int = 0
    ) -> AttemptState:
        """Open an attempt; its calls are accepted from now on, with its ``token`` as the API key.

        Raises:
            ValueError: the attempt is already open (attempt ids must be fresh).
        """
        key = (rollout_id, attempt_id)
        if key in self._open:
            raise ValueError(f"attempt {attempt_id!r} of rollout {rollout_id!r} is already open")
        state = AttemptState(rollout_id, attempt_id, agent_name, policy_version, secrets.token_urlsafe(32))
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
