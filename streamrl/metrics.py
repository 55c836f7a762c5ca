"""Prometheus metrics helpers. Metrics never crash the process that records them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, Counter, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from streamrl.security import bearer_token, token_matches

log = logging.getLogger(__name__)

DLQ_RECORDS = Counter(
    "streamrl_dlq_records_total",
    "Records sent to the dead-letter topic, by stage and error type.",
    ["stage", "error_type"],
)

_served: set[int] = set()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


def metrics_app(token: str | None, registry: Any = REGISTRY) -> Callable[..., Iterable[bytes]]:
    """The WSGI app serving ``registry``; with ``token``, a request without
    ``Authorization: Bearer <token>`` gets HTTP 401 (Prometheus: ``authorization.credentials_file``)."""
    inner = make_wsgi_app(registry)
    if token is None:
        return inner

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not token_matches(bearer_token(environ.get("HTTP_AUTHORIZATION")), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"metrics need a token: Authorization: Bearer <security.metrics_token>\n"]
        return inner(environ, start_response)

    return app


def serve_metrics(port: int | None, addr: str = "0.0.0.0", *, token: str | None = None) -> bool:
    """Expose this process's metrics at ``http://addr:port/metrics``.

    Args:
        port: TCP port; ``None`` or 0 disables the endpoint.
        addr: bind address.
        token: bearer token a scrape must send (``security.metrics_token``); None = open.

    Returns:
        True if the endpoint is (now) served, False if disabled or the port could not be bound
        (logged as a warning: metrics never stop a stage).
    """
    if not port:
        return False
    if port in _served:
        return True
    try:
        server = make_server(addr, port, metrics_app(token), ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        log.warning("metrics endpoint on %s:%d not started: %s", addr, port, exc)
        return False
    threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
    _served.add(port)
    return True
