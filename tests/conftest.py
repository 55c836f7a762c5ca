"""Shared fixtures: a real Apache Kafka broker for the whole session, and per-test settings.

The broker is the local launcher's (``streamrl.broker.LocalKafka``) on free ports with a temporary
data directory, started once per session and stopped at the end. If ``STREAMRL_BOOTSTRAP_SERVERS``
is set, that cluster is used instead and nothing is started. Every test gets its own topic prefix,
so tests never see each other's records. A test that uses the broker must be marked ``integration``
(``tests/support/markers.py`` fails it otherwise). Test helpers live in ``tests/support/``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrl.config import Settings, load_settings
from tests.support.kafka import start_local_broker
from tests.support.markers import pytest_runtest_setup  # noqa: F401  (hook: broker tests carry `integration`)


@pytest.fixture(scope="session")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object | None]:
    """The session's LocalKafka launcher, or None when an external cluster is configured."""
    if os.environ.get("STREAMRL_BOOTSTRAP_SERVERS"):
        yield None
        return
    broker = start_local_broker(tmp_path_factory.mktemp("kafka-data"), heap="512m")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: object | None) -> str:
    """``host:port`` of the session's broker (or of ``STREAMRL_BOOTSTRAP_SERVERS``)."""
    if local_kafka is None:
        return os.environ["STREAMRL_BOOTSTRAP_SERVERS"]
    return local_kafka.bootstrap  # type: ignore[attr-defined]


def make_test_settings(
    bootstrap: str, prefix: str | None = None, config: Path | None = None, **sections: object
) -> Settings:
    """Settings pointing at ``bootstrap`` with a unique topic prefix (``t<hex>.``)."""
    prefix = prefix or f"t{uuid.uuid4().hex[:10]}."
    topics = dict(sections.pop("topics", {}) or {})  # type: ignore[arg-type]
    topics["prefix"] = prefix
    kafka = dict(sections.pop("kafka", {}) or {})  # type: ignore[arg-type]
    kafka.setdefault("bootstrap_servers", bootstrap)
    old = {
        k: os.environ.pop(k)
        for k in ("STREAMRL_BOOTSTRAP_SERVERS", "STREAMRL_TOPIC_PREFIX")
        if k in os.environ
    }
    try:
        return load_settings(config, kafka=kafka, topics=topics, **sections)
    finally:
        os.environ.update(old)


def _settings_factory(kafka_bootstrap: str):
    from streamrl.topics import ensure_topics

    def factory(
        config: Path | None = None, prefix: str | None = None, create_topics: bool = True, **sections: object
    ) -> Settings:
        s = make_test_settings(kafka_bootstrap, prefix=prefix, config=config, **sections)
        if create_topics:
            ensure_topics(s)
        return s

    return factory


@pytest.fixture
def settings_factory(kafka_bootstrap: str):
    """A function ``(config=None, prefix=None, create_topics=True, **sections) -> Settings`` for tests that
    need several pipelines, a config file, or section overrides (``rl={"group_size": 4}``)."""
    return _settings_factory(kafka_bootstrap)


@pytest.fixture(scope="session")
def shared_settings_factory(kafka_bootstrap: str):
    """:func:`settings_factory` for module-scoped fixtures: one stage (and its topics) shared by the
    tests of a module, e.g. a bad-input catalogue feeding many kinds into one running stage."""
    return _settings_factory(kafka_bootstrap)


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    """Settings for this test: the session broker, a unique topic prefix, every topic created."""
    from streamrl.topics import ensure_topics

    s = make_test_settings(kafka_bootstrap)
    ensure_topics(s)
    return s


# -- inference fixtures (shared by tests/unit/inference and tests/integration/inference) ----------------


@pytest.fixture(scope="session")
def inference_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default ``tiny`` preset with the ``char`` tokenizer trained on part of GSM8K (seconds, no hub)."""
    from streamrl.inference.model_builder import build_model

    out = tmp_path_factory.mktemp("inference-model") / "tiny"
    build_model(out, preset="tiny", tokenizer="char", max_chars=50_000, seed=0)
    return out


@pytest.fixture(scope="session")
def tokenizer(inference_model_dir: Path):
    """The tiny model's tokenizer (``transformers.AutoTokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(inference_model_dir)


@pytest.fixture(scope="session")
def model(inference_model_dir: Path):
    """The tiny model, loaded as the CPU inference server loads it."""
    from streamrl.inference.server import load_model

    return load_model(str(inference_model_dir))
