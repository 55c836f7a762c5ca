"""Validators of the pydantic records: what Avro cannot express."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from streamrl.schemas import (
    CheckpointEvent,
    ClaimCheck,
    FailureKind,
    LLMRequest,
    Reward,
    RolloutStatus,
    Sample,
    Task,
    TrainingBatch,
    TrainingRow,
    Trajectory,
)
from tests.support import records as ex


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_id": None}, "batch_id must be set exactly when status is batched"),
        ({"reason": "late"}, "reason must be set exactly when status is dropped"),
        ({"rollout_ids": []}, "rollout_ids is empty"),
        ({"rollout_ids": ["g/0", "g/0"]}, "rollout_ids has repeats"),
        ({"status": "dropped", "batch_id": None}, "reason must be set exactly when status is dropped"),
    ],
)
def test_group_outcome_rejects(changes, message):
    with pytest.raises(ValidationError) as info:
        _with(ex.group_outcome(), **changes)
    assert message in str(info.value)


def _with(record, **changes):
    """Rebuild `record` through full validation with some fields changed."""
    data = record.model_dump()
    data.update(changes)
    return type(record).model_validate(data)


def test_examples_are_valid_and_revalidate():
    for record in ex.all_examples():
        assert _with(record) == record


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"response_logprobs": [-0.1] * 4095}, "len(response_logprobs)=4095 != len(response_token_ids)=4096"),
        ({"response_logprobs": [-0.1] * 4095 + [math.nan]}, "response_logprobs[4095] must be finite"),
        ({"response_logprobs": [-math.inf] + [-0.1] * 4095}, "response_logprobs[0] must be finite"),
        ({"response_logprobs": [-1e39] + [-0.1] * 4095}, "response_logprobs[0] must be finite float32"),
        (
            {"response_logprobs": [-0.1] * 4095 + [0.5]},
            "response_logprobs[4095] = 0.5 > 0: not a log-probability",
        ),
        ({"prompt_token_ids": [1, -2, 3]}, "prompt_token_ids: token ids must be in [0, 2^31)"),
        ({"response_token_ids": [2**31] * 4096}, "response_token_ids: token ids must be in [0, 2^31)"),
        ({"policy_version": -1}, "policy_version must be >= 0"),
        ({"sequence": -1}, "sequence must be >= 0"),
        ({"latency_ms": math.inf}, "latency_ms must be finite"),
        ({"ttft_ms": -3.0}, "ttft_ms must be >= 0"),
        ({"schema_version": -2}, "schema_version must be >= 0"),
        ({"sequence": 2**31}, "less than or equal to 2147483647"),
        ({"unknown_field": 1}, "Extra inputs are not permitted"),
    ],
)
def test_llm_request_rejects(changes, message):
    with pytest.raises(ValidationError) as info:
        _with(ex.llm_request(), **changes)
    assert message in str(info.value)


def test_sample_and_task_rules():
    with pytest.raises(ValidationError, match=r"k must be in \[0, group_size=8\)"):
        _with(ex.sample(), k=8)
    with pytest.raises(ValidationError, match="group_size must be >= 1"):
        _with(ex.sample(), group_size=0, k=0)
    with pytest.raises(ValidationError, match="retry must be >= 0"):
        _with(ex.sample(), retry=-1)
    with pytest.raises(ValidationError, match="payload must be a JSON object, got list"):
        _with(ex.task(), payload="[1, 2]")
    with pytest.raises(ValidationError, match="payload is not valid JSON"):
        _with(ex.sample(), payload="{question: 1}")
    with pytest.raises(ValidationError, match="split"):
        _with(ex.task(), split="test")


def test_trajectory_rewards_must_be_finite():
    with pytest.raises(ValidationError, match=r"Trajectory\.reward must be finite"):
        _with(ex.trajectory(), reward=math.nan)
    with pytest.raises(ValidationError, match=r"Reward\.value must be finite"):
        Reward(name="correct", value=math.inf)
    assert _with(ex.trajectory(), status="failed", reward=None, rewards=[]).reward is None
    # a succeeded rollout without a reward did not succeed: nothing may train it as 0
    with pytest.raises(ValidationError, match="status succeeded needs a reward"):
        _with(ex.trajectory(), reward=None, rewards=[])


def test_trajectory_failure_kind():
    ok = ex.trajectory()
    assert ok.failure() is None
    with pytest.raises(ValidationError, match="a succeeded attempt has no failure_kind"):
        _with(ok, failure_kind="infrastructure")
    failed = _with(ok, status=RolloutStatus.failed, reward=None, error="boom")
    assert failed.failure() is FailureKind.agent  # no kind (a v1 record): today's path
    for kind in FailureKind:
        assert _with(failed, failure_kind=kind.value).failure() is kind
    # a kind written by a newer producer is read as the agent's failure (re-issued, then dead-lettered)
    assert _with(failed, failure_kind="quota").failure() is FailureKind.agent


def test_training_row_lengths_mask_and_values():
    row = ex.training_batch(num_rows=1).rows[0]
    n = len(row.response_ids)
    for name in ("response_mask", "behaviour_logprobs", "token_rewards"):
        with pytest.raises(ValidationError, match=rf"len\({name}\)={n - 1} != len\(response_ids\)={n}"):
            _with(row, **{name: getattr(row, name)[:-1]})
    with pytest.raises(ValidationError, match="response_mask values must be 0 or 1"):
        _with(row, response_mask=[2] * n)
    with pytest.raises(ValidationError, match="response_ids is empty"):
        _with(row, response_ids=[], response_mask=[], behaviour_logprobs=[], token_rewards=[])
    with pytest.raises(ValidationError, match=r"token_rewards\[0\] must be finite"):
        _with(row, token_rewards=[math.inf, *row.token_rewards[1:]])
    with pytest.raises(ValidationError, match="weight must be >= 0"):
        _with(row, weight=-0.5)
    with pytest.raises(ValidationError, match=r"TrainingRow\.reward must be finite"):
        _with(row, reward=math.nan)
    assert isinstance(row, TrainingRow)


def test_training_batch_exactly_one_payload_form():
    inline, claim = ex.training_batch(num_rows=2), ex.claim_check_batch()
    assert inline.num_rows == 2 and claim.num_rows == 64
    with pytest.raises(ValidationError, match="exactly one of rows / claim_check"):
        _with(inline, claim_check=claim.claim_check.model_dump())
    with pytest.raises(ValidationError, match="exactly one of rows / claim_check"):
        _with(claim, claim_check=None)
    with pytest.raises(ValidationError, match="rows is empty"):
        _with(inline, rows=[])
    with pytest.raises(ValidationError, match="min_policy_version=18 > max_policy_version=17"):
        _with(inline, min_policy_version=18)
    with pytest.raises(ValidationError, match="sha256:<64 lowercase hex>"):
        ClaimCheck(uri="file:///x", digest="md5:abc", size_bytes=1, num_rows=1)
    with pytest.raises(ValidationError, match="num_rows must be >= 1"):
        ClaimCheck(uri="file:///x", digest="sha256:" + "0" * 64, size_bytes=1, num_rows=0)
    assert isinstance(inline, TrainingBatch)


def test_checkpoint_event_rules():
    with pytest.raises(ValidationError, match="version must be >= 0"):
        _with(ex.checkpoint_event(), version=-1)
    with pytest.raises(ValidationError, match="digest must look like"):
        _with(ex.checkpoint_event(), digest="sha256:XYZ")
    with pytest.raises(ValidationError, match="last_batch_offset must be >= 0"):
        _with(ex.checkpoint_event(), last_batch_offset=-5)
    assert isinstance(ex.checkpoint_event(), CheckpointEvent)


def test_timestamps_are_utc_milliseconds():
    naive = datetime(2025, 1, 2, 3, 4, 5, 678_901)
    plus2 = datetime(2025, 1, 2, 5, 4, 5, 678_999, tzinfo=timezone(timedelta(hours=2)))
    a = _with(ex.task(), created_at=naive).created_at
    b = _with(ex.task(), created_at=plus2).created_at
    assert a == b == datetime(2025, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone.utc)
    assert a.tzinfo is timezone.utc
    assert Task(task_id="t", split="val", payload="{}").created_at.microsecond % 1000 == 0


def test_defaults_and_enums_from_strings():
    req = LLMRequest(
        request_id="r", rollout_id="t/0/0", attempt_id="a", sequence=0, model="m", prompt_token_ids=[1],
        response_token_ids=[], response_logprobs=[], policy_version=0, latency_ms=0.0, started_at=naive_now(),
    )  # fmt: skip
    assert (req.schema_version, req.choice_index, req.agent_name, req.ttft_ms, req.temperature) == (
        3,
        0,
        None,
        None,
        None,
    )
    s = Sample.model_validate(ex.sample().model_dump(mode="json"))
    assert s.mode.value == "train" and s == ex.sample()
    t = Trajectory.model_validate(ex.trajectory().model_dump(mode="json"))
    assert t == ex.trajectory()


def naive_now() -> datetime:
    return datetime(2025, 1, 1)


def test_dead_letter_json_carries_binary():
    letter = ex.dead_letter()
    assert type(letter).model_validate_json(letter.model_dump_json()) == letter
