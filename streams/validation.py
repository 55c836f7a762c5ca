"""The validation reward of a policy version: computed here, once, and published as ``ValidationResult``.

Definition (the record's docstring repeats it for readers): every val rollout of a policy version
counts once, by ``rollout_id``. Its score is the reward of its first succeeded attempt; while it has
only failed or timed-out attempts it scores 0 (the sampler re-issues a failed rollout up to
``sampler.max_retries`` times, and a later success replaces the 0). The version's figures are the
count, the succeeded/failed/timed-out counts, and the mean, population standard deviation, minimum
and maximum of the scores, failed and timed-out rollouts included.

The input is every val ``Trajectory`` (any status) but infrastructure failures, straight from
``trajectories``: a val rollout needs no join with its calls to be scored. An attempt the inference
service failed (``failure_kind`` infrastructure) says nothing about the policy, so it scores
nothing; the sampler re-issues it. The table value per policy version is
``{"outcomes": {rollout_id: [status, score]}, "ts": latest counted trajectory's record time in
seconds}``; :func:`add_outcome` is idempotent, so at-least-once input cannot double count, and the
table never shrinks, so a replayed event re-publishes the latest figures, never older ones.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from streamrl.schemas import RolloutStatus, ValidationResult

SUCCEEDED = RolloutStatus.succeeded.value


def add_outcome(
    entry: dict[str, Any] | None, rollout_id: str, status: str, reward: float | None, ts: float
) -> dict[str, Any] | None:
    """The version's entry with one more val trajectory applied, or None when nothing changes.

    Args:
        entry: the table value of the version (None: first rollout of the version).
        rollout_id: the trajectory's rollout.
        status: ``succeeded``, ``failed`` or ``timeout``.
        reward: the trajectory's reward (set on every succeeded trajectory: its invariants).
        ts: the trajectory record's time, seconds since the epoch.

    Returns:
        The new entry; None if ``rollout_id`` already has a success, or already has a failure and
        this is another failure (the first outcome of each kind counts).

    Raises:
        ValueError: a succeeded outcome without a reward (never trained or scored as 0).
    """
    outcomes: dict[str, list[Any]] = dict((entry or {}).get("outcomes", {}))
    prev = outcomes.get(rollout_id)
    if prev is not None and (prev[0] == SUCCEEDED or status != SUCCEEDED):
        return None
    if status == SUCCEEDED and reward is None:
        raise ValueError(f"val rollout {rollout_id}: succeeded without a reward")
    score = float(reward) if status == SUCCEEDED else 0.0  # type: ignore[arg-type]
    outcomes[rollout_id] = [status, score]
    return {"outcomes": outcomes, "ts": max(float(ts), float((entry or {}).get("ts", ts)))}


def result(policy_name: str, version: int, entry: dict[str, Any]) -> ValidationResult:
    """The ``ValidationResult`` of one version's entry (at least one outcome)."""
    values = list(entry["outcomes"].values())
    scores = [float(v[1]) for v in values]
    n = len(scores)
    lo, hi = min(scores), max(scores)
    mean = min(max(math.fsum(scores) / n, lo), hi)  # clamped: rounding may step just outside
    var = math.fsum((s - mean) ** 2 for s in scores) / n
    statuses = [v[0] for v in values]
    return ValidationResult(
        policy_name=policy_name,
        policy_version=version,
        count=n,
        succeeded=statuses.count(SUCCEEDED),
        failed=statuses.count(RolloutStatus.failed.value),
        timed_out=statuses.count(RolloutStatus.timeout.value),
        mean=mean,
        std=math.sqrt(var),
        min=lo,
        max=hi,
        updated_at=datetime.fromtimestamp(float(entry["ts"]), tz=timezone.utc),
    )


def summary(policy_name: str, items: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``{version: {count, succeeded, failed, timed_out, mean, std, min, max, updated_at}}``, by version
    (what ``validation.json`` and the web endpoint show: the published records' figures)."""
    out: dict[str, dict[str, Any]] = {}
    for version, entry in sorted(items, key=lambda kv: int(kv[0])):
        if not entry.get("outcomes"):
            continue
        rec = result(policy_name, int(version), entry)
        out[str(version)] = rec.model_dump(
            mode="json", exclude={"schema_version", "policy_name", "policy_version"}
        )
    return out


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
