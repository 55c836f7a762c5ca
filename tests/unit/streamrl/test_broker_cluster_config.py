"""The launcher's properties for one node of a multi-node cluster (a static KRaft quorum, replicated
internal topics, ``min.insync.replicas``) and for the single node it runs by default."""

from __future__ import annotations

from pathlib import Path

from streamrl.broker import LocalKafka
from streamrl.config.kafka import LocalBrokerSettings


def _props(node: LocalKafka) -> dict[str, str]:
    lines = node._write_config().read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_a_node_of_three_names_every_voter_and_replicates_three_ways(tmp_path: Path) -> None:
    node = LocalKafka(
        LocalBrokerSettings(port=19101, controller_port=19102),
        data_dir=tmp_path / "n2",
        node_id=2,
        voters={1: 19002, 2: 19102, 3: 19202},
        replication=3,
    )
    props = _props(node)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19002,2@127.0.0.1:19102,3@127.0.0.1:19202"
    assert (
        "controller.quorum.bootstrap.servers" not in props
    )  # a static quorum: formatted without --standalone
    assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_the_default_node_is_a_standalone_single_replica(tmp_path: Path) -> None:
    props = _props(LocalKafka(LocalBrokerSettings(port=19111, controller_port=19112), data_dir=tmp_path))
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19112"
    assert "controller.quorum.voters" not in props
    assert props["min.insync.replicas"] == props["default.replication.factor"] == "1"
