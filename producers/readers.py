"""Dataset readers: JSONL, JSON arrays, CSV, Parquet and local Hugging Face ``datasets`` directories.

Every reader yields :class:`Row` items in file order, each with a 1-based position (``line 12``,
``row 7``) so a bad row can be reported where it is. A row that cannot be parsed is yielded with
``error`` set, never dropped; blank JSONL lines are the only thing skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrl.schemas.errors import StreamRLError

FORMATS = ("jsonl", "json", "csv", "parquet", "arrow", "hf")
"""Format names accepted by :func:`open_dataset` (``hf`` = a ``datasets.save_to_disk`` directory)."""

_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
}


class DatasetError(StreamRLError):
    """A dataset file or directory cannot be read at all (missing, unknown format, no such split)."""


@dataclass(frozen=True)
class Row:
    """One row of a dataset file.

    Attributes:
        position: 1-based line number (JSONL, JSON, CSV) or row number (Parquet, Arrow, HF).
        unit: ``"line"`` or ``"row"``, so ``f"{unit} {position}"`` says where the row is.
        value: the parsed row (a dict for well-formed rows; anything JSON gave otherwise).
        error: why the row could not be parsed, or None.
        stopped: reading stopped at this error (the file cannot be read past it): rows after it
            were not read.
    """

    position: int
    unit: str
    value: Any = None
    error: str | None = None
    stopped: bool = False

    @property
    def where(self) -> str:
        """``"line 12"`` / ``"row 7"``."""
        return f"{self.unit} {self.position}"


@dataclass
class Dataset:
    """An opened dataset: its rows (an iterator, read lazily) and the row count when known upfront."""

    path: Path
    format: str
    rows: Iterator[Row]
    total: int | None


def detect_format(path: Path) -> str:
    """The format of ``path`` from its suffix, or ``hf`` for a directory.

    Raises:
        DatasetError: the path does not exist or the suffix is unknown.
    """
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_dir():
        return "hf"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DatasetError(
            f"{path}: unknown dataset format {path.suffix!r}; use one of {sorted(_SUFFIXES)} or pass --format"
        )
    return fmt


def open_dataset(path: str | Path, fmt: str | None = None, *, hf_split: str | None = None) -> Dataset:
    """Open a dataset file or directory for reading.

    Args:
        path: a ``.jsonl``/``.json``/``.csv``/``.parquet``/``.arrow`` file, or a directory written by
            ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.
        fmt: one of :data:`FORMATS`; None = from the suffix.
        hf_split: for a ``DatasetDict`` directory, which of its splits to read (required when it has
            more than one).

    Raises:
        DatasetError: missing path, unknown format, unreadable file, unknown split.
    """
    p = Path(path)
    fmt = fmt or detect_format(p)
    if fmt not in FORMATS:
        raise DatasetError(f"{p}: unknown format {fmt!r}; use one of {list(FORMATS)}")
    if not p.exists():
        raise DatasetError(f"{p}: no such file or directory")
    try:
        if fmt == "jsonl":
            return Dataset(p, fmt, _read_jsonl(p), None)
        if fmt == "json":
            return Dataset(p, fmt, _read_json_array(p), None)
        if fmt == "csv":
            return Dataset(p, fmt, _read_csv(p), None)
        if fmt == "parquet":
            return _open_parquet(p)
        if fmt == "arrow":
            return _open_arrow_files(p, [p])
        return _open_hf_dir(p, hf_split)
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read: {exc.strerror or exc}") from exc


def _at(msg: str, where: str) -> str:
    """``json``'s reason with where it happened: ``Expecting value at column 3``; a reason that already
    ends in "at" (``Unterminated string starting at``) gets the place alone, not "at at column"."""
    return f"{msg} {where}" if msg.endswith(" at") else f"{msg} at {where}"


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` whose failures are all ``ValueError`` with a reason that says what is wrong.

    Raises:
        ValueError: malformed JSON (with the column), nesting deeper than the parser's recursion
            limit, or an integer over Python's 4,300-digit conversion limit.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {_at(exc.msg, f'column {exc.colno}')}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply (over ~1,000 levels)") from None
    except ValueError as exc:  # int digits limit
        raise ValueError(f"unreadable JSON value: {exc}") from None


def _read_jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on line 1: a byte-order mark (Windows editors, Excel exports) is not data.
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield Row(lineno, "line", error=f"not UTF-8 (byte {exc.start}: {exc.reason})")
                continue
            if not line.strip():
                continue
            try:
                yield Row(lineno, "line", parse_json(line))
            except ValueError as exc:
                yield Row(lineno, "line", error=str(exc))


def _not_utf8(text: str) -> str | None:
    """What is wrong with a text decoded with ``surrogateescape`` that had bytes that are not UTF-8,
    or None."""
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            return f"not UTF-8 (byte 0x{ord(ch) - 0xDC00:02x})"
    return None


def _read_json_array(path: Path) -> Iterator[Row]:
    """Elements of a top-level JSON array, each with the line its first character is on.

    A malformed element is reported at its line and skipped: reading goes on after the ``,`` that
    ends it (found by bracket and string matching). Only an array whose structure cannot be
    followed (unbalanced brackets, an unterminated string) stops reading, at the line where it breaks.
    """
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    decoder = json.JSONDecoder()
    lines = _LineCounter(text)
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        yield Row(
            lines.at(pos),
            "line",
            error="a .json dataset must be a JSON array (use .jsonl for one object per line)",
            stopped=True,
        )
        return
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line = lines.at(pos)
        try:
            value, end = decoder.raw_decode(text, pos)
            bad = _not_utf8(text[pos:end])
            row = Row(line, "line", value) if bad is None else Row(line, "line", error=bad)
        except json.JSONDecodeError as exc:
            end = _skip_value(text, pos)
            if end is None:
                yield Row(
                    line,
                    "line",
                    error=f"malformed JSON: {exc.msg}; the array cannot be followed past it, stopped reading",
                    stopped=True,
                )
                return
            row = Row(
                line, "line", error=f"malformed JSON: {_at(exc.msg, f'line {exc.lineno} column {exc.colno}')}"
            )
        except RecursionError:
            end = _skip_value(text, pos)
            if end is None:
                yield Row(line, "line", error="JSON nested too deeply; stopped reading", stopped=True)
                return
            row = Row(line, "line", error="JSON nested too deeply (over ~1,000 levels)")
        except ValueError as exc:  # an integer over the digits limit
            end = _skip_value(text, pos)
            if end is None:
                yield Row(line, "line", error=f"unreadable JSON value: {exc}; stopped reading", stopped=True)
                return
            row = Row(line, "line", error=f"unreadable JSON value: {exc}")
        yield row
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == "]":
            return
        if pos >= len(text) or text[pos] != ",":
            yield Row(
                lines.at(pos),
                "line",
                error="malformed JSON array: expected ',' or ']'; stopped reading",
                stopped=True,
            )
            return
        pos = _skip_ws(text, pos + 1)


def _skip_value(text: str, pos: int) -> int | None:
    """End of the (malformed) array element starting at ``pos``: the index of the ``,`` or ``]`` that
    closes it at bracket depth 0, outside strings; None if the text ends first or brackets do not match."""
    depth, i, n = 0, pos, len(text)
    closing = {"}": "{", "]": "["}
    stack: list[str] = []
    while i < n:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                return None
        elif ch in "{[":
            stack.append(ch)
            depth += 1
        elif ch in "}]":
            if not stack:
                return i if ch == "]" else None
            if stack.pop() != closing[ch]:
                return None
            depth -= 1
        elif ch == "," and depth == 0:
            return i
        i += 1
    return None


class _LineCounter:
    """1-based line number of increasing positions in a text, counted incrementally (O(n) overall)."""

    def __init__(self, text: str) -> None:
        self._text, self._pos, self._line = text, 0, 1

    def at(self, pos: int) -> int:
        self._line += self._text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_csv(path: Path) -> Iterator[Row]:
    """CSV rows as dicts of strings keyed by the header row; a row with the wrong field count is an error.

    Bytes are decoded line by line (``surrogateescape``), so a byte that is not UTF-8 is reported
    at its own line and only its row is skipped.
    """
    with path.open("rb") as fh:
        physical = _PhysicalLines(fh)
        reader = csv.reader(physical)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            yield Row(1, "line", error=f"unreadable CSV header: {exc}", stopped=True)
            return
        if header is None:
            return
        header = [h.removeprefix("\ufeff") if i == 0 else h for i, h in enumerate(header)]
        bad = _not_utf8("".join(header))
        if bad is not None:
            yield Row(1, "line", error=f"CSV header {bad}", stopped=True)
            return
        if len(set(header)) != len(header) or any(not h for h in header):
            yield Row(
                1,
                "line",
                error=f"CSV header must have unique, non-empty column names, got {header}",
                stopped=True,
            )
            return
        start = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Row(start, "line", error=f"malformed CSV: {exc}; stopped reading", stopped=True)
                return
            if not fields:  # blank line
                start = reader.line_num + 1
                continue
            bad = _not_utf8("".join(fields))
            if bad is not None:  # reported at the physical line of the bad byte
                at = min((n for n in physical.bad_lines if start <= n <= reader.line_num), default=start)
                yield Row(at, "line", error=bad)
            elif len(fields) != len(header):
                yield Row(start, "line", error=f"has {len(fields)} fields, the header has {len(header)}")
            else:
                yield Row(start, "line", dict(zip(header, fields, strict=True)))
            start = reader.line_num + 1


class _PhysicalLines:
    """Lines of a binary file decoded as UTF-8 one by one (``surrogateescape``), remembering which
    1-based lines had bytes that are not UTF-8."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.line = 0
        self.bad_lines: set[int] = set()

    def __iter__(self) -> _PhysicalLines:
        return self

    def __next__(self) -> str:
        raw = self._fh.readline()
        if not raw:
            raise StopIteration
        self.line += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_lines.add(self.line)
            return raw.decode("utf-8", errors="surrogateescape")


