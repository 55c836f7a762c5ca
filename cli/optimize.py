"""``streamrl optimize``: prompt optimization (APO or few-shot) over the rollout workers."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption


def register(app: typer.Typer) -> None:
    """Add ``optimize`` to the root app."""

    @app.command("optimize")
    def optimize(
        config: Path | None = ConfigOption,
        algorithm: str | None = typer.Option(
            None, "--algorithm", help="apo | fewshot (sets optimize.algorithm.type)."
        ),
        run_id: str | None = typer.Option(
            None, "--run-id", help="The run; the same id resumes it (default: a new one)."
        ),
        workers: int | None = typer.Option(None, "--workers", help="Rollout worker processes to start."),
        pipeline: bool | None = typer.Option(
            None,
            "--pipeline/--no-pipeline",
            help="Start broker, inference and workers here (default), or use the running ones.",
        ),
        display: str | None = typer.Option(None, "--display", help="auto|live|plain|off."),
    ) -> None:
        """Optimize a prompt: evaluations through the rollout workers, state and events on Kafka."""
        from streamrl.dev.optimize import run_optimize

        flags = {
            "--algorithm": ("optimize.algorithm.type", algorithm),
            "--run-id": ("optimize.run_id", run_id),
            "--workers": ("dev.workers", workers),
            "--pipeline/--no-pipeline": ("optimize.start_pipeline", pipeline),
            "--display": ("optimize.display", display),
        }
        raise typer.Exit(run_optimize(config, flags=flags))
