"""The claim-check file: what a writer puts there is what a reader gets, and every mismatch is caught."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from streamrl.schemas import StreamRLError, TrainingBatch, TrainingRow, digest_file
from streamrl.schemas.claim_check import ClaimCheckError, read_claim_check, uri_path, write_claim_check


def _inline(batch_id: str = "b-1", n: int = 3) -> TrainingBatch:
    rows = [
        TrainingRow(
            rollout_id=f"t/0/{i}",
            group_id="t/0",
            agent_name=None,
            prompt_ids=[1, 2],
            response_ids=[3, 4],
            response_mask=[1, 1],
            behaviour_logprobs=[-0.5, -0.25],
            token_rewards=[0.0, float(i)],
            reward=float(i),
            policy_version=2,
            weight=1.0,
        )
        for i in range(n)
    ]
    return TrainingBatch(
        batch_id=batch_id,
        policy_name="policy",
        num_groups=1,
        rows=rows,
        min_policy_version=2,
        max_policy_version=2,
    )


def _pointer(inline: TrainingBatch, cc) -> TrainingBatch:
    return inline.model_copy(update={"rows": None, "claim_check": cc})


def test_written_file_reads_back_with_every_field(tmp_path: Path, serde) -> None:
    inline = _inline()
    data = serde.encode(inline)
    cc = write_claim_check(inline, data, str(tmp_path / "blobs"))
    path = tmp_path / "blobs" / "b-1.avro"
    assert cc.uri == path.resolve().as_uri() and cc.size_bytes == len(data) and cc.num_rows == 3
    assert cc.digest == digest_file(path)  # the digest is the schemas digest of the file's bytes
    assert read_claim_check(_pointer(inline, cc), serde) == inline.rows
    # rewriting the same batch gives the same bytes and pointer (a re-emitted batch)
    assert write_claim_check(inline, data, (tmp_path / "blobs").as_uri()) == cc
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size_bytes": 3}, r"size \d+ B != declared 3 B"),
        ({"digest": "sha256:" + "0" * 64}, r"digest sha256:[0-9a-f]{64} != declared sha256:0{64}"),
        ({"num_rows": 5}, "3 rows != declared num_rows 5"),
        ({"uri": "s3://bucket/b-1.avro"}, "URI scheme 's3' unsupported"),
        ({"uri": "file://otherhost/b-1.avro"}, "names host 'otherhost'"),
    ],
)
def test_a_pointer_that_does_not_match_the_file_is_refused(tmp_path: Path, change, message) -> None:
    from streamrl.schemas.serde import Serde

    serde = Serde()
    inline = _inline()
    cc = write_claim_check(inline, serde.encode(inline), str(tmp_path))
    with pytest.raises(ClaimCheckError, match=message) as err:
        read_claim_check(_pointer(inline, cc.model_copy(update=change)), serde)
    assert isinstance(err.value, StreamRLError)
    assert str(err.value).startswith("claim-check ")


def test_unreadable_undecodable_or_foreign_payloads_are_refused(tmp_path: Path) -> None:
    from streamrl.schemas.serde import Serde

    serde = Serde()
    inline = _inline()
    cc = write_claim_check(inline, serde.encode(inline), str(tmp_path))
    with pytest.raises(ClaimCheckError, match="cannot read"):
        read_claim_check(_pointer(inline, cc.model_copy(update={"uri": str(tmp_path / "nope.avro")})), serde)
    garbage = write_claim_check(inline, b"garbage", str(tmp_path))
    with pytest.raises(ClaimCheckError, match="undecodable payload") as err:
        read_claim_check(_pointer(inline, garbage), serde)
    assert err.value.__cause__ is not None  # the SchemaError is kept as the cause
    other = _inline("b-2")
    cc2 = write_claim_check(other, serde.encode(other), str(tmp_path))
    with pytest.raises(ClaimCheckError, match="payload is batch 'b-2', not 'b-1'"):
        read_claim_check(_pointer(inline, cc2), serde)
    with pytest.raises(ClaimCheckError, match="has no claim_check"):
        read_claim_check(inline, serde)
    with pytest.raises(ClaimCheckError, match="no inline rows"):
        write_claim_check(_pointer(inline, cc), b"", str(tmp_path))


def test_uri_forms() -> None:
    assert uri_path("runs/blobs") == Path("runs/blobs")
    assert uri_path("/tmp/a b/x.avro") == Path("/tmp/a b/x.avro")
    assert uri_path("file:///tmp/a%20b/x.avro") == Path("/tmp/a b/x.avro")
    assert uri_path("file://localhost/tmp/x.avro") == Path("/tmp/x.avro")
    with pytest.raises(ClaimCheckError, match="unsupported"):
        uri_path("https://example.com/x.avro")


def test_the_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ClaimCheckError("file:///x", "size 1 B != declared 2 B")))
    assert (err.uri, err.reason, str(err)) == (
        "file:///x",
        "size 1 B != declared 2 B",
        "claim-check file:///x: size 1 B != declared 2 B",
    )
