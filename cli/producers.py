"""``streamrl publish FILE`` (dataset → ``tasks``) and ``streamrl sampler`` (``tasks`` → ``samples``)."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from


def register(app: typer.Typer) -> None:
    """Add ``publish`` and ``sampler`` to the root app."""

    @app.command("publish")
    def publish(
        file: Path = typer.Argument(
            ..., help="JSONL, JSON array, CSV, Parquet or Arrow file, or a HF save_to_disk directory."
        ),
        split: str = typer.Option("train", "--split", help="Task split: train or val."),
        id_field: str | None = typer.Option(
            None, "--id-field", help="Row field holding the task id (default: stable hash of the row)."
        ),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Read at most this many rows."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate only; produce nothing."),
        fmt: str | None = typer.Option(
            None, "--format", help="jsonl|json|csv|parquet|arrow|hf (default: from the suffix)."
        ),
        hf_split: str | None = typer.Option(
            None, "--hf-split", help="Split of a HF DatasetDict directory to read."
        ),
        show_problems: int = typer.Option(
            20, "--show-problems", min=0, help="Invalid/skipped rows to list (all are counted)."
        ),
        config: Path | None = ConfigOption,
    ) -> None:
        """Publish one Task per row to the tasks topic; report invalid rows by line number."""
        if split not in ("train", "val"):
            raise typer.BadParameter(f"must be train or val, got {split!r}", param_hint="'--split'")
        settings = settings_from(config)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from streamrl.producers.publish import publish_file
        from streamrl.producers.readers import detect_format
        from streamrl.schemas import Split

        if fmt is None:
            detect_format(file)  # fail on a missing file or unknown suffix before drawing the progress bar
        console = Console(stderr=True)
        with Progress(
            TextColumn("[bold]publish[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} rows/s"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task("rows", total=None, rate=0.0)

            def on_rows(n: int) -> None:
                progress.advance(bar, n)
                t = progress.tasks[0]
                progress.update(bar, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

            report = publish_file(
                settings,
                file,
                split=Split(split),
                id_field=id_field,
                limit=limit,
                dry_run=dry_run,
                fmt=fmt,
                hf_split=hf_split,
                on_rows=on_rows,
                on_total=lambda total: progress.update(bar, total=total),
            )
        for where, reason in report.problems[:show_problems]:
            console.print(f"  {file.name} {where}: {reason}", highlight=False, markup=False, soft_wrap=True)
        if len(report.problems) > show_problems:
            console.print(f"  ... and {len(report.problems) - show_problems} more")
        verb = "would publish" if dry_run else "published"
        typer.echo(
            f"{verb} {report.published} task(s) to {settings.topics.name('tasks')} ({split}); "
            f"skipped {report.skipped} duplicate(s), {report.invalid} invalid; "
            f"{report.rows} rows in {report.elapsed_s:.2f} s ({report.rate:.0f} rows/s)"
        )
        if report.rows == 0:
            typer.secho(
                f"warning: {file} has no rows; nothing was published", err=True, fg=typer.colors.YELLOW
            )
        if report.published == 0 and report.invalid:
            # Nothing usable in the file: a script must be able to tell (skipping some bad rows is fine).
            typer.secho("error: every row was invalid; nothing was published", err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
        if report.stopped is not None or report.undelivered:
            # Rows the file holds were not all published: reading stopped early, or the broker refused some.
            why = []
            if report.stopped is not None:
                why.append(f"reading stopped at {report.stopped} (rows after it were not read)")
            if report.undelivered:
                why.append(f"{report.undelivered} task(s) were refused by the broker")
            typer.secho("error: " + "; ".join(why), err=True, fg=typer.colors.RED)
            raise typer.Exit(1)

    @app.command("sampler")
    def sampler(
        max_epochs: int | None = typer.Option(None, "--max-epochs", help="Override sampler.max_epochs."),
        config: Path | None = ConfigOption,
    ) -> None:
        """Run the sampler: tasks → samples with group fan-out, epochs, admission control, retries, validation."""
        settings = settings_from(config, {"--max-epochs": ("sampler.max_epochs", max_epochs)})
        from streamrl.producers.sampler import run_sampler

        run_sampler(settings)
