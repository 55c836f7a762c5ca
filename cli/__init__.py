"""The ``streamrl`` command line: one entry point, one sub-command per stage.

Entry points are thin: they parse options and load the config first, then import the stage's
heavy code inside the command body, so ``streamrl --help`` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from streamrl.errors import StreamRLError

app = typer.Typer(
    name="streamrl",
    help="Train LLM agents with reinforcement learning over Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Modules under streamrl.cli that register commands; each defines ``register(app)``.
COMMAND_MODULES = ("kafka", "producers", "consumers", "inference", "streams", "trainer", "dev", "status")


@app.callback()
def _root(
    log_level: str = typer.Option(
        "INFO", "--log-level", envvar="STREAMRL_LOG_LEVEL", help="Python log level."
    ),
) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One INFO line per HTTP request (agents' openai/httpx clients, health polls) drowns a stage's log.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


for _name in COMMAND_MODULES:
    importlib.import_module(f"streamrl.cli.{_name}").register(app)


def main() -> None:
    """Run the CLI; a :class:`StreamRLError` prints one clear line and exits 1."""
    try:
        app()
    except StreamRLError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
