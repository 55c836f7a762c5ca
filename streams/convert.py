"""Records ↔ the compact dicts the tables store, and batch records (inline or claim-check).

Claim-check payload format: the bytes of the *inline* ``TrainingBatch`` (same ``batch_id``, ``rows``
set, ``claim_check`` None) encoded with ``streamrl.schemas.serde.Serde``; the trainer decodes it with
``serde.decode(data, TrainingBatch).rows``. The file is ``<blob_dir>/<batch_id>.avro``, written
atomically (temp file + rename); a re-emitted batch rewrites identical bytes.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from streamrl.schemas import ClaimCheck, LLMRequest, TrainingBatch, TrainingRow, Trajectory, digest_bytes
from streamrl.schemas.serde import Serde
from streamrl.streams.groups import Batch
from streamrl.streams.rows import Call, Traj


def call_of(req: LLMRequest, ts: float) -> Call:
    """Compact form of one request record received with record time ``ts`` (seconds).

    Raises:
        ValueError: ``response_logprobs`` and ``response_token_ids`` differ in length.
    """
    if len(req.response_logprobs) != len(req.response_token_ids):
        raise ValueError(
            f"request {req.request_id}: {len(req.response_logprobs)} logprobs for "
            f"{len(req.response_token_ids)} response tokens"
        )
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


def blob_root(blob_dir: str) -> Path:
    """The directory of a ``blob_dir`` setting (local path or ``file://`` URI).

    Raises:
        ValueError: another URI scheme.
    """
    parsed = urlparse(blob_dir)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme:
        return Path(blob_dir)
    raise ValueError(f"streams.blob_dir={blob_dir!r}: only local paths and file:// URIs are supported")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def batch_record(
    batch: Batch, *, policy_name: str, serde: Serde, claim_check_bytes: int, blob_dir: str
) -> tuple[TrainingBatch, bytes]:
    """The ``TrainingBatch`` of ``batch`` and its encoded bytes; claim-check form above the size limit.

    ``created_at`` is the event time that closed the batch, so a re-emitted batch is byte-identical.

    Raises:
        ValueError: the batch has no rows; a row violates the ``TrainingRow`` invariants.
        OSError: the claim-check payload cannot be written.
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
    path = (blob_root(blob_dir) / f"{batch.batch_id}.avro").resolve()
    _write_atomic(path, data)
    cc = ClaimCheck(uri=path.as_uri(), digest=digest_bytes(data), size_bytes=len(data), num_rows=len(rows))
    pointer = TrainingBatch(rows=None, claim_check=cc, **common)
    return pointer, serde.encode(pointer)


def read_claim_check(batch: TrainingBatch, serde: Serde) -> list[TrainingRow]:
    """Rows behind a claim-check batch (for tests and tools), digest verified.

    Raises:
        ValueError: digest or size mismatch.
    """
    assert batch.claim_check is not None
    cc = batch.claim_check
    data = Path(unquote(urlparse(cc.uri).path)).read_bytes()
    if len(data) != cc.size_bytes or digest_bytes(data) != cc.digest:
        raise ValueError(f"claim-check {cc.uri}: size or digest mismatch")
    inner = serde.decode(data, TrainingBatch)
    assert inner.rows is not None
    return list(inner.rows)
