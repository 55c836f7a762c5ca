"""A circuit breaker over the inference service: a worker takes no samples while it is unhealthy.

States: *closed* (samples are taken) and *open* (none are; running rollouts go on and fail or finish
by themselves, and the sampler re-issues the failed ones without spending their retries).

- An attempt the inference service failed (``infrastructure``) counts one; one that got a 200
  answer resets the count. ``failures_to_open`` in a row open the breaker; a single one starts a
  health probe at once, and a failed probe opens it too (an outage is seen after one attempt,
  a transient 502 that a probe contradicts changes nothing).
- While open, the service is probed (``GET /health`` through the gateway) after ``probe_initial_s``,
  then at doubling intervals up to ``probe_max_s``; the first healthy answer closes the breaker and
  ``on_close`` lets the worker take samples again. The inference server answers ``/health`` only
  once it serves the newest checkpoint, so a closed breaker means the latest policy serves.

Runs on the worker's event loop (every method, from the loop thread).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from streamrl.consumers import metrics as m

log = logging.getLogger(__name__)

__all__ = ["InferenceBreaker"]

Probe = Callable[[], Awaitable[tuple[bool, str]]]


class InferenceBreaker:
    """Closed/open breaker fed by attempt outcomes and health probes.

    Args:
        probe: ``async () -> (healthy, detail)`` (the gateway client's probe).
        failures_to_open: infrastructure-failed attempts in a row that open it (>= 1).
        probe_initial_s: first probe interval once open, in seconds.
        probe_max_s: longest probe interval, in seconds.
        on_close: called (on the loop) when it closes again.
    """

    def __init__(
        self,
        probe: Probe,
        *,
        failures_to_open: int = 3,
        probe_initial_s: float = 0.5,
        probe_max_s: float = 1.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if failures_to_open < 1 or probe_initial_s <= 0 or probe_max_s < probe_initial_s:
            raise ValueError(
                "InferenceBreaker: need failures_to_open >= 1 and 0 < probe_initial_s <= probe_max_s; got "
                f"{failures_to_open}, {probe_initial_s}, {probe_max_s}"
            )
        self._probe = probe
        self.failures_to_open = failures_to_open
        self.probe_initial_s = probe_initial_s
        self.probe_max_s = probe_max_s
        self.on_close = on_close
        self.is_open = False
        self.consecutive = 0
        self.opened_at: float | None = None
        self.trips = 0
        self.probes = 0
        """Health probes made so far."""
        self.last_detail = ""
        self._task: asyncio.Task[None] | None = None
        self._checking: asyncio.Task[bool] | None = None
        m.INFERENCE_HEALTHY.set(1)

    # ------------------------------------------------------------------------------ inputs
    def record(self, infra_failed: bool, answered: bool) -> None:
        """One finished attempt: ``infra_failed`` = classified ``infrastructure`` because of the
        inference service; ``answered`` = at least one of its calls got a 200."""
        if infra_failed:
            self.consecutive += 1
            if self.consecutive >= self.failures_to_open:
                self.trip(f"{self.consecutive} attempt(s) in a row failed by the inference service")
            elif not self.is_open and (self._checking is None or self._checking.done()):
                self._checking = asyncio.ensure_future(self.check())
        elif answered:
            self.consecutive = 0

    async def check(self) -> bool:
        """Probe now; opens the breaker when the service is unhealthy. Returns whether it is healthy."""
        healthy, detail = await self._probe()
        self.probes += 1
        self.last_detail = detail
        if not healthy:
            self.trip(f"health probe failed: {detail}")
        return healthy

    def trip(self, reason: str) -> None:
        """Open (no-op when already open) and start probing."""
        if self.is_open:
            return
        self.is_open = True
        self.opened_at = time.monotonic()
        self.trips += 1
        m.INFERENCE_HEALTHY.set(0)
        m.BREAKER_TRIPS.inc()
        log.warning("inference service unhealthy (%s): taking no samples until it answers /health", reason)
        self._task = asyncio.ensure_future(self._probe_until_healthy())

    # ------------------------------------------------------------------------------ probing
    async def _probe_until_healthy(self) -> None:
        delay = self.probe_initial_s
        while self.is_open:
            await asyncio.sleep(delay)
            try:
                healthy, detail = await self._probe()
            except Exception as exc:  # a probe bug must not leave the worker stopped for good
                healthy, detail = False, repr(exc)
            self.probes += 1
            self.last_detail = detail
            if healthy:
                self._close()
                return
            delay = min(self.probe_max_s, delay * 2)

    def _close(self) -> None:
        down_s = time.monotonic() - (self.opened_at or time.monotonic())
        self.is_open = False
        self.consecutive = 0
        self.opened_at = None
        m.INFERENCE_HEALTHY.set(1)
        m.INFERENCE_UNHEALTHY_SECONDS.inc(down_s)
        log.warning("inference service healthy again after %.1f s: taking samples", down_s)
        if self.on_close is not None:
            self.on_close()

    async def aclose(self) -> None:
        """Stop probing (worker shutdown)."""
        for task in (self._task, self._checking):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
