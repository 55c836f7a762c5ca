"""Pydantic models of every StreamRL record; each mirrors `schemas/avsc/<Name>/v<latest>.avsc`.

The `.avsc` files are the contract (field docs and units live there); these models add what Avro cannot
express. A unit test fails if a model and its latest `.avsc` drift apart (names, types, nullability,
defaults).

Type conventions (checked by that test):
- ``Int32`` fields are Avro ``int``; ``Int64`` fields are Avro ``long``.
- scalar ``float`` is Avro ``double``; ``list[float]`` is ``array<float>`` (float32 on the wire: values that
  are not float32-representable come back rounded; logprobs from engines and torch float32 are exact).
- ``UtcDatetime`` is ``timestamp-millis``: naive datetimes are taken as UTC, aware ones converted to UTC,
  and all are truncated to whole milliseconds so that a round trip returns an equal value.
- ``str | None`` is the union ``["null", "string"]`` with default null.

Invariants (``check_invariants``) run on construction (as a pydantic validator, so a bad value raises
``pydantic.ValidationError``), on ``Serde.decode`` (all of them, raising ``SchemaError``; decode builds
models with ``model_construct`` after the codec has checked Avro types) and on ``Serde.encode`` (the O(1)
ones only: lengths, versions, exactly-one; the O(n) list scans ran at construction).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
MAX_LOGPROB = 1e-3
"""Largest logprob accepted: a log-probability is <= 0 (the slack absorbs float32 rounding only)."""
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def _to_utc_ms(value: datetime) -> datetime:
    """Normalise to an aware UTC datetime with whole milliseconds (the precision of timestamp-millis)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    elif value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def utc_now() -> datetime:
    """Current time as an aware UTC datetime truncated to milliseconds."""
    return _to_utc_ms(datetime.now(timezone.utc))


Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
UtcDatetime = Annotated[datetime, AfterValidator(_to_utc_ms)]


class Split(str, Enum):
    """Dataset split of a Task."""

    train = "train"
    val = "val"


class Mode(str, Enum):
    """Whether a rollout trains the policy or validates it."""

    train = "train"
    val = "val"


class RolloutStatus(str, Enum):
    """How a rollout attempt ended."""

    succeeded = "succeeded"
    failed = "failed"
    timeout = "timeout"


class FailureKind(str, Enum):
    """Whose failure a failed or timed-out rollout attempt was (``Trajectory.failure_kind``; a string
    on the wire, so a newer writer may add kinds: :meth:`Trajectory.failure` reads an unknown one as
    ``agent``, today's path).

    - ``agent``: the task's own failure: the agent raised, returned no or a non-finite reward, hit
      its time limit, or the sample pins a resource version the worker could not find. Re-issued up
      to ``sampler.max_retries``, then dead-lettered.
    - ``request``: the inference service refused one of the attempt's calls deterministically (an
      HTTP 4xx other than 408/429, e.g. a prompt longer than the context), and the agent did not
      recover from it.
    - ``infrastructure``: not the task's failure: the inference service was unreachable, answered
      5xx/408/429 or timed out (and no later call of the attempt succeeded), a record of the attempt
      could not be delivered, or the worker stopped before the rollout finished. Re-issued without
      spending the sample's retries; workers stop taking samples while the service is unhealthy.
    """

    agent = "agent"
    request = "request"
    infrastructure = "infrastructure"


class GroupOutcomeStatus(str, Enum):
    """What became of the rollouts a GroupOutcome lists."""

    batched = "batched"
    dropped = "dropped"


class DropReason(str, Enum):
    """Why streams dropped rollouts (``GroupOutcome.reason``; a string on the wire, so a newer producer
    may write a reason this list does not know yet)."""

    zero_variance = "zero_variance"
    straggler = "straggler"
    no_rows = "no_rows"
    incomplete_join = "incomplete_join"
    invalid_rows = "invalid_rows"
    late = "late"


class CheckpointKind(str, Enum):
    """What a checkpoint contains."""

    full = "full"
    lora = "lora"
    prompt_template = "prompt_template"


