"""``streamrl status`` reads streams (a static group member, ``streams.instance_id``) right on the real
broker: a clean stop leaves the group, so status says stopped within seconds, long before the member's
session would time out; a SIGKILLed member stays in the group until then, and status reads it as not
responding from its timer ticks."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrl.config import Settings, load_settings
from streamrl.dev.status import PipelineStatus, StatusReader
from tests.support.processes import StreamsWorker

pytestmark = pytest.mark.integration

#: Far longer than any wait below: what the test sees is never the session timing out.
SESSION_TIMEOUT_S = 90.0


def _wait(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    path = tmp_path / "streams.yaml"
    cfg = {
        "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
        "topics": {"prefix": settings.topics.prefix, "partitions": dict(settings.topics.partitions)},
        "streams": {
            "instance_id": "streams-0",
            "session_timeout_s": SESSION_TIMEOUT_S,
            "tick_interval_s": 0.2,
            "commit_interval_s": 0.5,
            "join_timeout_s": 3.0,
            "state_dir": str(tmp_path / "state"),
            "blob_dir": str(tmp_path / "blobs"),
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def streams(config: Path, tmp_path: Path) -> Iterator[StreamsWorker]:
    worker = StreamsWorker(config, tmp_path / "streams.log")
    yield worker
    worker.kill(signal.SIGKILL)


def _streams_row(st: PipelineStatus) -> dict[str, Any]:
    rows = [g for g in st.groups if g["stage"] == "streams"]
    return rows[0] if rows else {"members": 0, "responding": None}


def test_status_after_a_clean_stop_and_after_a_crash(config: Path, streams: StreamsWorker) -> None:
    reader = StatusReader(load_settings(config), window_s=30, timeout_s=20, silence_s=5.0)
    try:

        def streams_up() -> PipelineStatus | None:
            st = reader.refresh()
            row = _streams_row(st)
            return st if row["members"] == 1 and row["responding"] is True else None

        streams.start()
        st = _wait(streams_up, 60, "status to read streams as connected and ticking")
        assert st.state == "idle" and st.verdict.startswith("IDLE: streams running"), st.verdict

        streams.kill(signal.SIGTERM)  # returns once the process exited
        stopped_at = time.monotonic()
        st = _wait(
            lambda: (s := reader.refresh()).state == "stopped" and s,
            SESSION_TIMEOUT_S / 3,
            "status to read streams as stopped after SIGTERM",
        )
        assert _streams_row(st)["members"] == 0, st.groups  # it left: no session had to time out
        assert "is connected (their consumer groups have no members)" in st.verdict
        left_after_s = time.monotonic() - stopped_at

        streams.start()  # the same instance id joins again
        _wait(streams_up, 60, "status to read the restarted streams as connected and ticking")
        streams.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        st = _wait(
            lambda: (s := reader.refresh()).state == "stopped" and s,
            SESSION_TIMEOUT_S / 3,
            "status to read the killed streams as not responding",
        )
        row = _streams_row(st)
        # the static member still holds its partitions (its session has not timed out), yet status says
        # what happened
        assert row["members"] == 1 and row["responding"] is False, st.groups
        assert "streams not responding" in st.verdict and "session_timeout_s = 90 s" in st.verdict
        print(
            f"status: stopped {left_after_s:.1f} s after a SIGTERM, streams not responding "
            f"{time.monotonic() - killed_at:.1f} s after a SIGKILL (session timeout {SESSION_TIMEOUT_S:.0f} s)"
        )
    finally:
        reader.close()
