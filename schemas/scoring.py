"""The one definition of a validation score, shared by every stage that scores rollouts.

Streams computes the validation reward of a policy version with it (``ValidationResult``), and the
prompt optimizer the score of an evaluation (a prompt version on a set of tasks) with it: one rule,
written once.

Definition: every rollout counts once, by ``rollout_id``. Its score is the reward of its first
succeeded attempt; while it has only failed or timed-out attempts it scores 0 (a re-issued rollout
that then succeeds replaces the 0). The figures are the count, the succeeded/failed/timed-out
counts, and the mean (the score), population standard deviation, minimum and maximum of the
scores, failed and timed-out rollouts included. A rollout that never finished is counted by the
caller as ``timeout`` (the optimizer does so at an evaluation's deadline): it scores 0 too. An
attempt that failed for the infrastructure (``Trajectory.failure_kind`` ``infrastructure``: the
inference service unreachable or failing, the worker stopping) says nothing about the policy or the
prompt, so it scores nothing (:func:`counts`): its rollout is re-issued, and scores 0 only if it never
finishes.

An *entry* is ``{"outcomes": {rollout_id: [status, score]}, "ts": seconds}``, a JSON-ready value
(streams keeps it in a Faust table); :func:`add_outcome` is idempotent, so at-least-once input
cannot double count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from streamrl.schemas.records import FailureKind, RolloutStatus, Trajectory, ValidationResult

SUCCEEDED = RolloutStatus.succeeded.value


def counts(trajectory: Trajectory) -> bool:
    """Whether an attempt's outcome is scored: every attempt but an infrastructure failure."""
    return trajectory.failure() is not FailureKind.infrastructure


def add_outcome(
    entry: dict[str, Any] | None, rollout_id: str, status: str, reward: float | None, ts: float
) -> dict[str, Any] | None:
    """The entry with one more attempt's outcome applied, or None when nothing changes.

    Args:
        entry: the entry so far (None: the first outcome).
        rollout_id: the attempt's rollout.
        status: ``succeeded``, ``failed`` or ``timeout``.
        reward: the attempt's reward (set on every succeeded trajectory: its invariants).
        ts: the outcome's time (the trajectory record's), seconds since the epoch.

    Returns:
        The new entry; None if ``rollout_id`` already has a success, or already has a failure and
        this is another failure (the first outcome of each kind counts).

    Raises:
        ValueError: a succeeded outcome without a reward (never scored as 0).
    """
    outcomes: dict[str, list[Any]] = dict((entry or {}).get("outcomes", {}))
    prev = outcomes.get(rollout_id)
    if prev is not None and (prev[0] == SUCCEEDED or status != SUCCEEDED):
        return None
    if status == SUCCEEDED and reward is None:
        raise ValueError(f"rollout {rollout_id}: succeeded without a reward")
    score = float(reward) if status == SUCCEEDED else 0.0  # type: ignore[arg-type]
    outcomes[rollout_id] = [status, score]
    return {"outcomes": outcomes, "ts": max(float(ts), float((entry or {}).get("ts", ts)))}


@dataclass(frozen=True)
class Figures:
    """The figures of an entry (at least one outcome): ``mean`` is the score."""

    count: int
    succeeded: int
    failed: int
    timed_out: int
    mean: float
    std: float
    min: float
    max: float


def figures(entry: dict[str, Any]) -> Figures:
    """The :class:`Figures` of an entry with at least one outcome.

    Raises:
        ValueError: the entry has no outcome.
    """
    values = list(entry.get("outcomes", {}).values())
    if not values:
        raise ValueError("no outcome to score")
    scores = [float(v[1]) for v in values]
    n = len(scores)
    lo, hi = min(scores), max(scores)
    mean = min(max(math.fsum(scores) / n, lo), hi)  # clamped: rounding may step just outside
    var = math.fsum((s - mean) ** 2 for s in scores) / n
    statuses = [v[0] for v in values]
    return Figures(
        count=n,
        succeeded=statuses.count(SUCCEEDED),
        failed=statuses.count(RolloutStatus.failed.value),
        timed_out=statuses.count(RolloutStatus.timeout.value),
        mean=mean,
        std=math.sqrt(var),
        min=lo,
        max=hi,
    )


def validation_result(policy_name: str, version: int, entry: dict[str, Any]) -> ValidationResult:
    """The ``ValidationResult`` of one policy version's entry (at least one outcome)."""
    f = figures(entry)
    return ValidationResult(
        policy_name=policy_name,
        policy_version=version,
        count=f.count,
        succeeded=f.succeeded,
        failed=f.failed,
        timed_out=f.timed_out,
        mean=f.mean,
        std=f.std,
        min=f.min,
        max=f.max,
        updated_at=datetime.fromtimestamp(float(entry["ts"]), tz=timezone.utc),
    )
