"""The validation reward of a policy version: computed here and published as ``ValidationResult``.

The scoring rule is :mod:`streamrl.schemas.scoring`, the one definition the prompt optimizer uses
too. Definition (the record's docstring repeats it for readers): every val rollout of a policy version
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
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streamrl.schemas import ValidationResult
from streamrl.schemas.scoring import add_outcome, validation_result

#: Imported, not defined here: the definition lives once in :mod:`streamrl.schemas.scoring`.
__all__ = ["add_outcome", "result", "summary", "write_json"]


def result(policy_name: str, version: int, entry: dict[str, Any]) -> ValidationResult:
    """The ``ValidationResult`` of one version's entry (:func:`streamrl.schemas.scoring.validation_result`)."""
    return validation_result(policy_name, version, entry)


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
