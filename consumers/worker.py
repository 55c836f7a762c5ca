"""The rollout worker: runs samples from ``samples`` through the agent, publishes Trajectories.

Threads: the event loop (rollouts of async agents, the in-process gateway, publishing), the
samples consumer thread (:mod:`streamrl.consumers.consumer_loop`), the producer's poll thread (delivery
acknowledgements) and a pool for sync agents. The loop holds ``concurrency`` rollout slots and takes
queued samples from the consumer itself whenever one frees (a slot frees once the rollout's
Trajectory is queued on the producer; its acknowledgement is awaited outside the slot). For each
sample:

1. decode it (an undecodable record goes to ``dlq``, and counts as handled once that is acked);
2. draw a fresh ``attempt_id``, open the attempt on the gateway, call the agent with an
   :class:`~streamrl.sdk.LLM` scoped to it, under the rollout time limit;
3. close the attempt and wait until every LLMRequest of it is acknowledged (else the rollout fails
   with the reason: the Trajectory must never name calls that streams cannot find);
4. classify the attempt (:mod:`streamrl.consumers.failures`: the task's failure, a refused request,
   or the infrastructure's) and publish the Trajectory with its ``failure_kind`` (rewards attached
   to the last call made before each was emitted); its acknowledgement makes the sample's offset
   committable.

While the inference service is unhealthy (:class:`~streamrl.consumers.breaker.InferenceBreaker`:
attempts it failed, a failed health probe) the loop starts no samples; they wait in the consumer's
queue (which keeps polling, so the group keeps the worker) until a probe succeeds. Rollouts that were
running fail as ``infrastructure`` and the sampler re-issues them without spending their retries.

SIGTERM (``stop`` set): stop taking samples, give running rollouts ``shutdown_timeout_s``, time out
the rest (``infrastructure``: the worker stopped, not the task), publish, commit, leave the group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Message

from streamrl.config import Settings
from streamrl.consumers import metrics as m
from streamrl.consumers.attempts import AttemptResult
from streamrl.consumers.breaker import InferenceBreaker
from streamrl.consumers.consumer_loop import SampleConsumer
from streamrl.consumers.failures import classify
from streamrl.consumers.gateway import Gateway
from streamrl.consumers.gateway_client import GatewayClient, InProcessGatewayClient, RemoteGatewayClient
from streamrl.consumers.runner import AgentRunner, Outcome
from streamrl.consumers.sink import KafkaSink
from streamrl.consumers.sync_pool import SyncAgentPool
from streamrl.dlq import DeadLetterSink
from streamrl.errors import StreamRLError
from streamrl.kafka import EventProducer, make_consumer
from streamrl.metrics import serve_metrics
from streamrl.resource_store import ResourceStore
from streamrl.resources import ResourceError, ResourceMap
from streamrl.schemas import (
    FailureKind,
    Mode,
    Reward,
    RolloutStatus,
    Sample,
    SchemaError,
    Trajectory,
    utc_now,
)
from streamrl.schemas.serde import Serde
from streamrl.sdk import LLM, EmittedReward
from streamrl.security import credentials

log = logging.getLogger(__name__)

__all__ = ["RolloutWorker", "attach_rewards", "default_worker_id"]

PUBLISH_ATTEMPTS = 3


class WorkerError(StreamRLError):
    """The worker cannot go on (e.g. too many sync agent threads abandoned): it stops, to be restarted."""


def default_worker_id() -> str:
    """``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def attach_rewards(rewards: list[EmittedReward], result: AttemptResult) -> list[Reward]:
    """Reward records, each pointing at the last recorded call completed before it was emitted.

    Args:
        rewards: emitted rewards in order (wall-clock ``emitted_at`` seconds).
        result: the attempt's request ids and their completion times.
    """
    done = sorted((result.completed_at[r], r) for r in result.request_ids if r in result.completed_at)
    out = []
    for rw in rewards:
        last = None
        for t, rid in done:
            if t <= rw.emitted_at:
                last = rid
            else:
                break
        out.append(
            Reward(
                name=rw.name,
                value=rw.value,
                primary=rw.primary,
                request_id=last,
                emitted_at=datetime.fromtimestamp(rw.emitted_at, timezone.utc) if rw.emitted_at else _now(),
            )
        )
    return out


def _now() -> datetime:
    return datetime.now(timezone.utc)


