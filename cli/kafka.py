"""``streamrl kafka start|stop|status`` and ``streamrl topics create|list|delete``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from

kafka_app = typer.Typer(
    help="Run a local single-node Apache Kafka broker (KRaft, no Docker).", no_args_is_help=True
)
topics_app = typer.Typer(help="Create, inspect and delete the StreamRL topics.", no_args_is_help=True)


def _external() -> str | None:
    return os.environ.get("STREAMRL_BOOTSTRAP_SERVERS") or None


@kafka_app.command("start")
def kafka_start(config: Path | None = ConfigOption) -> None:
    """Start the local broker (resolving its jars with Maven the first time) and print its address."""
    from streamrl.broker import LocalKafka

    settings = settings_from(config)
    if _external():
        typer.echo(f"STREAMRL_BOOTSTRAP_SERVERS is set ({_external()}): using that cluster, not starting one")
        return
    broker = LocalKafka(settings.kafka.local)
    bootstrap, started = broker.start()
    if started:
        typer.echo(f"Kafka started (pid {broker.pid()}), data in {broker.data_dir}")
    else:
        typer.echo("Kafka is already running")
    if broker.secured:
        typer.echo(
            f"SASL_SSL (SCRAM-SHA-512{', ACLs on' if settings.kafka.local.authorizer else ''}); "
            f"clients verify the broker with {broker.ca_file} (kafka.ssl_ca_location)"
        )
    typer.echo(bootstrap)


@kafka_app.command("stop")
def kafka_stop(config: Path | None = ConfigOption) -> None:
    """Stop the local broker; its data directory is kept."""
    from streamrl.broker import LocalKafka

    broker = LocalKafka(settings_from(config).kafka.local)
    typer.echo("Kafka stopped" if broker.stop() else "Kafka was not running")


@kafka_app.command("status")
def kafka_status(config: Path | None = ConfigOption) -> None:
    """Say whether the local broker runs and answers; exit 1 if it does not."""
    from streamrl.broker import LocalKafka

    st = LocalKafka(settings_from(config).kafka.local).status()
    if st.running:
        state = "answering" if st.answering else "not answering yet"
        typer.echo(f"Kafka running (pid {st.pid}) on {st.bootstrap}, {state}; data in {st.data_dir}")
    else:
        typer.echo(f"Kafka not running on {st.bootstrap} (data in {st.data_dir})")
    raise typer.Exit(0 if st.running and st.answering else 1)


@kafka_app.command("acls")
def kafka_acls(
    apply: bool = typer.Option(
        False, "--apply", help="Create the ACLs (as the configured user, a super user)."
    ),
    principal: list[str] = typer.Option(
        None,
        "--principal",
        help="ROLE=Type:name, e.g. worker=User:rollouts (repeat; default User:<stem>-<role>).",
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Print (or, with --apply, create) the Kafka ACLs giving each stage's principal its own topics and groups."""
    from streamrl.acl import apply_acls, grants, principals
    from streamrl.errors import ConfigError

    settings = settings_from(config)
    overrides = {}
    for item in principal or ():
        role, sep, who = item.partition("=")
        if not sep:
            raise ConfigError(f"--principal {item}: expected ROLE=Type:name, e.g. worker=User:rollouts")
        overrides[role] = who
    who_is = principals(settings, overrides)
    for role, rtype, pattern, name, op in grants(settings):
        typer.echo(f"{who_is[role]:<32} {op:<16} {rtype:<6} {pattern:<8} {name}")
    if apply:
        n = apply_acls(settings, who_is)
        typer.echo(f"{n} ACLs created on {settings.kafka.bootstrap_servers}")


@topics_app.command("create")
def topics_create(config: Path | None = ConfigOption) -> None:
    """Create every StreamRL topic that does not exist yet (idempotent)."""
    from streamrl.topics import ensure_topics

    for name, state in ensure_topics(settings_from(config)).items():
        typer.echo(f"{name}: {state}")


@topics_app.command("list")
def topics_list(config: Path | None = ConfigOption) -> None:
    """Show every StreamRL topic with its partition count and end offsets."""
    from rich.console import Console
    from rich.table import Table

    from streamrl.topics import describe_topics

    settings = settings_from(config)
    table = Table("topic", "partitions", "records", "end offsets")
    for info in describe_topics(settings):
        table.add_row(
            info.name, str(info.partitions), str(info.records), " ".join(map(str, info.end_offsets))
        )
    Console().print(table)


@topics_app.command("delete")
def topics_delete(
    prefix: str | None = typer.Option(
        None, "--prefix", help="Topic prefix of the pipeline to delete (default: topics.prefix)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
    config: Path | None = ConfigOption,
) -> None:
    """Delete a pipeline's topics (those of its prefix, and its streams application's) and their records."""
    from confluent_kafka import KafkaException

    from streamrl.errors import BrokerError
    from streamrl.kafka import make_admin
    from streamrl.streams.faust_config import streams_topics
    from streamrl.topics import delete_topics, describe_topics, pipeline_topics

    settings = settings_from(config, {"--prefix": ("topics.prefix", prefix)})
    where = settings.kafka.bootstrap_servers
    admin = make_admin(settings)
    try:
        existing = admin.list_topics(timeout=15.0).topics
    except KafkaException as exc:
        raise BrokerError(
            f"{where}: cannot list topics ({exc}); is the broker up? (`streamrl kafka status`, `streamrl kafka start`)"
        ) from exc
    names = pipeline_topics(settings, existing, streams_topics(settings).app_id)
    if not names:
        typer.echo(f"no topics with prefix {settings.topics.prefix!r} on {where}")
        return
    records = {t.name: t.records for t in describe_topics(settings)}
    for name in names:
        typer.echo(f"  {name}" + (f" ({records[name]} records)" if name in records else ""))
    if not yes:
        typer.confirm(f"Delete these {len(names)} topics and their records from {where}?", abort=True)
    delete_topics(settings, names, admin=admin)
    typer.echo(f"deleted {len(names)} topics with prefix {settings.topics.prefix!r} from {where}")


config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@config_app.command("example")
def config_example() -> None:
    """Print the commented example config with every key and its default."""
    from streamrl.config.example import render_example

    typer.echo(render_example(), nl=False)


@config_app.command("show")
def config_show(config: Path | None = ConfigOption) -> None:
    """Validate the config (file + environment) and print the effective values as YAML (secrets as ``**********``)."""
    import yaml

    from streamrl.security import redacted_settings

    settings = settings_from(config)
    typer.echo(yaml.safe_dump(redacted_settings(settings), sort_keys=False), nl=False)


def register(app: typer.Typer) -> None:
    """Add the ``kafka``, ``topics`` and ``config`` command groups."""
    app.add_typer(kafka_app, name="kafka")
    app.add_typer(topics_app, name="topics")
    app.add_typer(config_app, name="config")
