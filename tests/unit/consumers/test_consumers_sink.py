"""KafkaSink: a record the producer refuses at once fails its future with a clear DeliveryError."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from streamrl.consumers.sink import KafkaSink
from streamrl.errors import DeliveryError


class _RawSerde:
    def encode(self, record: bytes) -> bytes:
        return record


def test_a_record_over_the_message_size_limit_fails_its_future_naming_size_and_limit() -> None:
    # a real librdkafka producer: it checks message.max.bytes before any broker is contacted
    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "message.max.bytes": 2000, "log_level": 0})

    async def main() -> None:
        sink = KafkaSink(producer, _RawSerde(), lambda t: f"p.{t}", asyncio.get_running_loop())
        fut = sink.publish("trajectories", "r1", b"x" * 5000)
        with pytest.raises(DeliveryError) as err:
            await fut
        assert err.value.failures[0][:2] == ("p.trajectories", "r1")
        assert "5000 bytes, over topics.max_message_bytes" in str(err.value)

    asyncio.run(main())
