"""Errors only the trainer raises (all derive from :class:`streamrl.errors.StreamRLError`).

A checkpoint that cannot be written or loaded is the shared ``streamrl.errors.CheckpointError``.
"""

from __future__ import annotations

from streamrl.errors import StreamRLError


class TrainerError(StreamRLError):
    """Base of the trainer's own errors."""


class BadBatchError(TrainerError):
    """A batch cannot be trained (shape mismatch, non-finite values, bad claim-check, empty after filtering).

    The message says what is wrong and where (batch id, row index, rollout id). The service sends the
    record to ``dlq`` with this reason and skips it.

    Attributes:
        batch_id: the offending batch.
        reason: what is wrong.
    """

    def __init__(self, batch_id: str, reason: str) -> None:
        self.batch_id = batch_id
        self.reason = reason
        super().__init__(f"batch {batch_id!r}: {reason}")


class RejectedRowError(TrainerError):
    """One row of a trained batch exceeds what the model can take (vocabulary, positions): it was
    dropped and dead-lettered alone (keyed by its rollout id, never a batch id), the batch's other
    rows trained."""

    def __init__(self, batch_id: str, index: int, rollout_id: str, reason: str) -> None:
        self.batch_id, self.index, self.rollout_id, self.reason = batch_id, index, rollout_id, reason
        super().__init__(f"batch {batch_id!r} row {index} ({rollout_id!r}): {reason}; the other rows trained")


class NonFiniteLossError(TrainerError):
    """The loss or gradient norm of a step was NaN/inf; the step was abandoned and the weights left untouched."""

    def __init__(self, batch_id: str, what: str, value: float) -> None:
        self.batch_id = batch_id
        self.what = what
        self.value = value
        super().__init__(f"batch {batch_id!r}: non-finite {what} ({value}); step skipped, weights unchanged")
