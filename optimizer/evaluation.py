"""Evaluations: one prompt version on a set of tasks, scored with the one scoring rule.

An evaluation has an ``eval_id`` (no ``/``); its rollouts are ``<eval_id>/<task_id>`` (group
``eval_id``, group size 1), each a Sample pinned to the version. It is *published* once its samples
are acknowledged, with a wall-clock ``deadline``; it is *finished* when every task has a counted
outcome or the deadline passed. Its score is :func:`streamrl.schemas.scoring.figures` of the
outcomes, where a rollout without a counted outcome at the deadline is added as ``timeout`` (0): a
prompt that makes the agent hang scores 0, not "left out".

Everything here is a function of the trajectories read (in log order, with their record times) and
of the evaluation's persisted fields, so a restarted optimizer that re-reads ``trajectories`` from
the run's start offsets reaches the same outcomes. A trajectory whose record time is after the
deadline does not count, whenever it is read.

Infrastructure failures (``schemas.scoring.counts`` is False) score nothing; the rollout is
re-issued (``retry + 1``) up to ``max_infra_retries`` times while the deadline is ahead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamrl.schemas import LLMRequest, RolloutStatus, Trajectory
from streamrl.schemas.scoring import add_outcome, counts, figures

__all__ = ["AttemptInfo", "EvalResult", "Evaluation", "rollout_id", "split_rollout_id"]


def rollout_id(eval_id: str, task_id: str) -> str:
    """``<eval_id>/<task_id>``."""
    return f"{eval_id}/{task_id}"


def split_rollout_id(rid: str) -> tuple[str, str]:
    """``(eval_id, task_id)`` of an evaluation rollout id (the eval id has no ``/``)."""
    eval_id, _, task_id = rid.partition("/")
    return eval_id, task_id


@dataclass(frozen=True)
class EvalResult:
    """A finished evaluation's figures (``score`` = mean over all tasks) and per-task scores."""

    score: float
    count: int
    succeeded: int
    failed: int
    timed_out: int
    task_rewards: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "count": self.count,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "task_rewards": dict(self.task_rewards),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvalResult:
        return cls(
            float(d["score"]),
            int(d["count"]),
            int(d["succeeded"]),
            int(d["failed"]),
            int(d["timed_out"]),
            {k: float(v) for k, v in d["task_rewards"].items()},
        )


@dataclass
class AttemptInfo:
    """The attempt of a rollout that a critique or a demonstration reads: its first success, else
    its latest counted failure."""

    task_id: str
    status: str
    reward: float | None
    error: str | None
    attempt_id: str
    request_ids: list[str]


