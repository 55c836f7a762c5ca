"""The worker's ``samples`` consumer, on its own thread: poll, flow control, rebalances, commits.

The thread owns the confluent-kafka consumer (every call on it happens here). It keeps calling
``consume()`` every ``poll_timeout_s`` whatever the rollouts do, so a long rollout never exceeds
``max.poll.interval.ms``. Each received sample is added to the :class:`OffsetTracker` and to a local
queue shared with the event loop; ``notify`` (called on this thread, once per fetched batch) tells the
loop there is work, and the loop takes samples with :meth:`SampleConsumer.take` whenever it has a free
rollout slot, so a finishing rollout starts the next sample without a round trip through this thread.
While ``max(256, 32 × concurrency)`` samples are in flight (queued, or started and their Trajectory
not yet acknowledged) the thread stops taking samples from librdkafka (a "soft pause": it still polls
every ``poll_timeout_s`` for the group protocol, taking at most one sample per poll) until half of them
are done. Partitions are not ``pause()``d for this: librdkafka purges its prefetched messages on pause
and refetches only ~0.5 s after ``resume()``, which capped the trivial agent at ~350 rollouts/s; its own
prefetch stays bounded by ``queued.min.messages``/``queued.max.messages.kbytes``. Only draining (shutdown)
pauses the partitions. The producer's poll thread
acknowledges a sample once its Trajectory is acked. Commits (synchronous, at most every
``commit_interval_s``, and on revoke and close) only cover samples whose predecessors are all
acknowledged.

Rebalances (cooperative-sticky): on revoke, samples not started are dropped, running ones get up to
``revoke_grace_s`` to be acknowledged, the acknowledged prefix is committed, then the partitions are
unassigned; later acks for them are ignored, so no commit is lost or made twice by two owners.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamrl.consumers import metrics as m
from streamrl.consumers.offsets import OffsetTracker, Partition

log = logging.getLogger(__name__)

__all__ = ["SampleConsumer"]


def _tp(msg_or_tp: Any) -> Partition:
    if isinstance(msg_or_tp, TopicPartition):
        return (msg_or_tp.topic, msg_or_tp.partition)
    return (msg_or_tp.topic(), msg_or_tp.partition())


class SampleConsumer:
    """Runs the consumer thread.

    Args:
        consumer: a subscribed-to-nothing confluent-kafka consumer (manual commits, cooperative-sticky).
        topic: the full ``samples`` topic name.
        concurrency: most samples running at once (the loop's slots; sizes the in-flight bound).
        notify: called (on this thread) after samples were queued; must only wake the loop, which
            then calls :meth:`take`.
        poll_timeout_s / commit_interval_s / revoke_grace_s: see ``WorkerSettings``.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        concurrency: int,
        notify: Callable[[], None],
        *,
        poll_timeout_s: float,
        commit_interval_s: float,
        revoke_grace_s: float,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.concurrency = concurrency
        self.notify = notify
        self.poll_timeout_s = poll_timeout_s
        self.commit_interval_s = commit_interval_s
        self.revoke_grace_s = revoke_grace_s
        self.tracker = OffsetTracker()
        # in-flight bound (queued + started, unacknowledged), soft: see the module docstring
        self.max_backlog = max(256, 32 * concurrency)
        self._wake = threading.Event()  # set when the queue shrank enough to resume, or on drain/close
        self._lock = threading.Lock()  # guards _running and _backlog (loop, consumer and producer threads)
        self._running: set[tuple[Partition, int]] = (
            set()
        )  # taken by the loop, Trajectory not yet acknowledged
        self._backlog: deque[Message] = deque()  # received, not yet taken by the loop
        self._full = False  # soft pause: in-flight bound reached, not taking samples from librdkafka
        self._paused = False  # partitions pause()d (draining only)
        self._draining = threading.Event()
        self._closing = threading.Event()
        self._last_commit = 0.0
        self.error: BaseException | None = None
        self.assigned: set[Partition] = set()
        self.revocations = 0  # partitions revoked or lost so far (observability, tests)
        self._thread = threading.Thread(target=self._main, name="streamrl-samples-consumer", daemon=True)

    # ------------------------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        """Subscribe and start polling."""
        self._thread.start()

    def drain(self) -> None:
        """Stop handing out samples (shutdown); keep polling, acknowledging and committing."""
        self._draining.set()
        self._wake.set()

    def close(self, timeout_s: float = 30.0) -> None:
        """Final commit, leave the group, join the thread."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """Whether the consumer thread runs."""
        return self._thread.is_alive()

    def running(self) -> int:
        """Samples taken by the loop whose Trajectory is not yet acknowledged."""
        with self._lock:
            return len(self._running)

    def take(self, n: int) -> list[Message]:
        """Up to ``n`` queued samples for the loop to start now, oldest first (none while draining).

        Called on the event loop whenever it has ``n`` free slots. Each returned sample counts as
        running until :meth:`finished` is called for it.
        """
        if n <= 0 or self._draining.is_set():
            return []
        with self._lock:
            q = self._backlog
            out = [q.popleft() for _ in range(min(n, len(q)))]
            for msg in out:
                self._running.add((_tp(msg), msg.offset()))
            low = self._full and len(q) + len(self._running) <= self.max_backlog // 2
        if low:
            self._wake.set()  # let the consumer thread resume fetching
        return out

    def finished(self, tp: Partition, offset: int, acked: bool) -> None:
        """A taken sample is done: ``acked`` = its Trajectory (or dead letter) was acknowledged.

        Called from the producer's poll thread (acks) or the event loop (give-ups). An unacknowledged
        sample is never committed past: it is redelivered after the next restart or rebalance.
        """
        if acked:
            self.tracker.ack(tp, offset)
        with self._lock:
            self._running.discard((tp, offset))
            low = self._full and len(self._backlog) + len(self._running) <= self.max_backlog // 2
        if low:
            self._wake.set()

    # ------------------------------------------------------------------------------ the thread
    def _main(self) -> None:
        c = self.consumer
        try:
            c.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            while not self._closing.is_set():
                self._step()
            self._commit(force=True)
            self._leave()
        except BaseException as exc:  # surfaced to the worker, which stops
            log.exception("samples consumer failed")
            self.error = exc
        finally:
            try:
                c.close()  # revokes (our callback commits what is acknowledged), leaves the group
            except Exception:
                log.exception("closing the samples consumer failed")

    def _leave(self, timeout_s: float = 10.0) -> None:
        """Leave the group before closing: unsubscribe and poll until the partitions are revoked
        (our callback commits). ``close()`` alone does not leave for a static member
        (``group.instance.id``), whose partitions would then wait ``session.timeout.ms``."""
        if not self.assigned:
            return
        self.consumer.unsubscribe()
        deadline = time.monotonic() + timeout_s
        while self.assigned and time.monotonic() < deadline:
            self.consumer.consume(num_messages=1, timeout=0.1)

    def _in_flight(self) -> int:
        with self._lock:
            return len(self._backlog) + len(self._running)

    def _step(self) -> None:
        c = self.consumer
        self._flow_control()
        if self._full:
            # in-flight bound reached (or draining): keep serving the group protocol (at most one
            # sample per poll), and sleep until half the in-flight samples are done (or poll_timeout_s)
            msgs = c.consume(num_messages=1, timeout=0)
            self._wake.wait(self.poll_timeout_s)
            self._wake.clear()
        else:
            room = max(1, self.max_backlog - self._in_flight())
            msgs = c.consume(num_messages=room, timeout=0)
            if not msgs:  # nothing fetched yet: block until one sample arrives (consume(n) waits for n)
                msgs = c.consume(num_messages=1, timeout=self.poll_timeout_s)
        fresh: list[Message] = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("samples consumer: %s", err)
                continue
            tp = _tp(msg)
            if tp not in self.assigned:
                continue  # a late message of a partition revoked meanwhile
            try:
                self.tracker.add(tp, msg.offset())
            except ValueError as exc:  # redelivered within this assignment: already handled
                log.warning("%s; skipped", exc)
                continue
            fresh.append(msg)
        if fresh:
            m.SAMPLES_RECEIVED.inc(len(fresh))
            with self._lock:
                self._backlog.extend(fresh)
            self.notify()
        self._commit()

    def _flow_control(self) -> None:
        """Soft-pause while ``max_backlog`` samples are in flight, until at most half of them are.

        Draining pauses every assigned partition for good (no more samples are wanted).
        """
        if self._draining.is_set():
            if not self._paused:
                parts = self.consumer.assignment()
                if parts:
                    self.consumer.pause(parts)
                self._paused = True
            self._full = True
            m.PAUSED.set(1)
            return
        in_flight = self._in_flight()
        if not self._full and in_flight >= self.max_backlog:
            self._full = True
            m.PAUSED.set(1)
        elif self._full and in_flight <= self.max_backlog // 2:
            self._full = False
            m.PAUSED.set(0)

    def _commit(self, force: bool = False, only: set[Partition] | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval_s:
            return
        self._last_commit = now
        offsets = self.tracker.committable(only)
        if not offsets:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                return
            m.COMMITS.labels("error").inc()
            log.warning("commit of %s failed (retried later): %s", offsets, exc)
            return
        self.tracker.mark_committed(offsets)
        m.COMMITS.labels("ok").inc()

    # ------------------------------------------------------------------------------ rebalance callbacks
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        for p in partitions:
            self.tracker.assign(_tp(p))
            self.assigned.add(_tp(p))
        if self._paused and partitions:
            consumer.pause(partitions)
        log.info("assigned %s", sorted(_tp(p)[1] for p in partitions))

    def _unqueue(self, tps: set[Partition]) -> None:
        """Forget queued (not taken) samples of ``tps``; the loop can no longer start them."""
        with self._lock:
            self._backlog = deque(msg for msg in self._backlog if _tp(msg) not in tps)

    def _drop(self, tps: set[Partition]) -> None:
        with self._lock:
            self._backlog = deque(msg for msg in self._backlog if _tp(msg) not in tps)
            self._running = {r for r in self._running if r[0] not in tps}
        for tp in tps:
            self.assigned.discard(tp)
            self.tracker.revoke(tp)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {_tp(p) for p in partitions}
        self.revocations += len(tps)
        self._unqueue(tps)
        deadline = time.monotonic() + self.revoke_grace_s
        while time.monotonic() < deadline:
            with self._lock:
                busy = sum(1 for r in self._running if r[0] in tps)
            if not busy:
                break
            time.sleep(0.01)
        self._commit(force=True, only=tps)
        with self._lock:
            left = sum(1 for r in self._running if r[0] in tps)
        if left:
            log.warning(
                "revoked %s with %d rollout(s) still running; their new owner re-runs them", sorted(tps), left
            )
        self._drop(tps)
        consumer.incremental_unassign(partitions)
        log.info("revoked %s", sorted(tp[1] for tp in tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {_tp(p) for p in partitions}
        self.revocations += len(tps)
        log.warning("lost %s (no commit: another member may own them now)", sorted(tp[1] for tp in tps))
        self._drop(tps)
        consumer.incremental_unassign(partitions)
