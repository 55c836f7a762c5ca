"""CLI of the streams stage: ``streamrl streams`` runs the Faust aggregator worker."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from


def register(app: typer.Typer) -> None:
    """Add ``streams`` to the root app."""

    @app.command("streams")
    def _streams(
        config: Path | None = ConfigOption,
        log_level: str = typer.Option("INFO", "--worker-log-level", help="Log level of the Faust worker."),
    ) -> None:
        """Run the Faust aggregator: join requests with trajectories, group rollouts, emit training batches."""
        settings = settings_from(config)
        from streamrl.streams.worker import run_worker

        run_worker(settings, log_level=log_level)
