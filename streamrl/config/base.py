"""The base of every config section: strict, documented pydantic models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated.

    Subclasses document every field (``Field(description=...)`` or a docstring under it) and give
    units in the field name (``timeout_s``, ``max_tokens``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)