# ---------------------------------------------------------------------------------------------- checks


def _non_negative(model: BaseModel, *names: str) -> None:
    for name in names:
        value = getattr(model, name)
        if value is not None and value < 0:
            raise ValueError(f"{type(model).__name__}.{name} must be >= 0, got {value}")


def _finite(model: BaseModel, *names: str) -> None:
    for name in names:
        value = getattr(model, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{type(model).__name__}.{name} must be finite, got {value}")


def _finite_list(model: BaseModel, name: str) -> None:
    """Every element finite and within float32 range (the list is array<float> on the wire)."""
    values: list[float] = getattr(model, name)
    if not values:
        return
    # Fast path (C loops): a finite sum means no inf/nan (inf - inf = nan); then check float32 range.
    if math.isfinite(sum(values)) and min(values) >= -FLOAT32_MAX and max(values) <= FLOAT32_MAX:
        return
    for i, value in enumerate(values):
        if not (math.isfinite(value) and -FLOAT32_MAX <= value <= FLOAT32_MAX):
            raise ValueError(f"{type(model).__name__}.{name}[{i}] must be finite float32, got {value}")


def _logprob_list(model: BaseModel, name: str) -> None:
    """Every element a finite float32 log-probability: in ``[-FLOAT32_MAX, MAX_LOGPROB]``."""
    values: list[float] = getattr(model, name)
    if not values:
        return
    if math.isfinite(sum(values)) and min(values) >= -FLOAT32_MAX and max(values) <= MAX_LOGPROB:
        return
    for i, value in enumerate(values):
        if not (math.isfinite(value) and -FLOAT32_MAX <= value):
            raise ValueError(f"{type(model).__name__}.{name}[{i}] must be finite float32, got {value}")
        if value > MAX_LOGPROB:
            raise ValueError(f"{type(model).__name__}.{name}[{i}] = {value} > 0: not a log-probability")


def _token_ids(model: BaseModel, name: str) -> None:
    ids: list[int] = getattr(model, name)
    if ids and (min(ids) < 0 or max(ids) > INT32_MAX):
        raise ValueError(
            f"{type(model).__name__}.{name}: token ids must be in [0, 2^31), got min {min(ids)}, max {max(ids)}"
        )


def _json_object(model: BaseModel, name: str) -> None:
    text: str = getattr(model, name)
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"{type(model).__name__}.{name} is JSON nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{type(model).__name__}.{name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{type(model).__name__}.{name} must be a JSON object, got {type(value).__name__}")


def _group_index(model: BaseModel) -> None:
    group_size, k = model.group_size, model.k  # type: ignore[attr-defined]
    if group_size < 1:
        raise ValueError(f"{type(model).__name__}.group_size must be >= 1, got {group_size}")
    if not 0 <= k < group_size:
        raise ValueError(f"{type(model).__name__}.k must be in [0, group_size={group_size}), got {k}")


def _digest(model: BaseModel, name: str) -> None:
    value: str = getattr(model, name)
    if not _DIGEST_RE.match(value):
        raise ValueError(
            f"{type(model).__name__}.{name} must look like 'sha256:<64 lowercase hex>', got {value!r}"
        )


RESOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
"""What a resource name may be: 1-128 letters, digits, ``_``, ``-``, ``.`` (no ``/``: keys are ``name/version``)."""
RESOURCE_VERSION_RE = re.compile(r"^[0-9a-f]{16}$")
"""What a resource version is: 16 lowercase hex digits, the head of the content's sha256."""


def check_resource_ref(name: str, version: str, where: str) -> None:
    """Raise ValueError (naming ``where``) unless ``name`` and ``version`` are a well-formed resource reference."""
    if not RESOURCE_NAME_RE.match(name):
        raise ValueError(
            f"{where}: resource name {name!r} must be 1-128 letters, digits, '_', '-' or '.' (no '/')"
        )
    if not RESOURCE_VERSION_RE.match(version):
        raise ValueError(f"{where}: resource {name!r} version {version!r} must be 16 lowercase hex digits")


