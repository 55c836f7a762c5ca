"""CLI commands of this stage (placeholders until the stage lands)."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, not_yet


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""

    @app.command("inference")
    def _inference(config: Path | None = ConfigOption) -> None:
        """Not yet available."""
        not_yet("inference")
