"""Exceptions of the records layer, and the errors several stages raise about a shared fact.

`StreamRLError` is the one exception base of the whole project (``streamrl.errors`` re-exports it
and lists the whole hierarchy); it lives here because `schemas` imports nothing else of the project.
An error about a fact that crosses a stage boundary (a record, a checkpoint) is defined here once;
an error only one stage raises is defined in that stage.
"""

from __future__ import annotations


class StreamRLError(Exception):
    """Base class of every error StreamRL raises on purpose."""


class SchemaError(StreamRLError):
    """A record could not be encoded or decoded (unknown framing, unknown schema, bad body, invalid model).

    Carries where the record came from so a consumer can send it to the ``dlq`` topic and log it as
    ``topic[partition]@offset: reason``. ``partition``/``offset`` are -1 (and ``topic`` is "") when unknown,
    e.g. when encoding.

    Attributes:
        topic: Kafka topic the bytes came from ("" if unknown).
        partition: partition number (-1 if unknown).
        offset: offset within the partition (-1 if unknown).
        reason: human-readable cause, naming the record type and field where possible.
    """

    def __init__(self, topic: str = "", partition: int = -1, offset: int = -1, reason: str = "") -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.topic or '?'}[{self.partition}]@{self.offset}"
        return f"{where}: {self.reason}"

    def __reduce__(self):  # keep pickling (multiprocessing, Faust) working with keyword-style init
        return (type(self), (self.topic, self.partition, self.offset, self.reason))


class CheckpointError(StreamRLError):
    """A checkpoint cannot be written, found, verified or loaded.

    Raised by the trainer (writing, resuming) and by every stage that follows ``checkpoints``
    (inference reloads); the checkpoint a ``CheckpointEvent`` names is a directory whose
    ``schemas.digest_dir`` equals the event's digest.

    Attributes:
        reason: short label for metrics and logs: ``missing`` (no such directory), ``digest``
            (content differs from the recorded digest), ``uri`` (unsupported URI), ``load`` (the
            weights cannot be loaded), ``kind`` (holds no weights), ``drain`` (in-flight requests did
            not finish), ``write`` (cannot be written), or ``invalid`` (anything else).
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        self.reason = reason
        super().__init__(message)

    def __reduce__(self):  # keep pickling working with the two-argument init
        return (type(self), (str(self), self.reason))
