"""Run the aggregator as a Faust worker process."""

from __future__ import annotations

import logging
from typing import Any

from streamrl.config import Settings
from streamrl.metrics import serve_metrics
from streamrl.security import credentials

log = logging.getLogger("streams")


def run_worker(settings: Settings, *, log_level: str = "INFO") -> None:
    """Create the internal topics, build the app and run a Faust worker until it is stopped.

    Blocks; SIGTERM/SIGINT stop the worker cleanly, leaving the consumer group even as a static member
    (``streams.leave_group_on_stop``); a SIGKILL is safe too (see README ``## Streams``).

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
    if settings.streams.instance_id is not None and settings.streams.leave_group_on_stop:
        leave_group_on_stop(agg.app)
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


def leave_group_on_stop(app: Any) -> None:
    """Make a clean stop of ``app`` (a ``faust.App`` with ``consumer_group_instance_id``) leave its
    consumer group.

    aiokafka sends no LeaveGroup for a static member (KIP-345: static members leave on session
    timeout), so a stopped streams process would hold its partitions, and read as a connected member,
    for ``session_timeout_s``. When the app begins to stop (``on_before_shutdown``: its streams are
    drained, its consumer not closed yet) this turns the member dynamic, so the consumer's close sends
    the LeaveGroup (v1, by member id: the broker removes a static member that way too). A member that
    cannot be reached (Faust or aiokafka internals changed) is logged, and the stop goes on.
    """

    @app.on_before_shutdown.connect
    async def _leave(sender: Any, **kwargs: Any) -> None:
        coordinator = _coordinator(app)
        if coordinator is None or getattr(coordinator, "_group_instance_id", None) is None:
            log.warning(
                "streams: cannot reach the consumer's group coordinator: the group is not left on stop"
            )
            return
        log.info(
            "streams: leaving consumer group %s (static member %s) on stop",
            coordinator.group_id,
            coordinator._group_instance_id,
        )
        coordinator._group_instance_id = None


def _coordinator(app: Any) -> Any:
    """aiokafka's ``GroupCoordinator`` of a started Faust app (None if there is none)."""
    thread = getattr(getattr(app, "_consumer", None), "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    return getattr(consumer, "_coordinator", None)
