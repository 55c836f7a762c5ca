"""Publish logic without a broker: row → Task, stable ids, invalid rows with positions (dry run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrl.config import load_settings
from streamrl.producers.publish import InvalidRow, build_task, publish_file, row_hash_id, row_payload
from streamrl.producers.readers import Row
from streamrl.schemas import Split


def test_hash_id_is_stable_ignores_key_order_and_depends_on_split() -> None:
    a = row_hash_id({"q": 1, "a": 2}, Split.train, 24)
    b = row_hash_id({"a": 2, "q": 1}, Split.train, 24)
    assert a == b and len(a) == 24
    assert row_hash_id({"q": 1, "a": 2}, Split.val, 24) != a
    assert row_hash_id({"q": 1, "a": 3}, Split.train, 24) != a
    assert row_payload({"q": 1, "a": 2}, "line 1") == '{"q":1,"a":2}'  # file key order kept in the payload


def test_build_task_uses_id_field_and_records_source() -> None:
    t = build_task(
        Row(3, "line", {"id": 7, "q": "x"}), split=Split.val, id_field="id", source="f.jsonl", hash_chars=24
    )
    assert t.task_id == "7" and t.split is Split.val and t.source == "f.jsonl:line 3"
    assert json.loads(t.payload) == {"id": 7, "q": "x"}


@pytest.mark.parametrize(
    ("value", "id_field", "match"),
    [
        ([1, 2], None, "not a JSON object"),
        ({"q": 1}, "id", "missing id field 'id'"),
        ({"id": ""}, "id", "is empty"),
        ({"id": 1.5}, "id", "string or integer"),
        ({"id": "a", "b": b"\x00"}, "id", "not JSON-serializable"),
        ({"x": float("nan")}, None, "not JSON-serializable"),
        ({"id": "t1"}, "id", "no task fields: the row has only its id field 'id'"),
        ({}, None, "no task fields: the row is an empty object"),
    ],
)
def test_invalid_rows_say_where_and_why(value: object, id_field: str | None, match: str) -> None:
    with pytest.raises(InvalidRow, match=match) as info:
        build_task(Row(12, "line", value), split=Split.train, id_field=id_field, source="f", hash_chars=24)
    assert info.value.where == "line 12"


def test_dry_run_counts_and_lists_problems(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    big = "x" * 5000
    lines = ['{"q": 1}', '{"q": 1}', "not json", "[1]", '{"q": "' + big + '"}', '{"q": 2}']
    p.write_text("\n".join(lines) + "\n")
    s = load_settings(None, publish={"max_task_bytes": 1000})
    report = publish_file(s, p, dry_run=True)
    assert (report.rows, report.published, report.skipped, report.invalid) == (6, 2, 1, 3)
    wheres = [w for w, _ in report.problems]
    assert wheres == ["line 2", "line 3", "line 4", "line 5"]
    assert "duplicate task_id" in report.problems[0][1] and "first at line 1" in report.problems[0][1]
    assert "max_task_bytes=1000" in report.problems[3][1]


def test_limit_stops_reading(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    report = publish_file(load_settings(None), p, dry_run=True, limit=4)
    assert report.rows == 4 and report.published == 4


def test_cli_exits_nonzero_when_every_row_is_invalid(tmp_path) -> None:
    """A file with no usable row must fail a script (exit 1); some bad rows among good ones do not."""
    from typer.testing import CliRunner

    from streamrl.cli import app

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n[1]\n')
    runner = CliRunner()
    result = runner.invoke(app, ["publish", str(bad), "--id-field", "nope", "--dry-run"])
    assert result.exit_code == 1, result.output
    result = runner.invoke(app, ["publish", str(bad), "--dry-run"])
    assert result.exit_code == 0, result.output


def test_cli_names_file_and_line_of_a_row_with_only_an_id(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streamrl.cli import app

    data = tmp_path / "tasks.jsonl"
    data.write_text('{"id": "a", "prompt": "5037"}\n{"id": "b"}\n')
    result = CliRunner().invoke(app, ["publish", str(data), "--id-field", "id", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "tasks.jsonl line 2: no task fields: the row has only its id field 'id'" in result.output
    assert "would publish 1 task(s)" in result.output and "1 invalid" in result.output
