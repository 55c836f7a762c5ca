"""Round trips in both wire formats, framing details, and typed errors for bad input."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from fastavro import schemaless_writer
from fastavro.schema import fingerprint as fastavro_fingerprint

from streamrl.schemas import (
    TOP_RECORDS,
    LLMRequest,
    Sample,
    SchemaError,
    StreamRLError,
    Task,
    TrainingBatch,
    Trajectory,
)
from streamrl.schemas.avro import catalog, schema_fingerprint
from streamrl.schemas.serde import Serde
from tests.support import records as ex


@pytest.mark.parametrize("record", ex.all_examples(seed=7), ids=lambda r: type(r).__name__)
def test_round_trip_every_record(serde, record):
    data = serde.encode(record)
    decoded = serde.decode(data, type(record), topic="t", partition=0, offset=1)
    assert decoded == record
    assert type(decoded) is type(record)
    # nested models and enums come back as real objects, not dicts/strings
    assert decoded.model_dump() == record.model_dump()


def test_real_sized_payloads(serde):
    req = ex.llm_request(seed=3, prompt_tokens=512, response_tokens=4096)
    out = serde.decode(serde.encode(req), LLMRequest)
    assert len(out.response_token_ids) == len(out.response_logprobs) == 4096
    assert out.response_logprobs == req.response_logprobs  # float32 values are exact
    batch = ex.training_batch(seed=3, num_rows=64)
    back = serde.decode(serde.encode(batch), TrainingBatch)
    assert back.num_rows == 64 and back.rows[63] == batch.rows[63]
    assert back.rows[0].response_mask.count(0) == batch.rows[0].response_mask.count(0) > 0


def test_single_object_framing_matches_spec(soe_serde):
    req = ex.llm_request(response_tokens=8)
    data = soe_serde.encode(req)
    latest = catalog().latest("LLMRequest")
    assert data[:2] == b"\xc3\x01"
    assert int.from_bytes(data[2:10], "little") == latest.fingerprint
    # fastavro's hex fingerprint is the little-endian bytes; the spec's test vector for "null":
    assert data[2:10] == bytes.fromhex(fastavro_fingerprint(latest.canonical, "CRC-64-AVRO"))
    assert schema_fingerprint('"null"') == 7195948357588979594  # Avro spec test vector


def test_confluent_framing_and_registry(registry, registry_serde):
    data = registry_serde.encode(ex.task())
    schema_id = int.from_bytes(data[1:5], "big")
    assert data[0] == 0 and schema_id >= 1
    assert registry.get_latest_version("io.streamrl.Task").schema_id == schema_id
    assert registry_serde.encode(ex.task(1))[:5] == data[:5]  # id cached, one registration
    other = registry_serde.encode(ex.sample())
    assert other[1:5] != data[1:5]
    # a second process (fresh Serde, same registry) resolves the id through the registry
    assert Serde(registry_client=registry).decode(data, Task) == ex.task()
    assert registry_serde.wire_format == "confluent" and Serde().wire_format == "single-object"


def test_registry_serde_reads_single_object_and_soe_rejects_confluent(soe_serde, registry_serde):
    soe = soe_serde.encode(ex.sample())
    assert registry_serde.decode(soe, Sample) == ex.sample()
    with pytest.raises(SchemaError, match="no schema registry is configured"):
        soe_serde.decode(registry_serde.encode(ex.sample()), Sample, topic="samples", partition=2, offset=9)


def test_mock_url_builds_in_memory_registry():
    serde = Serde(registry_url="mock://private")
    assert serde.decode(serde.encode(ex.trajectory()), Trajectory) == ex.trajectory()


def test_error_carries_location(soe_serde):
    with pytest.raises(SchemaError) as info:
        soe_serde.decode(b"\x01\x02\x03", Sample, topic="streamrl.samples", partition=4, offset=77)
    err = info.value
    assert (err.topic, err.partition, err.offset) == ("streamrl.samples", 4, 77)
    assert "unknown framing" in err.reason and str(err).startswith("streamrl.samples[4]@77: Sample:")
    assert isinstance(err, StreamRLError)
    import pickle

    assert str(pickle.loads(pickle.dumps(err))) == str(err)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"", "empty value"),
        (lambda b: b[:6], "truncated single-object header"),
        (lambda b: b[:-5], "truncated body"),
        (lambda b: b + b"\x00", "1 trailing bytes"),
        (lambda b: b"\xc3\x01" + b"\xff" * 8 + b[10:], "unknown schema fingerprint 0xffffffffffffffff"),
        (lambda b: b"{" + b[1:], "unknown framing: first bytes 7b01"),
    ],
)
def test_bad_bytes(soe_serde, mutate, reason):
    with pytest.raises(SchemaError, match=reason):
        soe_serde.decode(mutate(soe_serde.encode(ex.llm_request(response_tokens=16))), LLMRequest)
    with pytest.raises(SchemaError, match="empty value"):
        soe_serde.decode(None, LLMRequest)


def test_wrong_record_type_and_unknown_schema_id(soe_serde, registry_serde):
    with pytest.raises(SchemaError, match=r"Sample: bytes hold a Task record \(schema v1\)"):
        soe_serde.decode(soe_serde.encode(ex.task()), Sample)
    with pytest.raises(SchemaError, match="unknown schema id 4242"):
        registry_serde.decode(b"\x00" + (4242).to_bytes(4, "big") + b"\x02", Task)
    with pytest.raises(TypeError, match="not one of"):
        soe_serde.decode(b"x", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot encode Reward"):
        soe_serde.encode(ex.trajectory().rewards[0])  # type: ignore[arg-type]


def test_decode_checks_invariants_avro_cannot_express(soe_serde):
    """Bytes well-formed for Avro but breaking a model rule (unequal lengths) are rejected on decode."""
    latest = catalog().latest("LLMRequest")
    fields = ex.llm_request(response_tokens=4).model_dump()
    fields["response_logprobs"] = fields["response_logprobs"][:3]
    buf = io.BytesIO()
    buf.write(latest.soe_header)
    schemaless_writer(buf, latest.parsed, fields)
    for serde in (soe_serde, Serde(full_validation=True)):
        with pytest.raises(
            SchemaError, match=r"len\(response_logprobs\)=3 != len\(response_token_ids\)=4"
        ) as info:
            serde.decode(buf.getvalue(), LLMRequest, topic="requests", partition=1, offset=2)
        assert info.value.offset == 2


def test_encode_checks_invariants_and_avro_types(soe_serde):
    broken = LLMRequest.model_construct(
        **(ex.llm_request(response_tokens=4).__dict__ | {"response_logprobs": []})
    )
    with pytest.raises(SchemaError, match=r"cannot encode LLMRequest: .*len\(response_logprobs\)=0"):
        soe_serde.encode(broken, topic="requests")
    mistyped = ex.task()
    mistyped.task_id = 12345  # type: ignore[assignment]  # no validate_assignment: fastavro catches it
    with pytest.raises(SchemaError, match="cannot encode Task"):
        soe_serde.encode(mistyped)
    nested = ex.trajectory()
    nested.rewards[0].value = float("nan")
    with pytest.raises(SchemaError, match=r"Reward\.value must be finite"):
        soe_serde.encode(nested)


def test_decode_message_uses_message_location(soe_serde):
    msg = SimpleNamespace(
        value=lambda: b"junk", topic=lambda: "streamrl.trajectories", partition=lambda: 5, offset=lambda: 11
    )
    with pytest.raises(SchemaError) as info:
        soe_serde.decode_message(msg, Trajectory)
    assert str(info.value).startswith("streamrl.trajectories[5]@11:")
    good = SimpleNamespace(
        value=lambda: soe_serde.encode(ex.trajectory()),
        topic=lambda: "t",
        partition=lambda: 0,
        offset=lambda: 0,
    )
    assert soe_serde.decode_message(good, Trajectory) == ex.trajectory()


def test_all_top_records_have_examples():
    assert {type(r) for r in ex.all_examples()} == set(TOP_RECORDS)


def test_list_mutated_after_validation_is_caught_on_decode(soe_serde):
    """encode skips the O(n) scans (done at construction); decode runs them, so the consumer rejects it."""
    req = ex.llm_request(response_tokens=32)
    req.response_logprobs[5] = float("nan")
    data = soe_serde.encode(req)
    with pytest.raises(SchemaError, match=r"response_logprobs\[5\] must be finite"):
        soe_serde.decode(data, LLMRequest)
