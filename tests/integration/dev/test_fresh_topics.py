"""``dev.fresh_topics``: a run never starts on topics that already hold an earlier run's records.

The run's prefix is ``<topics.prefix><run_id>.``; a second run with the same ``run_id`` on the same
cluster would otherwise serve the first one's newest checkpoint (the inference server loads it before
serving) and read its tasks. The framework dev test's runs got no tool call that way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from streamrl.config import TOPIC_NAMES
from streamrl.dev.rundir import refuse_used_topics
from streamrl.errors import StreamRLError
from streamrl.kafka import client_config, make_admin

ROOT = Path(__file__).resolve().parents[3]

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
    assert f"{settings.topics.name('checkpoints')} (1 record)" in message, message
    assert "choose another dev.run_id" in message and settings.kafka.bootstrap_servers in message
    assert f"streamrl topics delete --prefix {settings.topics.prefix}" in message, message
    # resuming a pipeline on its topics is what fresh_topics=False is for
    refuse_used_topics(settings_factory(prefix=settings.topics.prefix, dev={"fresh_topics": False}))


def _topics_delete(kafka_bootstrap: str, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRL_")}
    env["STREAMRL_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    return subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "topics", "delete", *args],
        input=answer, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_topics_delete_asks_then_deletes_the_pipelines_topics_only(settings_factory, kafka_bootstrap) -> None:
    """The command the refusal names: it lists the topics with their records, asks (or --yes), deletes
    the pipeline's topics and its streams application's, and leaves a longer prefix's pipeline alone."""
    settings = settings_factory()
    prefix = settings.topics.prefix
    nested = settings_factory(prefix=f"{prefix}r1.")  # another pipeline whose prefix starts with this one
    admin = make_admin(settings)
    for fut in admin.create_topics([NewTopic(f"{prefix}streams-ticks", 1, 1)]).values():
        fut.result(30)
    producer = Producer(client_config(settings))
    producer.produce(settings.topics.name("tasks"), key=b"t", value=b"{}")
    assert producer.flush(10) == 0
    ours = {settings.topics.name(b) for b in ("tasks", "samples", "checkpoints")} | {f"{prefix}streams-ticks"}

    refused = _topics_delete(kafka_bootstrap, "--prefix", prefix, answer="n\n")
    assert refused.returncode == 1 and "Aborted" in refused.stderr, refused.stderr
    assert f"  {settings.topics.name('tasks')} (1 records)" in refused.stdout, refused.stdout
    assert ours <= set(admin.list_topics(timeout=30).topics)

    done = _topics_delete(kafka_bootstrap, "--prefix", prefix, "--yes")
    assert (
        done.returncode == 0
        and f"deleted {len(TOPIC_NAMES) + 1} topics with prefix {prefix!r}" in done.stdout
    ), done.stdout
    left = set(admin.list_topics(timeout=30).topics)
    assert not ours & left
    assert nested.topics.name("tasks") in left  # not this pipeline's

    again = _topics_delete(kafka_bootstrap, "--prefix", prefix, "--yes")
    assert again.returncode == 0 and f"no topics with prefix {prefix!r}" in again.stdout


def test_streamrl_dev_refused_on_used_topics_leaves_no_run_behind(
    settings_factory, kafka_bootstrap, tmp_path
) -> None:
    """Through ``streamrl dev``: one error line naming the topics, exit 1, and no ``runs/<id>``
    (no summary of a run that never started), before any child starts."""
    settings = settings_factory()
    run_prefix = f"{settings.topics.prefix}again."  # the prefix dev gives run id "again"
    used = settings_factory(prefix=run_prefix)
    producer = Producer(client_config(used))
    producer.produce(used.topics.name("tasks"), key=b"t", value=b"{}")
    assert producer.flush(10) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRL_")}
    env.update(
        STREAMRL_BOOTSTRAP_SERVERS=kafka_bootstrap,
        STREAMRL_TOPIC_PREFIX=settings.topics.prefix,
        STREAMRL_DEV__RUN_ROOT=str(tmp_path / "runs"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "dev", "-c", "configs/demo.yaml", "--run-id", "again",
         "--display", "plain"],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "already hold records" in line]
    assert len(errors) == 1 and f"{used.topics.name('tasks')} (1 record)" in errors[0], proc.stderr
    assert "summary" not in proc.stdout.lower(), proc.stdout
    assert not (tmp_path / "runs" / "again").exists()
