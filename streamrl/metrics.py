"""Prometheus metrics helpers. Metrics never crash the process that records them."""

from __future__ import annotations

import logging

from prometheus_client import Counter, start_http_server

log = logging.getLogger(__name__)

DLQ_RECORDS = Counter(
    "streamrl_dlq_records_total",
    "Records sent to the dead-letter topic, by stage and error type.",
    ["stage", "error_type"],
)

_served: set[int] = set()


def serve_metrics(port: int | None, addr: str = "0.0.0.0") -> bool:
    """Expose this process's metrics at ``http://addr:port/metrics``.

    Args:
        port: TCP port; ``None`` or 0 disables the endpoint.
        addr: bind address.

    Returns:
        True if the endpoint is (now) served, False if disabled or the port could not be bound
        (logged as a warning: metrics never stop a stage).
    """
    if not port:
        return False
    if port in _served:
        return True
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        log.warning("metrics endpoint on %s:%d not started: %s", addr, port, exc)
        return False
    _served.add(port)
    return True
