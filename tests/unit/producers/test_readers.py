"""Readers: every format yields rows with their position; bad rows come back with an error, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrl.producers.readers import DatasetError, open_dataset


def rows_of(path: Path, **kw):
    return list(open_dataset(path, **kw).rows)


def test_jsonl_reports_line_numbers_of_malformed_lines(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n[1, 2]\n{"a": 3}\n')
    rows = rows_of(p)
    assert [(r.position, r.error is None) for r in rows] == [(1, True), (3, False), (4, True), (5, True)]
    assert "malformed JSON" in rows[1].error and rows[1].where == "line 3"
    assert rows[2].value == [1, 2]  # parsed; the publisher rejects non-objects


def test_malformed_json_says_where_once(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": 1,}\n{"id": "x')
    trailing, unterminated = rows_of(p)
    assert unterminated.error == "malformed JSON: Unterminated string starting at column 8"
    assert trailing.error.startswith("malformed JSON: ") and trailing.error.endswith(" at column 10")
    assert not any(" at at " in r.error for r in (unterminated, trailing))
    arr = tmp_path / "d.json"
    arr.write_text('[{"id": 1},\n {"id": "x\n ]')
    assert not any(" at at " in (r.error or "") for r in rows_of(arr))


def test_jsonl_non_utf8_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    rows = rows_of(p)
    assert rows[0].value == {"a": 1}
    assert rows[-1].error is not None and "UTF-8" in rows[-1].error


def test_json_array_elements_carry_their_line(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text('[\n  {"a": 1},\n  {"a": 2,\n   "b": 3},\n  "x"\n]\n')
    rows = rows_of(p)
    assert [(r.position, r.value) for r in rows] == [(2, {"a": 1}), (3, {"a": 2, "b": 3}), (5, "x")]


def test_json_array_malformed_element_is_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text('[{"a": 1},\n{"a": },\n{"b": "x,]"},\n[1, {"c": [2]} 3], \n{"d": 4}]')
    rows = rows_of(p)
    assert [(r.position, r.value, r.error is None, r.stopped) for r in rows] == [
        (1, {"a": 1}, True, False),
        (2, None, False, False),
        (3, {"b": "x,]"}, True, False),
        (4, None, False, False),
        (5, {"d": 4}, True, False),
    ]
    assert "malformed JSON" in rows[1].error


def test_json_array_that_cannot_be_followed_stops_at_its_line(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text('[{"a": 1},\n{"a": "unterminated}\n]')
    rows = rows_of(p)
    assert rows[0].value == {"a": 1}
    assert rows[1].position == 2 and rows[1].stopped and "stopped reading" in rows[1].error


def test_json_array_non_utf8_element_is_reported_at_its_line(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_bytes(b'[{"a": 1},\n{"a": "caf\xe9"},\n{"a": 3}]')
    rows = rows_of(p)
    assert [(r.position, r.error) for r in rows] == [(1, None), (2, "not UTF-8 (byte 0xe9)"), (3, None)]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"n": ' + "9" * 5000 + "}", "unreadable JSON value: Exceeds the limit"),
    ],
)
def test_jsonl_rows_python_cannot_parse_are_errors_and_reading_goes_on(
    tmp_path: Path, line: str, match: str
) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n' + line + '\n{"a": 2}\n')
    rows = rows_of(p)
    assert [r.value for r in rows] == [{"a": 1}, None, {"a": 2}]
    assert rows[1].where == "line 2" and match in rows[1].error


def test_csv_non_utf8_byte_is_reported_at_its_own_line(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_bytes('q,a\nfine,1\ncaf\xe9,2\n"multi\nline",3\nlast,4\n'.encode("latin-1"))
    rows = rows_of(p)
    assert [(r.where, r.value, r.error) for r in rows] == [
        ("line 2", {"q": "fine", "a": "1"}, None),
        ("line 3", None, "not UTF-8 (byte 0xe9)"),
        ("line 4", {"q": "multi\nline", "a": "3"}, None),
        ("line 6", {"q": "last", "a": "4"}, None),
    ]


def test_json_that_is_not_an_array_is_one_error(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text('{"a": 1}')
    (row,) = rows_of(p)
    assert row.error is not None and "JSON array" in row.error


def test_empty_json_array(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text(" [ ] ")
    assert rows_of(p) == []


def test_csv_rows_are_dicts_and_bad_field_counts_are_reported(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text('q,a\n"two\nlines",1\nonly\nx,y\n')
    rows = rows_of(p)
    assert rows[0].value == {"q": "two\nlines", "a": "1"} and rows[0].position == 2
    assert rows[1].error is not None and rows[1].position == 4 and "1 fields" in rows[1].error
    assert rows[2].value == {"q": "x", "a": "y"} and rows[2].position == 5


def test_csv_duplicate_header_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("a,a\n1,2\n")
    (row,) = rows_of(p)
    assert row.error is not None and "unique" in row.error


def test_parquet_rows_and_total(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"q": ["a", "b", "c"], "n": [1, 2, 3]}), p)
    ds = open_dataset(p)
    assert ds.total == 3
    assert [(r.position, r.value) for r in ds.rows] == [
        (1, {"q": "a", "n": 1}),
        (2, {"q": "b", "n": 2}),
        (3, {"q": "c", "n": 3}),
    ]


def test_hf_save_to_disk_directory_and_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    one = tmp_path / "one"
    datasets.Dataset.from_dict({"q": ["a", "b"]}).save_to_disk(str(one))
    ds = open_dataset(one)
    assert ds.format == "hf" and ds.total == 2 and [r.value for r in ds.rows] == [{"q": "a"}, {"q": "b"}]

    dd = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"q": ["t"]}),
            "test": datasets.Dataset.from_dict({"q": ["v1", "v2"]}),
        }
    ).save_to_disk(str(dd))
    with pytest.raises(DatasetError, match="--hf-split"):
        open_dataset(dd)
    with pytest.raises(DatasetError, match="no split 'nope'"):
        open_dataset(dd, hf_split="nope")
    assert [r.value["q"] for r in open_dataset(dd, hf_split="test").rows] == ["v1", "v2"]


def test_unknown_suffix_and_missing_path(tmp_path: Path) -> None:
    p = tmp_path / "d.txt"
    p.write_text("x")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        open_dataset(p)
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="not a Hugging Face"):
        open_dataset(tmp_path)


def test_gsm8k_first_rows(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[3] / "examples" / "gsm8k" / "data" / "train.jsonl"
    rows = open_dataset(path).rows
    first = next(rows)
    assert first.position == 1 and set(first.value) == {"question", "answer"}
    assert json.dumps(first.value)


def test_utf8_byte_order_mark_is_not_data(tmp_path: Path) -> None:
    """A leading BOM (Excel's CSV UTF-8, Windows editors) neither breaks row 1 nor renames a column."""
    bom = b"\xef\xbb\xbf"
    (tmp_path / "d.jsonl").write_bytes(bom + b'{"q": "a"}\n{"q": "b"}\n')
    assert [r.value for r in rows_of(tmp_path / "d.jsonl")] == [{"q": "a"}, {"q": "b"}]
    (tmp_path / "d.json").write_bytes(bom + b'[{"q": "a"}]')
    assert [r.value for r in rows_of(tmp_path / "d.json")] == [{"q": "a"}]
    (tmp_path / "d.csv").write_bytes(bom + b"q,answer\na,1\n")
    assert [r.value for r in rows_of(tmp_path / "d.csv")] == [{"q": "a", "answer": "1"}]
    # A BOM inside the file is still an error on its own line, not silently stripped.
    (tmp_path / "e.jsonl").write_bytes(b'{"q": "a"}\n' + bom + b'{"q": "b"}\n')
    rows = rows_of(tmp_path / "e.jsonl")
    assert rows[0].value == {"q": "a"} and rows[1].error is not None and rows[1].position == 2
