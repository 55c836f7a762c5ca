"""Pinned resources on the real broker: the worker resolves a sample's pins from `resources` and the
agent reads them as ``llm.resources``; a version nobody published fails the rollout with the reason."""

from __future__ import annotations

import pytest
from consumers_testkit import WorkerThread, make_sample, produce_samples

from streamrl.resource_store import ResourceStore, publish_resources
from streamrl.schemas import FailureKind, Resource, RolloutStatus, Trajectory
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration


def test_a_worker_hands_the_agent_the_pinned_versions(settings_factory) -> None:
    s = settings_factory(worker={"concurrency": 4, "resource_timeout_s": 3.0})
    v1 = Resource.create("system_prompt", "Hello {name}, v1")
    v2 = Resource.create("system_prompt", "Hello {name}, v2", parents=[v1.version])
    publish_resources(s, [v1, v2])
    samples = [
        make_sample("a", 0, {"name": "Ada"}).model_copy(update={"resources": {"system_prompt": v1.version}}),
        make_sample("b", 0, {"name": "Bo"}).model_copy(update={"resources": {"system_prompt": v2.version}}),
        make_sample("c", 0, {"name": "Cy"}).model_copy(update={"resources": {"system_prompt": "f" * 16}}),
        make_sample("d", 0, {"name": "Di"}),  # nothing pinned: the agent's lookup fails with the reason
    ]
    produce_samples(s, samples)
    trajs = TopicReader(s, "trajectories", Trajectory)
    with WorkerThread(s, "consumers_test_agents:reads_its_prompt"):
        got = {t.task_id: t for t in trajs.read_until(lambda r: len(r) >= 4, timeout_s=60)}
    assert got["a"].status is RolloutStatus.succeeded, got["a"].error
    assert got["a"].rewards[0].name == f"saw:Hello Ada, v1:{v1.version}"
    assert got["b"].rewards[0].name == f"saw:Hello Bo, v2:{v2.version}" and got["b"].reward == 1.0
    # a version nobody published is the sample's own failure: it spends the sample's retries
    assert got["c"].status is RolloutStatus.failed and got["c"].failure() is FailureKind.agent, got["c"].error
    assert f"system_prompt/{'f' * 16} not found on {s.topics.name('resources')} after 3 s" in got["c"].error
    assert got["d"].status is RolloutStatus.failed
    assert "resource 'system_prompt' is not pinned by this rollout's sample (pinned: none)" in got["d"].error


def test_the_store_reads_only_what_is_new_and_survives_a_bad_record(settings_factory) -> None:
    from streamrl.kafka import EventProducer

    s = settings_factory()
    store = ResourceStore(s)
    try:
        assert store.refresh(10) == 0 and store.versions() == []
        a = Resource.create("p", "one")
        publish_resources(s, [a, a])  # a re-publish is the same record
        with EventProducer(s) as producer:
            producer.produce(s.topics.name("resources"), b"not avro", key="p/garbage")
        b = Resource.create("p", "two", kind="text")
        publish_resources(s, [b])
        assert store.refresh(10) == 3  # a (twice) and b; the garbage is skipped and counted
        assert store.bad_records == 1
        assert [r.version for r in store.versions("p")] == [a.version, b.version]
        assert store.get("p", b.version) == b and store.refresh(5) == 0
    finally:
        store.close()


def test_the_cli_puts_lists_and_shows_a_version(settings_factory, tmp_path) -> None:
    import os
    import subprocess
    import sys

    s = settings_factory()
    prompt = tmp_path / "prompt.txt"
    prompt.write_text('Use {tool}: {{"name": "{tool}"}}\n')
    env = {
        **os.environ,
        "STREAMRL_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "STREAMRL_TOPIC_PREFIX": s.topics.prefix,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamrl.cli", "resources", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    empty = cli("list")
    assert empty.returncode == 0 and empty.stdout == ""
    assert f"no resource on {s.topics.name('resources')}" in empty.stderr, empty.stderr
    put = cli("put", "system_prompt", str(prompt))
    version = Resource.create("system_prompt", prompt.read_text()).version
    assert put.returncode == 0 and put.stdout.strip() == f"system_prompt/{version} (placeholders: tool)"
    listed = cli("list")
    assert listed.returncode == 0 and listed.stdout.startswith(f"system_prompt/{version}  prompt_template  ")
    shown = cli("show", f"system_prompt/{version}")
    assert shown.stdout == prompt.read_text()
    unknown = cli("list", "nosuch")
    assert unknown.returncode == 0 and unknown.stdout == ""
    assert (
        f"no version of 'nosuch' on {s.topics.name('resources')} (names there: system_prompt)"
        in unknown.stderr
    )
    bad = cli("put", "a/b", str(prompt))
    assert bad.returncode == 1 and "resource name 'a/b' must be" in bad.stderr
    missing = cli("show", f"system_prompt/{'0' * 16}")
    assert missing.returncode == 1 and "no such resource version" in missing.stderr
    # a prefix whose topics were never created: put says so before producing (it used to wait 30 s for
    # the flush and report "1 record(s) not delivered ... Unknown topic or partition")
    env["STREAMRL_TOPIC_PREFIX"] = f"{s.topics.prefix}none."
    nowhere = cli("put", "system_prompt", str(prompt))
    assert nowhere.returncode == 1, nowhere.stderr
    assert f"topic '{s.topics.prefix}none.resources' does not exist" in nowhere.stderr, nowhere.stderr
    assert "streamrl topics create" in nowhere.stderr, nowhere.stderr
    listed_nowhere = cli("list")
    assert listed_nowhere.returncode == 1, listed_nowhere.stderr
    assert f"topic '{s.topics.prefix}none.resources' does not exist" in listed_nowhere.stderr
