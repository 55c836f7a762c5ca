"""Exceptions of the records layer.

`StreamRLError` is the one exception base of the whole project (``streamrl.errors`` re-exports it);
it lives here because `schemas` imports nothing else of the project.
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