def resource_digest(kind: str, content: str) -> str:
    """``sha256:<hex>`` of a resource: over the UTF-8 bytes of ``kind``, a NUL byte, and ``content``."""
    return "sha256:" + hashlib.sha256(kind.encode() + b"\0" + content.encode()).hexdigest()


def resource_version(kind: str, content: str) -> str:
    """The version of a resource with this kind and content: the first 16 hex digits of its digest."""
    return resource_digest(kind, content)[7:23]


class Record(BaseModel):
    """Base of all records: `extra="forbid"`, invariants checked by `check_invariants` after validation."""

    model_config = ConfigDict(extra="forbid")

    def check_invariants(self, scan: bool = True) -> None:
        """Raise ValueError naming the field if a rule Avro cannot express is broken; no-op by default.

        Args:
            scan: also run the O(n) scans over token/logprob lists (finite, in range, mask values);
                ``Serde.encode`` passes False (the model was scanned when it was validated), ``decode``
                passes True. Cheap rules (lengths, versions, exactly-one) always run.
        """

    @model_validator(mode="after")
    def _run_invariants(self):  # pydantic hook
        self.check_invariants()
        return self


class TopRecord(Record):
    """A record that is the value of a topic message (has its own `.avsc` and `schema_version`)."""

    SCHEMA_VERSION: ClassVar[int] = 1  # latest version of this record's schema; must match the .avsc

    def check_invariants(self, scan: bool = True) -> None:
        _non_negative(self, "schema_version")


# ---------------------------------------------------------------------------------------------- records


class Task(TopRecord):
    """One dataset item (topic `tasks`, key `task_id`). `payload` must be a JSON object."""

    schema_version: Int32 = 1
    task_id: str
    split: Split
    payload: str
    source: str | None = None
    created_at: UtcDatetime = Field(default_factory=utc_now)

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _json_object(self, "payload")


class Sample(TopRecord):
    """One rollout to run (topic `samples`, key `rollout_id` = `task_id/epoch/k`).

    Schema v2 added ``resources`` (name -> version of the Resources the rollout is pinned to; default
    empty); v1 records decode with ``resources={}, schema_version=1``. Invariant: every pinned name
    and version is well formed (:func:`check_resource_ref`).
    """

    SCHEMA_VERSION: ClassVar[int] = 2

    schema_version: Int32 = 2
    rollout_id: str
    task_id: str
    group_id: str
    group_size: Int32
    k: Int32
    epoch: Int32
    retry: Int32 = 0
    mode: Mode
    payload: str
    policy_version: Int32
    created_at: UtcDatetime = Field(default_factory=utc_now)
    resources: dict[str, str] = Field(default_factory=dict)

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _non_negative(self, "epoch", "retry", "policy_version")
        _group_index(self)
        _json_object(self, "payload")
        for name, version in self.resources.items():
            check_resource_ref(name, version, f"Sample {self.rollout_id!r}: resources")


class LLMRequest(TopRecord):
    """One LLM call / choice (topic `requests`, key `rollout_id`).

    Invariants: ``len(response_logprobs) == len(response_token_ids)``; token ids in [0, 2^31);
    logprobs finite and <= 0 (``MAX_LOGPROB``); ``sequence``, ``choice_index``, ``policy_version``, ``latency_ms``, ``ttft_ms`` >= 0.
    Schema v2 added ``ttft_ms`` (default None); v1 records decode with ``ttft_ms=None, schema_version=1``.
    Schema v3 added ``temperature`` (the request's sampling temperature, >= 0, finite; default None:
    written before v3, read as 1.0, the OpenAI default the request had then).
    """

    SCHEMA_VERSION: ClassVar[int] = 3

    schema_version: Int32 = 3
    request_id: str
    rollout_id: str
    attempt_id: str
    agent_name: str | None = None
    sequence: Int32
    model: str
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    response_logprobs: list[float]
    finish_reason: str | None = None
    policy_version: Int32
    latency_ms: float
    started_at: UtcDatetime
    choice_index: Int32 = 0
    ttft_ms: float | None = None
    temperature: float | None = None

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        if len(self.response_logprobs) != len(self.response_token_ids):
            raise ValueError(
                f"LLMRequest {self.request_id!r}: len(response_logprobs)={len(self.response_logprobs)} "
                f"!= len(response_token_ids)={len(self.response_token_ids)}"
            )
        _non_negative(
            self, "sequence", "choice_index", "policy_version", "latency_ms", "ttft_ms", "temperature"
        )
        _finite(self, "latency_ms", "ttft_ms", "temperature")
        if scan:
            _token_ids(self, "prompt_token_ids")
            _token_ids(self, "response_token_ids")
            _logprob_list(self, "response_logprobs")


