"""Options and helpers shared by the CLI modules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def settings_from(config: Path | None, flags: Mapping[str, tuple[str, Any]] | None = None) -> Settings:
    """Load settings for a command, its flags handed to the loader as overrides.

    Args:
        config: the ``--config`` file (None: the default lookup).
        flags: ``{"--max-steps": ("trainer.max_steps", value)}``; a None value is a flag not given.
            A flag beats the environment and the file; its value is validated like a key's.

    Every secret the settings hold is hidden from this process's log lines from now on
    (:func:`streamrl.security.redact_logs`).

    Raises:
        ConfigError: a bad key or flag; ``main`` prints it in one line
            (``Invalid value for '--max-steps': trainer.max_steps: Input should be ... (got 0)``), a
            :class:`~streamrl.errors.FlagError` (exit 2).
    """
    from streamrl.security import redact_logs

    settings = load_settings(config, flags=flags)
    redact_logs(settings)
    return settings


def not_yet(name: str) -> None:
    """Exit 2 with a clear message for a stage command whose implementation has not landed."""
    typer.secho(f"streamrl {name}: not yet available in this build", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(2)
