"""Logging defaults shared by every command: per-request HTTP client logging is off unless asked for.

The HTTP clients agents and stages use log one INFO line per request: ``httpx`` (and ``httpcore``),
and newer ``openai`` releases (3.x) go through ``httpx2``/``httpcore2``. At rollout rates that is
megabytes of log per minute per worker, and a crashed stage's log tail is nothing but request
lines; so these loggers stay at WARNING unless ``STREAMRL_HTTP_LOG=1`` (or ``--http-log``) asks.
"""

from __future__ import annotations

import logging
import os

HTTP_CLIENT_LOGGERS: tuple[str, ...] = ("httpx", "httpcore", "httpx2", "httpcore2")
"""Loggers that write one line per HTTP request."""

HTTP_LOG_ENV = "STREAMRL_HTTP_LOG"
"""Environment variable that turns per-request client logging on (``1``/``true``)."""


def http_log_requested() -> bool:
    """Whether ``STREAMRL_HTTP_LOG`` asks for per-request client logging."""
    return os.environ.get(HTTP_LOG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_http_clients(enabled: bool | None = None) -> None:
    """Set the per-request client loggers to WARNING, or leave them at the root level when logging
    them is requested (``enabled``, default :func:`http_log_requested`)."""
    on = http_log_requested() if enabled is None else enabled
    for name in HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if on else logging.WARNING)