class Reward(Record):
    """One reward emitted during a rollout (nested in Trajectory). `value` must be finite."""

    name: str
    value: float
    primary: bool = False
    request_id: str | None = None
    emitted_at: UtcDatetime = Field(default_factory=utc_now)

    def check_invariants(self, scan: bool = True) -> None:
        _finite(self, "value")


class Trajectory(TopRecord):
    """Outcome of one rollout attempt (topic `trajectories`, key `rollout_id`).

    Invariants: rewards finite; a ``succeeded`` trajectory has a ``reward`` (a rollout without a
    finite reward did not succeed: nothing may train it as 0) and no ``failure_kind``.

    Schema v2 added ``failure_kind`` (a :class:`FailureKind` value; None on success, and on failed v1
    records, which :meth:`failure` reads as ``agent``). Invariant: a succeeded attempt has none.
    """

    SCHEMA_VERSION: ClassVar[int] = 2

    schema_version: Int32 = 2
    rollout_id: str
    attempt_id: str
    task_id: str
    group_id: str
    group_size: Int32
    k: Int32
    epoch: Int32
    retry: Int32 = 0
    mode: Mode
    status: RolloutStatus
    reward: float | None = None
    rewards: list[Reward] = Field(default_factory=list)
    request_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    worker_id: str
    policy_version: Int32
    started_at: UtcDatetime
    finished_at: UtcDatetime
    failure_kind: str | None = None

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _non_negative(self, "epoch", "retry", "policy_version")
        _group_index(self)
        _finite(self, "reward")
        if self.status == RolloutStatus.succeeded and self.reward is None:
            raise ValueError(
                f"Trajectory {self.rollout_id!r}: status succeeded needs a reward (got null); "
                "a rollout without a finite reward is failed"
            )
        if self.failure_kind is not None and self.status is RolloutStatus.succeeded:
            raise ValueError(
                f"Trajectory {self.rollout_id!r}: a succeeded attempt has no failure_kind "
                f"(got {self.failure_kind!r})"
            )

    def failure(self) -> FailureKind | None:
        """Whose failure this attempt was: None if it succeeded; ``agent`` for a failed attempt
        without a kind (schema v1) or with a kind this version does not know."""
        if self.status is RolloutStatus.succeeded:
            return None
        try:
            return FailureKind(self.failure_kind) if self.failure_kind is not None else FailureKind.agent
        except ValueError:
            return FailureKind.agent


