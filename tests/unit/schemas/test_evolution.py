"""Schema evolution: history kept, every version BACKWARD compatible, old bytes read by the new reader."""

from __future__ import annotations

import copy
import io
import json

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from schemas import LLMRequest
from schemas import examples as ex
from schemas.avro import SchemaInfo, backward_compatibility_errors, catalog, crc64_avro
from schemas.serde import Serde

PAIRS = [(h[i], h[i + 1]) for h in catalog().history.values() for i in range(len(h) - 1)]


def _info(raw: dict, version: int = 9) -> SchemaInfo:
    from fastavro.schema import to_parsing_canonical_form

    parsed = parse_schema(raw, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    return SchemaInfo(raw["name"], version, raw, parsed, canonical, crc64_avro(canonical.encode()), None)


def _v1_llm_request_bytes(record: LLMRequest) -> tuple[SchemaInfo, bytes]:
    v1 = catalog().history["LLMRequest"][0]
    fields = record.model_dump(exclude={"ttft_ms"}) | {"schema_version": 1}
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, fields)
    return v1, buf.getvalue()


def test_history_is_kept_and_one_record_evolved():
    assert [s.version for s in catalog().history["LLMRequest"]] == [1, 2]
    assert PAIRS, "at least one record must have a v2 so the old-version read test is real"


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=lambda s: f"{s.name}v{s.version}")
def test_every_version_is_backward_compatible(old, new):
    assert backward_compatibility_errors(new, old) == []
    # and by data: random records written with the old schema resolve into the new one
    for datum in generate_many(old.parsed, 20):
        buf = io.BytesIO()
        schemaless_writer(buf, old.parsed, datum)
        data = buf.getvalue()
        as_written = schemaless_reader(io.BytesIO(data), old.parsed)
        read = schemaless_reader(io.BytesIO(data), old.parsed, new.parsed)
        assert {k: v for k, v in read.items() if k in as_written} == as_written
        for field in new.raw["fields"]:
            if field["name"] not in as_written:
                assert read[field["name"]] == field["default"]


def test_new_reader_decodes_old_version_bytes(soe_serde):
    record = ex.llm_request(seed=11, response_tokens=4096)
    v1, body = _v1_llm_request_bytes(record)
    decoded = soe_serde.decode(v1.soe_header + body, LLMRequest)
    assert decoded.schema_version == 1 and decoded.ttft_ms is None
    assert decoded == record.model_copy(update={"schema_version": 1, "ttft_ms": None})
    # what it re-encodes is the latest version
    assert soe_serde.encode(decoded)[2:10] == catalog().latest("LLMRequest").soe_header[2:10]


def test_registry_resolves_old_and_newer_writers(registry, registry_serde):
    from confluent_kafka.schema_registry import Schema

    record = ex.llm_request(seed=12, response_tokens=64)
    v1, body = _v1_llm_request_bytes(record)
    v1_id = registry.register_schema("io.streamrl.LLMRequest", Schema(json.dumps(v1.raw), "AVRO"))
    old = registry_serde.decode(b"\x00" + v1_id.to_bytes(4, "big") + body, LLMRequest)
    assert old.ttft_ms is None and old.response_token_ids == record.response_token_ids
    # a newer producer's v3 (unknown to this process) added a field: the v2 reader skips it
    v3 = copy.deepcopy(catalog().latest("LLMRequest").raw)
    v3["fields"].append({"name": "cached_tokens", "type": "int", "default": 0, "doc": "test"})
    v3_id = registry.register_schema("io.streamrl.LLMRequest", Schema(json.dumps(v3), "AVRO"))
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(v3, named_schemas={}), record.model_dump() | {"cached_tokens": 7})
    newer = Serde(registry_client=registry).decode(
        b"\x00" + v3_id.to_bytes(4, "big") + buf.getvalue(), LLMRequest
    )
    assert newer == record


def test_checker_rejects_breaking_changes():
    base = {
        "type": "record", "name": "R", "namespace": "io.streamrl",
        "fields": [
            {"name": "a", "type": "int"},
            {"name": "s", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
            {"name": "o", "type": ["null", "string"], "default": None},
        ],
    }  # fmt: skip
    old = _info(base, 1)

    def changed(edit) -> list[str]:
        raw = copy.deepcopy(base)
        edit(raw)
        return backward_compatibility_errors(_info(raw, 2), old)

    assert changed(lambda r: r["fields"].append({"name": "n", "type": "long"})) == [
        "R.n: added without a default"
    ]
    assert changed(lambda r: r["fields"].append({"name": "n", "type": "long", "default": 0})) == []
    assert changed(lambda r: r["fields"][0].update(type="long")) == []  # int -> long promotes
    assert changed(lambda r: r["fields"][0].update(type="string")) == ["R.a: type changed from int to string"]
    assert (
        "removed without an enum default"
        in changed(lambda r: r["fields"][1]["type"].update(symbols=["x"]))[0]
    )
    assert changed(lambda r: r["fields"][1]["type"].update(symbols=["x", "y", "z"])) == []
    assert changed(lambda r: r["fields"].pop(2)) == []  # the reader skips a removed field
    assert "matches no branch" in changed(lambda r: r["fields"][2].update(type=["null", "int"]))[0]
    assert "renamed" in changed(lambda r: r.update(name="Q"))[0]
