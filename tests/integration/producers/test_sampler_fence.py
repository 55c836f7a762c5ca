"""The sampler's fence on the real broker: while one sampler holds its prefix's fence no other gets it
(the CLI's one-line exit is in the bad-input catalogue); once the holder leaves, a successor takes it."""

from __future__ import annotations

import threading
import time

import pytest

from streamrl.producers.fence import FenceError, SamplerFence
from streamrl.producers.sampler import Sampler

pytestmark = pytest.mark.integration

# the holder keeps its fence while its heartbeats arrive: 10 s leaves room for a loaded machine
FAST_FENCE = {"fence_session_timeout_s": 10.0, "fence_timeout_s": 14.0}


def test_the_fence_is_held_by_one_sampler_and_passes_when_it_leaves(settings_factory) -> None:
    s = settings_factory(sampler={**FAST_FENCE, "max_epochs": 1, "exit_when_done": False})
    first, stop = Sampler(s), threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            first.run(stop)
        except BaseException as exc:
            errors.append(exc)
        finally:
            first.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (first.fence is not None and first.fence.held):  # a state, polled
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.05)
        other = SamplerFence(s, client_id="other")
        with pytest.raises(FenceError, match=f"held by {first.fence.client_id}"):
            other.acquire()
        assert first.fence.held and thread.is_alive()
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    successor = SamplerFence(s, client_id="successor")  # the holder left the group: taken at once
    try:
        successor.acquire()
        assert successor.held
    finally:
        successor.close()
