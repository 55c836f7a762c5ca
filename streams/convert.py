"""Records ↔ the compact dicts the tables store, and batch records (inline or claim-check).

The claim-check file (format, URI forms, digest) is :mod:`streamrl.schemas.claim_check`, shared with
the trainer that reads it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from streamrl.schemas import LLMRequest, TrainingBatch, TrainingRow, Trajectory
from streamrl.schemas.claim_check import write_claim_check
from streamrl.schemas.inference_http import logprob_temperature
from streamrl.schemas.serde import Serde
from streamrl.streams.groups import Batch
from streamrl.streams.rows import Call, Traj


def call_of(req: LLMRequest, ts: float, logprobs_mode: str = "scaled") -> Call:
    """Compact form of one request record received with record time ``ts`` (seconds); the record's
    invariants (equal token/logprob lengths, logprobs <= 0) were checked when it was decoded.
    ``logprobs_mode`` is the inference service's (``inference.logprobs_mode``): with the request's
    temperature it gives the temperature its logprobs were taken at (:func:`logprob_temperature`)."""
    return Call(
        request_id=req.request_id,
        attempt_id=req.attempt_id,
        agent_name=req.agent_name,
        sequence=int(req.sequence),
        prompt=list(req.prompt_token_ids),
        response=list(req.response_token_ids),
        logprobs=[float(x) for x in req.response_logprobs],
        version=int(req.policy_version),
        ts=ts,
        temperature=logprob_temperature(req.temperature, logprobs_mode),
    )


def traj_of(t: Trajectory, ts: float, offset: int = -1) -> Traj:
    """Compact form of one trajectory record received with record time ``ts`` (seconds) at ``offset``."""
    return Traj(
        rollout_id=t.rollout_id,
        attempt_id=t.attempt_id,
        task_id=t.task_id,
        group_id=t.group_id,
        group_size=int(t.group_size),
        mode=t.mode.value,
        status=t.status.value,
        reward=t.reward,
        rewards=[
            {"name": r.name, "value": float(r.value), "primary": bool(r.primary), "request_id": r.request_id}
            for r in t.rewards
        ],
        request_ids=list(t.request_ids),
        policy_version=int(t.policy_version),
        ts=ts,
        offset=offset,
    )


def batch_record(
    batch: Batch, *, policy_name: str, serde: Serde, claim_check_bytes: int, blob_dir: str
) -> tuple[TrainingBatch, bytes]:
    """The ``TrainingBatch`` of ``batch`` and its encoded bytes; claim-check form above the size limit.

    ``created_at`` is the event time that closed the batch, so a re-emitted batch is byte-identical.

    Raises:
        ValueError: the batch has no rows; a row violates the ``TrainingRow`` invariants.
        ClaimCheckError: the claim-check file cannot be written.
    """
    if not batch.rows:
        raise ValueError(f"batch {batch.batch_id} has no rows")
    rows = [TrainingRow(**row) for row in batch.rows]
    versions = [r.policy_version for r in rows]
    common: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "policy_name": policy_name,
        "num_groups": len(batch.group_ids),
        "min_policy_version": min(versions),
        "max_policy_version": max(versions),
        "created_at": datetime.fromtimestamp(batch.ts, tz=timezone.utc),
    }
    inline = TrainingBatch(rows=rows, claim_check=None, **common)
    data = serde.encode(inline)
    if len(data) <= claim_check_bytes:
        return inline, data
    cc = write_claim_check(inline, data, blob_dir)
    pointer = TrainingBatch(rows=None, claim_check=cc, **common)
    return pointer, serde.encode(pointer)
