"""A ``streamrl dev`` run never uses a local broker that another live run started (that run stops it
when it ends): it starts its own on free ports, with its own data, deleted at the end; or, with
``dev.free_ports: false``, it stops with an error naming that run. Real brokers on this machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from streamrl.broker import LocalKafka
from streamrl.config import load_settings
from streamrl.config.kafka import LocalBrokerSettings
from streamrl.dev.local_broker import choose_broker, owner_name, stop_broker
from streamrl.errors import BrokerError
from tests.support.kafka import free_port

pytestmark = pytest.mark.integration


def test_another_runs_broker_is_not_shared(tmp_path: Path) -> None:
    local = {"port": free_port(), "controller_port": free_port(), "heap": "256m"}
    first = LocalKafka(LocalBrokerSettings(**local), data_dir=tmp_path / "kafka-data")
    other_run = subprocess.Popen(["sleep", "300"])  # stands for the live process of the first run
    mine = None
    try:
        first.start(timeout_s=120, owner=owner_name("first"))
        assert first.owner() is not None and first.owner()["owner"] == "streamrl dev run first"
        settings = load_settings(None, kafka={"local": local}, dev={"free_ports": True})

        # the run that started it keeps using it
        same, note = choose_broker(settings, "first", data_dir=first.data_dir)
        assert note is None and same.bootstrap == first.bootstrap

        # pretend the broker's owner is another live run (the sleeping process)
        first.owner_file.write_text(json.dumps({"owner": owner_name("first"), "pid": other_run.pid}))
        assert first.owner() == {"owner": "streamrl dev run first", "pid": other_run.pid}
        mine, note = choose_broker(settings, "second", data_dir=first.data_dir)
        assert note is not None and f"belongs to streamrl dev run first (pid {other_run.pid})" in note
        assert mine.bootstrap != first.bootstrap and mine.cfg.controller_port != first.cfg.controller_port
        assert mine.data_dir == tmp_path / "kafka-data-second"
        _, started = mine.start(timeout_s=120, owner=owner_name("second"))
        assert started and mine.answers() and first.answers()  # both run, side by side
        stop_broker(mine, private=True)
        assert not mine.data_dir.exists() and first.answers()

        with pytest.raises(
            BrokerError, match=r"was started by streamrl dev run first \(pid \d+\), which stops it"
        ):
            choose_broker(
                settings.model_copy(update={"dev": settings.dev.model_copy(update={"free_ports": False})}),
                "third",
                data_dir=first.data_dir,
            )

        other_run.kill()
        other_run.wait()
        assert first.owner() is None  # its owner is gone: a broker nobody will stop, shared again
        same, note = choose_broker(settings, "fourth", data_dir=first.data_dir)
        assert note is None and same.bootstrap == first.bootstrap
    finally:
        other_run.kill()
        other_run.wait()
        if mine is not None:
            mine.stop()
        first.stop()
