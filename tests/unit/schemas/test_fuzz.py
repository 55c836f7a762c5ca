"""Fuzzing the decoder: random, truncated and corrupted bytes raise SchemaError and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrl.schemas import TOP_RECORDS, LLMRequest, SchemaError, TrainingBatch
from streamrl.schemas.avro import catalog
from streamrl.schemas.serde import Serde
from tests.support import records as ex

SERDE = Serde()  # hypothesis + function-scoped fixtures don't mix; the serde is stateless for SOE
REGISTRY_SERDE = Serde(registry_url="mock://fuzz")
REGISTERED = [REGISTRY_SERDE.encode(r)[:5] for r in (ex.task(), ex.trajectory())]  # ids 1, 2 known
KNOWN_IDS = {int.from_bytes(header[1:], "big") for header in REGISTERED}
SMALL = [
    r for r in ex.all_examples(seed=5) if not isinstance(r, LLMRequest) and getattr(r, "rows", None) is None
]
ENCODED = [(type(r), SERDE.encode(r)) for r in SMALL] + [
    (LLMRequest, SERDE.encode(ex.llm_request(seed=5, prompt_tokens=16, response_tokens=32))),
    (TrainingBatch, SERDE.encode(ex.training_batch(seed=5, num_rows=2, prompt_tokens=8, response_tokens=8))),
]
HEADERS = [info.soe_header for versions in catalog().history.values() for info in versions]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_only_schema_error(data: bytes, record_type, serde: Serde = SERDE) -> SchemaError | None:
    """Decode; a failure must be a SchemaError at the given location (any other exception propagates
    and fails the test), a success a record of the asked type. Returns the error, if any."""
    try:
        record = serde.decode(data, record_type, topic="fuzz", partition=0, offset=1)
    except SchemaError as err:
        assert (err.topic, err.partition, err.offset) == ("fuzz", 0, 1) and err.reason
        assert str(err).startswith("fuzz[0]@1: "), str(err)
        return err
    assert isinstance(record, record_type)
    return None


@FUZZ
@given(data=st.binary(max_size=512), record_type=st.sampled_from(TOP_RECORDS))
def test_random_bytes(data, record_type):
    _decode_only_schema_error(data, record_type)


@FUZZ
@given(
    header=st.sampled_from(HEADERS), body=st.binary(max_size=512), record_type=st.sampled_from(TOP_RECORDS)
)
def test_random_body_after_a_valid_header(header, body, record_type):
    _decode_only_schema_error(header + body, record_type)


@FUZZ
@given(
    body=st.binary(max_size=256),
    record_type=st.sampled_from(TOP_RECORDS),
    schema_id=st.one_of(st.sampled_from(sorted(KNOWN_IDS)), st.integers(0, 2**32 - 1)),
)
def test_random_confluent_frames(body, record_type, schema_id):
    err = _decode_only_schema_error(
        b"\x00" + schema_id.to_bytes(4, "big") + body, record_type, REGISTRY_SERDE
    )
    if schema_id not in KNOWN_IDS:  # the registry has no such schema: the error names the id
        assert err is not None and f"unknown schema id {schema_id}" in err.reason, err


@pytest.mark.parametrize(("record_type", "data"), ENCODED, ids=lambda v: getattr(v, "__name__", ""))
def test_every_truncation(record_type, data):
    for cut in range(len(data)):
        with pytest.raises(SchemaError):
            SERDE.decode(data[:cut], record_type)


@FUZZ
@given(case=st.sampled_from(ENCODED), position=st.integers(0, 10**6), xor=st.integers(1, 255))
def test_corrupted_byte(case, position, xor):
    record_type, data = case
    corrupted = bytearray(data)
    corrupted[position % len(data)] ^= xor
    _decode_only_schema_error(bytes(corrupted), record_type)


@FUZZ
@given(case=st.sampled_from(ENCODED), extra=st.binary(min_size=1, max_size=64))
def test_trailing_garbage(case, extra):
    record_type, data = case
    with pytest.raises(SchemaError):
        SERDE.decode(data + extra, record_type)
