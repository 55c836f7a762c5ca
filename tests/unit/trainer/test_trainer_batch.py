"""Batch record -> DataProto: layout, validation (what and where), staleness filtering, claim-checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from streamrl.schemas import ClaimCheck, TrainingBatch, TrainingRow
from streamrl.schemas.serde import Serde
from streamrl.trainer.batch import prepare_batch, rows_to_dataproto
from streamrl.trainer.errors import BadBatchError


def _row(
    i: int, prompt: list[int], resp: list[int], version: int = 3, group: str = "g0", **kw: object
) -> TrainingRow:
    n = len(resp)
    fields: dict[str, object] = dict(
        rollout_id=f"r{i}",
        group_id=group,
        prompt_ids=prompt,
        response_ids=resp,
        response_mask=[1] * n,
        behaviour_logprobs=[-0.5] * n,
        token_rewards=[0.0] * (n - 1) + [1.0],
        reward=1.0,
        policy_version=version,
    )
    fields.update(kw)
    return TrainingRow.model_construct(**fields)  # no validation: lets tests build bad rows


def _batch(rows: list[TrainingRow], bid: str = "b1") -> TrainingBatch:
    return TrainingBatch.model_construct(
        batch_id=bid,
        policy_name="policy",
        num_groups=1,
        rows=rows,
        claim_check=None,
        min_policy_version=0,
        max_policy_version=3,
        schema_version=1,
    )


def _prep(batch: TrainingBatch, **kw: object):
    args: dict[str, object] = dict(
        serde=None, trainer_version=3, max_staleness=1, vocab_size=16, max_positions=64
    )
    args.update(kw)
    return prepare_batch(batch, **args)  # type: ignore[arg-type]


def test_layout_left_pads_prompts_right_pads_responses() -> None:
    rows = [_row(0, [5, 6, 7], [8, 9]), _row(1, [4], [3, 2, 1], response_mask=[1, 0, 1])]
    d = rows_to_dataproto(rows, pad_token_id=0, meta={"batch_id": "b"})
    assert d.batch["prompts"].tolist() == [[5, 6, 7], [0, 0, 4]]
    assert d.batch["responses"].tolist() == [[8, 9, 0], [3, 2, 1]]
    assert d.batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert d.batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    assert d.batch["response_mask"].tolist() == [[1, 1, 0], [1, 0, 1]]
    assert d.batch["token_level_scores"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert d.batch["rollout_log_probs"][0].tolist() == [-0.5, -0.5, 0.0]
    assert list(d.non_tensor_batch["uid"]) == ["g0", "g0"]
    assert d.meta_info["batch_id"] == "b"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"response_mask": [1, 1, 1]}, r"len\(response_mask\)=3 != len\(response_ids\)=2"),
        ({"reward": float("nan")}, r"TrainingRow.reward must be finite, got nan"),
        ({"token_rewards": [0.0, float("inf")]}, r"token_rewards\[1\] must be finite"),
        ({"behaviour_logprobs": [-0.1, 0.7]}, r"behaviour_logprobs\[1\] = 0.7 > 0: not a log-probability"),
        ({"prompt_ids": []}, "prompt_ids is empty"),
        ({"weight": -1.0}, "weight must be >= 0"),
    ],
)
def test_a_rows_own_rules_are_the_records_invariants(kw: dict[str, object], match: str) -> None:
    """What a row is (shapes, values) is checked once, by TrainingRow when a batch is built or decoded;
    the trainer checks only what depends on its model."""
    fields = dict(_row(0, [5, 6], [8, 9]))
    fields.update(kw)
    with pytest.raises(ValueError, match=match):
        TrainingRow(**fields)


def test_rows_beyond_the_models_limits_are_dropped_alone() -> None:
    rows = [_row(0, [5, 6], [8, 99]), _row(1, [5, 6], [8, 9]), _row(2, [5, 6, 7], [8, 9, 10])]
    d = _prep(_batch(rows), max_positions=5)
    assert list(d.non_tensor_batch["rollout_id"]) == ["r1"]
    assert d.meta_info["rejected"] == [
        (0, "r0", "token id range [5, 99] outside the vocabulary [0, 16)"),
        (2, "r2", "3+3 tokens exceed the model's 5 positions"),
    ]
    assert d.meta_info["num_rollouts"] == 3  # consumed, the rejected ones too


def test_a_batch_with_no_row_the_model_can_take_is_bad() -> None:
    with pytest.raises(BadBatchError, match=r"1 beyond the model's limits \(row 0 \('r0'\): .*4 positions\)"):
        _prep(_batch([_row(0, [5, 6, 7], [8, 9])]), max_positions=4)


def test_stale_rows_are_dropped_and_all_stale_is_an_empty_batch() -> None:
    rows = [_row(0, [5], [8], version=1), _row(1, [5], [9], version=2), _row(2, [5], [3], version=3)]
    d = _prep(_batch(rows), trainer_version=3, max_staleness=1)
    assert list(d.non_tensor_batch["rollout_id"]) == ["r1", "r2"]
    assert d.meta_info["dropped_stale"] == 1
    with pytest.raises(
        BadBatchError, match=r"empty after filtering: 3 rows in, 3 staler than max_staleness=0"
    ):
        _prep(_batch(rows), trainer_version=5, max_staleness=0)


def test_weight_policy_keeps_stale_rows_with_a_decayed_weight() -> None:
    rows = [
        _row(0, [5], [8], version=0),  # staleness 3: 0.5 ** 2
        _row(1, [5], [9], version=1, weight=0.5),  # staleness 2: 0.5 ** 1, times its own weight
        _row(2, [5], [3], version=3),  # fresh
    ]
    d = _prep(_batch(rows), trainer_version=3, max_staleness=1, staleness_policy="weight")
    assert list(d.non_tensor_batch["rollout_id"]) == ["r0", "r1", "r2"]
    assert d.batch["row_weights"].tolist() == [0.25, 0.25, 1.0]
    assert d.meta_info["dropped_stale"] == 0 and d.meta_info["weighted_stale"] == 2
    d = _prep(
        _batch(rows), trainer_version=3, max_staleness=1, staleness_policy="weight", stale_weight_decay=1.0
    )
    assert d.batch["row_weights"].tolist() == [1.0, 0.5, 1.0] and d.meta_info["weighted_stale"] == 0
    # every row stale is not an empty batch under the weight policy
    d = _prep(_batch(rows), trainer_version=9, max_staleness=0, staleness_policy="weight")
    assert len(d) == 3 and d.meta_info["weighted_stale"] == 3


def test_rows_without_trained_tokens_are_dropped() -> None:
    rows = [_row(0, [5], [8, 9], response_mask=[0, 0]), _row(1, [5], [9])]
    d = _prep(_batch(rows))
    assert len(d) == 1 and d.meta_info["dropped_no_tokens"] == 1


def _claim_batch(
    tmp_path: Path, payload: bytes, *, digest: str | None = None, size: int | None = None, n: int = 2
) -> TrainingBatch:
    f = tmp_path / "payload.avro"
    f.write_bytes(payload)
    cc = ClaimCheck(
        uri=f.as_uri(),
        digest=digest or "sha256:" + hashlib.sha256(payload).hexdigest(),
        size_bytes=size if size is not None else len(payload),
        num_rows=n,
    )
    return TrainingBatch(
        batch_id="b1",
        policy_name="policy",
        num_groups=1,
        claim_check=cc,
        min_policy_version=3,
        max_policy_version=3,
    )


def test_claim_check_payload_is_read_verified_and_decoded(tmp_path: Path) -> None:
    """The file checks themselves are tested with the format (tests/unit/schemas/test_claim_check.py);
    here: the trainer trains what the file holds, and a file that fails a check is a bad batch."""
    serde = Serde()
    inline = TrainingBatch(
        batch_id="b1",
        policy_name="policy",
        num_groups=1,
        min_policy_version=3,
        max_policy_version=3,
        rows=[TrainingRow(**_row(0, [5], [8]).__dict__), TrainingRow(**_row(1, [5], [9]).__dict__)],
    )
    payload = serde.encode(inline)
    d = _prep(_claim_batch(tmp_path, payload), serde=serde)
    assert d.batch["responses"].tolist() == [[8], [9]]
    torch.testing.assert_close(d.batch["token_level_scores"], torch.tensor([[1.0], [1.0]]))
    with pytest.raises(
        BadBatchError, match=r"batch 'b1': claim-check .*: digest sha256:.* != declared sha256:00"
    ):
        _prep(_claim_batch(tmp_path, payload, digest="sha256:" + "0" * 64), serde=serde)
    with pytest.raises(BadBatchError, match="no serde"):
        _prep(_claim_batch(tmp_path, payload), serde=None)
