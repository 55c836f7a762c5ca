"""What ``streamrl dev`` knows about a run, built only from the records on the topics.

Pure logic, no Kafka: :class:`RunStats` ingests decoded records (the monitor feeds it) and answers
the progress display and the summary: policy version, rollouts/s, reward mean per version (train
and val), whether every sample got a trajectory, which version served the calls, and how many
distinct greedy answers the policy gives on the val set.

The validation reward is not computed here: it is the ``ValidationResult`` record streams publishes
on the ``validation`` topic (the one definition: every val rollout counts, failed and timed-out ones
as 0), the latest record per policy version. What this module adds is the answers: the answer of a
val rollout is the response token ids of its last call (``Trajectory.request_ids[-1]``), keyed by the
validated version (``Trajectory.policy_version`` of a val sample).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streamrl.schemas import (
    CheckpointEvent,
    FailureKind,
    GroupOutcome,
    LLMRequest,
    Mode,
    RolloutStatus,
    Sample,
    Split,
    Task,
    Trajectory,
    ValidationResult,
)

VAL_VERSIONS_KEPT = 16
"""Validated versions whose answers :class:`RunStats` keeps (the display shows the last 8)."""
VAL_RESPONSES_UNCLAIMED = 8
"""Val call responses kept that no kept answer names yet, in val rollouts of one validation."""
EARLY_TTL_S = 600.0
"""Seconds a trajectory read before its Sample waits for it (after that: a duplicate, forgotten)."""
DEAD_LETTER_REASONS = 5
"""Dead-letter reasons kept for the summary (the newest)."""
RECENT_IDS = 4096
"""Batch ids and group outcomes remembered to count a re-sent one once (re-sends are recent)."""


@dataclass
class Mean:
    """A running mean (sum and count)."""

    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def value(self) -> float | None:
        """The mean, or None when empty."""
        return self.total / self.count if self.count else None


@dataclass
class RunStats:
    """Aggregates of one run, from tasks, samples, requests, trajectories, batches, checkpoints, dlq.

    Args:
        val_samples_per_task: rollouts per val task per validation (``sampler.val_samples_per_task``),
            to tell a complete validation from a partial one.
        rate_window_s: window of the rollouts/s figure, in seconds.
        clock: monotonic clock (tests pass a fake one).
    """

    val_samples_per_task: int = 1
    rate_window_s: float = 15.0
    clock: Callable[[], float] = time.monotonic

    train_tasks: set[str] = field(default_factory=set)
    val_tasks: set[str] = field(default_factory=set)
    samples: int = 0
    """Samples emitted (train and val): Sample records of a first attempt (``retry == 0``)."""
    _open: dict[str, int] = field(default_factory=dict)
    """rollout_id → Sample records read minus Trajectory records read (one trajectory per attempt):
    positive while an attempt is in flight, negative while trajectories were read before their
    samples (the topics are read in no order across them: ``streamrl status`` reads each whole).
    Balanced rollouts are dropped, so the memory of a long run stays flat."""
    _ahead_since: dict[str, float] = field(default_factory=dict)
    """rollout_id → clock time its balance went negative; a trajectory no sample matches within
    ``EARLY_TTL_S`` (a duplicate: a redelivered attempt finished twice) is forgotten."""
    _seen_batches: dict[str, None] = field(default_factory=dict)
    """The last ``RECENT_IDS`` batch ids (a streams restart may re-send a batch: counted once)."""
    _seen_outcomes: dict[tuple[str, ...], None] = field(default_factory=dict)
    """The last ``RECENT_IDS`` group outcomes (group id, status, reason, rollouts), for the same reason."""
    trajectories: int = 0
    """Trajectory records (one per finished attempt, retries included)."""
    status: Counter[str] = field(default_factory=Counter)
    """Trajectory status (``succeeded``, ``failed``, ``timeout``) → attempts; ``interrupted``: an
    attempt the run's own stop cut short (see :attr:`stopping_since`), not a failure."""
    stopping_since: datetime | None = None
    """UTC time ``dev`` began stopping the children (None while it runs). An attempt that failed for
    infrastructure reasons (``failure_kind``) and finished at or after it was interrupted by the stop:
    the worker shut down before the rollout finished, or could not start it any more."""
    train_reward: dict[int, Mean] = field(default_factory=dict)
    """Sample policy version → mean reward of its succeeded train rollouts."""
    val: dict[int, ValidationResult] = field(default_factory=dict)
    """Validated policy version → its latest ``ValidationResult`` (from streams, on ``validation``)."""
    val_answers: dict[int, dict[str, str]] = field(default_factory=dict)
    """Validated policy version → rollout_id → request_id of its last call (its answer), succeeded
    val rollouts only; the newest ``VAL_VERSIONS_KEPT`` versions."""
    requests: int = 0
    served_versions: Counter[int] = field(default_factory=Counter)
    """Policy version that served a call → number of calls."""
    val_responses: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """request_id → response token ids, for calls of val rollouts only: those answering a version in
    :attr:`val_answers`, and at most ``VAL_RESPONSES_UNCLAIMED`` × the val rollouts of one validation
    others (the newest: calls before the last of a rollout, or whose trajectory is not read yet)."""
    checkpoints: int = 0
    """CheckpointEvent records read."""
    latest_checkpoint: CheckpointEvent | None = None
    """The CheckpointEvent of the highest version read."""
    inference_versions: list[int] = field(default_factory=list)
    """Policy versions reported by the inference server's ``/health``, in polling order, each change
    once (not each poll)."""
    batches: int = 0
    group_outcomes: Counter[str] = field(default_factory=Counter)
    """``batched`` or ``dropped:<reason>`` → GroupOutcome records (what streams made of the groups)."""
    dlq: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    """``<stage> <error_type>`` → dead letters (records the monitor could decode as DeadLetter)."""
    dead_letter_reasons: deque[str] = field(default_factory=lambda: deque(maxlen=DEAD_LETTER_REASONS))
    """The reasons of the last ``DEAD_LETTER_REASONS`` dead letters, cut to 300 characters."""
    decode_errors: int = 0
    lag: dict[tuple[str, str], int] = field(default_factory=dict)
    """(consumer group, topic base name) → records behind the end offsets."""
    val_done_at: dict[int, float] = field(default_factory=dict)
    """Validated version → clock time at which its validation was first seen complete."""
    started_at: float | None = None
    """Clock time at which the run started (the runner sets it); wall times in the summary count from it."""
    started_unix: float | None = None
    """The same moment as Unix time in seconds (``started_unix`` in the summary: to place the stages'
    log lines on the run's time axis)."""
    val_target: float | None = None
    """The summary reports when the validation reward first reached this (``dev.val_target``)."""
    startup: dict[str, float] = field(default_factory=dict)
    """Start-up milestone → clock time it was first reached: the runner's (``broker_ready``,
    ``prepared``, ``published``, ``inference_ready``, ``sampler_started``; :meth:`mark`) and the
    topics' (``first_trajectory``, ``first_checkpoint``)."""
    _arrivals: deque[float] = field(default_factory=deque)
    last_progress: float = field(default=0.0)
    """Clock time of the last trajectory or checkpoint (for the drain rule)."""

    def mark(self, milestone: str) -> None:
        """Record that start-up ``milestone`` is reached now (only its first time counts)."""
        self.startup.setdefault(milestone, self.clock())

    # -- ingestion ------------------------------------------------------------------------------
    def on_task(self, task: Task) -> None:
        (self.val_tasks if task.split == Split.val else self.train_tasks).add(task.task_id)

    def on_sample(self, sample: Sample) -> None:
        if sample.retry == 0:
            self.samples += 1
        self._count(sample.rollout_id, +1)

    def on_request(self, req: LLMRequest) -> None:
        self.requests += 1
        self.served_versions[req.policy_version] += 1
        if req.rollout_id.startswith("val/"):
            self.val_responses[req.request_id] = tuple(req.response_token_ids)
            self._prune_val()

    def on_trajectory(self, traj: Trajectory) -> None:
        now = self.clock()
        self.trajectories += 1
        self._count(traj.rollout_id, -1)
        stopped = (
            self.stopping_since is not None
            and traj.status != RolloutStatus.succeeded
            and traj.failure_kind == FailureKind.infrastructure.value
            and traj.finished_at >= self.stopping_since
        )
        self.status["interrupted" if stopped else traj.status.value] += 1
        self._arrivals.append(now)
        self.last_progress = now
        self.startup.setdefault("first_trajectory", now)
        ok = traj.status == RolloutStatus.succeeded and traj.reward is not None
        if traj.mode == Mode.val:
            if ok and traj.request_ids:
                self.val_answers.setdefault(traj.policy_version, {})[traj.rollout_id] = traj.request_ids[-1]
                self._prune_val()
        elif ok:
            self.train_reward.setdefault(traj.policy_version, Mean()).add(float(traj.reward))  # type: ignore[arg-type]

    def on_validation(self, result: ValidationResult) -> None:
        """The latest figures of a version (a later record of the same version replaces the earlier)."""
        prev = self.val.get(result.policy_version)
        if prev is None or result.count >= prev.count:
            self.val[result.policy_version] = result
        if result.policy_version not in self.val_done_at and self.val_complete(result.policy_version):
            self.val_done_at[result.policy_version] = self.clock()

    def on_dead_letter(self, stage: str, error_type: str, reason: str) -> None:
        """A record on ``dlq`` (its envelope's stage, error type and reason)."""
        self.dead_letters[f"{stage} {error_type}"] += 1
        self.dead_letter_reasons.append(reason if len(reason) <= 300 else reason[:299] + "…")

    def on_batch(self, batch_id: str) -> None:
        """A record on ``batches`` (its key): a re-sent batch counts once."""
        if _first(self._seen_batches, batch_id):
            self.batches += 1

    def on_group_outcome(self, outcome: GroupOutcome) -> None:
        key = (outcome.group_id, str(outcome.status), outcome.reason or "", *outcome.rollout_ids)
        if not _first(self._seen_outcomes, key):
            return  # re-sent after a streams restart
        status = getattr(outcome.status, "value", outcome.status)
        self.group_outcomes[status if status == "batched" else f"dropped:{outcome.reason}"] += 1

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        self.checkpoints += 1
        if self.latest_checkpoint is None or event.version >= self.latest_checkpoint.version:
            self.latest_checkpoint = event
        self.last_progress = self.clock()
        self.startup.setdefault("first_checkpoint", self.last_progress)

    # -- figures ------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Latest published policy version (0 before the first checkpoint)."""
        return self.latest_checkpoint.version if self.latest_checkpoint is not None else 0

    def rollouts_per_s(self) -> float:
        """Trajectories per second over the last ``rate_window_s`` seconds."""
        now = self.clock()
        while self._arrivals and self._arrivals[0] < now - self.rate_window_s:
            self._arrivals.popleft()
        return len(self._arrivals) / self.rate_window_s

    def missing_trajectories(self) -> set[str]:
        """rollout_ids of samples whose latest emission has no trajectory (yet)."""
        return {rid for rid, n in self._open.items() if n > 0}

    def _count(self, rollout_id: str, delta: int) -> None:
        now = self.clock()
        n = self._open.get(rollout_id, 0) + delta
        if n == 0:
            self._open.pop(rollout_id, None)
            self._ahead_since.pop(rollout_id, None)
        else:
            self._open[rollout_id] = n
            if n < 0:
                self._ahead_since.setdefault(rollout_id, now)
            else:
                self._ahead_since.pop(rollout_id, None)
        ahead = self._ahead_since
        if len(ahead) > 64 and next(iter(ahead.values())) < now - EARLY_TTL_S:
            for rid in [r for r, t in ahead.items() if t < now - EARLY_TTL_S]:
                del ahead[rid]
                if self._open.get(rid, 0) < 0:
                    del self._open[rid]

    def _prune_val(self) -> None:
        """Keep the answers of the newest ``VAL_VERSIONS_KEPT`` versions and the responses they
        name, plus a bounded number of others (see :attr:`val_responses`)."""
        while len(self.val_answers) > VAL_VERSIONS_KEPT:
            for req_id in self.val_answers.pop(min(self.val_answers)).values():
                self.val_responses.pop(req_id, None)
        claimed = {r for answers in self.val_answers.values() for r in answers.values()}
        budget = len(claimed) + VAL_RESPONSES_UNCLAIMED * max(self.val_expected, 1)
        if len(self.val_responses) > budget:
            unclaimed = [r for r in self.val_responses if r not in claimed]  # oldest first
            for req_id in unclaimed[: len(self.val_responses) - budget]:
                del self.val_responses[req_id]

    @property
    def val_expected(self) -> int:
        """Val rollouts of one complete validation (val tasks × samples per task)."""
        return len(self.val_tasks) * self.val_samples_per_task

    def val_complete(self, version: int) -> bool:
        """True when streams has counted a result for every val rollout of ``version``."""
        res = self.val.get(version)
        return res is not None and self.val_expected > 0 and res.count >= self.val_expected

    def val_means(self) -> dict[int, float]:
        """Validated version → validation reward (``ValidationResult.mean``; complete validations only)."""
        return {v: self.val[v].mean for v in sorted(self.val) if self.val_complete(v)}

    def train_means(self) -> dict[int, float]:
        """Sample policy version → mean train reward."""
        return {
            v: m.value for v in sorted(self.train_reward) if (m := self.train_reward[v]).value is not None
        }

    def answers(self, version: int) -> Counter[tuple[int, ...]]:
        """Distinct answers (response token ids of the last call) of the val rollouts of ``version``."""
        out: Counter[tuple[int, ...]] = Counter()
        for req_id in self.val_answers.get(version, {}).values():
            resp = self.val_responses.get(req_id)
            if resp is not None:
                out[resp] += 1
        return out

    def summary(
        self, wall_s: float, decode: Callable[[tuple[int, ...]], str] | None = None
    ) -> dict[str, object]:
        """The run summary (``summary.json``).

        Keys: ``reward_first``/``reward_last`` (mean val reward at the first and the last completely
        validated version, None without validation), ``version_first``/``version_last``,
        ``distinct_answers_last`` (distinct greedy val answers at ``version_last``), ``top_answers_last``,
        ``val_reward`` and ``train_reward`` (version → mean), ``versions`` (latest policy version),
        ``rollouts`` (trajectory records), ``samples``, ``missing_trajectories``, ``status`` (see
        :attr:`status`: ``interrupted`` counts the attempts the run's stop cut short),
        ``requests``, ``served_version_max`` (highest version that served a call), ``group_outcomes``
        (``batched`` or ``dropped:<reason>`` → groups: what streams made of them),
        ``inference_version_first``/``_last`` (reported by the server's ``/health``), ``batches``, ``dlq``, ``dead_letters`` (``<stage> <error_type>`` → count) and
        ``dead_letter_reasons`` (the last few), ``wall_s``,
        ``val_wall_s`` (version → seconds from the run's start until its validation was complete) and
        ``val_target_reached`` (the first validated version whose reward is at least ``val_target``:
        ``{"target", "version", "val", "wall_s"}``; None when not reached or no target) and
        ``startup_s`` (start-up milestone → seconds from the run's start, in order; see :attr:`startup`).
        """
        val = self.val_means()
        first = min(val) if val else None
        last = max(val) if val else None
        answers = self.answers(last) if last is not None else Counter()
        show = decode or (lambda ids: " ".join(map(str, ids)))
        return {
            "reward_first": _round(val[first]) if first is not None else None,
            "reward_last": _round(val[last]) if last is not None else None,
            "version_first": first,
            "version_last": last,
            "distinct_answers_last": len(answers) if last is not None else None,
            "top_answers_last": [[show(a), n] for a, n in answers.most_common(10)],
            "val_reward": {str(v): _round(m) for v, m in val.items()},
            "val_tasks": len(self.val_tasks),
            "train_reward": {str(v): _round(m) for v, m in self.train_means().items()},
            "versions": self.version,
            "rollouts": self.trajectories,
            "samples": self.samples,
            "missing_trajectories": len(self.missing_trajectories()),
            "status": dict(self.status),
            "requests": self.requests,
            "served_version_max": max(self.served_versions, default=None),
            "inference_version_first": self.inference_versions[0] if self.inference_versions else None,
            "inference_version_last": self.inference_versions[-1] if self.inference_versions else None,
            "batches": self.batches,
            "group_outcomes": dict(sorted(self.group_outcomes.items())),
            "dlq": self.dlq,
            "dead_letters": dict(self.dead_letters),
            "dead_letter_reasons": list(self.dead_letter_reasons),
            "decode_errors": self.decode_errors,
            "wall_s": round(wall_s, 1),
            "val_wall_s": {str(v): self._since_start(v) for v in val},
            "val_target_reached": self.target_reached(),
            "started_unix": self.started_unix,
            "startup_s": {
                name: round(at - self.started_at, 1)
                for name, at in sorted(self.startup.items(), key=lambda kv: kv[1])
                if self.started_at is not None
            },
        }

    def _since_start(self, version: int) -> float | None:
        done = self.val_done_at.get(version)
        if done is None or self.started_at is None:
            return None
        return round(done - self.started_at, 1)

    def target_reached(self) -> dict[str, Any] | None:
        """The first completely validated version whose reward is at least ``val_target``:
        ``{"target", "version", "val", "wall_s"}``; None when none did or there is no target."""
        if self.val_target is None:
            return None
        for v, mean in self.val_means().items():
            if mean >= self.val_target:
                return {
                    "target": self.val_target,
                    "version": v,
                    "val": _round(mean),
                    "wall_s": self._since_start(v),
                }
        return None


def _first(recent: dict[Any, None], key: Any) -> bool:
    """True the first time ``key`` is seen among the last ``RECENT_IDS`` (``recent``: an ordered set)."""
    if key in recent:
        return False
    recent[key] = None
    if len(recent) > RECENT_IDS:
        del recent[next(iter(recent))]
    return True


def _round(x: float) -> float:
    return round(x, 4) if math.isfinite(x) else x
