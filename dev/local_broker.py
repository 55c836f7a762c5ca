"""Which local Kafka broker a ``streamrl dev`` run starts: the configured one (``kafka.local``), or
its own on free ports when the configured one belongs to another ``dev`` run.

Every clone of the repository runs its demo broker on ``kafka.local``'s ports (9092/9093) with its
data under ``~/.cache/streamrl``. A second run that used the broker of a first one would lose it when
the first run ends (a run stops the broker it started). So a run that finds the configured broker
started by another live ``dev`` run (:meth:`LocalKafka.owner`) starts its own on free ports, with its
own data directory (``<data dir>-<run id>``, deleted when the run stops that broker), or, with
``dev.free_ports: false``, stops with an error naming that run. A broker started to stay (``streamrl
kafka start``, or a run with ``dev.keep_broker``) is used as before and left running.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from streamrl.broker import LocalKafka
from streamrl.config import Settings
from streamrl.dev.rundir import free_port
from streamrl.errors import BrokerError


def owner_name(run_id: str) -> str:
    """How a ``dev`` run names itself as a broker's owner."""
    return f"streamrl dev run {run_id}"


def choose_broker(
    settings: Settings, run_id: str, *, data_dir: Path | None = None, this_pid: int | None = None
) -> tuple[LocalKafka, str | None]:
    """The broker this run should start (or use), and why it is not the configured one.

    Args:
        settings: the run's settings (``kafka.local``, ``dev.free_ports``).
        run_id: this run's id (names its own broker's data directory).
        data_dir: ``dev.broker_data_dir`` (None: ``<kafka.local.home>/kafka-data``).
        this_pid: the pid of this run (default this process): a broker it owns is its own.

    Returns:
        ``(launcher, note)``: the configured broker and None, or a private one on free ports and a
        sentence for the console.

    Raises:
        BrokerError: the configured broker belongs to another live run and ``dev.free_ports`` is off.
    """
    local = LocalKafka(settings.kafka.local, data_dir=data_dir)
    other = local.owner()
    if other is None or other["pid"] == (this_pid or os.getpid()):
        return local, None
    whose = f"{other['owner']} (pid {other['pid']})"
    if not settings.dev.free_ports:
        raise BrokerError(
            f"the local Kafka broker on {local.bootstrap} was started by {whose}, which stops it when "
            "it ends: set dev.free_ports: true (this run then starts its own broker on free ports), or "
            "give this run other kafka.local.port / kafka.local.controller_port and dev.broker_data_dir"
        )
    host = settings.kafka.local.host
    port = free_port(host)
    controller = free_port(host)
    while controller == port:
        controller = free_port(host)
    cfg = settings.kafka.local.model_copy(update={"port": port, "controller_port": controller})
    own = LocalKafka(cfg, data_dir=local.data_dir.with_name(f"{local.data_dir.name}-{run_id}"))
    note = (
        f"the local Kafka broker on {local.bootstrap} belongs to {whose}; this run starts its own on "
        f"{own.bootstrap} (controller port {controller}, data in {own.data_dir}, deleted at the end)"
    )
    return own, note


def stop_broker(broker: LocalKafka, *, private: bool) -> None:
    """Stop a broker the run started; a private one's data directory is deleted too (it was only
    this run's)."""
    broker.stop()
    if private:
        shutil.rmtree(broker.data_dir, ignore_errors=True)