class TrainingRow(Record):
    """One training row (nested in TrainingBatch).

    Shapes: ``prompt_ids`` (P,); ``response_ids``, ``response_mask``, ``behaviour_logprobs``,
    ``token_rewards`` all (R,) with R >= 1, P >= 1 (the first response token needs a context).
    Mask values in {0, 1}; logprobs finite and <= 0; rewards, weight finite; weight >= 0;
    ``temperature`` finite and > 0 (the trainer divides the logits by it, as verl's actor does, so its
    logprobs are of the same distribution as ``behaviour_logprobs``; TrainingBatch v2 added it, v1 rows
    read as 1.0).
    """

    rollout_id: str
    group_id: str
    agent_name: str | None = None
    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    behaviour_logprobs: list[float]
    token_rewards: list[float]
    reward: float
    policy_version: Int32
    weight: float = 1.0
    temperature: float = 1.0

    def check_invariants(self, scan: bool = True) -> None:
        n = len(self.response_ids)
        if n == 0:
            raise ValueError(f"TrainingRow {self.rollout_id!r}: response_ids is empty")
        if not self.prompt_ids:
            raise ValueError(
                f"TrainingRow {self.rollout_id!r}: prompt_ids is empty (the first response token needs a context)"
            )
        for name in ("response_mask", "behaviour_logprobs", "token_rewards"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"TrainingRow {self.rollout_id!r}: len({name})={len(getattr(self, name))} != len(response_ids)={n}"
                )
        if scan:
            if min(self.response_mask) < 0 or max(self.response_mask) > 1:
                raise ValueError(f"TrainingRow {self.rollout_id!r}: response_mask values must be 0 or 1")
            _token_ids(self, "prompt_ids")
            _token_ids(self, "response_ids")
            _logprob_list(self, "behaviour_logprobs")
            _finite_list(self, "token_rewards")
        _finite(self, "reward", "weight", "temperature")
        _non_negative(self, "policy_version", "weight")
        if not self.temperature > 0:
            raise ValueError(f"TrainingRow {self.rollout_id!r}: temperature={self.temperature} must be > 0")


class ClaimCheck(Record):
    """Pointer to a batch payload outside Kafka (nested in TrainingBatch)."""

    uri: str
    digest: str
    size_bytes: Int64
    num_rows: Int32

    def check_invariants(self, scan: bool = True) -> None:
        _digest(self, "digest")
        _non_negative(self, "size_bytes")
        if self.num_rows < 1:
            raise ValueError(f"ClaimCheck.num_rows must be >= 1, got {self.num_rows}")


