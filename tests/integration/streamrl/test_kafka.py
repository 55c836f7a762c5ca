"""The glue against a real Apache Kafka broker: topics, client factories, restart, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamrl.config import COMPACTED_TOPICS, TOPIC_NAMES, Settings
from streamrl.config.kafka import LocalBrokerSettings
from streamrl.kafka import EventProducer, make_admin
from streamrl.topics import describe_topics, ensure_topics
from tests.support.kafka import free_port, read_topic, start_local_broker

pytestmark = pytest.mark.integration


def test_ensure_topics_is_idempotent_and_configured(settings: Settings) -> None:
    again = ensure_topics(settings)
    assert set(again.values()) == {"exists"}
    assert set(again) == {settings.topics.name(t) for t in TOPIC_NAMES}
    admin = make_admin(settings)
    from confluent_kafka.admin import ConfigResource

    resources = [ConfigResource(ConfigResource.Type.TOPIC, settings.topics.name(t)) for t in TOPIC_NAMES]
    for res, fut in admin.describe_configs(resources).items():
        conf = fut.result(timeout=10)
        base = res.name.removeprefix(settings.topics.prefix)
        assert conf["cleanup.policy"].value == ("compact" if base in COMPACTED_TOPICS else "delete")
        assert int(conf["max.message.bytes"].value) == settings.topics.max_message_bytes
    infos = {i.name: i for i in describe_topics(settings)}
    assert infos[settings.topics.name("samples")].partitions == settings.topics.partitions["samples"]


def test_new_partitions_are_led_when_ensure_topics_returns(settings_factory) -> None:
    """Every partition of a just-created topic answers ListOffsets at once. Before ensure_topics
    waited for that, ~half of them answered NOT_LEADER_OR_FOLLOWER for a moment, and an idempotent
    producer lost the first records of such a partition now and then."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    for _ in range(5):
        s = settings_factory()
        admin = make_admin(s)
        tps = [
            TopicPartition(s.topics.name(base), p)
            for base in TOPIC_NAMES
            for p in range(s.topics.partitions[base])
        ]
        refused = []
        for tp, fut in admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in tps}, request_timeout=10
        ).items():
            try:
                assert fut.result().offset == 0
            except KafkaException as exc:
                refused.append(f"{tp.topic}[{tp.partition}]: {exc.args[0].name()}")
        assert not refused, refused


def test_produce_and_consume_through_factories(settings: Settings) -> None:
    topic = settings.topics.name("samples")
    with EventProducer(settings) as producer:
        for i in range(50):
            producer.produce(topic, f"v{i}".encode(), key=f"k{i}")
    got = read_topic(settings, "samples", n=50)
    assert sorted((m.key(), m.value()) for m in got) == sorted(
        (f"k{i}".encode(), f"v{i}".encode()) for i in range(50)
    )
    infos = {i.name: i for i in describe_topics(settings)}
    assert infos[topic].records == 50


def test_flush_reports_failed_deliveries(settings: Settings) -> None:
    from streamrl.errors import DeliveryError

    # The client would accept it; the topic's max.message.bytes makes the broker refuse it.
    producer = EventProducer(settings, **{"message.max.bytes": settings.topics.max_message_bytes * 2})
    too_big = os.urandom(settings.topics.max_message_bytes + 10)  # incompressible
    producer.produce(settings.topics.name("dlq"), b"fine", key="a")
    with pytest.raises(DeliveryError, match="dlq"):
        producer.produce(settings.topics.name("dlq"), too_big, key="b")
        producer.flush(20)
    producer.close()


def test_broker_restart_keeps_the_log(tmp_path: Path, settings_factory) -> None:
    broker = start_local_broker(tmp_path / "data", heap="384m")
    bootstrap = broker.bootstrap
    try:
        assert broker.start() == (bootstrap, False)  # already running: says so
        s = settings_factory(kafka={"bootstrap_servers": bootstrap})
        topic = s.topics.name("tasks")
        with EventProducer(s) as producer:
            for i in range(20):
                producer.produce(topic, f"before-{i}".encode(), key=f"task-{i}")
        assert broker.stop()
        assert broker.pid() is None
        _, started = broker.start(timeout_s=120)
        assert started
        got = read_topic(s, "tasks", n=20, timeout_s=60)
        assert sorted(m.value() for m in got) == sorted(f"before-{i}".encode() for i in range(20))
    finally:
        broker.stop()
    assert not broker.status().running


def test_cli_kafka_start_status_stop(tmp_path: Path) -> None:
    port, cport = free_port(), free_port()
    cfg = tmp_path / "streamrl.yaml"
    cfg.write_text(
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{port}\n  local:\n    port: {port}\n    controller_port: {cport}\n"
        f"    home: {tmp_path / 'home'}\n    heap: 384m\ntopics:\n  prefix: cli.\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRL_")}
    # The jar cache is shared with the session's broker so Maven does not run again.
    lib = Path(LocalBrokerSettings().home).expanduser() / "lib"
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "lib").symlink_to(lib)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamrl.cli", *args, "-c", str(cfg)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    assert cli("kafka", "status").returncode == 1
    started = cli("kafka", "start")
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip().splitlines()[-1] == f"127.0.0.1:{port}"
        again = cli("kafka", "start")
        assert again.returncode == 0 and "already running" in again.stdout
        status = cli("kafka", "status")
        assert status.returncode == 0 and "answering" in status.stdout
        created = cli("topics", "create")
        assert created.returncode == 0, created.stderr
        assert "cli.samples: created" in created.stdout
        assert "cli.samples: exists" in cli("topics", "create").stdout
        listed = cli("topics", "list")
        assert "cli.requests" in listed.stdout
    finally:
        stopped = cli("kafka", "stop")
    assert stopped.returncode == 0 and "Kafka stopped" in stopped.stdout
    assert cli("kafka", "status").returncode == 1
