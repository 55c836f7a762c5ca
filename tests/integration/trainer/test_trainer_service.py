"""The trainer on the real broker: real batch records in, finite loss, changed weights, a published and
loadable checkpoint whose digest matches; bad batches to the DLQ with the reason."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from prometheus_client import REGISTRY
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from streamrl.schemas import CheckpointEvent, DeadLetter, digest_dir
from streamrl.trainer.service import TrainerService
from streamrl.trainer.torch_backend import TorchBackend
from tests.support.kafka import read_topic

from .conftest import produce, toy_batch

pytestmark = pytest.mark.integration


def test_trains_from_batches_and_publishes_a_loadable_checkpoint(
    settings_factory, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = settings_factory(
        rl={"policy_name": "policy", "group_size": 4, "max_staleness": 1},
        trainer={
            "model_path": str(tiny_model_dir),
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "save_every": 3,
            "max_steps": 3,
            "lr": 1e-3,
            "micro_batch_size": 4,
            "poll_timeout_s": 0.2,
        },
    )
    bad_vocab = toy_batch(1, vocab=40, low=16, bid="bad-vocab")  # no row this model can take
    stale = toy_batch(2, policy_version=0, bid="stale")  # trained at version 2 with max_staleness 1
    # bad_vocab delivered again: skipped, never trained after its dead letter (the sampler counted it)
    produce(
        settings, [toy_batch(0), b"\x00not avro", toy_batch(1), bad_vocab, stale, bad_vocab, toy_batch(2)]
    )

    backend = TorchBackend(settings.trainer, rollout_n=4)
    initial = {k: v.clone() for k, v in backend.model.state_dict().items()}
    steps_before = REGISTRY.get_sample_value("streamrl_trainer_steps_total") or 0.0
    bad_before = (
        REGISTRY.get_sample_value("streamrl_trainer_batches_skipped_total", {"reason": "bad_batch"}) or 0.0
    )
    again_before = (
        REGISTRY.get_sample_value(
            "streamrl_trainer_batches_skipped_total", {"reason": "duplicate_dead_lettered"}
        )
        or 0.0
    )
    assert TrainerService(settings, backend).run() == 3
    assert REGISTRY.get_sample_value("streamrl_trainer_steps_total") == steps_before + 3
    assert (
        REGISTRY.get_sample_value("streamrl_trainer_batches_skipped_total", {"reason": "bad_batch"})
        == bad_before + 2
    )
    assert REGISTRY.get_sample_value("streamrl_trainer_version") == 3
    # the last step (b2 at version 2) trained fresh rows only: the staleness gauge says 0, not nothing
    for stat in ("mean", "max"):
        assert REGISTRY.get_sample_value("streamrl_trainer_staleness", {"stat": stat}) == 0.0
    assert (
        REGISTRY.get_sample_value(
            "streamrl_trainer_batches_skipped_total", {"reason": "duplicate_dead_lettered"}
        )
        == again_before + 1
    )

    events = read_topic(settings, "checkpoints", CheckpointEvent, n=1)
    assert [(e.policy_name, e.version, e.kind.value) for e in events] == [("policy", 3, "full")]
    ev = events[0]
    assert ev.last_batch_id == "b2" and ev.last_batch_offset == 6
    assert ev.consumed_rollouts == 3 * 8  # b0, b1, b2 (8 rollouts each); dead-lettered batches are not
    assert math.isfinite(ev.metrics["actor/loss"]) and ev.metrics["actor/grad_norm"] > 0
    assert digest_dir(ev.uri) == ev.digest
    loaded = AutoModelForCausalLM.from_pretrained(ev.uri)
    saved = load_file(Path(ev.uri) / "model.safetensors")
    assert set(saved) <= set(initial)
    assert any(not torch.equal(loaded.state_dict()[k], initial[k]) for k in saved)
    for k in saved:
        torch.testing.assert_close(loaded.state_dict()[k], backend.model.state_dict()[k])

    dead = read_topic(settings, "dlq", DeadLetter, n=3)
    reasons = {d.original_offset: (d.stage, d.error_type, d.reason) for d in dead}
    topic = settings.topics.name("batches")
    assert set(reasons) == {1, 3, 4}
    assert reasons[1][:2] == ("trainer", "SchemaError")
    assert (
        reasons[3][1] == "BadBatchError"
        and f"{topic}[0]@3" in reasons[3][2]
        and "outside the vocabulary" in reasons[3][2]
    )
    assert "empty after filtering" in reasons[4][2] and "max_staleness=1" in reasons[4][2]
