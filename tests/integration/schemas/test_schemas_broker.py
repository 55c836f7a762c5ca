"""Records through a real Apache Kafka broker: every type on its topic, both wire formats, a poisoned
record decoded into a SchemaError that names the real topic/partition/offset and lands on `dlq`."""

from __future__ import annotations

import pytest

from streamrl.schemas import TOPIC_RECORDS, DeadLetter, Sample, SchemaError
from streamrl.schemas.serde import Serde
from tests.support import records as ex
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


def _key(record) -> str:
    keys = (
        "rollout_id",
        "batch_id",
        "task_id",
        "policy_name",
        "original_topic",
        "run_id",
        "name",
        "sampler_id",
    )
    for name in keys:
        if hasattr(record, name):
            return getattr(record, name)
    raise AssertionError(type(record))


@pytest.mark.parametrize("wire_format", ["single-object", "confluent"])
def test_every_record_type_through_kafka(settings, wire_format):
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from streamrl.kafka import EventProducer

    if wire_format == "confluent":
        registry = SchemaRegistryClient.new_client({"url": "mock://broker-test"})
        writer, reader = Serde(registry_client=registry), Serde(registry_client=registry)
    else:
        writer, reader = Serde(), Serde()
    examples = ex.all_examples(seed=21)
    by_topic: dict[str, list] = {}
    for record in examples:
        base = next(t for t, cls in TOPIC_RECORDS.items() if cls is type(record))
        by_topic.setdefault(base, []).append(record)
    with EventProducer(settings) as producer:
        for base, records in by_topic.items():
            topic = settings.topics.name(base)
            for record in records:
                producer.produce(topic, writer.encode(record, topic=topic), key=_key(record))
        producer.flush(30)
    for base, records in by_topic.items():
        messages = read_topic(settings, base, n=len(records))
        assert len(messages) == len(records), base
        decoded = [reader.decode_message(m, type(records[0])) for m in messages]
        assert sorted(decoded, key=repr) == sorted(records, key=repr)  # repr: a snapshot's state is bytes


def test_poisoned_record_names_its_location_and_goes_to_dlq(settings):
    from streamrl.dlq import DeadLetterSink
    from streamrl.kafka import EventProducer

    serde = Serde()
    topic = settings.topics.name("samples")
    good = ex.sample(seed=3)
    with EventProducer(settings) as producer:
        producer.produce(topic, serde.encode(good), key=good.rollout_id, partition=0)
        producer.produce(topic, serde.encode(ex.task(seed=3)), key=b"wrong-type", partition=0)
        producer.produce(topic, serde.encode(good)[:-7], key=b"truncated", partition=0)
        producer.flush(30)
        messages = read_topic(settings, "samples", n=3)
        assert len(messages) == 3
        assert serde.decode_message(messages[0], Sample) == good
        sink = DeadLetterSink(settings, producer, stage="schemas-test", serde=serde)
        for msg, reason in zip(messages[1:], ["bytes hold a Task record", "truncated body"], strict=True):
            with pytest.raises(SchemaError, match=reason) as info:
                serde.decode_message(msg, Sample)
            err = info.value
            assert (err.topic, err.partition, err.offset) == (topic, 0, msg.offset())
            assert str(err).startswith(f"{topic}[0]@{msg.offset()}: Sample:")
            sink.send(msg, err.reason, err)
        producer.flush(30)
    letters = read_topic(settings, "dlq", DeadLetter, n=2, serde=serde)
    assert len(letters) == 2
    assert sorted(d.original_offset for d in letters) == [messages[1].offset(), messages[2].offset()]
    assert {d.error_type for d in letters} == {"SchemaError"}
    assert {d.original_value for d in letters} == {messages[1].value(), messages[2].value()}
