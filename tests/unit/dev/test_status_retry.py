"""``StatusReader.refresh`` asks again while a partition settles in (``status --watch`` started as dev
creates the topics got NOT_LEADER_FOR_PARTITION and exited), and gives up at once on other errors."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamrl.config import load_settings
from streamrl.dev import status as status_mod
from streamrl.dev.status import StatusReader
from streamrl.errors import StreamRLError


def _reader(
    monkeypatch: pytest.MonkeyPatch, errors: list[int], timeout_s: float = 5.0, *, wait: bool = False
) -> tuple[StatusReader, list]:
    """A reader whose readings fail with ``errors`` (Kafka error codes) in turn, then answer "ok";
    between tries it sleeps only with ``wait``."""
    reader = StatusReader(load_settings(None), timeout_s=timeout_s)
    calls: list[int] = []

    def once() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            err = KafkaException(KafkaError(errors[len(calls) - 1], "from the broker"))
            raise StreamRLError(f"reading the pipeline from b:9092: {err}") from err
        return "ok"

    monkeypatch.setattr(reader, "_refresh_once", once)
    if not wait:
        monkeypatch.setattr(status_mod.time, "sleep", lambda _s: None)
    return reader, calls


def test_a_settling_partition_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    reader, calls = _reader(
        monkeypatch, [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE]
    )
    assert reader.refresh() == "ok" and len(calls) == 3


def test_another_error_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reader, calls = _reader(monkeypatch, [KafkaError._TRANSPORT])
    with pytest.raises(StreamRLError, match="reading the pipeline from b:9092"):
        reader.refresh()
    assert len(calls) == 1


def test_a_partition_that_never_settles_is_raised_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    reader, calls = _reader(
        monkeypatch, [KafkaError.NOT_LEADER_FOR_PARTITION] * 100, timeout_s=1.2, wait=True
    )
    with pytest.raises(StreamRLError, match="NOT_LEADER"):
        reader.refresh()
    assert 2 <= len(calls) <= 4  # tries 0.5 s apart for 1.2 s
