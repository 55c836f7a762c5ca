"""Schema evolution: history kept, every version BACKWARD compatible, old bytes read by the new reader.

Compatibility is judged by Apache Avro's own checker (``avro.compatibility``, the ``avro`` package in the
dev extra): BACKWARD = a reader with the new schema reads data written with the old one.
"""

from __future__ import annotations

import copy
import io
import json

import pytest
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)
from avro.schema import parse as avro_parse
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from streamrl.schemas import (
    CheckpointEvent,
    FailureKind,
    LLMRequest,
    RolloutStatus,
    TrainingBatch,
    Trajectory,
)
from streamrl.schemas.avro import SchemaInfo, catalog
from streamrl.schemas.serde import Serde
from tests.support import records as ex

PAIRS = [(h[i], h[i + 1]) for h in catalog().history.values() for i in range(len(h) - 1)]
Incompat = SchemaIncompatibilityType


def incompatibilities(reader: dict, writer: dict) -> set[SchemaIncompatibilityType]:
    """Apache Avro's verdict on reading data written with `writer` using `reader` (empty set = compatible).

    BACKWARD for a new version is ``incompatibilities(new, old)``; FORWARD is ``incompatibilities(old, new)``.
    """
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro_parse(json.dumps(reader)), writer=avro_parse(json.dumps(writer))
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return set()
    assert result.incompatibilities, f"incompatible without a reason: {result.messages}"
    return set(result.incompatibilities)


def _v1_llm_request_bytes(record: LLMRequest) -> tuple[SchemaInfo, bytes]:
    v1 = catalog().history["LLMRequest"][0]
    fields = record.model_dump(exclude={"ttft_ms", "temperature"}) | {"schema_version": 1}
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, fields)
    return v1, buf.getvalue()


def test_history_is_kept_and_one_record_evolved():
    assert [s.version for s in catalog().history["LLMRequest"]] == [1, 2, 3]
    assert PAIRS, "at least one record must have a v2 so the old-version read test is real"


def _as_old(read, written):
    """``read`` without the fields the old writer did not have, at any depth (nested records too)."""
    if isinstance(written, dict) and isinstance(read, dict):
        return {k: _as_old(read[k], v) for k, v in written.items() if k in read}
    if isinstance(written, list) and isinstance(read, list):
        return [_as_old(r, w) for r, w in zip(read, written, strict=True)]
    return read


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=lambda s: f"{s.name}v{s.version}")
def test_every_version_is_backward_compatible(old, new):
    assert incompatibilities(new.raw, old.raw) == set(), (
        f"{new.path} cannot read data written with {old.path}"
    )
    # and by data: random records written with the old schema resolve into the new one
    for datum in generate_many(old.parsed, 20):
        buf = io.BytesIO()
        schemaless_writer(buf, old.parsed, datum)
        data = buf.getvalue()
        as_written = schemaless_reader(io.BytesIO(data), old.parsed)
        read = schemaless_reader(io.BytesIO(data), old.parsed, new.parsed)
        assert _as_old(read, as_written) == as_written
        for field in new.raw["fields"]:
            if field["name"] not in as_written:
                assert read[field["name"]] == field["default"]


def test_new_reader_decodes_old_version_bytes(soe_serde):
    record = ex.llm_request(seed=11, response_tokens=4096)
    v1, body = _v1_llm_request_bytes(record)
    decoded = soe_serde.decode(v1.soe_header + body, LLMRequest)
    assert decoded.schema_version == 1 and decoded.ttft_ms is None and decoded.temperature is None
    assert decoded == record.model_copy(update={"schema_version": 1, "ttft_ms": None, "temperature": None})
    # what it re-encodes is the latest version
    assert soe_serde.encode(decoded)[2:10] == catalog().latest("LLMRequest").soe_header[2:10]


def test_checkpoint_event_v1_bytes_read_as_v2_without_a_consumption_count(soe_serde):
    record = ex.checkpoint_event(seed=3)
    v1 = catalog().history["CheckpointEvent"][0]
    buf = io.BytesIO()
    schemaless_writer(
        buf, v1.parsed, record.model_dump(exclude={"consumed_rollouts"}) | {"schema_version": 1}
    )
    decoded = soe_serde.decode(v1.soe_header + buf.getvalue(), CheckpointEvent)
    assert decoded.schema_version == 1 and decoded.consumed_rollouts is None
    assert decoded == record.model_copy(update={"schema_version": 1, "consumed_rollouts": None})


def test_trajectory_v1_bytes_read_as_v2_without_a_failure_kind(soe_serde):
    record = ex.trajectory(seed=4).model_copy(
        update={"status": RolloutStatus.failed, "reward": None, "error": "ValueError: boom"}
    )
    v1 = catalog().history["Trajectory"][0]
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, record.model_dump(exclude={"failure_kind"}) | {"schema_version": 1})
    decoded = soe_serde.decode(v1.soe_header + buf.getvalue(), Trajectory)
    assert decoded.schema_version == 1 and decoded.failure_kind is None
    assert decoded == record.model_copy(update={"schema_version": 1})
    assert decoded.failure() is FailureKind.agent  # a v1 failure is the agent's: today's path
    v2 = record.model_copy(update={"failure_kind": FailureKind.infrastructure.value})
    assert soe_serde.decode(soe_serde.encode(v2), Trajectory).failure() is FailureKind.infrastructure


