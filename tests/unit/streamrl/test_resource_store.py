"""ResourceStore.resolve near its time limit: a lookup that misses ends with the ResourceError that names
the version, not with a broker timeout from a read given only the last milliseconds of the limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamrl.config import Settings
from streamrl.errors import BrokerError
from streamrl.resource_store import MIN_READ_S, ResourceStore
from streamrl.resources import ResourceError
from streamrl.schemas import Resource


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


class LateVersionStore(ResourceStore):
    """A store whose topic gets ``system_prompt/ffff`` at ``appears_at`` (monotonic seconds); a read finds
    it once it is there."""

    def __init__(self, appears_at: float) -> None:
        super().__init__(Settings())
        self.appears_at = appears_at

    def refresh(self, timeout_s: float = 10.0) -> int:
        if time.monotonic() < self.appears_at:
            return 0
        self._records[("system_prompt", "ffff")] = Resource.create("system_prompt", "Hello {name}")
        return 1


def test_a_version_acknowledged_just_before_the_limit_is_found() -> None:
    # the back-off sleeps grow to 1 s; without a read at the limit the last ~0.4 s of a 1 s limit were blind
    store = LateVersionStore(appears_at=time.monotonic() + 0.9)
    got = asyncio.run(store.resolve({"system_prompt": "ffff"}, timeout_s=1.0))
    assert got["system_prompt"].content == "Hello {name}"
