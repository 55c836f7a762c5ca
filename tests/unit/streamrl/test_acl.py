"""The access table's invariants: each record kind has the writers the design says, no stage may
create or alter pipeline topics, and every stage principal is distinct from the super user."""

from __future__ import annotations

from streamrl.acl import ACCESS, grants, principals
from streamrl.config import load_settings
from streamrl.config.kafka import TOPIC_NAMES


def test_only_the_owning_stage_writes_the_topics_that_steer_training() -> None:
    s = load_settings(None)
    writers: dict[str, set[str]] = {}
    for role, rtype, _pattern, name, op in grants(s):
        if rtype == "TOPIC" and op == "WRITE":
            writers.setdefault(name, set()).add(role)
    assert writers[s.topics.name("checkpoints")] == {"trainer"}  # the policy's chain of custody
    assert writers[s.topics.name("batches")] == {"streams"}
    assert writers[s.topics.name("trajectories")] == {"worker"}
    assert writers[s.topics.name("tasks")] == {"publish"}


def test_no_stage_creates_or_alters_pipeline_topics_or_reads_what_it_does_not_use() -> None:
    s = load_settings(None)
    pipeline = [s.topics.name(t) for t in TOPIC_NAMES]
    for role, rtype, pattern, name, op in grants(s):
        if op in ("CREATE", "ALTER", "ALTER_CONFIGS", "DELETE", "DESCRIBE_CONFIGS"):
            # only the streams app, only on its own internal topics (changelogs, ticks ...)
            assert role == "streams" and rtype == "TOPIC" and pattern == "PREFIXED", (role, name, op)
            assert not any(t.startswith(name) for t in pipeline), (name, op)
    trainer = next(a for a in ACCESS if a.role == "trainer")
    assert trainer.reads == ("batches",)  # it writes checkpoints but never reads them
    who = principals(s)
    assert len(set(who.values())) == len(who) and all(p.startswith("User:") for p in who.values())
    assert f"User:{s.kafka.local.super_users[0]}" not in who.values()
