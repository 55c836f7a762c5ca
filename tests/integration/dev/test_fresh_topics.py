"""``dev.fresh_topics``: a run never starts on topics that already hold an earlier run's records.

The run's prefix is ``<topics.prefix><run_id>.``; a second run with the same ``run_id`` on the same
cluster would otherwise serve the first one's newest checkpoint (the inference server loads it before
serving) and read its tasks. The framework dev test's runs got no tool call that way.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from streamrl.dev.rundir import refuse_used_topics
from streamrl.errors import StreamRLError
from streamrl.kafka import client_config

pytestmark = pytest.mark.integration


def test_a_run_on_topics_with_an_earlier_runs_records_is_refused(settings_factory) -> None:
    settings = settings_factory(dev={"fresh_topics": True})
    refuse_used_topics(settings)  # created, empty: a fresh run may start on them
    producer = Producer(client_config(settings))
    producer.produce(settings.topics.name("checkpoints"), key=b"policy", value=b"{}")
    assert producer.flush(10) == 0
    with pytest.raises(StreamRLError) as err:
        refuse_used_topics(settings)
    message = str(err.value)
    assert f"{settings.topics.name('checkpoints')} (1 records)" in message, message
    assert "choose another dev.run_id" in message and settings.kafka.bootstrap_servers in message
    # resuming a pipeline on its topics is what fresh_topics=False is for
    refuse_used_topics(settings_factory(prefix=settings.topics.prefix, dev={"fresh_topics": False}))