class RolloutWorker:
    """One member of the ``workers`` consumer group.

    Args:
        settings: StreamRL settings (``worker``, ``gateway``, ``kafka``, ``topics``, ``rl``).
        runner: the loaded agent.
        worker_id: name in trajectories and logs (default ``worker.worker_id`` or ``<host>-<pid>``).
    """

    def __init__(self, settings: Settings, runner: AgentRunner, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.cfg = settings.worker
        self.runner = runner
        self.worker_id = worker_id or self.cfg.worker_id or default_worker_id()
        self.model = self.cfg.model or settings.rl.policy_name
        self._ca_file: str | None = None  # security.ca_file, handed to agents (llm.ca_file)
        self.serde = Serde(registry_url=settings.kafka.schema_registry_url)
        self.gateway: Gateway | None = None
        self.client: GatewayClient | None = None
        self.consumer: SampleConsumer | None = None
        self.breaker: InferenceBreaker | None = None
        self.resources = ResourceStore(settings)  # read only when a sample pins resources
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = 0  # rollout slots in use (event loop only)
        self._pump_scheduled = False  # a _pump is queued on the loop (set by the consumer thread)
        self.completed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (or the consumer fails), then shut down gracefully.

        Raises:
            StreamRLError: the consumer thread died (the error is re-raised after shutdown).
            WorkerError: more than ``worker.max_abandoned_threads`` sync agent calls never returned.
        """
        self._loop = loop = asyncio.get_running_loop()
        creds = credentials(self.settings.security)
        serve_metrics(self.cfg.metrics_port, token=creds.metrics_token)
        producer = EventProducer(self.settings)
        sink = KafkaSink(producer, self.serde, self.settings.topics.name, loop)
        self._sink = sink
        self._dlq = DeadLetterSink(self.settings, producer, "worker", self.serde)
        self._ca_file = str(creds.ca_file) if creds.ca_file is not None else None
        if self.cfg.gateway_url:
            self.client = RemoteGatewayClient(self.cfg.gateway_url, creds)
        else:
            self.gateway = Gateway(self.settings.gateway, sink, credentials=creds)
            await self.gateway.start(port=self.cfg.gateway_port)
            self.client = InProcessGatewayClient(self.gateway)
        client = self.client
        self.breaker = InferenceBreaker(
            lambda: client.probe(self.cfg.health_probe_timeout_s),
            failures_to_open=self.cfg.breaker_failures,
            probe_initial_s=self.cfg.breaker_probe_s,
            probe_max_s=self.cfg.breaker_probe_max_s,
            on_close=self._pump,
        )
        self._executor = SyncAgentPool(self.cfg.sync_threads or self.cfg.concurrency, "agent")
        await self.runner.setup(self.worker_id)
        overrides = {
            "session.timeout.ms": self.cfg.session_timeout_ms,
            "max.poll.interval.ms": self.cfg.max_poll_interval_ms,
            "client.id": self.worker_id,
            "fetch.wait.max.ms": 100,
            **self.cfg.consumer_properties,
        }
        if self.cfg.worker_id:  # a stable name: static membership, so a restart rejoins at once
            overrides.setdefault("group.instance.id", self.cfg.worker_id)
        kc = make_consumer(self.settings, self.settings.group_id("workers"), **overrides)
        self.consumer = SampleConsumer(
            kc,
            self.settings.topics.name("samples"),
            self.cfg.concurrency,
            self._notify,
            poll_timeout_s=self.cfg.poll_timeout_s,
            commit_interval_s=self.cfg.commit_interval_s,
            revoke_grace_s=self.cfg.revoke_grace_s,
        )
        self.consumer.start()
        log.info(
            "worker %s: agent %s, concurrency %d, gateway %s",
            self.worker_id,
            self.runner.spec,
            self.cfg.concurrency,
            self.client.url,
        )
        too_many: WorkerError | None = None
        try:
            while not stop.is_set() and self.consumer.alive:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
                except TimeoutError:
                    pass
                m.ABANDONED_THREADS.set(self._executor.abandoned)
                if self._executor.abandoned > self.cfg.max_abandoned_threads:
                    too_many = WorkerError(
                        f"worker {self.worker_id}: {self._executor.abandoned} sync agent call(s) never returned "
                        f"after their rollout timed out (worker.max_abandoned_threads="
                        f"{self.cfg.max_abandoned_threads}); their threads cannot be stopped, so the worker "
                        "stops to be restarted"
                    )
                    log.error("%s", too_many)
                    break
        finally:
            await self._shutdown(producer)
        if self.consumer.error is not None:
            raise self.consumer.error
        if too_many is not None:
            raise too_many

    async def _shutdown(self, producer: EventProducer) -> None:
        assert self.consumer is not None
        loop = asyncio.get_running_loop()
        self.consumer.drain()
        if self._tasks:
            log.info(
                "shutting down: waiting up to %.0f s for %d rollout(s)",
                self.cfg.shutdown_timeout_s,
                len(self._tasks),
            )
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.cfg.shutdown_timeout_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.cfg.delivery_timeout_s + 10)
        try:
            await loop.run_in_executor(None, producer.flush, self.cfg.delivery_timeout_s)
        except Exception:
            log.exception(
                "flushing the producer at shutdown failed; unacknowledged samples will be redelivered"
            )
        await loop.run_in_executor(None, self.consumer.close, 60.0)
        if self.breaker is not None:
            await self.breaker.aclose()
        try:
            await self.runner.teardown()
        except Exception:
            log.exception("agent teardown failed")
        if self.gateway is not None:
            await self.gateway.stop()
        if isinstance(self.client, RemoteGatewayClient):
            await self.client.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.resources.close()
        await loop.run_in_executor(None, producer.close, 10.0)
        log.info("worker %s stopped after %d rollout(s)", self.worker_id, self.completed)

    # ------------------------------------------------------------------------------ slots
    def _notify(self) -> None:
        """Consumer thread: samples were queued; schedule one :meth:`_pump` on the loop."""
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon_threadsafe(self._pump)

    def _pump(self) -> None:
        """Loop: start queued samples in every free slot."""
        self._pump_scheduled = False
        assert self.consumer is not None
        free = self.cfg.concurrency - self._active
        if free <= 0 or (self.breaker is not None and self.breaker.is_open):
            return  # no slot, or the inference service is unhealthy: samples wait in the queue
        for msg in self.consumer.take(free):
            self._start(msg)

    def _start(self, msg: Message) -> None:
        self._active += 1
        slot = [True]  # held until _release (once) frees it
        task = asyncio.ensure_future(self._execute(msg, slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, slot: list[bool]) -> None:
        """Free a rollout slot (once) and fill it from the consumer's queue right away."""
        if slot[0]:
            slot[0] = False
            self._active -= 1
            self._pump()

    # ------------------------------------------------------------------------------ one sample
    async def _execute(self, msg: Message, slot: list[bool]) -> None:
        assert self.consumer is not None and self.client is not None
        tp, offset = (msg.topic(), msg.partition()), msg.offset()
        where = f"{tp[0]}[{tp[1]}]@{offset}"
        try:
            try:
                if msg.value() is None:
                    raise SchemaError(tp[0], tp[1], offset, "tombstone (null value): not a Sample")
                sample = self.serde.decode(msg.value(), Sample, topic=tp[0], partition=tp[1], offset=offset)
            except SchemaError as exc:
                self._dead_letter(msg, tp, offset, f"cannot decode Sample: {exc.reason}", exc)
                return
            try:
                await self._rollout(sample, tp, offset, slot)
            except Exception as exc:  # a bug of ours must not lose the sample: leave it unacknowledged
                log.exception("%s: rollout %s failed in the worker", where, sample.rollout_id)
                self.consumer.finished(tp, offset, acked=False)
                del exc
        finally:
            self._release(slot)

    def _dead_letter(
        self, msg: Message, tp: tuple[str, int], offset: int, reason: str, exc: Exception
    ) -> None:
        """Send an unprocessable sample to ``dlq``; its offset becomes committable once that is acked.

        ``reason`` is prefixed with ``topic[partition]@offset``. A dead letter that cannot even be
        queued leaves the sample unacknowledged (redelivered after a restart), never lost.
        """
        assert self.consumer is not None
        m.SAMPLES_DEAD_LETTERED.inc()
        consumer = self.consumer

        def delivered(err: Any, _msg: Any) -> None:
            consumer.finished(tp, offset, acked=err is None)

        try:
            self._dlq.send(msg, f"{tp[0]}[{tp[1]}]@{offset}: {reason}", exc, on_delivery=delivered)
        except Exception:
            log.exception("%s[%d]@%d: the dead letter could not be queued", tp[0], tp[1], offset)
            consumer.finished(tp, offset, acked=False)

    async def _rollout(self, sample: Sample, tp: tuple[str, int], offset: int, slot: list[bool]) -> None:
        assert self.consumer is not None and self.client is not None
        attempt_id = uuid.uuid4().hex
        started_at = utc_now()
        m.ROLLOUTS_RUNNING.inc()
        outcome: Outcome
        interrupted = False  # the worker, not the agent, ended the attempt (shutdown, cannot start)
        opening = False  # the attempt was (being) opened on the gateway, so it is closed there
        try:
            pinned = ResourceMap()
            if sample.resources:  # the versions the sample pins (cached; read from `resources` on a miss)
                records = await self.resources.resolve(sample.resources, self.cfg.resource_timeout_s)
                pinned = ResourceMap.of(records)
            opening = True
            token = await self.client.open(
                sample.rollout_id, attempt_id, self.runner.name, sample.policy_version
            )
            llm = LLM(
                base_url=LLM.scoped_base_url(self.client.url, sample.rollout_id, attempt_id, None),
                model=self.model,
                api_key=token,
                ca_file=self._ca_file,
                sampling=dict(self.cfg.sampling),
                rollout_id=sample.rollout_id,
                attempt_id=attempt_id,
                agent_name=self.runner.name,
                gateway_url=self.client.url,
                resources=pinned,
            )
            # Python's json, not orjson: it reads every integer exactly (orjson turns one beyond 64
            # bits into a float), as publish and the Task record's check read the payload
            task = json.loads(sample.payload)
            try:
                outcome = await self.runner.run(
                    task, llm, timeout_s=self.cfg.rollout_timeout_s, executor=self._executor
                )
            except asyncio.CancelledError:
                interrupted = True
                outcome = Outcome(
                    "timeout",
                    error=f"worker {self.worker_id} shut down before the rollout finished "
                    f"(shutdown_timeout_s={self.cfg.shutdown_timeout_s:g})",
                )
        except ResourceError as exc:
            # the sample pins a version that is not on `resources`: the sample's own failure (it spends
            # the sample's retries, then goes to dlq), not the infrastructure's
            outcome = Outcome("failed", error=f"the rollout's pinned resources could not be resolved: {exc}")
        except Exception as exc:
            interrupted = True
            outcome = Outcome("failed", error=f"the worker could not start the rollout: {exc!r}")
        finally:
            m.ROLLOUTS_RUNNING.dec()
        if opening:
            result = await self.client.close(sample.rollout_id, attempt_id, self.cfg.delivery_timeout_s)
        else:  # it ended before the gateway knew it: no call was made
            result = AttemptResult([], {}, [])
        healthy = None
        if outcome.status == "timeout" and result.in_progress and not interrupted:
            assert self.breaker is not None  # calls hung at the time limit: is the service there at all?
            healthy = await self.breaker.check()
        verdict = classify(outcome, result, interrupted=interrupted, healthy=healthy)
        if self.breaker is not None and not interrupted:
            service_failed = verdict.failure_kind is FailureKind.infrastructure and (
                result.infra_failures > 0 or healthy is False
            )
            self.breaker.record(service_failed, result.calls_ok > 0)
        if verdict.failure_kind is not None:
            m.ROLLOUT_FAILURES.labels(verdict.failure_kind.value).inc()
        # model_construct: every field comes from the validated Sample, the validated Rewards or
        # values built here (UTC millisecond stamps, enums); Serde.encode re-checks the invariants
        # (finite reward, group index, non-negative versions) before anything is produced
        traj = Trajectory.model_construct(
            rollout_id=sample.rollout_id,
            attempt_id=attempt_id,
            task_id=sample.task_id,
            group_id=sample.group_id,
            group_size=sample.group_size,
            k=sample.k,
            epoch=sample.epoch,
            retry=sample.retry,
            mode=Mode(sample.mode),
            status=RolloutStatus(verdict.status),
            reward=outcome.reward if verdict.status == "succeeded" else None,
            rewards=attach_rewards(outcome.rewards, result),
            request_ids=result.request_ids,
            error=verdict.error,
            worker_id=self.worker_id,
            policy_version=sample.policy_version,
            started_at=started_at,
            finished_at=utc_now(),
            failure_kind=verdict.failure_kind.value if verdict.failure_kind is not None else None,
        )
        m.observe_rollout(
            Mode(sample.mode).value,
            verdict.status,
            traj.reward,
            sample.policy_version,
            outcome.duration_s,
        )
        await self._publish(traj, tp, offset, slot)

    async def _publish(self, traj: Trajectory, tp: tuple[str, int], offset: int, slot: list[bool]) -> None:
        """Produce the Trajectory (up to ``PUBLISH_ATTEMPTS`` tries); the slot frees once it is queued."""
        assert self.consumer is not None
        consumer = self.consumer
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            fut = self._sink.publish(
                "trajectories", traj.rollout_id, traj, lambda: consumer.finished(tp, offset, True)
            )
            self._release(slot)
            try:
                await fut
                self.completed += 1
                return
            except Exception as exc:
                m.TRAJECTORY_DELIVERY_FAILURES.inc()
                log.error(
                    "trajectory of %s not delivered (try %d/%d): %s",
                    traj.rollout_id,
                    attempt,
                    PUBLISH_ATTEMPTS,
                    exc,
                )
        consumer.finished(tp, offset, acked=False)
