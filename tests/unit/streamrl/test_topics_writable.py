"""ensure_topics waits until each new partition is led (ListOffsets answers): the retry, the timeout
message and a non-settling error, against a fake admin client."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamrl.errors import BrokerError
from streamrl.topics import _wait_until_writable


class FakeAdmin:
    """Answers ListOffsets with ``errors[call][(topic, partition)]`` (a KafkaError code), else an offset."""

    def __init__(self, errors: list[dict[tuple[str, int], int]]) -> None:
        self.errors = errors
        self.asked: list[list[tuple[str, int]]] = []

    def list_offsets(self, request: dict, request_timeout: float) -> dict:
        call = len(self.asked)
        self.asked.append(sorted((tp.topic, tp.partition) for tp in request))
        errs = self.errors[min(call, len(self.errors) - 1)]
        out = {}
        for tp in request:
            fut: Future = Future()
            code = errs.get((tp.topic, tp.partition))
            if code is None:
                fut.set_result(0)
            else:
                fut.set_exception(KafkaException(KafkaError(code)))
            out[tp] = fut
        return out


def test_asks_again_only_for_partitions_not_led_yet() -> None:
    admin = FakeAdmin(
        [{("a", 1): KafkaError.NOT_LEADER_FOR_PARTITION, ("b", 0): KafkaError.UNKNOWN_LEADER_EPOCH}, {}]
    )
    _wait_until_writable(admin, {"a": 2, "b": 1}, timeout_s=5)  # type: ignore[arg-type]
    assert admin.asked == [[("a", 0), ("a", 1), ("b", 0)], [("a", 1), ("b", 0)]]


def test_names_the_partitions_still_not_led_after_the_timeout() -> None:
    admin = FakeAdmin([{("a", 1): KafkaError.NOT_LEADER_FOR_PARTITION}])
    with pytest.raises(BrokerError, match=r"\['a\[1\]'\] are not led by a broker after 0 s .*NOT_LEADER"):
        _wait_until_writable(admin, {"a": 2}, timeout_s=0.2)  # type: ignore[arg-type]


def test_another_error_is_raised_at_once() -> None:
    admin = FakeAdmin([{("a", 0): KafkaError.TOPIC_AUTHORIZATION_FAILED}])
    with pytest.raises(BrokerError, match=r"a\[0\]: cannot read its end offset"):
        _wait_until_writable(admin, {"a": 1}, timeout_s=5)  # type: ignore[arg-type]
    assert len(admin.asked) == 1
