"""Dynamic batching: one thread that collects queued requests for a short wait and runs them together.

A request (all ``n`` of its choices) always runs in one batch, so every choice reports the same
policy version. A batch holds at most ``max_batch_size`` sequences, except that a single request
with more choices runs alone. New weights are swapped in only between batches: requests in a batch
finish on the weights they started with and report that version; while idle, a staged checkpoint is
swapped in within ~0.1 s, so `/health` reports the new version without waiting for a request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from streamrl.inference.engine import Engine, Sequence
from streamrl.inference.errors import OverloadedError
from streamrl.inference.metrics import InferenceMetrics

log = logging.getLogger(__name__)


class Batcher:
    """Queue plus the generation thread.

    Args:
        engine: the engine that runs batches.
        metrics: where batch sizes, queue times, tokens and the version are recorded.
        max_batch_size: most sequences per batch.
        max_batch_wait_ms: after the first request arrives, wait at most this long for more.
        max_queue: most sequences waiting; :meth:`submit` raises :class:`OverloadedError` beyond it.
    """

    def __init__(
        self,
        engine: Engine,
        metrics: InferenceMetrics,
        *,
        max_batch_size: int = 32,
        max_batch_wait_ms: float = 5.0,
        max_queue: int = 4096,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queue: queue.Queue[list[Sequence]] = queue.Queue()
        self._queued = 0
        self._carry: list[Sequence] | None = None
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches_run = 0

    def start(self) -> None:
        """Start the generation thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="inference-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the running batch; queued requests are finished with ``abort``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        leftover = [self._carry] if self._carry is not None else []
        self._carry = None
        while True:
            try:
                leftover.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for group in leftover:
            for s in group:
                s.finish_reason = "abort"
                s._emit("finish", "abort")

    def submit(self, group: list[Sequence]) -> None:
        """Queue the choices of one request (thread-safe).

        Raises:
            OverloadedError: more than ``max_queue`` sequences are already waiting.
        """
        with self._count_lock:
            if self._queued + len(group) > self.max_queue:
                raise OverloadedError(
                    f"inference queue is full ({self._queued} sequences waiting, max_queue={self.max_queue})"
                )
            self._queued += len(group)
        self._queue.put(group)

    def _take(self, timeout_s: float) -> list[Sequence] | None:
        if self._carry is not None:
            group, self._carry = self._carry, None
            return group
        try:
            group = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        with self._count_lock:
            self._queued -= len(group)
        return group

    def _collect(self) -> list[Sequence]:
        """Block until a request arrives, then gather more for up to ``max_batch_wait_ms``."""
        first = None
        while first is None and not self._stop.is_set():
            first = self._take(0.1)
            if first is None:
                self._swap()  # idle, no batch running: a staged checkpoint takes over now, not at the next request
        if first is None:
            return []
        batch = list(first)
        deadline = time.monotonic() + self.max_batch_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            # Past the wait, still take what is already queued (timeout 0): it costs no latency.
            group = self._take(max(remaining, 0.0))
            if group is None:
                break
            if len(batch) + len(group) > self.max_batch_size:
                self._carry = group
                break
            batch.extend(group)
        return batch

    def _swap(self) -> None:
        """Serve a staged checkpoint from now on (called only between batches, on this thread)."""
        old = self.engine.swap_if_staged()
        if old is not None:
            log.info("policy version %d -> %d now serving", old.version, self.engine.version)
        self.metrics.version.set(self.engine.version)

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            self._swap()
            started = time.monotonic()
            for s in batch:
                self.metrics.queue_seconds.observe(started - s.enqueued_at)
            self.metrics.batch_size.observe(len(batch))
            try:
                generated = self.engine.run_batch(batch)
            except Exception as exc:  # a failed batch must not kill the server: fail its requests
                log.exception("batch of %d sequences failed", len(batch))
                self.metrics.batch_errors.inc()
                for s in batch:
                    if s.finish_reason is None:
                        s.finish_reason = "error"
                        s._emit("error", exc)
                continue
            dt = time.monotonic() - started
            self.batches_run += 1
            self.metrics.generated_tokens.inc(generated)
            if dt > 0:
                self.metrics.tokens_per_s.set(generated / dt)
