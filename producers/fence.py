"""One sampler per topic prefix, enforced: a fence held through a Kafka consumer group.

Two samplers on one prefix would both emit every sample (each rollout run twice). So a sampler
holds a *fence* before it reads or writes anything, and stops the moment it loses it:

- The fence is partition 0 of the prefix's ``checkpoints`` topic (the sampler reads that topic
  anyway) in the consumer group ``<prefix stem>-sampler-fence``. A sampler joins the group
  (``subscribe``; cooperative-sticky assignment, so a holder keeps the partition while others join)
  and holds the fence while that partition is assigned to it. It never reads through this consumer
  (the partition is paused at once) and never commits: the group exists only for its membership.
- A second sampler joins, is assigned nothing, and waits ``sampler.fence_timeout_s`` (longer than
  the group's session timeout, so the fence of a sampler that crashed is released to its successor
  in time); if the fence is still held then, it exits with :class:`FenceError` naming the holder
  (its client id: ``sampler-<host>-<pid>``).
- A holder whose partition is revoked or lost (it missed its session timeout, so another sampler
  may now hold the fence) stops with :class:`FenceError` before emitting anything more.

Heartbeats run on librdkafka's thread; :meth:`SamplerFence.check` (called every sampler step) also
serves the group protocol, so the holder keeps the fence as long as its loop runs.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamrl.config import Settings
from streamrl.errors import StreamRLError
from streamrl.kafka import COORDINATOR_REQUEST_TIMEOUT_S, coordinator_results, make_admin, make_consumer

__all__ = ["FENCE_GROUP", "FenceError", "SamplerFence"]

FENCE_GROUP = "sampler-fence"
"""The fence's consumer group name (``settings.group_id(FENCE_GROUP)``): it holds a partition of
``checkpoints`` but reads and commits nothing, so it has no lag."""

HOLDER_TIMEOUT_S = 5.0
"""How long the error naming who holds the fence waits for the group's description, in seconds."""


class FenceError(StreamRLError):
    """Another sampler holds this topic prefix's fence, or this sampler lost it."""


class SamplerFence:
    """The fence of one topic prefix (see the module docstring).

    Args:
        settings: StreamRL settings (cluster, topic prefix, ``sampler.fence_timeout_s`` and
            ``sampler.fence_session_timeout_s``).
        client_id: this sampler's name in the group (default ``sampler-<host>-<pid>``).
    """

    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        cfg = settings.sampler
        self.settings = settings
        self.topic = settings.topics.name("checkpoints")
        self.group = settings.group_id(FENCE_GROUP)
        self.client_id = client_id or f"sampler-{socket.gethostname()}-{os.getpid()}"
        self.timeout_s = cfg.fence_timeout_s
        self._tp = TopicPartition(self.topic, 0)
        self._held = threading.Event()
        self._lost: str | None = None
        self._consumer: Consumer = make_consumer(
            settings,
            self.group,
            **{
                "client.id": self.client_id,
                "session.timeout.ms": int(cfg.fence_session_timeout_s * 1000),
                "heartbeat.interval.ms": max(100, int(cfg.fence_session_timeout_s * 1000 / 5)),
                "enable.partition.eof": False,
            },
        )

    @property
    def held(self) -> bool:
        """Whether this sampler holds the fence now."""
        return self._held.is_set() and self._lost is None

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        mine = [p for p in partitions if (p.topic, p.partition) == (self._tp.topic, 0)]
        if mine:
            consumer.pause(mine)  # membership only: nothing is read through this consumer
            self._held.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any((p.topic, p.partition) == (self._tp.topic, 0) for p in partitions) and self._held.is_set():
            self._lost = "the fence partition was revoked (another sampler joined and took it)"
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any((p.topic, p.partition) == (self._tp.topic, 0) for p in partitions) and self._held.is_set():
            self._lost = (
                "the fence was lost (this sampler missed its session timeout; another may hold it now)"
            )
        consumer.incremental_unassign(partitions)

    def acquire(self) -> None:
        """Join the group and wait until this sampler holds the fence.

        Raises:
            FenceError: another sampler still holds it after ``sampler.fence_timeout_s`` (the message
                names it), or the topic is missing.
        """
        self._consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        deadline = time.monotonic() + self.timeout_s
        while not self._held.is_set():
            if time.monotonic() > deadline:
                holder = self._holder()
                self.close()
                raise FenceError(
                    f"another sampler holds the fence of topic prefix {self.settings.topics.prefix!r} "
                    f"(consumer group {self.group}: {holder}); one sampler per prefix: stop it first, "
                    f"or give this pipeline its own topics.prefix (waited {self.timeout_s:g} s)"
                )
            self._serve(0.2)

    def check(self) -> None:
        """Serve the group protocol; raise if the fence was lost.

        Raises:
            FenceError: the fence was revoked or lost (stop emitting at once).
        """
        self._serve(0.0)
        if self._lost is not None:
            raise FenceError(f"sampler {self.client_id}: {self._lost}; stopping")

    def _serve(self, timeout_s: float) -> None:
        for msg in self._consumer.consume(num_messages=10, timeout=timeout_s):
            err = msg.error()
            if err is not None and err.fatal():
                raise FenceError(f"sampler fence consumer: fatal error: {err}")
            if err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise FenceError(f"{self.topic} does not exist; run `streamrl topics create` first")

    def _holder(self) -> str:
        """Who holds the fence (client ids and hosts of the group's members), for the error message."""
        try:
            admin = make_admin(self.settings)
            # librdkafka never times this call out itself (it could abort the process doing so); a call
            # still pending when we stop waiting ends with the client, dropped on return
            futures = admin.describe_consumer_groups(
                [self.group], request_timeout=COORDINATOR_REQUEST_TIMEOUT_S
            )
            desc = coordinator_results(futures, HOLDER_TIMEOUT_S)[self.group]
            if isinstance(desc, KafkaException):
                raise desc
        except (KafkaException, Exception) as exc:  # best effort: the message still says what to do
            return f"holder unknown ({exc})"
        others = [m for m in desc.members if m.client_id != self.client_id]
        if not others:
            return "held by a member that is leaving"
        shown = ", ".join(f"{m.client_id} on {m.host.lstrip('/')}" for m in others)
        return f"held by {shown}"

    def close(self) -> None:
        """Leave the group (releases the fence at once)."""
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError):
            pass
        self._held.clear()

    def __enter__(self) -> SamplerFence:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
