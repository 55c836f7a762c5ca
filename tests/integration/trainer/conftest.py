"""Helpers of the trainer's broker tests: a tiny local model and producing batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamrl.config import Settings
from streamrl.kafka import EventProducer
from streamrl.schemas import TrainingBatch
from streamrl.schemas.serde import Serde

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a 16-token vocabulary, saved with save_pretrained."""
    from tests.support.toy_policy import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model", vocab_size=16, hidden_size=32, num_heads=2
    )


def toy_batch(
    i: int, *, policy_version: int | None = None, vocab: int = 16, low: int = 3, bid: str | None = None
) -> TrainingBatch:
    """Batch ``b{i}``: 2 groups x 4 rows, prompt ``[1, i]``, 2-token responses drawn from
    ``[low, vocab)``, binary rewards."""
    from tests.support.toy_policy import make_batch

    g = torch.Generator().manual_seed(i)
    prompts = [[1, 3 + i % 10] for _ in range(8)]
    resp = torch.randint(low, vocab, (8, 2), generator=g).tolist()
    lp = (-torch.rand(8, 2, generator=g) * 3).tolist()
    rewards = [float(r[0] % 2) for r in resp]
    return make_batch(
        bid or f"b{i}",
        "policy",
        prompts,
        resp,
        lp,
        rewards,
        group_size=4,
        policy_version=i if policy_version is None else policy_version,
    )


def produce(settings: Settings, items: list[TrainingBatch | bytes | None]) -> None:
    """Produce batches (or raw bytes, or None: a tombstone) to ``batches`` and wait for the
    acknowledgements."""
    serde = Serde()
    topic = settings.topics.name("batches")
    with EventProducer(settings) as p:
        for it in items:
            if it is None or isinstance(it, bytes):
                p.produce(topic, it, key=b"garbage")
            else:
                p.produce(topic, serde.encode(it, topic=topic), key=it.batch_id)
        p.flush()
