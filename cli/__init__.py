"""The ``streamrl`` command line: one entry point, one sub-command per stage.

Entry points are thin: they parse options and load the config first, then import the stage's
heavy code inside the command body, so ``streamrl --help`` stays instant. A command's flags that
set a config key are handed to the settings loader as overrides (``cli.common.settings_from``), so a
bad flag is validated like a bad key and reported in one line naming the flag; a flag the parser
rejects (not a number, out of a command-only range) is one line too (:func:`main`).
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
import typer.core

from streamrl.errors import FlagError, StreamRLError

app = typer.Typer(
    name="streamrl",
    help="Train LLM agents with reinforcement learning over Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Modules under streamrl.cli that register commands; each defines ``register(app)``.
COMMAND_MODULES = (
    "kafka",
    "producers",
    "consumers",
    "inference",
    "streams",
    "trainer",
    "dev",
    "status",
    "resources",
    "security",
    "optimize",
)


@app.callback()
def _root(
    log_level: str = typer.Option(
        "INFO", "--log-level", envvar="STREAMRL_LOG_LEVEL", help="Python log level."
    ),
    http_log: bool = typer.Option(
        False,
        "--http-log",
        envvar="STREAMRL_HTTP_LOG",
        help="Log every HTTP request of the clients (httpx, httpx2 of newer openai releases); off by default.",
    ),
) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One INFO line per HTTP request (agents' openai/httpx clients, health polls) drowns a stage's log.
    from streamrl.logs import quiet_http_clients

    quiet_http_clients(http_log)


for _name in COMMAND_MODULES:
    importlib.import_module(f"streamrl.cli.{_name}").register(app)


_option_type = typer.core.TyperOption.display_type_rich


def _no_type_for_flags(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
    """``--help`` shows no ``<bool>`` beside an on/off flag (it takes no value)."""
    return None if self.is_flag else _option_type(self, ctx)


typer.core.TyperOption.display_type_rich = _no_type_for_flags  # type: ignore[method-assign]


def _error(message: str, code: int) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    sys.exit(code)


def main() -> None:
    """Run the CLI. Errors are one line on stderr, no traceback: a :class:`StreamRLError` (bad
    config key, broker down, ...) exits 1; a flag's bad value exits 2 in click's words, whether the
    parser rejects it (``error: Invalid value for '--limit': ...``) or the settings loader does
    (``error: Invalid value for '--max-steps': trainer.max_steps: ... (got 0)``,
    :class:`~streamrl.errors.FlagError`). Other usage errors (unknown option or command) print the
    usage hint, as click does."""
    try:
        rv = app(standalone_mode=False)
    except FlagError as exc:  # a flag's value the settings loader rejected: a usage error
        _error(str(exc), 2)
    except StreamRLError as exc:
        _error(str(exc), 1)
    except typer.BadParameter as exc:
        _error(exc.format_message(), exc.exit_code)
    except typer.TyperException as exc:  # typer's click exceptions: usage errors, unknown option/command
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
