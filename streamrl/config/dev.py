"""Config section(s) of this stage (placeholder until the stage fills it in)."""

from __future__ import annotations

from streamrl.config.base import Section


class DevSettings(Section):
    """Settings of this stage."""
