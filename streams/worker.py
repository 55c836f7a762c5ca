"""Run the aggregator as a Faust worker process."""

from __future__ import annotations

import logging

from streamrl.config import Settings
from streamrl.metrics import serve_metrics
from streamrl.security import credentials

log = logging.getLogger("streams")


def run_worker(settings: Settings, *, log_level: str = "INFO") -> None:
    """Create the internal topics, build the app and run a Faust worker until it is stopped.

    Blocks; SIGTERM/SIGINT stop the worker cleanly (a SIGKILL is safe too: see README ``## Streams``).

    Raises:
        BrokerError: topics missing or not co-partitioned, cluster unreachable.
        ConfigError: unsupported security settings.
    """
    import faust

    from streamrl.streams.app import Aggregator
    from streamrl.streams.faust_config import ensure_streams_topics

    names = ensure_streams_topics(settings)
    serve_metrics(settings.streams.metrics_port, token=credentials(settings.security).metrics_token)
    agg = Aggregator(settings)
    log.info(
        "streams: app %s, join over %s + %s (%d partitions), %d group partition(s)",
        names.app_id,
        names.requests,
        names.trajectories,
        names.join_partitions,
        names.group_partitions,
    )
    worker = faust.Worker(agg.app, loglevel=log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
