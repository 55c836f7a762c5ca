"""``streamrl trainer``: consume ``batches``, update the policy, write checkpoints, publish ``checkpoints``."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from


def register(app: typer.Typer) -> None:
    """Add the ``trainer`` command to the root app."""

    @app.command("trainer")
    def _trainer(
        config: Path | None = ConfigOption,
        backend: str | None = typer.Option(
            None, "--backend", help="torch | verl (default: trainer.backend)."
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Initial HF model dir (default: trainer.model_path)."
        ),
        checkpoint_dir: Path | None = typer.Option(
            None, "--checkpoint-dir", help="Default: trainer.checkpoint_dir."
        ),
        max_steps: int | None = typer.Option(
            None, "--max-steps", help="Stop at this version (default: trainer.max_steps)."
        ),
        metrics_port: int | None = typer.Option(
            None, "--metrics-port", help="Prometheus port (default: trainer.metrics_port)."
        ),
    ) -> None:
        """Train the policy from `batches` (one step per batch) and publish new checkpoints."""
        settings = settings_from(config)
        ts = settings.trainer
        if backend is not None:
            if backend not in ("torch", "verl"):
                raise typer.BadParameter(f"--backend must be torch or verl, got {backend!r}")
            ts.backend = backend  # type: ignore[assignment]
        if model is not None:
            ts.model_path = model
        if checkpoint_dir is not None:
            ts.checkpoint_dir = checkpoint_dir
        if max_steps is not None:
            ts.max_steps = max_steps
        if metrics_port is not None:
            ts.metrics_port = metrics_port

        from streamrl.metrics import serve_metrics
        from streamrl.trainer.run import run_trainer

        serve_metrics(ts.metrics_port)
        version = run_trainer(settings)
        typer.echo(f"trainer stopped at version {version}")
