"""Real-looking example records of every top-level type, for tests and benchmarks (deterministic per seed).

Values are what the pipeline produces: token ids below a Qwen-sized vocabulary, float32 logprobs (so a
round trip through ``array<float>`` is exact), UTC millisecond timestamps, ids shaped like the real ones.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from streamrl.schemas.digest import digest_bytes, digest_dir
from streamrl.schemas.optimization import OptimizerEvent, OptimizerState, Resource
from streamrl.schemas.records import (
    CheckpointEvent,
    CheckpointKind,
    ClaimCheck,
    DeadLetter,
    GroupOutcome,
    GroupOutcomeStatus,
    LLMRequest,
    Mode,
    Reward,
    RolloutStatus,
    Sample,
    Split,
    Task,
    TopRecord,
    TrainingBatch,
    TrainingRow,
    Trajectory,
    ValidationResult,
)
from streamrl.schemas.sampler_state import SamplerSnapshot

VOCAB_SIZE = 151_936  # Qwen2.5 vocabulary
_T0 = datetime(2025, 6, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


def float32(values: list[float]) -> list[float]:
    """Round Python floats to the nearest float32 (what ``array<float>`` carries)."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _logprobs(rng: random.Random, n: int) -> list[float]:
    return float32([-abs(rng.gauss(0.0, 1.5)) for _ in range(n)])


def task(seed: int = 0) -> Task:
    """A GSM8K-like task."""
    rng = random.Random(seed)
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    payload = {
        "question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
        "answer": str(a + b),
    }
    return Task(
        task_id=f"gsm8k-{seed:05d}",
        split=Split.train,
        payload=json.dumps(payload),
        source="gsm8k/train.jsonl",
        created_at=_T0,
    )


def sample(seed: int = 0, group_size: int = 8) -> Sample:
    """A train sample, k-th of its group."""
    t = task(seed)
    k, epoch = seed % group_size, 2
    return Sample(
        rollout_id=f"{t.task_id}/{epoch}/{k}", task_id=t.task_id, group_id=f"{t.task_id}/{epoch}", group_size=group_size,
        k=k, epoch=epoch, retry=0, mode=Mode.train, payload=t.payload, policy_version=17, created_at=_T0,
    )  # fmt: skip


def llm_request(seed: int = 0, prompt_tokens: int = 512, response_tokens: int = 4096) -> LLMRequest:
    """One call with `response_tokens` generated tokens and their logprobs (a 4,096-token request by default)."""
    rng = random.Random(seed)
    return LLMRequest(
        request_id=_uuid(rng), rollout_id=f"gsm8k-{seed:05d}/2/3", attempt_id=_uuid(rng), agent_name="solver",
        sequence=0, model="Qwen/Qwen2.5-0.5B-Instruct",
        prompt_token_ids=[rng.randrange(VOCAB_SIZE) for _ in range(prompt_tokens)],
        response_token_ids=[rng.randrange(VOCAB_SIZE) for _ in range(response_tokens)],
        response_logprobs=_logprobs(rng, response_tokens), finish_reason="stop", policy_version=17,
        latency_ms=rng.uniform(50.0, 9000.0), started_at=_T0 + timedelta(milliseconds=rng.randrange(10**6)),
        choice_index=0, ttft_ms=rng.uniform(5.0, 200.0), temperature=0.7,
    )  # fmt: skip


def trajectory(seed: int = 0, num_calls: int = 3) -> Trajectory:
    """A succeeded rollout with a primary and a secondary reward."""
    rng = random.Random(seed)
    s = sample(seed)
    request_ids = [_uuid(rng) for _ in range(num_calls)]
    rewards = [
        Reward(name="format", value=0.5, primary=False, request_id=request_ids[-1], emitted_at=_T0),
        Reward(name="correct", value=1.0, primary=True, request_id=request_ids[-1], emitted_at=_T0),
    ]
    return Trajectory(
        rollout_id=s.rollout_id, attempt_id=_uuid(rng), task_id=s.task_id, group_id=s.group_id,
        group_size=s.group_size, k=s.k, epoch=s.epoch, retry=1, mode=s.mode, status=RolloutStatus.succeeded,
        reward=1.0, rewards=rewards, request_ids=request_ids, error=None, worker_id="worker-3@host-a",
        policy_version=s.policy_version, started_at=_T0, finished_at=_T0 + timedelta(seconds=12.345),
    )  # fmt: skip