def test_training_batch_v1_rows_read_as_v2_at_temperature_one(soe_serde):
    record = ex.training_batch(seed=5)
    v1 = catalog().history["TrainingBatch"][0]
    dumped = record.model_dump() | {"schema_version": 1}
    dumped["rows"] = [{k: v for k, v in r.items() if k != "temperature"} for r in dumped["rows"]]
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, dumped)
    decoded = soe_serde.decode(v1.soe_header + buf.getvalue(), TrainingBatch)
    assert decoded.schema_version == 1 and {r.temperature for r in decoded.rows} == {1.0}
    assert decoded.rows == [r.model_copy(update={"temperature": 1.0}) for r in record.rows]


def test_registry_resolves_old_and_newer_writers(registry, registry_serde):
    from confluent_kafka.schema_registry import Schema

    record = ex.llm_request(seed=12, response_tokens=64)
    v1, body = _v1_llm_request_bytes(record)
    v1_id = registry.register_schema("io.streamrl.LLMRequest", Schema(json.dumps(v1.raw), "AVRO"))
    old = registry_serde.decode(b"\x00" + v1_id.to_bytes(4, "big") + body, LLMRequest)
    assert old.ttft_ms is None and old.response_token_ids == record.response_token_ids
    # a newer producer's next version (unknown to this process) added a field: this reader skips it
    v3 = copy.deepcopy(catalog().latest("LLMRequest").raw)
    v3["fields"].append({"name": "cached_tokens", "type": "int", "default": 0, "doc": "test"})
    v3_id = registry.register_schema("io.streamrl.LLMRequest", Schema(json.dumps(v3), "AVRO"))
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(v3, named_schemas={}), record.model_dump() | {"cached_tokens": 7})
    newer = Serde(registry_client=registry).decode(
        b"\x00" + v3_id.to_bytes(4, "big") + buf.getvalue(), LLMRequest
    )
    assert newer == record


def test_real_history_check_would_catch_a_breaking_edit():
    """The pair check above is not vacuous: v2 of LLMRequest without the default of its new field fails."""
    v1, v2 = catalog().history["LLMRequest"][:2]
    added = {f["name"] for f in v2.raw["fields"]} - {f["name"] for f in v1.raw["fields"]}
    assert added, "v2 must add a field"
    broken = copy.deepcopy(v2.raw)
    for f in broken["fields"]:
        if f["name"] in added:
            del f["default"]
    assert incompatibilities(broken, v1.raw) == {Incompat.reader_field_missing_default_value}
    retyped = copy.deepcopy(v2.raw)
    next(f for f in retyped["fields"] if f["name"] == "request_id")["type"] = "long"
    assert incompatibilities(retyped, v1.raw) == {Incompat.type_mismatch}


BASE = {
    "type": "record", "name": "R", "namespace": "io.streamrl",
    "fields": [
        {"name": "a", "type": "int"},
        {"name": "s", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
        {"name": "o", "type": ["null", "string"], "default": None},
    ],
}  # fmt: skip


def _edited(edit) -> dict:
    raw = copy.deepcopy(BASE)
    edit(raw)
    parse_schema(raw, named_schemas={})  # every edit is itself a valid schema
    return raw


@pytest.mark.parametrize(
    ("edit", "backward"),
    [
        (lambda r: r["fields"].append({"name": "n", "type": "long"}), {Incompat.reader_field_missing_default_value}),
        (lambda r: r["fields"].append({"name": "n", "type": "long", "default": 0}), set()),
        (lambda r: r["fields"][0].update(type="long"), set()),  # int -> long promotes
        (lambda r: r["fields"][0].update(type="string"), {Incompat.type_mismatch}),
        (lambda r: r["fields"][1]["type"].update(symbols=["x"]), {Incompat.missing_enum_symbols}),
        (lambda r: r["fields"][1]["type"].update(symbols=["x", "y", "z"]), set()),
        (lambda r: r["fields"].pop(0), set()),  # removed: a new reader skips it in old data
        (lambda r: r["fields"][2].update(type=["null", "int"]), {Incompat.missing_union_branch}),
        (lambda r: r.update(name="Q"), {Incompat.name_mismatch}),
    ],
    ids=[
        "add-no-default", "add-with-default", "int-to-long", "int-to-string", "enum-symbol-removed",
        "enum-symbol-added", "field-removed", "union-branch-changed", "record-renamed",
    ],
)  # fmt: skip
def test_checker_verdict_on_edits(edit, backward):
    assert incompatibilities(_edited(edit), BASE) == backward


def test_field_removed_without_default_breaks_old_readers():
    """Removing a field is BACKWARD compatible (new readers skip it) but not FORWARD: old readers have no
    default for it, so data from a new producer is unreadable by consumers not yet upgraded."""
    new = _edited(lambda r: r["fields"].pop(0))
    assert incompatibilities(new, BASE) == set()
    assert incompatibilities(BASE, new) == {Incompat.reader_field_missing_default_value}
    new_o = _edited(lambda r: r["fields"].pop(2))  # `o` had a default: old readers fill it in
    assert incompatibilities(BASE, new_o) == set()
    # long -> int narrows: new data (long) cannot be read with the old int reader
    assert incompatibilities(BASE, _edited(lambda r: r["fields"][0].update(type="long"))) == {
        Incompat.type_mismatch
    }
