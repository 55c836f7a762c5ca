"""The producer buffer's flush waits for every table write to be handed to the driver (faust_producer)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.producer import ProducerBuffer

from streamrl.config import load_settings
from streamrl.streams.faust_producer import POLL_S, DrainingProducerBuffer


class SlowChannel:
    """A channel whose ``publish_message`` (the hand-over to the driver) takes ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.handed: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(self.delay_s)
        self.handed.append(fut.n)


def _message(channel: SlowChannel, n: int) -> Any:
    return SimpleNamespace(n=n, message=SimpleNamespace(channel=channel))


async def _flush_after_put(buffer_cls: type[ProducerBuffer], delay_s: float, n: int) -> tuple[list[int], int]:
    """Put ``n`` messages, let the background task take the first, flush; what was handed over by then."""
    buffer = buffer_cls()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    channel = SlowChannel(delay_s)
    await buffer.start()
    try:
        for i in range(n):
            buffer.put(_message(channel, i))
        await asyncio.sleep(0)  # the background task takes the first message off the queue
        await asyncio.sleep(0)
        await buffer.flush()
        return list(channel.handed), buffer.size
    finally:
        await buffer.stop()


@pytest.mark.parametrize("n", [1, 3])
def test_flush_returns_once_every_message_is_handed_over(n):
    # each hand-over is slower than the flush's poll: Faust's own buffer returns with the message being
    # handed over (n=1: its queue is empty) or with the rest still queued (n=3)
    handed, left = asyncio.run(_flush_after_put(DrainingProducerBuffer, 2.5 * POLL_S, n))
    assert handed == list(range(n)) and left == 0


def test_the_upstream_buffer_still_returns_early():
    """Why DrainingProducerBuffer exists; if this fails, faust-streaming fixed its flush and the
    subclass can go."""
    handed, _ = asyncio.run(_flush_after_put(ProducerBuffer, 2.5 * POLL_S, 1))
    assert handed == []


def test_flush_does_not_wait_for_messages_put_after_it():
    """The agents keep writing during a commit's flush: it waits for what was put before it only."""

    async def run() -> tuple[list[int], int]:
        buffer = DrainingProducerBuffer()
        buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
        channel = SlowChannel(2.5 * POLL_S)
        await buffer.start()

        async def keep_writing() -> None:
            for i in range(2, 12):
                buffer.put(_message(channel, i))
                await asyncio.sleep(POLL_S / 2)  # 5 puts per hand-over: the queue does not empty

        try:
            buffer.put(_message(channel, 0))
            buffer.put(_message(channel, 1))
            writer = asyncio.ensure_future(keep_writing())
            await buffer.flush()
            handed, left = list(channel.handed), buffer.size
            await writer
            await buffer.flush()  # the rest, before stopping (a stopping buffer refuses to flush)
            assert channel.handed == list(range(12))
            return handed, left
        finally:
            await buffer.stop()

    handed, left = asyncio.run(run())
    assert handed[:2] == [0, 1] and len(handed) <= 3 and left > 0


def test_flush_of_a_stopped_buffer_with_messages_left_raises():
    async def run() -> None:
        buffer = DrainingProducerBuffer()
        buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
        buffer.put(_message(SlowChannel(0.0), 0))  # never started: nothing takes it
        await buffer.flush()

    with pytest.raises(RuntimeError, match="1 message"):
        asyncio.run(run())


def test_the_aggregator_producer_uses_the_draining_buffer(tmp_path: Path):
    from streamrl.streams.app import Aggregator

    settings = load_settings(None, streams={"state_dir": str(tmp_path / "state"), "blob_dir": str(tmp_path)})
    producer: Any = Aggregator(settings).app.producer
    assert isinstance(producer.buffer, DrainingProducerBuffer)
    assert producer.buffer.app is producer.app
