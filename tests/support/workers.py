"""A real rollout worker in the test process: ``RolloutWorker`` on its own event-loop thread.

Used wherever a test needs workers beside other stages (the consumers tests, the optimizer's).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from streamrl.config import Settings


class WorkerThread:
    """An in-process RolloutWorker on its own event loop thread."""

    def __init__(self, settings: Settings, agent: str) -> None:
        from streamrl.consumers.runner import load_agent
        from streamrl.consumers.worker import RolloutWorker

        self.worker = RolloutWorker(settings, load_agent(agent), worker_id=f"w-{uuid.uuid4().hex[:6]}")
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def go() -> None:
            self.stop_event = asyncio.Event()
            await self.worker.run(self.stop_event)

        try:
            self.loop.run_until_complete(go())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while self.stop_event is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def wait_assigned(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            c = self.worker.consumer
            if c is not None and len(c.assigned) >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"worker got fewer than {n} partitions in {timeout_s} s")

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()
