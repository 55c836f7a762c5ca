"""A local broker whose port another process holds is one clear error before any JVM starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamrl.broker import LocalKafka
from streamrl.config.kafka import LocalBrokerSettings
from streamrl.errors import BrokerError
from tests.support.kafka import free_port


@pytest.mark.parametrize("key", ["port", "controller_port"])
def test_a_held_port_is_named(tmp_path: Path, key: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = {"port": free_port(), "controller_port": free_port(), key: port}
        broker = LocalKafka(LocalBrokerSettings(**ports, home=tmp_path), data_dir=tmp_path / "data")
        with pytest.raises(BrokerError) as info:
            broker.start(timeout_s=5)
    msg = str(info.value)
    assert f"port {port} on 127.0.0.1 (kafka.local.{key}) is in use by another process" in msg, msg
    assert not (tmp_path / "data" / "broker.pid").exists()  # no JVM was started
