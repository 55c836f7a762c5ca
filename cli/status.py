"""``streamrl status``: one screen about a pipeline, from Kafka alone (``streamrl.dev.status``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from


def register(app: typer.Typer) -> None:
    """Add ``status`` to the root app."""

    @app.command("status")
    def status(
        config: Path | None = ConfigOption,
        watch: bool = typer.Option(
            False,
            "--watch",
            "-w",
            help="Refresh until Ctrl-C (a reading that fails is reported on stderr; the next comes on time).",
        ),
        interval_s: float = typer.Option(
            5.0, "--interval", min=0.5, help="Seconds between --watch refreshes."
        ),
        as_json: bool = typer.Option(False, "--json", help="One JSON object (one per refresh with --watch)."),
        window_s: float = typer.Option(
            60.0, "--window", min=1.0, help="Rate window of rollouts/s, in seconds."
        ),
        timeout_s: float = typer.Option(
            30.0, "--timeout", min=1.0, help="Longest one reading may take, in seconds."
        ),
    ) -> None:
        """How a pipeline is doing (consumer-group lag, policy version, rollouts/s, failures, staleness,
        last checkpoint, last val reward), read from the Kafka cluster the config points at."""
        from rich.console import Console

        from streamrl.dev.status import PipelineStatus, StatusReader, render
        from streamrl.errors import StreamRLError

        settings = settings_from(config)
        reader = StatusReader(settings, window_s=window_s, timeout_s=timeout_s)
        console = Console()
        try:
            # the first reading's error ends the command (a wrong address or prefix: nothing was read);
            # with --watch a later one is reported and the next reading comes as planned
            st = reader.refresh()
            if not watch:
                if as_json:
                    typer.echo(json.dumps(st.to_json()))
                else:
                    console.print(render(st))
                return

            def read_again() -> PipelineStatus | None:
                try:
                    return reader.refresh()
                except StreamRLError as exc:
                    typer.echo(f"status: this reading failed, next in {interval_s:g} s: {exc}", err=True)
                    return None

            if as_json:
                while True:
                    if st is not None:
                        typer.echo(json.dumps(st.to_json()), nl=True)
                    time.sleep(interval_s)
                    st = read_again()
            from rich.live import Live

            with Live(render(st), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval_s)
                    st = read_again()
                    if st is not None:
                        live.update(render(st), refresh=True)
        except KeyboardInterrupt:
            pass
        finally:
            reader.close()
