"""Resources, pinned samples and the optimizer's records: invariants, versions, old bytes, scoring rule."""

from __future__ import annotations

import io

import pytest
from fastavro import schemaless_writer
from pydantic import ValidationError

from streamrl.schemas import (
    OptimizerEvent,
    OptimizerState,
    Resource,
    Sample,
    SchemaError,
    resource_version,
)
from streamrl.schemas.avro import catalog
from streamrl.schemas.scoring import add_outcome, figures
from streamrl.schemas.serde import Serde
from tests.support import records as ex


def test_a_resource_version_is_its_content() -> None:
    a = Resource.create("system_prompt", "Answer {question}.")
    b = Resource.create("system_prompt", "Answer {question}.", metadata={"run_id": "x"})
    c = Resource.create("system_prompt", "Answer {question}!")
    assert a.version == b.version == resource_version("prompt_template", "Answer {question}.")
    assert a.version != c.version and len(a.version) == 16
    assert Resource.create("system_prompt", "Answer {question}.", kind="text").version != a.version
    assert a.key() == f"system_prompt/{a.version}"


@pytest.mark.parametrize("name", ["", "a/b", "x" * 129, "bad name", "ünï"])
def test_a_resource_name_is_a_plain_word(name: str) -> None:
    with pytest.raises(ValidationError, match="resource name"):
        Resource.create(name, "text")


def test_altered_content_or_version_is_refused_on_decode() -> None:
    serde = Serde()
    good = ex.resource(1)
    forged = good.model_construct(**{**good.model_dump(), "content": "something else"})
    with pytest.raises(SchemaError, match="digest does not match"):
        serde.decode(serde.encode(forged), Resource, topic="streamrl.resources", partition=0, offset=7)
    with pytest.raises(ValidationError, match="head of its digest"):
        Resource(**{**good.model_dump(), "version": "0" * 16})
    with pytest.raises(ValidationError, match="parent"):
        Resource.create("p", "t", parents=["v1"])


def test_a_sample_pins_well_formed_resource_versions() -> None:
    pinned = ex.pinned_sample(2)
    assert Serde().decode(Serde().encode(pinned), Sample) == pinned
    with pytest.raises(ValidationError, match="version 'latest' must be 16 lowercase hex"):
        Sample(**{**pinned.model_dump(), "resources": {"system_prompt": "latest"}})
    with pytest.raises(ValidationError, match="resource name"):
        Sample(**{**pinned.model_dump(), "resources": {"a/b": "0123456789abcdef"}})


def test_sample_v1_bytes_read_as_v2_without_pins() -> None:
    record = ex.sample(seed=3)
    v1 = catalog().history["Sample"][0]
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, record.model_dump(exclude={"resources"}) | {"schema_version": 1})
    decoded = Serde().decode(v1.soe_header + buf.getvalue(), Sample)
    assert decoded.schema_version == 1 and decoded.resources == {}
    assert decoded == record.model_copy(update={"schema_version": 1})


def test_a_score_event_reports_consistent_counts() -> None:
    good = ex.optimizer_event()
    assert Serde().decode(Serde().encode(good), OptimizerEvent) == good
    with pytest.raises(ValidationError, match="count=3 != succeeded"):
        OptimizerEvent(**{**good.model_dump(), "failed": 2})
    with pytest.raises(ValidationError, match="2 task rewards for count=3"):
        OptimizerEvent(**{**good.model_dump(), "task_rewards": {"a": 1.0, "b": 0.0}})
    with pytest.raises(ValidationError, match="needs score"):
        OptimizerEvent(**{**good.model_dump(), "score": None})
    # other kinds carry no score
    OptimizerEvent(run_id="r", seq=0, kind="started", algorithm="apo", round=0)


def test_optimizer_state_is_a_json_object() -> None:
    with pytest.raises(ValidationError, match="JSON object"):
        OptimizerState(run_id="r", algorithm="apo", seq=0, state="[1, 2]")
    ok = ex.optimizer_state()
    assert Serde().decode(Serde().encode(ok), OptimizerState) == ok


def test_the_scoring_rule_counts_failures_and_unfinished_rollouts_as_zero() -> None:
    entry = None
    for rid, status, reward in [
        ("e/t0", "succeeded", 1.0),
        ("e/t1", "failed", None),
        ("e/t2", "timeout", None),  # how the optimizer records a rollout unfinished at its deadline
        ("e/t3", "failed", None),
        ("e/t3", "succeeded", 0.5),  # a later success replaces the 0
        ("e/t0", "failed", None),  # a later failure changes nothing
    ]:
        entry = add_outcome(entry, rid, status, reward, 1.0) or entry
    f = figures(entry)
    assert (f.count, f.succeeded, f.failed, f.timed_out) == (4, 2, 1, 1)
    assert f.mean == pytest.approx(1.5 / 4) and f.min == 0.0 and f.max == 1.0
    with pytest.raises(ValueError, match="no outcome"):
        figures({"outcomes": {}})


def test_an_infrastructure_failure_scores_nothing() -> None:
    from streamrl.schemas import FailureKind, RolloutStatus
    from streamrl.schemas.scoring import counts

    failed = ex.trajectory(1).model_copy(update={"status": RolloutStatus.failed, "reward": None})
    assert counts(failed) and counts(ex.trajectory(1))
    assert not counts(failed.model_copy(update={"failure_kind": FailureKind.infrastructure.value}))
    assert counts(failed.model_copy(update={"failure_kind": FailureKind.request.value}))
