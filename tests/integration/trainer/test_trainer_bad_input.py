"""Bad-input catalogue, trainer: one trainer on the real broker reads every kind between good batches;
each bad one is dead-lettered with ``batches[p]@o: reason`` (a row the model cannot take alone, keyed
by its rollout id), nothing is trained from it, and the good batches around them all train."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamrl.config import Settings
from streamrl.schemas import CheckpointEvent, ClaimCheck, DeadLetter, TrainingBatch
from streamrl.schemas.claim_check import write_claim_check
from streamrl.schemas.serde import Serde
from streamrl.trainer.service import TrainerService
from streamrl.trainer.torch_backend import TorchBackend
from tests.support.bad_input import Kind, encode_unchecked, kinds
from tests.support.kafka import read_topic

from .conftest import produce, toy_batch

pytestmark = pytest.mark.integration


@dataclass
class Run:
    """What the module's one trainer run left: dead letters by offset, the checkpoint, the lineage."""

    settings: Settings
    offsets: dict[str, int]  # kind id -> offset of its record on batches
    dead: list[DeadLetter]
    event: CheckpointEvent
    lineage: list[str]
    topic: str

    def dead_at(self, kind_id: str) -> list[DeadLetter]:
        return [d for d in self.dead if d.original_offset == self.offsets[kind_id]]


@pytest.fixture(scope="module")
def run(
    shared_settings_factory: Callable[..., Settings],
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    tmp = tmp_path_factory.mktemp("trainer-bad-input")
    s = shared_settings_factory(
        rl={"policy_name": "policy", "group_size": 4, "max_staleness": 0, "staleness_policy": "drop"},
        trainer={
            "model_path": str(tiny_model_dir),
            "checkpoint_dir": str(tmp / "ckpt"),
            "save_every": 3,
            "max_steps": 3,
            "micro_batch_size": 8,
            "poll_timeout_s": 0.2,
        },
    )
    serde, topic = Serde(), s.topics.name("batches")
    # trainer versions: b0 trains at 0 (rows of version 0), "vocab" at 1, b2 at 2; max_staleness 0
    vocab = toy_batch(5, policy_version=1, bid="vocab")
    rows = list(vocab.rows or [])
    rows[3] = rows[3].model_copy(update={"response_ids": [99, 5]})  # outside the 16-token vocabulary
    vocab = vocab.model_copy(update={"rows": rows})
    positive = toy_batch(6, policy_version=1, bid="positive-logprob")
    prow = list(positive.rows or [])
    prow[0] = prow[0].model_copy(update={"behaviour_logprobs": [0.5, -0.1]})
    positive = positive.model_copy(update={"rows": prow})
    inline = toy_batch(7, policy_version=1, bid="cc-digest")
    cc = write_claim_check(inline, serde.encode(inline), str(tmp / "blobs"))
    Path(cc.uri.removeprefix("file://")).write_bytes(b"tampered" + serde.encode(inline)[8:])
    missing = ClaimCheck(uri=str(tmp / "blobs" / "gone.avro"), digest=cc.digest, size_bytes=10, num_rows=8)
    items: list[tuple[str, Any]] = [
        ("good-0", toy_batch(0, policy_version=0)),
        ("trainer-garbage-batch", b"\x00\x00\x00\x00\x01 not avro"),
        ("trainer-tombstone-batch", None),
        (
            "trainer-wrong-policy",
            toy_batch(1, policy_version=1).model_copy(update={"policy_name": "other", "batch_id": "other"}),
        ),
        ("trainer-claim-check-missing", _pointer("cc-missing", missing)),
        ("trainer-claim-check-digest", _pointer("cc-digest", cc)),
        ("trainer-row-beyond-vocab", vocab),
        ("trainer-positive-logprob-row", encode_unchecked(serde, positive)),
        ("trainer-all-stale", toy_batch(8, policy_version=0, bid="stale")),
        ("good-2", toy_batch(2, policy_version=2)),
    ]
    produce(s, [it for _, it in items])
    offsets = {name: i for i, (name, _) in enumerate(items)}
    svc = TrainerService(s, TorchBackend(s.trainer, rollout_n=4))
    assert svc.run() == 3  # b0, vocab (its other 7 rows), b2: the trainer went on past every bad batch
    events = read_topic(s, "checkpoints", CheckpointEvent, n=1)
    dead = read_topic(s, "dlq", DeadLetter, n=8)
    return Run(s, offsets, dead, events[-1], list(svc.lineage), topic)


def _pointer(batch_id: str, cc: ClaimCheck) -> TrainingBatch:
    return TrainingBatch(
        batch_id=batch_id,
        policy_name="policy",
        num_groups=2,
        claim_check=cc,
        min_policy_version=1,
        max_policy_version=1,
    )


EXPECT: dict[str, tuple[str, list[str]]] = {
    # kind -> (error type of its dead letter, what its reason says)
    "trainer-garbage-batch": ("SchemaError", ["TrainingBatch: Confluent-framed bytes (magic 0x00)"]),
    "trainer-tombstone-batch": ("SchemaError", ["TrainingBatch: empty value (None or 0 bytes)"]),
    "trainer-wrong-policy": ("Rejected", ["batch other is for policy 'other', this trainer trains 'policy'"]),
    "trainer-claim-check-missing": ("BadBatchError", ["gone.avro", "cannot read"]),
    "trainer-claim-check-digest": ("BadBatchError", ["cc-digest.avro", "!= declared"]),
    "trainer-positive-logprob-row": (
        "SchemaError",
        ["behaviour_logprobs[0] = 0.5 > 0: not a log-probability"],
    ),
    "trainer-all-stale": ("BadBatchError", ["empty after filtering", "staler than max_staleness=0"]),
}


@pytest.mark.parametrize("kind", kinds("trainer"), ids=lambda k: k.id)
def test_trainer_bad_input(kind: Kind, run: Run) -> None:
    dead = run.dead_at(kind.id)
    where = f"{run.topic}[0]@{run.offsets[kind.id]}"
    assert dead, f"no dead letter for {kind.id}"
    assert all(d.stage == "trainer" and d.reason.startswith(where) for d in dead), dead
    if kind.id == "trainer-row-beyond-vocab":
        (d,) = dead
        assert d.error_type == "RejectedRowError" and d.original_key == b"vocab/t0/0/3"
        assert "row 3 ('vocab/t0/0/3'): token id range [1, 99] outside the vocabulary [0, 16)" in d.reason
        assert "vocab" in run.lineage  # the batch's other rows trained
    else:
        error_type, says = EXPECT[kind.id]
        assert [d.error_type for d in dead] == [error_type]
        for text in says:
            assert text in dead[0].reason, dead[0].reason
        batch_id = {"trainer-wrong-policy": "other", "trainer-claim-check-missing": "cc-missing",
                    "trainer-claim-check-digest": "cc-digest", "trainer-positive-logprob-row": "positive-logprob",
                    "trainer-all-stale": "stale"}.get(kind.id)  # fmt: skip
        assert batch_id not in run.lineage  # nothing trained from it
    # nothing lost beside it: the good batches trained, in order, and the checkpoint says so
    assert run.lineage == ["b0", "vocab", "b2"]
    assert run.event.version == 3 and run.event.last_batch_id == "b2"
    assert run.event.consumed_rollouts == 3 * 8
