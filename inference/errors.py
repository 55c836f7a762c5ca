"""Errors only the inference service raises (all derive from ``StreamRLError``).

A checkpoint that cannot be verified or loaded is the shared ``streamrl.errors.CheckpointError``.
"""

from __future__ import annotations

from streamrl.schemas.errors import StreamRLError


class InferenceError(StreamRLError):
    """Base of the inference service's errors."""


class ModelBuildError(InferenceError):
    """The tiny model could not be built (bad preset/arch/tokenizer, missing training text)."""


class RequestError(InferenceError):
    """A request is invalid (HTTP 400): too long for the context, bad sampling parameters.

    Attributes:
        param: the offending request field, or None.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class OverloadedError(InferenceError):
    """The request queue is full (HTTP 503)."""
