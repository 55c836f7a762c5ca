"""``streamrl resources``: publish and inspect versioned resources (prompt templates) on ``resources``."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from

resources_app = typer.Typer(
    help="Publish and inspect versioned resources (prompt templates) that samples pin.", no_args_is_help=True
)


@resources_app.command("put")
def put(
    name: str = typer.Argument(..., help="Resource name the agent reads (llm.resources[NAME])."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="UTF-8 file with the content."),
    kind: str = typer.Option("prompt_template", "--kind", help="prompt_template (str.format) or text."),
    config: Path | None = ConfigOption,
) -> None:
    """Publish FILE as a version of NAME (the version is derived from the content); prints NAME/VERSION."""
    from pydantic import ValidationError

    from streamrl.errors import StreamRLError
    from streamrl.resource_store import publish_resources
    from streamrl.resources import ResourceError, view
    from streamrl.schemas import Resource

    settings = settings_from(config)
    try:
        content = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise StreamRLError(f"{file}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        record = Resource.create(
            name, content, kind, metadata={"source": str(file)}, created_by=f"cli:{getpass.getuser()}"
        )
    except ValidationError as exc:  # a bad name
        raise StreamRLError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    try:
        placeholders = sorted(getattr(view(record), "placeholders", ()))
    except ResourceError as exc:
        raise StreamRLError(f"{file}: {exc}") from None
    (key,) = publish_resources(settings, [record])
    shown = f" (placeholders: {', '.join(placeholders)})" if placeholders else ""
    typer.echo(f"{key}{shown}")


@resources_app.command("list")
def list_(
    name: str | None = typer.Argument(None, help="Only this resource's versions."),
    config: Path | None = ConfigOption,
) -> None:
    """List the versions on the resources topic, oldest first: name/version, kind, size, created, parents."""
    from streamrl.resource_store import ResourceStore

    store = ResourceStore(settings_from(config))
    try:
        store.refresh(30)
        names = sorted({r.name for r in store.versions()})
        if not names:
            typer.echo(f"no resource on {store.topic} (`streamrl resources put` publishes one)", err=True)
        elif name is not None and name not in names:
            typer.echo(f"no version of {name!r} on {store.topic} (names there: {', '.join(names)})", err=True)
        for r in store.versions(name):
            parents = f" parents={','.join(r.parents)}" if r.parents else ""
            typer.echo(
                f"{r.key()}  {r.kind}  {len(r.content.encode())} B  {r.created_at:%Y-%m-%d %H:%M:%S}Z"
                f"  {r.created_by or '-'}{parents}"
            )
    finally:
        store.close()


@resources_app.command("show")
def show(
    key: str = typer.Argument(..., help="NAME/VERSION"),
    config: Path | None = ConfigOption,
) -> None:
    """Print one version's content."""
    from streamrl.errors import StreamRLError
    from streamrl.resource_store import ResourceStore

    name, sep, version = key.partition("/")
    if not sep:
        raise StreamRLError(f"{key!r}: expected NAME/VERSION (streamrl resources list shows them)")
    store = ResourceStore(settings_from(config))
    try:
        store.refresh(30)
        record = store.get(name, version)
    finally:
        store.close()
    if record is None:
        raise StreamRLError(f"{key}: no such resource version on {store.topic}")
    typer.echo(record.content, nl=not record.content.endswith("\n"))


def register(app: typer.Typer) -> None:
    """Add ``resources`` to the root app."""
    app.add_typer(resources_app, name="resources")
