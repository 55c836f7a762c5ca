"""Which record type is the value of which topic: every top-level record, in pipeline order."""

from __future__ import annotations

from streamrl.schemas.optimization import OptimizerEvent, OptimizerState, Resource
from streamrl.schemas.records import (
    CheckpointEvent,
    DeadLetter,
    GroupOutcome,
    LLMRequest,
    Sample,
    Task,
    TopRecord,
    TrainingBatch,
    Trajectory,
    ValidationResult,
)
from streamrl.schemas.sampler_state import SamplerSnapshot

TOP_RECORDS: tuple[type[TopRecord], ...] = (
    Task,
    Sample,
    LLMRequest,
    Trajectory,
    TrainingBatch,
    GroupOutcome,
    CheckpointEvent,
    DeadLetter,
    ValidationResult,
    Resource,
    OptimizerEvent,
    OptimizerState,
    SamplerSnapshot,
)
"""Every record type that is a topic value, in pipeline order."""

TOPIC_RECORDS: dict[str, type[TopRecord]] = {
    "tasks": Task,
    "samples": Sample,
    "requests": LLMRequest,
    "trajectories": Trajectory,
    "batches": TrainingBatch,
    "group_outcomes": GroupOutcome,
    "checkpoints": CheckpointEvent,
    "dlq": DeadLetter,
    "validation": ValidationResult,
    "resources": Resource,
    "optimizer_events": OptimizerEvent,
    "optimizer_state": OptimizerState,
    "sampler_state": SamplerSnapshot,
}
"""Logical topic name (without prefix) -> record type of its values."""
