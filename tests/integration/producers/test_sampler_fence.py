"""One sampler per topic prefix, enforced on the real broker: a second sampler exits naming the first,
the holder keeps emitting, and a successor takes the fence as soon as the holder leaves."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from streamrl.producers.fence import SamplerFence
from streamrl.producers.sampler import Sampler

pytestmark = pytest.mark.integration

FAST_FENCE = {"fence_session_timeout_s": 6.0, "fence_timeout_s": 8.0}


def test_a_second_sampler_on_the_same_prefix_exits_naming_the_first(settings_factory, tmp_path: Path) -> None:
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
        # the real CLI, as an operator would start it: one clear line, exit code 1, no traceback
        cfg = tmp_path / "s.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "kafka": {"bootstrap_servers": s.kafka.bootstrap_servers},
                    "topics": {"prefix": s.topics.prefix},
                    "sampler": FAST_FENCE,
                }
            )
        )
        out = subprocess.run(
            [sys.executable, "-m", "streamrl.cli", "sampler", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1, out.stderr
        assert "another sampler holds the fence of topic prefix" in out.stderr
        assert first.fence.client_id in out.stderr  # names the holder
        assert "Traceback" not in out.stderr
        assert first.fence.held and thread.is_alive() and not errors  # the holder goes on
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    successor = SamplerFence(s, client_id="successor")  # the holder left: taken at once
    try:
        successor.acquire()
        assert successor.held
    finally:
        successor.close()
