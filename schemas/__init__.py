"""StreamRL records: Avro schemas (`schemas/avsc/`), the pydantic models that mirror them, and serde.

Light by design: importing it loads pydantic and fastavro only (no torch, faust, vllm, confluent-kafka).

    from streamrl.schemas import LLMRequest, SchemaError
    from streamrl.schemas.serde import Serde
"""

from streamrl.schemas.digest import digest_bytes, digest_dir, digest_file, local_path, verify_checkpoint_dir
from streamrl.schemas.errors import CheckpointError, SchemaError, StreamRLError
from streamrl.schemas.optimization import (
    OptimizerEvent,
    OptimizerEventKind,
    OptimizerState,
    Resource,
    ResourceKind,
)
from streamrl.schemas.records import (
    CheckpointEvent,
    CheckpointKind,
    ClaimCheck,
    DeadLetter,
    DropReason,
    FailureKind,
    GroupOutcome,
    GroupOutcomeStatus,
    LLMRequest,
    Mode,
    Record,
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
    resource_version,
    utc_now,
)
from streamrl.schemas.sampler_state import SamplerSnapshot
from streamrl.schemas.topic_records import TOP_RECORDS, TOPIC_RECORDS

__all__ = [
    "TOPIC_RECORDS",
    "TOP_RECORDS",
    "CheckpointError",
    "CheckpointEvent",
    "CheckpointKind",
    "ClaimCheck",
    "DeadLetter",
    "DropReason",
    "FailureKind",
    "GroupOutcome",
    "GroupOutcomeStatus",
    "LLMRequest",
    "Mode",
    "OptimizerEvent",
    "OptimizerEventKind",
    "OptimizerState",
    "Record",
    "Resource",
    "ResourceKind",
    "Reward",
    "RolloutStatus",
    "Sample",
    "SamplerSnapshot",
    "SchemaError",
    "Serde",
    "Split",
    "StreamRLError",
    "Task",
    "TopRecord",
    "TrainingBatch",
    "TrainingRow",
    "Trajectory",
    "ValidationResult",
    "digest_bytes",
    "digest_dir",
    "digest_file",
    "local_path",
    "resource_version",
    "utc_now",
    "verify_checkpoint_dir",
]


def __getattr__(name: str):  # `from schemas import Serde` works too, without loading fastavro eagerly
    if name == "Serde":
        from streamrl.schemas.serde import Serde

        return Serde
    raise AttributeError(f"module 'schemas' has no attribute {name!r}")