def training_row(
    rng: random.Random, group_id: str, k: int, prompt_tokens: int, response_tokens: int
) -> TrainingRow:
    """A trajectory-mode row: two generated turns with an observation masked between them."""
    obs = response_tokens // 4
    mask = [1] * ((response_tokens - obs) // 2) + [0] * obs
    mask += [1] * (response_tokens - len(mask))
    reward = float(rng.random() < 0.5)
    return TrainingRow(
        rollout_id=f"{group_id}/{k}", group_id=group_id, agent_name="solver",
        prompt_ids=[rng.randrange(VOCAB_SIZE) for _ in range(prompt_tokens)],
        response_ids=[rng.randrange(VOCAB_SIZE) for _ in range(response_tokens)], response_mask=mask,
        behaviour_logprobs=_logprobs(rng, response_tokens),
        token_rewards=[0.0] * (response_tokens - 1) + [reward], reward=reward, policy_version=16, weight=1.0,
        temperature=0.7,
    )  # fmt: skip


def training_batch(
    seed: int = 0,
    num_rows: int = 64,
    group_size: int = 8,
    prompt_tokens: int = 128,
    response_tokens: int = 256,
) -> TrainingBatch:
    """An inline batch of `num_rows` rows in groups of `group_size`."""
    rng = random.Random(seed)
    rows = [
        training_row(
            rng,
            f"gsm8k-{seed * 1000 + i // group_size:05d}/2",
            i % group_size,
            prompt_tokens,
            response_tokens,
        )
        for i in range(num_rows)
    ]
    return TrainingBatch(
        batch_id=f"grpo-main/b{seed:06d}", policy_name="grpo-main", num_groups=-(-num_rows // group_size),
        rows=rows, claim_check=None, min_policy_version=16, max_policy_version=17, created_at=_T0,
    )  # fmt: skip


def claim_check_batch(seed: int = 0) -> TrainingBatch:
    """A batch whose rows live in a blob store."""
    payload = f"rows of batch {seed}".encode()
    return TrainingBatch(
        batch_id=f"grpo-main/b{seed:06d}", policy_name="grpo-main", num_groups=8, rows=None,
        claim_check=ClaimCheck(uri=f"file:///var/lib/streamrl/blobs/b{seed:06d}.arrow", digest=digest_bytes(payload),
                               size_bytes=48_123_456, num_rows=64),
        min_policy_version=15, max_policy_version=17, created_at=_T0,
    )  # fmt: skip


def checkpoint_event(seed: int = 0) -> CheckpointEvent:
    """A LoRA checkpoint after step 18 with metrics."""
    return CheckpointEvent(
        policy_name="grpo-main", version=18, kind=CheckpointKind.lora, uri=f"file:///var/lib/streamrl/ckpt/step-{18 + seed}",
        digest=digest_bytes(f"ckpt {seed}".encode()), base_model="Qwen/Qwen2.5-0.5B-Instruct",
        metrics={"actor/pg_loss": -0.0123, "actor/pg_clipfrac": 0.031, "actor/grad_norm": 0.88, "perf/step_s": 41.2},
        last_batch_id=f"grpo-main/b{seed:06d}", last_batch_offset=1234, created_at=_T0, consumed_rollouts=18 * 128,
    )  # fmt: skip


def verified_checkpoint(
    root: Path, policy_name: str, version: int, *, consumed_rollouts: int | None = None
) -> CheckpointEvent:
    """A CheckpointEvent naming a real directory ``root/<policy>/v<version>`` that verifies (its digest
    is ``digest_dir`` of what is written there), as the trainer publishes them: stages adopt only
    checkpoints that exist and verify."""
    path = root / policy_name / f"v{version}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.bin").write_bytes(f"{policy_name} v{version}".encode())
    return CheckpointEvent(
        policy_name=policy_name,
        version=version,
        kind=CheckpointKind.full,
        uri=str(path),
        digest=digest_dir(path),
        consumed_rollouts=consumed_rollouts,
    )


def group_outcome(seed: int = 0, status: str = "batched") -> GroupOutcome:
    """A group of 8 batched (or, with ``status="dropped"``, dropped as zero-variance)."""
    group = f"gsm8k-{seed:05d}/2"
    batched = status == "batched"
    return GroupOutcome(
        group_id=group, status=GroupOutcomeStatus(status), reason=None if batched else "zero_variance",
        batch_id=f"b-{seed:032x}" if batched else None, rollout_ids=[f"{group}/{k}" for k in range(8)], decided_at=_T0,
    )  # fmt: skip


def dead_letter(seed: int = 0) -> DeadLetter:
    """A poisoned sample's envelope with binary key/value."""
    return DeadLetter(
        original_topic="streamrl.samples", original_partition=3, original_offset=98_765, original_key=b"gsm8k-00001/2/3",
        original_value=bytes(range(256)), stage="worker", error_type="SchemaError",
        reason=f"streamrl.samples[3]@98765: Sample: truncated body (seed {seed})", failed_at=_T0,
    )  # fmt: skip


def validation_result(seed: int = 0) -> ValidationResult:
    """Version 20 validated on 104 tasks: 90 succeeded, 3 failed and 1 timed out (those score 0)."""
    return ValidationResult(
        policy_name="grpo-main", policy_version=20 + seed, count=94, succeeded=90, failed=3, timed_out=1,
        mean=0.7234042553191489, std=0.4473, min=0.0, max=1.0, updated_at=_T0,
    )  # fmt: skip


def resource(seed: int = 0) -> Resource:
    """A prompt template derived from a parent version by an optimizer run."""
    return Resource.create(
        "system_prompt", f"You are a careful assistant (variant {seed}). Answer {{question}} in one line.",
        parents=["0123456789abcdef"], metadata={"run_id": "opt-1", "algorithm": "apo", "round": "2"},
        created_by="optimizer:opt-1",
    ).model_copy(update={"created_at": _T0})  # fmt: skip


def pinned_sample(seed: int = 0) -> Sample:
    """A val sample of an optimizer evaluation, pinned to :func:`resource`'s version."""
    r = resource(seed)
    return Sample(
        rollout_id=f"opt-1-r2-v{seed}/val-{seed:04d}", task_id=f"val-{seed:04d}", group_id=f"opt-1-r2-v{seed}",
        group_size=1, k=0, epoch=0, retry=0, mode=Mode.val, payload='{"question": "2+2?"}', policy_version=0,
        created_at=_T0, resources={r.name: r.version},
    )  # fmt: skip


def optimizer_event(seed: int = 0) -> OptimizerEvent:
    """The score of an evaluation of 3 val tasks: one succeeded, one failed, one unfinished at the deadline."""
    return OptimizerEvent(
        run_id="opt-1", seq=40 + seed, kind="score", algorithm="apo", round=2, resource_name="system_prompt",
        resource_version=resource(seed).version, eval_id=f"opt-1-r2-v{seed}", split="val", score=1 / 3,
        count=3, succeeded=1, failed=1, timed_out=1, task_rewards={"val-0": 1.0, "val-1": 0.0, "val-2": 0.0},
        created_at=_T0,
    )  # fmt: skip


def optimizer_state(seed: int = 0) -> OptimizerState:
    """A run in the middle of round 2."""
    return OptimizerState(
        run_id="opt-1", algorithm="apo", seq=41 + seed, state=json.dumps({"round": 2, "phase": "val"}),
        updated_at=_T0,
    )  # fmt: skip


def sampler_snapshot(seed: int = 0) -> SamplerSnapshot:
    """A snapshot of a sampler that emitted 48 samples and read 40 trajectories and 4 outcomes."""
    state = {"layout": 1, "epoch": 0, "emitted": {"t0": 15}, "where": [], "ledger": {"groups": {}}}
    return SamplerSnapshot(
        sampler_id="streamrl-sampler", seq=3 + seed, settings_digest="sha256:" + "ab" * 32,
        emitted_offsets={"streamrl.samples[0]": 48, "streamrl.dlq[0]": 2},
        input_offsets={"streamrl.trajectories[0]": 40, "streamrl.group_outcomes[0]": 4, "streamrl.dlq[0]": 2},
        groups=1, state=zlib.compress(json.dumps(state).encode()), created_at=_T0,
    )  # fmt: skip


def all_examples(seed: int = 0) -> list[TopRecord]:
    """One example of every topic record type (both TrainingBatch forms, both Sample forms)."""
    return [
        task(seed), sample(seed), pinned_sample(seed), llm_request(seed), trajectory(seed), training_batch(seed),
        claim_check_batch(seed), group_outcome(seed), group_outcome(seed, "dropped"), checkpoint_event(seed),
        dead_letter(seed), validation_result(seed), resource(seed), optimizer_event(seed), optimizer_state(seed),
        sampler_snapshot(seed),
    ]  # fmt: skip


def outcome_decisions(outcomes: list[GroupOutcome]) -> dict[str, tuple[str, str | None, str | None]]:
    """``rollout_id -> (status, reason, batch_id)`` of ``GroupOutcome`` records.

    Raises:
        AssertionError: a rollout decided two different ways (a repeated identical record is fine).
    """
    out: dict[str, tuple[str, str | None, str | None]] = {}
    for o in outcomes:
        for rid in o.rollout_ids:
            d = (o.status.value, o.reason, o.batch_id)
            assert out.setdefault(rid, d) == d, f"{rid}: decided {out[rid]} and {d}"
    return out
