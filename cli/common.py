"""Options and helpers shared by the CLI modules."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.config import Settings, load_settings

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="YAML config (default: $STREAMRL_CONFIG, else ./streamrl.yaml if present, else built-in defaults).",
    exists=False,
    dir_okay=False,
)


def settings_from(config: Path | None) -> Settings:
    """Load settings for a command (raises ConfigError, which ``main`` prints in one line)."""
    return load_settings(config)


def not_yet(name: str) -> None:
    """Exit 2 with a clear message for a stage command whose implementation has not landed."""
    typer.secho(f"streamrl {name}: not yet available in this build", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(2)