@dataclass
class Evaluation:
    """One evaluation: persisted fields (in the run's state) and, in memory, what was read.

    Attributes:
        eval_id: unique within the run, no ``/``.
        version: the resource version evaluated.
        split: ``train`` (rollouts for critiques or demonstrations) or ``val``.
        task_ids: the tasks, in order.
        round: the round that made it.
        keep_calls: keep each rollout's recorded calls (critiques, demonstrations).
        deadline: wall-clock seconds since the epoch; None until published.
        retries: re-issues made per task (infrastructure failures).
        result: the figures once finished.
    """

    eval_id: str
    version: str
    split: str
    task_ids: list[str]
    round: int
    keep_calls: bool = False
    deadline: float | None = None
    retries: dict[str, int] = field(default_factory=dict)
    result: EvalResult | None = None
    entry: dict[str, Any] | None = field(default=None, repr=False)
    attempts: dict[str, AttemptInfo] = field(default_factory=dict, repr=False)

    @property
    def published(self) -> bool:
        return self.deadline is not None

    @property
    def finished(self) -> bool:
        return self.result is not None

    def scored(self) -> int:
        """Tasks with a counted outcome so far."""
        return len((self.entry or {}).get("outcomes", {}))

    def complete(self) -> bool:
        """Every task has a counted outcome."""
        return self.scored() >= len(self.task_ids)

    def apply(self, traj: Trajectory, ts_s: float) -> bool:
        """Count one trajectory of this evaluation (record time ``ts_s``, seconds since the epoch).

        Returns:
            True if the outcomes changed. A trajectory after the deadline, of an unknown task, an
            infrastructure failure, or a repeat changes nothing. A finished evaluation (its result
            read back from the state) keeps its result; its attempts are still recorded, for the
            critiques and demonstrations made from it.
        """
        _, task_id = split_rollout_id(traj.rollout_id)
        if task_id not in self.task_ids or not counts(traj):
            return False
        if self.deadline is not None and ts_s > self.deadline:
            return False
        entry = add_outcome(self.entry, traj.rollout_id, traj.status.value, traj.reward, ts_s)
        if entry is None:
            return False
        prev = self.attempts.get(task_id)
        if prev is None or prev.status != RolloutStatus.succeeded.value:
            self.attempts[task_id] = AttemptInfo(
                task_id, traj.status.value, traj.reward, traj.error, traj.attempt_id, list(traj.request_ids)
            )
        if self.finished:
            return False
        self.entry = entry
        return True

    def reissue(self, traj: Trajectory, now_s: float, max_retries: int) -> int | None:
        """The retry number to re-issue a rollout with after an infrastructure failure, or None.

        Re-issues only the latest issue of a task without a counted outcome, while the deadline is
        ahead and ``max_retries`` is not spent; the caller publishes it and records it in ``retries``.
        """
        _, task_id = split_rollout_id(traj.rollout_id)
        if counts(traj) or self.finished or task_id not in self.task_ids:
            return None
        issued = self.retries.get(task_id, 0)
        if traj.retry < issued or issued >= max_retries:
            return None
        if self.deadline is not None and now_s >= self.deadline:
            return None
        if rollout_id(self.eval_id, task_id) in (self.entry or {}).get("outcomes", {}):
            return None
        return issued + 1

    def finish(self, now_s: float) -> EvalResult:
        """Score it: every task without a counted outcome is added as ``timeout`` (scores 0)."""
        entry = self.entry
        for task_id in self.task_ids:
            rid = rollout_id(self.eval_id, task_id)
            if rid not in (entry or {}).get("outcomes", {}):
                entry = add_outcome(entry, rid, RolloutStatus.timeout.value, None, now_s) or entry
        assert entry is not None
        f = figures(entry)
        rewards = {split_rollout_id(rid)[1]: float(v[1]) for rid, v in entry["outcomes"].items()}
        self.entry = entry
        self.result = EvalResult(f.mean, f.count, f.succeeded, f.failed, f.timed_out, rewards)
        return self.result

    def to_json(self) -> dict[str, Any]:
        return {
            "eval_id": self.eval_id,
            "version": self.version,
            "split": self.split,
            "task_ids": list(self.task_ids),
            "round": self.round,
            "keep_calls": self.keep_calls,
            "deadline": self.deadline,
            "retries": dict(self.retries),
            "result": self.result.to_json() if self.result is not None else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Evaluation:
        return cls(
            eval_id=d["eval_id"],
            version=d["version"],
            split=d["split"],
            task_ids=list(d["task_ids"]),
            round=int(d["round"]),
            keep_calls=bool(d.get("keep_calls", False)),
            deadline=d.get("deadline"),
            retries={k: int(v) for k, v in d.get("retries", {}).items()},
            result=EvalResult.from_json(d["result"]) if d.get("result") is not None else None,
        )


class CallBook:
    """The last recorded call of the optimized agent in each attempt of the rollouts that keep calls.

    ``agent_name`` None keeps the last call of any agent. The last call holds the whole
    conversation (every earlier turn and tool result is in its prompt).
    """

    def __init__(self, agent_name: str | None) -> None:
        self.agent_name = agent_name
        self._last: dict[tuple[str, str], LLMRequest] = {}

    def add(self, req: LLMRequest) -> None:
        if self.agent_name is not None and req.agent_name != self.agent_name:
            return
        if req.choice_index != 0:
            return
        key = (req.rollout_id, req.attempt_id)
        prev = self._last.get(key)
        if prev is None or req.sequence >= prev.sequence:
            self._last[key] = req

    def last_call(self, rid: str, attempt: AttemptInfo) -> LLMRequest | None:
        """The attempt's last call by the optimized agent, if it was read (and listed by the trajectory)."""
        req = self._last.get((rid, attempt.attempt_id))
        if req is None or (attempt.request_ids and req.request_id not in attempt.request_ids):
            return None
        return req
