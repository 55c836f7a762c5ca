"""Bad-input catalogue, publish: every bad row is reported where it is (line, size, limit) and skipped,
no traceback; the good rows around it reach ``tasks`` (read back from the real broker)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from streamrl.config import Settings
from streamrl.producers.publish import PublishReport, publish_file
from streamrl.schemas import Task
from tests.support.bad_input import Kind, kinds
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration

MAX_TASK_BYTES = 4096


@pytest.fixture(scope="module")
def s(shared_settings_factory: Callable[..., Settings]) -> Settings:
    """One pipeline's topics for the whole catalogue (each kind uses its own task ids)."""
    return shared_settings_factory(publish={"max_task_bytes": MAX_TASK_BYTES})


def good(kind: Kind, tag: str) -> dict:
    return {"id": f"{kind.id}-{tag}", "question": "2+2?", "answer": "4"}


def jsonl(*rows: dict | str) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


def cli(s: Settings, tmp: Path, file: Path, **sections: dict) -> subprocess.CompletedProcess[str]:
    """``streamrl publish FILE --id-field id`` as an operator runs it, against this module's topics."""
    cfg = tmp / "publish.yaml"
    data = {"kafka": {"bootstrap_servers": s.kafka.bootstrap_servers}, "topics": {"prefix": s.topics.prefix}}
    for name, section in sections.items():
        data[name] = {**data.get(name, {}), **section}
    cfg.write_text(yaml.safe_dump(data))
    return subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "publish", str(file), "--id-field", "id", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def published_ids(s: Settings) -> set[str]:
    return {t.task_id for t in read_topic(s, "tasks", Task)}


def one_bad_row(kind: Kind, tmp: Path, bad: bytes, suffix: str = ".jsonl") -> tuple[Path, list[str]]:
    """A file: good row, the bad row (line 2), good row."""
    path = tmp / f"{kind.id}{suffix}"
    path.write_bytes(jsonl(good(kind, "a")) + bad + b"\n" + jsonl(good(kind, "b")))
    return path, [f"{kind.id}-a", f"{kind.id}-b"]


def check_report(report: PublishReport, where: str, *says: str) -> None:
    problems = dict(report.problems)
    assert where in problems, report.problems
    for text in says:
        assert text in problems[where], problems[where]


BAD_LINE: dict[str, tuple[bytes, list[str]]] = {
    # kind -> (the bad line 2, what its problem says)
    "publish-malformed-jsonl": (b'{"id": "x", "question": ', ["malformed JSON"]),
    "publish-not-an-object": (b"[1, 2, 3]", ["not a JSON object (got list)"]),
    "publish-missing-id": (b'{"question": "no id"}', ["missing id field 'id'"]),
    "publish-id-only": (b'{"id": "lonely"}', ["no task fields: the row has only its id field 'id'"]),
    "publish-oversized-row": (
        json.dumps({"id": "big", "text": "x" * 10_000}).encode(),
        ["bytes encoded, over publish.max_task_bytes=4096"],
    ),
    "publish-deep-nesting": (b"[" * 200_000 + b"]" * 200_000, ["nested too deeply"]),
    "publish-huge-integer": (b'{"id": "n", "n": ' + b"9" * 5000 + b"}", ["Exceeds the limit (4300 digits)"]),
    "publish-not-utf8": (b'{"id": "u", "q": "caf\xe9"}', ["not UTF-8"]),
    "publish-nan": (b'{"id": "nan", "x": NaN}', ["not JSON-serializable"]),
}


@pytest.mark.parametrize("kind", kinds("publish"), ids=lambda k: k.id)
def test_publish_bad_input(
    kind: Kind, s: Settings, tmp_path: Path, shared_settings_factory: Callable[..., Settings]
) -> None:
    if kind.id in BAD_LINE:
        bad, says = BAD_LINE[kind.id]
        path, want = one_bad_row(kind, tmp_path, bad)
        report = publish_file(s, path, id_field="id")
        check_report(report, "line 2", *says)
        assert report.published == 2 and report.invalid == 1 and report.stopped is None
    elif kind.id == "publish-duplicate-id":
        path = tmp_path / "dup.jsonl"
        path.write_bytes(jsonl(good(kind, "a"), good(kind, "a"), good(kind, "b")))
        want = [f"{kind.id}-a", f"{kind.id}-b"]
        report = publish_file(s, path, id_field="id")
        check_report(report, "line 2", f"duplicate task_id '{kind.id}-a' (first at line 1)")
        assert (report.published, report.skipped) == (2, 1)
    elif kind.id == "publish-json-array-bad-element":
        path = tmp_path / "arr.json"
        path.write_text(
            "[\n"
            + json.dumps(good(kind, "a"))
            + ',\n{"id": "x", "q": },\n'
            + json.dumps(good(kind, "b"))
            + "\n]"
        )
        want = [f"{kind.id}-a", f"{kind.id}-b"]
        report = publish_file(s, path, id_field="id")
        check_report(report, "line 3", "malformed JSON")
        assert report.published == 2 and report.stopped is None  # read on past the bad element
    elif kind.id == "publish-latin1-csv":
        path = tmp_path / "latin1.csv"
        path.write_bytes(
            f"id,question\n{kind.id}-a,fine\n{kind.id}-x,caf\xe9\n{kind.id}-b,also fine\n".encode("latin-1")
        )
        want = [f"{kind.id}-a", f"{kind.id}-b"]
        report = publish_file(s, path, id_field="id")
        assert report.problems == [("line 3", "not UTF-8 (byte 0xe9)")]
        assert report.published == 2
    elif kind.id == "publish-empty-file":
        path = tmp_path / "empty.jsonl"
        path.write_bytes(b"")
        out = cli(s, tmp_path, path)
        assert out.returncode == 0, out.stderr
        assert f"warning: {path} has no rows; nothing was published" in out.stderr
        assert "published 0 task(s)" in out.stdout
        return
    elif kind.id == "publish-broker-refuses-row":
        # this prefix's tasks topic takes 64 KiB records; the publisher's config allows 900 KB tasks
        narrow = shared_settings_factory(
            topics={"max_message_bytes": 65536}, publish={"max_task_bytes": 4096}
        )
        path = tmp_path / "refused.jsonl"
        noise = base64.b64encode(random.Random(0).randbytes(150_000)).decode()  # does not compress
        path.write_bytes(jsonl(good(kind, "a"), {"id": "huge", "text": noise}, good(kind, "b")))
        out = cli(narrow, tmp_path, path)
        assert out.returncode == 1, out.stderr
        assert "line 2: not published: Broker: Message size too large: the task is" in out.stderr
        assert "over the topic's max.message.bytes=65536" in out.stderr  # the topic's own limit, read back
        assert "1 task(s) were refused by the broker" in out.stderr and "Traceback" not in out.stderr
        assert {f"{kind.id}-a", f"{kind.id}-b"} <= published_ids(narrow)  # the row after it too
        return
    elif kind.id == "publish-config-over-topic-limit":
        path, _ = one_bad_row(kind, tmp_path, jsonl(good(kind, "c")).rstrip())
        out = cli(s, tmp_path, path, publish={"max_task_bytes": 9_000_000})
        assert out.returncode == 1
        assert (
            "publish.max_task_bytes=9000000 is over what a topic takes: topics.max_message_bytes=8388608"
            in (out.stderr)
        )
        assert "Traceback" not in out.stderr
        return
    else:
        raise AssertionError(f"no check for {kind.id}")
    assert set(want) <= published_ids(s)  # nothing lost beside the bad row
