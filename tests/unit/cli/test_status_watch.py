"""``streamrl status --watch`` goes on after a reading that fails (a broker frozen for longer than the
reading's ``--timeout`` ended the watch with the error), and reports it on stderr; the first reading's
error still ends the command."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from streamrl.cli import app
from streamrl.dev import status as status_mod
from streamrl.errors import StreamRLError


class Reading:
    def __init__(self, n: int) -> None:
        self.n = n

    def to_json(self) -> dict[str, Any]:
        return {"reading": self.n}


def _fake_reader(monkeypatch: pytest.MonkeyPatch, script: list[Any]) -> None:
    """``StatusReader`` whose refreshes return or raise ``script``'s items in turn."""

    class FakeReader:
        def __init__(self, *_a: Any, **_k: Any) -> None:
            self.left = list(script)

        def refresh(self) -> Any:
            item = self.left.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item

        def close(self) -> None:
            pass

    monkeypatch.setattr(status_mod, "StatusReader", FakeReader)
    monkeypatch.setattr("streamrl.cli.status.time.sleep", lambda _s: None)


def test_a_failed_reading_does_not_end_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = StreamRLError("reading the pipeline from b:9092: KafkaError{code=FENCED_LEADER_EPOCH}")
    _fake_reader(monkeypatch, [Reading(1), frozen, frozen, Reading(2), KeyboardInterrupt()])
    result = CliRunner().invoke(app, ["status", "--watch", "--json", "--interval", "0.5"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ['{"reading": 1}', '{"reading": 2}']
    assert result.stderr.count("status: this reading failed, next in 0.5 s: reading the pipeline") == 2


def test_the_first_reading_s_error_ends_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_reader(monkeypatch, [StreamRLError("no StreamRL topics with prefix 'x.'"), Reading(1)])
    result = CliRunner().invoke(app, ["status", "--watch", "--json"])
    # raised to the CLI's main(), which prints it as "error: ..." and exits 1
    assert isinstance(result.exception, StreamRLError) and "prefix 'x.'" in str(result.exception)
