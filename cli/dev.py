"""``streamrl dev`` (the whole pipeline on one machine) and ``streamrl demo`` (the learnable CPU demo)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption


def register(app: typer.Typer) -> None:
    """Add ``dev`` and ``demo`` to the root app."""

    @app.command("dev")
    def dev(
        config: Path | None = ConfigOption,
        run_id: str | None = typer.Option(
            None, "--run-id", help="Run directory name (default: time + random)."
        ),
        max_steps: int | None = typer.Option(
            None, "--max-steps", help="Stop at this policy version (overrides dev.max_steps)."
        ),
        workers: int | None = typer.Option(None, "--workers", help="Rollout worker processes."),
        display: str | None = typer.Option(None, "--display", help="auto|live|plain|off."),
    ) -> None:
        """Run broker, inference, sampler, workers, streams and trainer as supervised children, with a live display."""
        from streamrl.dev.runner import run_dev

        flags = {
            "--run-id": ("dev.run_id", run_id),
            "--max-steps": ("dev.max_steps", max_steps),
            "--workers": ("dev.workers", workers),
            "--display": ("dev.display", display),
        }
        result = run_dev(config, flags=flags)
        raise typer.Exit(result.exit_code)

    @app.command("demo")
    def demo(
        run_id: str | None = typer.Option(
            None, "--run-id", help="Run directory name (default: time + random)."
        ),
        max_steps: int | None = typer.Option(None, "--max-steps", help="Stop at this policy version."),
        display: str | None = typer.Option(None, "--display", help="auto|live|plain|off."),
    ) -> None:
        """Train the learnable demo (largest digit, tiny char model, GRPO on CPU) on the embedded defaults."""
        from streamrl.dev.demo import demo_overrides
        from streamrl.dev.runner import run_dev

        flags = {
            "--run-id": ("dev.run_id", run_id),
            "--max-steps": ("dev.max_steps", max_steps),
            "--display": ("dev.display", display),
        }
        # os.devnull as the config file: the demo runs on its embedded defaults, never on ./streamrl.yaml.
        result = run_dev(Path(os.devnull), base=demo_overrides(), flags=flags)
        raise typer.Exit(result.exit_code)
