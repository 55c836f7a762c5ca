"""Threads for synchronous agents, where a hung agent is abandoned instead of holding a slot forever.

Python cannot stop a thread. A sync agent that never returns would keep its pool thread for good:
once every thread is stuck, healthy samples queue behind them, time out without running and are
dead-lettered, and the interpreter waits for the stuck threads at exit (SIGTERM ignored). So:

- The pool keeps ``size`` live threads. When a rollout on it times out (or is cancelled at
  shutdown) while its agent still runs, :meth:`SyncAgentPool.abandon` writes that thread off and
  starts a new one: capacity is back at once, healthy samples keep running.
- Every thread is a daemon thread: an abandoned one never delays the process's exit, so a worker
  stops within ``worker.shutdown_timeout_s`` of SIGTERM whatever its agents do.
- An abandoned thread still holds whatever its agent holds (memory, sockets, CPU if it spins) and
  its late result is dropped. :attr:`SyncAgentPool.abandoned` counts those still alive; the worker
  stops (exit code 1, for its supervisor to restart it) once more than
  ``worker.max_abandoned_threads`` are: a restart is the only way to reclaim them.

The alternative, a subprocess per rollout, could kill a hung agent but would lose in-process agent
state (``Agent.setup``), pay a process start per rollout and need the task and the ``LLM`` to cross
a process boundary; async agents need none of this (their task is cancelled).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

__all__ = ["SyncAgentPool"]

_STOP = object()


class SyncAgentPool(Executor):
    """A fixed number of live daemon threads; a thread running an abandoned call is replaced.

    Args:
        size: live threads (``worker.sync_threads`` or ``worker.concurrency``).
        name: thread name prefix.
    """

    def __init__(self, size: int, name: str = "agent") -> None:
        if size < 1:
            raise ValueError(f"SyncAgentPool: size must be >= 1, got {size}")
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[Future[Any], threading.Thread] = {}
        self._abandoned: set[threading.Thread] = set()
        self._ids = itertools.count()
        self._closed = False
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._work, name=f"{self.name}-{next(self._ids)}", daemon=True)
        t.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)``; the future resolves with its result or exception.

        Raises:
            RuntimeError: the pool was shut down.
        """
        if self._closed:
            raise RuntimeError("SyncAgentPool is shut down")
        fut: Future[Any] = Future()
        self._queue.put((fut, fn, args, kwargs))
        return fut

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running[fut] = me
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                with self._lock:
                    self._running.pop(fut, None)
                    replaced = me in self._abandoned
                    self._abandoned.discard(me)
            if replaced:  # came back after it was written off: its replacement serves the queue
                return

    def abandon(self, fut: Future[Any]) -> bool:
        """Give up on ``fut`` (its rollout timed out or was cancelled): cancel it if still queued;
        if its call still runs, write its thread off and start a replacement.

        Returns:
            True if a running thread was abandoned.
        """
        if fut.cancel():
            return False
        with self._lock:
            thread = self._running.get(fut)
            if thread is None or thread in self._abandoned or self._closed:
                return False
            self._abandoned.add(thread)
        self._spawn()
        return True

    @property
    def abandoned(self) -> int:
        """Abandoned threads still running their agent call."""
        with self._lock:
            return len(self._abandoned)

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        """Stop the live threads after their current call (queued calls are cancelled); never waits
        for an abandoned one (they are daemon threads)."""
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[0].cancel()
        for _ in range(self.size):
            self._queue.put(_STOP)
