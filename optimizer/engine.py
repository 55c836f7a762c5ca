"""The machinery both algorithms share: tasks, prompt versions, evaluations, events and state on Kafka.

An algorithm asks for evaluations (:meth:`Engine.run_evals`): every one not yet published gets its
samples published at once (pinned to its version, ``<eval_id>/<task_id>``), so all evaluations of
a step are in flight together and the worker group runs them in parallel; the call returns when
each one is finished (every task scored, or its deadline passed: the rest score 0). Scores come
from :class:`~streamrl.optimizer.evaluation.Evaluation` (the one scoring rule). After every step the
run's state is written to ``optimizer_state`` (compacted, key ``run_id``) and an event to
``optimizer_events``; a restarted engine reads the state back, re-reads ``trajectories`` and
``requests`` from the run's start offsets, and re-attaches to evaluations in flight without
publishing them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from streamrl.config import Settings
from streamrl.errors import StreamRLError
from streamrl.kafka import EventProducer
from streamrl.optimizer.evaluation import CallBook, Evaluation, rollout_id, split_rollout_id
from streamrl.optimizer.feed import Feed, Item, end_offsets, read_to_end
from streamrl.optimizer.state import RunState
from streamrl.resource_store import ResourceStore, publish_resources
from streamrl.schemas import (
    LLMRequest,
    Mode,
    OptimizerEvent,
    OptimizerState,
    Resource,
    Sample,
    Split,
    Task,
    Trajectory,
)
from streamrl.schemas.serde import Serde

log = logging.getLogger(__name__)

__all__ = ["Engine", "OptimizerError"]


class OptimizerError(StreamRLError):
    """The optimization cannot go on (no tasks, no seed prompt, the feed died, a state it cannot read)."""


class Engine:
    """Kafka I/O and evaluation bookkeeping of one optimization run.

    Args:
        settings: the whole config (``optimize`` section, cluster, topics).
        run_id: the run (key of its events and state).
    """

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        self.cfg = settings.optimize
        self.run_id = run_id
        self.serde = Serde(registry_url=settings.kafka.schema_registry_url)
        self.producer = EventProducer(settings)
        self.store = ResourceStore(settings)
        self.calls = CallBook(self.cfg.agent_name)
        self.state: RunState | None = None
        self.tasks: dict[str, Task] = {}
        self.train_ids: list[str] = []
        self.val_ids: list[str] = []
        self.texts: dict[str, str] = {}
        self.listeners: list[Callable[[OptimizerEvent], None]] = []
        self.bad_records = 0
        self._feed: Feed | None = None
        self._changed: asyncio.Event | None = None
        self._dirty = False

    # ------------------------------------------------------------------ start
    def load_tasks(self) -> None:
        """Read the dataset from ``tasks``: train and val task ids, sorted (``optimize.val_tasks`` keeps
        the first val ones).

        Raises:
            OptimizerError: no val task (nothing to score a prompt on).
        """
        records, bad = read_to_end(self.settings, "tasks", Task, self.serde)
        self.bad_records += bad
        self.tasks = {t.task_id: t for _, t in records}  # compacted: the last record per id
        self.train_ids = sorted(t.task_id for t in self.tasks.values() if t.split is Split.train)
        self.val_ids = sorted(t.task_id for t in self.tasks.values() if t.split is Split.val)
        if self.cfg.val_tasks is not None:
            self.val_ids = self.val_ids[: self.cfg.val_tasks]
        if not self.val_ids:
            raise OptimizerError(
                f"no val task on {self.settings.topics.name('tasks')} (publish one: "
                "`streamrl publish FILE --split val`, or dev.datasets with split: val)"
            )

    def load_state(self) -> RunState | None:
        """The run's last saved state on ``optimizer_state``, or None for a new run.

        Raises:
            OptimizerError: a state this build cannot read.
        """
        records, bad = read_to_end(self.settings, "optimizer_state", OptimizerState, self.serde)
        self.bad_records += bad
        mine = [r for _, r in records if r.run_id == self.run_id]
        if not mine:
            return None
        try:
            return RunState.from_json(mine[-1].state)
        except ValueError as exc:
            raise OptimizerError(f"run {self.run_id}: cannot resume from its saved state: {exc}") from exc

    def start_offsets(self) -> dict[str, dict[int, int]]:
        """Where a new run starts reading ``trajectories`` and ``requests``: their end offsets now."""
        return {base: end_offsets(self.settings, base) for base, _ in Feed.TOPICS}

    async def start(self, state: RunState) -> None:
        """Adopt ``state`` and start reading results from its start offsets."""
        self.state = state
        self._changed = asyncio.Event()
        self._feed = Feed(self.settings, state.start_offsets, self._deliver, asyncio.get_running_loop())
        self._feed.begin()

    async def close(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        self.store.close()
        await asyncio.get_running_loop().run_in_executor(None, self.producer.close, 30.0)

    # ------------------------------------------------------------------ events and state
    def emit(self, kind: str, **fields: Any) -> OptimizerEvent:
        """Write one event (``seq`` = the state's next number) and tell the listeners."""
        st = self._st()
        event = OptimizerEvent(
            run_id=self.run_id, seq=st.seq, kind=kind, algorithm=st.algorithm, round=st.round, **fields
        )
        st.seq += 1
        topic = self.settings.topics.name("optimizer_events")
        self.producer.produce(topic, self.serde.encode(event, topic=topic), key=self.run_id)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a display must not stop the run
                log.exception("optimizer event listener failed")
        return event

    def save(self) -> None:
        """Write the state (and everything produced before it) and wait for the acknowledgement.

        Raises:
            DeliveryError: it was not acknowledged (the run stops; a restart resumes from the last save).
        """
        st = self._st()
        record = OptimizerState(
            run_id=self.run_id, algorithm=st.algorithm, seq=st.seq, finished=st.finished, state=st.to_json()
        )
        topic = self.settings.topics.name("optimizer_state")
        self.producer.produce(topic, self.serde.encode(record, topic=topic), key=self.run_id)
        self.producer.flush(60.0)
        self._dirty = False

    def _st(self) -> RunState:
        if self.state is None:
            raise OptimizerError("the engine has no state yet")
        return self.state

    # ------------------------------------------------------------------ prompt versions
    def publish_prompt(self, text: str, *, parents: list[str], source: str) -> Resource:
        """Publish a prompt version (acknowledged before any sample pins it) and record it as a candidate."""
        st = self._st()
        record = Resource.create(
            st.resource_name,
            text,
            parents=parents,
            metadata={
                "run_id": self.run_id,
                "algorithm": st.algorithm,
                "round": str(st.round),
                "source": source,
            },
            created_by=f"optimizer:{self.run_id}",
        )
        publish_resources(self.settings, [record], producer=self.producer, serde=self.serde, timeout_s=60.0)
        self.texts[record.version] = text
        st.candidates.setdefault(record.version, {"round": st.round, "parents": parents, "source": source})
        return record

    async def text_of(self, version: str) -> str:
        """The template of a version of the optimized resource (read from ``resources`` if not in memory).

        Raises:
            ResourceError: the version is not on the topic.
        """
        if version not in self.texts:
            records = await self.store.resolve({self._st().resource_name: version}, timeout_s=60.0)
            self.texts[version] = next(iter(records.values())).content
        return self.texts[version]

    # ------------------------------------------------------------------ evaluations
    def evaluation(
        self, eval_id: str, version: str, split: str, task_ids: list[str], *, keep_calls: bool = False
    ) -> Evaluation:
        """The run's evaluation ``eval_id``, created (unpublished) if it does not exist yet."""
        st = self._st()
        ev = st.evals.get(eval_id)
        if ev is None:
            ev = Evaluation(eval_id, version, split, list(task_ids), st.round, keep_calls=keep_calls)
            st.evals[eval_id] = ev
        return ev

    def _sample(self, ev: Evaluation, task_id: str, retry: int) -> Sample:
        task = self.tasks[task_id]
        return Sample(
            rollout_id=rollout_id(ev.eval_id, task_id),
            task_id=task_id,
            group_id=ev.eval_id,
            group_size=1,
            k=0,
            epoch=ev.round,
            retry=retry,
            mode=Mode.val if ev.split == "val" else Mode.train,
            payload=task.payload,
            policy_version=0,
            resources={self._st().resource_name: ev.version},
        )

    def _produce_sample(self, sample: Sample) -> None:
        topic = self.settings.topics.name("samples")
        self.producer.produce(topic, self.serde.encode(sample, topic=topic), key=sample.rollout_id)
        self._st().rollouts += 1

    def _publish(self, evals: list[Evaluation]) -> None:
        """Publish every sample of ``evals`` at once, then their deadlines (in the state) and events."""
        deadline = time.time() + self.cfg.eval_timeout_s
        for ev in evals:
            missing = [t for t in ev.task_ids if t not in self.tasks]
            if missing:
                raise OptimizerError(
                    f"evaluation {ev.eval_id}: tasks {missing[:3]} are not on the tasks topic"
                )
            for task_id in ev.task_ids:
                self._produce_sample(self._sample(ev, task_id, 0))
        self.producer.flush(60.0)
        for ev in evals:
            ev.deadline = deadline
        self.save()
        for ev in evals:
            self.emit(
                "evaluation",
                resource_name=self._st().resource_name,
                resource_version=ev.version,
                eval_id=ev.eval_id,
                split=ev.split,
                task_ids=ev.task_ids,
                deadline=ev.deadline,
            )

    async def run_evals(self, evals: list[Evaluation]) -> None:
        """Publish the unpublished ones together and wait until all are finished (scored).

        Raises:
            OptimizerError: the results feed stopped.
        """
        self._publish([ev for ev in evals if not ev.published and not ev.finished])
        assert self._changed is not None and self._feed is not None
        while True:
            pending = [ev for ev in evals if not ev.finished]
            if not pending:
                return
            if self._feed.error is not None:
                raise OptimizerError(f"reading trajectories and requests failed: {self._feed.error!r}")
            now = time.time()
            if any(not ev.complete() and now >= (ev.deadline or now) for ev in pending):
                await self._feed.catch_up()  # what was written before the deadline counts
            done = False
            for ev in pending:
                if ev.complete() or now >= (ev.deadline or now):
                    self._finish(ev, time.time())
                    done = True
            if done or self._dirty:
                self.save()
            if done:
                continue
            wait_s = min((ev.deadline or now) for ev in pending) - time.time()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.05, min(wait_s, 1.0)))
            except TimeoutError:
                pass

    def _finish(self, ev: Evaluation, now: float) -> None:
        r = ev.finish(now)
        self.emit(
            "score",
            resource_name=self._st().resource_name,
            resource_version=ev.version,
            eval_id=ev.eval_id,
            split=ev.split,
            score=r.score,
            count=r.count,
            succeeded=r.succeeded,
            failed=r.failed,
            timed_out=r.timed_out,
            task_rewards=r.task_rewards,
        )

    def _deliver(self, items: list[Item]) -> None:
        """Loop: apply a batch of trajectories and requests read by the feed."""
        st = self.state
        if st is None:
            return
        changed = False
        for base, record, ts in items:
            eval_id, _ = split_rollout_id(record.rollout_id)  # type: ignore[attr-defined]
            ev = st.evals.get(eval_id)
            if ev is None:
                continue  # another run's or the RL pipeline's rollout
            if base == "requests":
                if ev.keep_calls:
                    self.calls.add(record)  # type: ignore[arg-type]
                continue
            traj: Trajectory = record  # type: ignore[assignment]
            if ev.apply(traj, ts):
                changed = True
                continue
            retry = ev.reissue(traj, time.time(), self.cfg.max_infra_retries)
            if retry is not None:
                _, task_id = split_rollout_id(traj.rollout_id)
                log.warning(
                    "%s failed for the infrastructure (%s); re-issued (retry %d)",
                    traj.rollout_id,
                    (traj.error or "no error text").splitlines()[0][:300],  # the trajectory keeps it all
                    retry,
                )
                ev.retries[task_id] = retry
                self._produce_sample(self._sample(ev, task_id, retry))
                self._dirty = True
        if changed and self._changed is not None:
            self._changed.set()
        elif self._dirty and self._changed is not None:
            self._changed.set()

    # ------------------------------------------------------------------ reading results
    def last_calls(self, ev: Evaluation) -> list[tuple[Any, LLMRequest | None]]:
        """``(attempt, last call)`` of every task of a finished evaluation that has a counted attempt,
        in task order (the call is None when none was read)."""
        out = []
        for task_id in ev.task_ids:
            attempt = ev.attempts.get(task_id)
            if attempt is not None:
                out.append((attempt, self.calls.last_call(rollout_id(ev.eval_id, task_id), attempt)))
        return out

    def payload(self, task_id: str) -> dict[str, Any]:
        """A task's payload as a dict."""
        return json.loads(self.tasks[task_id].payload)

    @property
    def feed_bad_records(self) -> int:
        return self.bad_records + (self._feed.bad_records if self._feed is not None else 0)