def _open_parquet(path: Path) -> Dataset:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/ArrowIOError subclasses
        raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from exc

    def rows() -> Iterator[Row]:
        n = 0
        for batch in pf.iter_batches(batch_size=4096):
            for value in batch.to_pylist():
                n += 1
                yield Row(n, "row", value)

    return Dataset(path, "parquet", rows(), pf.metadata.num_rows)


def _open_arrow_files(path: Path, files: list[Path]) -> Dataset:
    """Arrow IPC files (stream format, as ``datasets`` writes them; file format also accepted)."""
    import pyarrow as pa

    tables = []
    for f in files:
        try:
            with pa.memory_map(str(f)) as source:
                try:
                    tables.append(pa.ipc.open_stream(source).read_all())
                except pa.ArrowInvalid:
                    source.seek(0)
                    tables.append(pa.ipc.open_file(source).read_all())
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{f}: not a readable Arrow IPC file: {exc}") from exc
    total = sum(t.num_rows for t in tables)

    def rows() -> Iterator[Row]:
        n = 0
        for table in tables:
            for batch in table.to_batches(max_chunksize=4096):
                for value in batch.to_pylist():
                    n += 1
                    yield Row(n, "row", value)

    return Dataset(path, "arrow" if path.is_file() else "hf", rows(), total)


def _open_hf_dir(path: Path, hf_split: str | None) -> Dataset:
    """A directory written by ``Dataset.save_to_disk`` (``state.json``) or ``DatasetDict.save_to_disk``."""
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():
        splits = json.loads(dict_file.read_text()).get("splits", [])
        if hf_split is None:
            if len(splits) != 1:
                raise DatasetError(f"{path}: a DatasetDict with splits {splits}; choose one with --hf-split")
            hf_split = splits[0]
        if hf_split not in splits:
            raise DatasetError(f"{path}: no split {hf_split!r}; it has {splits}")
        path = path / hf_split
    state_file = path / "state.json"
    if not state_file.is_file():
        raise DatasetError(
            f"{path}: not a Hugging Face datasets directory (no state.json or dataset_dict.json); "
            "save it with datasets' save_to_disk, or publish its .parquet/.jsonl files"
        )
    try:
        state = json.loads(state_file.read_text())
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{state_file}: unexpected content ({exc!r}); expected _data_files[].filename"
        ) from exc
    return _open_arrow_files(path, files)
