"""`streamrl publish` against the real broker: idempotent re-publish, bad lines by number, GSM8K."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamrl.producers.publish import publish_file
from streamrl.schemas import Split, Task
from streamrl.schemas.serde import Serde
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration

GSM8K = Path(__file__).resolve().parents[3] / "examples" / "gsm8k" / "data" / "train.jsonl"


def latest_by_key(settings, n: int | None = None) -> tuple[int, dict[str, Task]]:
    """(records read, latest Task per key) of the ``tasks`` topic: at least ``n`` records when given,
    then up to the end offsets. Fewer than ``n`` fails naming, per partition, the end offset, how many
    records were read and the first offsets below the end that were not."""
    serde = Serde()
    with TopicReader(settings, "tasks") as reader:
        if n is not None:
            try:
                reader.read(n, timeout_s=30.0)
            except AssertionError as exc:
                ends = reader.end_offsets()
                read = {
                    p: {m.offset() for m in reader.messages if m.partition() == p} for p in reader.partitions
                }
                missing = {p: sorted(set(range(ends[p])) - read[p])[:10] for p in reader.partitions}
                per = {
                    p: f"end {ends[p]}, read {len(read[p])}, not read {missing[p]}" for p in reader.partitions
                }
                raise AssertionError(f"{exc}; per partition: {per}") from None
        records = reader.read_to_end()
    latest = {m.key().decode(): serde.decode_message(m, Task) for m in records}
    return len(records), latest


def test_publishing_the_same_file_twice_keeps_one_task_per_id(settings, tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(20)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = publish_file(settings, p)
    second = publish_file(settings, p)
    assert first.published == second.published == 20 and first.invalid == 0
    n_records, latest = latest_by_key(settings, n=40)
    assert n_records == 40  # before compaction both copies are in the log...
    assert len(latest) == 20  # ...but latest value per key = one task per row
    assert sorted(json.loads(t.payload)["question"] for t in latest.values()) == sorted(
        r["question"] for r in rows
    )
    assert all(t.split is Split.train and t.source.startswith("d.jsonl:line ") for t in latest.values())


def test_cli_reports_malformed_lines_by_number_and_uses_the_id_field(
    settings, tmp_path: Path, monkeypatch
) -> None:
    from streamrl.cli import app

    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "q": 1}\n{"id": "b", "q": 2\n[1, 2]\n{"q": 3}\n{"id": "c", "q": 4}\n')
    monkeypatch.setenv("STREAMRL_BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("STREAMRL_TOPIC_PREFIX", settings.topics.prefix)
    result = CliRunner().invoke(app, ["publish", str(p), "--id-field", "id", "--split", "val"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "bad.jsonl line 2: malformed JSON" in out
    assert "bad.jsonl line 3: not a JSON object" in out
    assert "bad.jsonl line 4: missing id field 'id'" in out
    assert "published 2 task(s)" in out and "3 invalid" in out
    _, latest = latest_by_key(settings)
    assert set(latest) == {"a", "c"} and all(t.split is Split.val for t in latest.values())


def test_publish_gsm8k_train(settings) -> None:
    report = publish_file(settings, GSM8K)
    assert (report.rows, report.published, report.invalid, report.skipped) == (7473, 7473, 0, 0)
    n_records, latest = latest_by_key(settings, n=7473)
    assert n_records == 7473 and len(latest) == 7473
    print(f"GSM8K train: {report.published} tasks in {report.elapsed_s:.2f} s = {report.rate:.0f} tasks/s")


def test_missing_topic_or_dead_broker_fails_fast_with_the_fix(settings_factory, tmp_path: Path) -> None:
    """Before reading a row: a missing `tasks` topic names `streamrl topics create`; a dead broker its address."""
    import time

    from streamrl.topics import TopicUnavailable

    p = tmp_path / "d.jsonl"
    p.write_text('{"q": 1}\n{"q": 2}\n')
    no_topics = settings_factory(create_topics=False)
    t0 = time.monotonic()
    with pytest.raises(TopicUnavailable, match=r"does not exist.*streamrl topics create"):
        publish_file(no_topics, p)
    assert time.monotonic() - t0 < 15  # was: publish.flush_timeout_s, one error log line per row
    dead = settings_factory(create_topics=False, kafka={"bootstrap_servers": "127.0.0.1:1"})
    with pytest.raises(TopicUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        publish_file(dead, p)
