"""Each rule that crosses a stage boundary has one home in ``schemas/``, and both sides use it.

These tests put the two sides of a contract next to each other (what one stage writes, the other
reads) and check that no second definition comes back.
"""

from __future__ import annotations

from pathlib import Path

from streamrl.schemas import TrainingBatch
from streamrl.schemas.serde import Serde


def test_a_claim_check_written_by_streams_is_trained_by_the_trainer(tmp_path: Path) -> None:
    from streamrl.streams.convert import batch_record
    from streamrl.streams.groups import Batch
    from streamrl.trainer.batch import prepare_batch

    rows = [
        {
            "rollout_id": f"t/0/{k}",
            "group_id": "t/0",
            "agent_name": None,
            "prompt_ids": [1, 2, 3],
            "response_ids": [4, 5],
            "response_mask": [1, 1],
            "behaviour_logprobs": [-0.5, -1.5],
            "token_rewards": [0.0, float(k)],
            "reward": float(k),
            "policy_version": 4,
            "weight": 1.0,
        }
        for k in range(4)
    ]
    serde = Serde()
    record, data = batch_record(
        Batch("b-x", ["t/0"], rows, ts=1.0, last_event_ts=1.0),
        policy_name="policy",
        serde=serde,
        claim_check_bytes=16,
        blob_dir=str(tmp_path),
    )
    assert record.claim_check is not None and record.rows is None
    on_topic = serde.decode(data, TrainingBatch)  # what the trainer receives from `batches`
    dp = prepare_batch(on_topic, serde=Serde(), trainer_version=4, max_staleness=0, vocab_size=8)
    assert dp.batch["responses"].tolist() == [[4, 5]] * 4
    assert list(dp.non_tensor_batch["rollout_id"]) == [r["rollout_id"] for r in rows]


def test_no_stage_reads_or_writes_claim_check_files_itself() -> None:
    """The claim-check file is read and written only by ``schemas/claim_check.py``."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("streams", "trainer", "producers", "consumers", "inference", "streamrl", "dev", "cli"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "claim_check" in text and (
                "hashlib" in text or "read_bytes()" in text or "digest_bytes" in text
            ):
                offenders.append(str(path.relative_to(root)))
    assert not offenders, f"claim-check file handling outside schemas/claim_check.py: {offenders}"