class TrainingBatch(TopRecord):
    """One training batch (topic `batches`, key `batch_id`). Exactly one of `rows` / `claim_check` is set.

    Schema v2 added ``TrainingRow.temperature`` (v1 rows decode with 1.0)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    schema_version: Int32 = 2
    batch_id: str
    policy_name: str
    num_groups: Int32
    rows: list[TrainingRow] | None = None
    claim_check: ClaimCheck | None = None
    min_policy_version: Int32
    max_policy_version: Int32
    created_at: UtcDatetime = Field(default_factory=utc_now)

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        if (self.rows is None) == (self.claim_check is None):
            raise ValueError(
                f"TrainingBatch {self.batch_id!r}: exactly one of rows / claim_check must be set"
            )
        if self.rows is not None and not self.rows:
            raise ValueError(
                f"TrainingBatch {self.batch_id!r}: rows is empty (use None with a claim_check instead)"
            )
        _non_negative(self, "num_groups", "min_policy_version")
        if self.min_policy_version > self.max_policy_version:
            raise ValueError(
                f"TrainingBatch {self.batch_id!r}: min_policy_version={self.min_policy_version} "
                f"> max_policy_version={self.max_policy_version}"
            )

    @property
    def num_rows(self) -> int:
        """Number of rows, inline or behind the claim-check."""
        return len(self.rows) if self.rows is not None else self.claim_check.num_rows  # type: ignore[union-attr]


class CheckpointEvent(TopRecord):
    """A new policy version (topic `checkpoints`, key policy name). `metrics` values may be any float.

    Schema v2 added ``consumed_rollouts`` (default None): the train rollouts the trainer has consumed
    up to this version, cumulative; v1 records decode with ``consumed_rollouts=None, schema_version=1``.
    """

    SCHEMA_VERSION: ClassVar[int] = 2

    schema_version: Int32 = 2
    policy_name: str
    version: Int32
    kind: CheckpointKind
    uri: str
    digest: str
    base_model: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    last_batch_id: str | None = None
    last_batch_offset: Int64 | None = None
    created_at: UtcDatetime = Field(default_factory=utc_now)
    consumed_rollouts: Int64 | None = None

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _non_negative(self, "version", "last_batch_offset", "consumed_rollouts")
        _digest(self, "digest")


class GroupOutcome(TopRecord):
    """What became of train rollouts of one group (topic `group_outcomes`, key `group_id`).

    Invariants: ``batch_id`` set iff ``status`` is batched, ``reason`` set iff dropped;
    ``rollout_ids`` non-empty, without repeats.
    """

    schema_version: Int32 = 1
    group_id: str
    status: GroupOutcomeStatus
    reason: str | None = None
    batch_id: str | None = None
    rollout_ids: list[str]
    decided_at: UtcDatetime = Field(default_factory=utc_now)

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        batched = self.status is GroupOutcomeStatus.batched
        if batched != (self.batch_id is not None):
            raise ValueError(
                f"GroupOutcome {self.group_id!r}: batch_id must be set exactly when status is batched"
            )
        if batched == bool(self.reason):
            raise ValueError(
                f"GroupOutcome {self.group_id!r}: reason must be set exactly when status is dropped"
            )
        if not self.rollout_ids:
            raise ValueError(f"GroupOutcome {self.group_id!r}: rollout_ids is empty")
        if scan and len(set(self.rollout_ids)) != len(self.rollout_ids):
            raise ValueError(f"GroupOutcome {self.group_id!r}: rollout_ids has repeats")


class DeadLetter(TopRecord):
    """A record that could not be processed (topic `dlq`, key = original key).

    No invariants beyond Avro types: a dead letter must always be writable (partition/offset -1 = unknown).
    In JSON (``model_dump_json``) the key/value bytes are base64, since they may be any binary.
    """

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    schema_version: Int32 = 1
    original_topic: str
    original_partition: Int32
    original_offset: Int64
    original_key: bytes | None = None
    original_value: bytes | None = None
    stage: str
    error_type: str
    reason: str
    failed_at: UtcDatetime = Field(default_factory=utc_now)


class ValidationResult(TopRecord):
    """The validation reward of one policy version (topic `validation`, compacted, key
    ``<policy_name>/<policy_version>``; :meth:`key`). Computed in one place, streams, and read by
    everyone else (``streamrl dev``'s display and summary, ``streamrl status``).

    Definition: every val rollout of the version counts once; it scores the reward of its first
    succeeded attempt, or 0 while it has only failed or timed-out attempts (a later success of a
    re-issued rollout replaces the 0). ``mean`` is the validation reward: the mean score over all
    ``count`` rollouts. A version's record is re-published as its rollouts finish; the latest one is
    the current figure (complete once ``count`` reaches the val tasks × ``sampler.val_samples_per_task``).
    """

    schema_version: Int32 = 1
    policy_name: str
    policy_version: Int32
    count: Int32
    succeeded: Int32
    failed: Int32
    timed_out: Int32
    mean: float
    std: float
    min: float
    max: float
    updated_at: UtcDatetime = Field(default_factory=utc_now)

    def key(self) -> str:
        """The Kafka key: ``<policy_name>/<policy_version>``."""
        return f"{self.policy_name}/{self.policy_version}"

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _non_negative(self, "policy_version", "succeeded", "failed", "timed_out", "std")
        _finite(self, "mean", "std", "min", "max")
        where = f"ValidationResult {self.key()!r}"
        if self.count < 1 or self.count != self.succeeded + self.failed + self.timed_out:
            raise ValueError(
                f"{where}: count={self.count} must be >= 1 and = succeeded + failed + timed_out "
                f"({self.succeeded} + {self.failed} + {self.timed_out})"
            )
        slack = 1e-9 * max(1.0, abs(self.min), abs(self.max))  # float rounding of the mean
        if not self.min - slack <= self.mean <= self.max + slack:
            raise ValueError(f"{where}: mean {self.mean} outside [min {self.min}, max {self.max}]")
        if self.failed + self.timed_out and self.min > 0:
            raise ValueError(f"{where}: failed or timed-out rollouts score 0, but min is {self.min}")
