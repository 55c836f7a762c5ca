"""ResourceStore.resolve near its time limit: a lookup that misses ends with the ResourceError that names
the version, not with a broker timeout from a read given only the last milliseconds of the limit."""

from __future__ import annotations

import asyncio

import pytest

from streamrl.config import Settings
from streamrl.errors import BrokerError
from streamrl.resource_store import MIN_READ_S, ResourceStore
from streamrl.resources import ResourceError


class SlowBrokerStore(ResourceStore):
    """A store whose broker answers a read in ``answer_s``: a read given less time fails the way
    ``get_watermark_offsets`` does (``BrokerError``: ``_TIMED_OUT``); the topic holds nothing."""

    def __init__(self, answer_s: float) -> None:
        super().__init__(Settings())
        self.answer_s = answer_s
        self.read_timeouts: list[float] = []

    def refresh(self, timeout_s: float = 10.0) -> int:
        self.read_timeouts.append(timeout_s)
        if timeout_s < self.answer_s:
            raise BrokerError("resources[0]: cannot read end offset: Local: Timed out")
        return 0


def test_a_missing_version_is_reported_as_missing_even_when_the_broker_answers_slowly() -> None:
    store = SlowBrokerStore(answer_s=0.5)
    with pytest.raises(ResourceError, match=r"system_prompt/ffff not found on .*resources after 0.3 s"):
        asyncio.run(store.resolve({"system_prompt": "ffff"}, timeout_s=0.3))
    assert store.read_timeouts and min(store.read_timeouts) == MIN_READ_S
