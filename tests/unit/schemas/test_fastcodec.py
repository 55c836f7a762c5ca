"""schemas.fastcodec writes exactly fastavro's bytes and reads any valid encoding like fastavro does."""

from __future__ import annotations

import io

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import TOP_RECORDS
from schemas import examples as ex
from schemas.avro import catalog
from schemas.fastcodec import compile_reader, compile_writer
from schemas.serde import _Plan

LATEST = [catalog().latest(m.__name__) for m in TOP_RECORDS]


def _fastavro_bytes(parsed, datum) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def _fast_bytes(raw, datum) -> bytes:
    out = bytearray()
    compile_writer(raw)(out, datum)
    return bytes(out)


@pytest.mark.parametrize("record", ex.all_examples(seed=9), ids=lambda r: type(r).__name__)
def test_same_bytes_as_fastavro_on_examples(record):
    info = catalog().latest(type(record).__name__)
    datum = _Plan(type(record)).to_avro(record)
    expected = _fastavro_bytes(info.parsed, datum)
    assert _fast_bytes(info.raw, datum) == expected
    decoded, end = compile_reader(info.raw)(expected, 0)
    assert end == len(expected)
    assert decoded == schemaless_reader(io.BytesIO(expected), info.parsed)


@pytest.mark.parametrize("info", LATEST, ids=lambda i: i.name)
def test_same_bytes_as_fastavro_on_random_data(info):
    read = compile_reader(info.raw)
    for datum in generate_many(info.parsed, 30):
        expected = _fastavro_bytes(info.parsed, datum)
        assert _fast_bytes(info.raw, datum) == expected
        decoded, end = read(expected, 0)
        assert end == len(expected) and decoded == schemaless_reader(io.BytesIO(expected), info.parsed)


@settings(max_examples=150, deadline=None)
@given(
    ints=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=300),
    longs=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=300),
    floats=st.lists(st.floats(width=32, allow_nan=False), max_size=300),
)
def test_bulk_array_paths(ints, longs, floats):
    raw = {
        "type": "record", "name": "A",
        "fields": [
            {"name": "i", "type": {"type": "array", "items": "int"}},
            {"name": "l", "type": {"type": "array", "items": "long"}},
            {"name": "f", "type": {"type": "array", "items": "float"}},
            {"name": "d", "type": {"type": "array", "items": "double"}},
        ],
    }  # fmt: skip
    datum = {"i": ints, "l": longs, "f": floats, "d": floats}
    expected = _fastavro_bytes(parse_schema(raw, named_schemas={}), datum)
    assert _fast_bytes(raw, datum) == expected
    assert compile_reader(raw)(expected, 0) == (datum, len(expected))


def test_reads_negative_block_counts_and_several_blocks():
    """Writers may split arrays into blocks and give a negative count followed by the block's byte size."""
    raw = {"type": "array", "items": "int"}
    values = list(range(-20, 20))
    body = bytearray()
    for block in (values[:17], values[17:]):
        encoded = bytearray()
        for v in block:
            compile_writer("int")(encoded, v)
        compile_writer("long")(body, -len(block))
        compile_writer("long")(body, len(encoded))
        body += encoded
    body.append(0)
    assert compile_reader(raw)(bytes(body), 0) == (values, len(body))
    assert schemaless_reader(io.BytesIO(bytes(body)), parse_schema(raw)) == values


@pytest.mark.parametrize(
    ("schema", "data", "error"),
    [
        ({"type": "array", "items": "int"}, b"\x40" + b"\x80" * 40, EOFError),  # 32 items, no terminator
        ({"type": "array", "items": "int"}, b"\x40" + b"\xff" * 6 * 32 + b"\x00", ValueError),  # 6-byte ints
        ({"type": "array", "items": "float"}, b"\x40" + b"\x00" * 8, EOFError),
        ("string", b"\x08ab", EOFError),
        ("string", b"\x04\xff\xfe", UnicodeDecodeError),
        ("boolean", b"\x02", ValueError),
        (["null", "string"], b"\x06", ValueError),
        ("long", b"\xff" * 11, ValueError),
    ],
)
def test_bad_bytes_raise(schema, data, error):
    with pytest.raises(error):
        compile_reader(schema)(data, 0)
