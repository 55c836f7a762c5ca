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
        """Train the policy from `batches` and publish new checkpoints: one trainer step (one policy
        version) per batch, made of trainer.ppo_epochs x trainer.ppo_mini_batches optimizer steps."""
        settings = settings_from(
            config,
            {
                "--backend": ("trainer.backend", backend),
                "--model": ("trainer.model_path", model),
                "--checkpoint-dir": ("trainer.checkpoint_dir", checkpoint_dir),
                "--max-steps": ("trainer.max_steps", max_steps),
                "--metrics-port": ("trainer.metrics_port", metrics_port),
            },
        )
        ts = settings.trainer

        from streamrl.metrics import serve_metrics
        from streamrl.security import credentials
        from streamrl.trainer.run import run_trainer

        serve_metrics(ts.metrics_port, token=credentials(settings.security).metrics_token)
        version = run_trainer(settings)
        typer.echo(f"trainer stopped at version {version}")
