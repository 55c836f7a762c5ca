"""The staleness policy through the trainer's real path (broker -> TrainerService -> torch backend):
``weight`` changes the trained loss exactly as a row weight does, ``drop`` drops the stale rows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from streamrl.schemas import TrainingBatch
from streamrl.trainer.service import TrainerService
from streamrl.trainer.torch_backend import TorchBackend

from .conftest import produce, toy_batch

pytestmark = pytest.mark.integration


def _mixed_batch(*, stale_version: int, stale_weight: float = 1.0) -> TrainingBatch:
    """Batch ``b1`` (2 groups x 4 rows), trained at version 1: rows k = 0, 1 of each group at
    ``stale_version``, rows k = 2, 3 fresh (version 1). Half a group stale, so the weights change
    the loss (a whole group scaled alike would keep its zero-sum GRPO advantages)."""
    base = toy_batch(1, policy_version=1)
    assert base.rows is not None
    rows = [
        r.model_copy(update={"policy_version": stale_version, "weight": stale_weight}) if i % 4 < 2 else r
        for i, r in enumerate(base.rows)
    ]
    return base.model_copy(update={"rows": rows, "min_policy_version": min(stale_version, 1)})


def _counter(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _train(settings_factory, model_dir: Path, tmp_path: Path, batch: TrainingBatch, **rl: object) -> dict:
    """Train ``b0`` (fresh) then ``batch`` at trainer version 1 with ``max_staleness=0``; the second
    step's metrics and the staleness counters' increments."""
    settings = settings_factory(
        rl={"policy_name": "policy", "group_size": 4, "max_staleness": 0, **rl},
        trainer={
            "model_path": str(model_dir),
            "checkpoint_dir": str(tmp_path / f"ckpt-{len(list(tmp_path.iterdir()))}"),
            "save_every": 100,
            "save_on_exit": False,
            "max_steps": 2,
            "lr": 1e-3,
            "micro_batch_size": 8,
            "poll_timeout_s": 0.2,
            "torch_threads": 1,
        },
    )
    produce(settings, [toy_batch(0, policy_version=0), batch])
    dropped = _counter("streamrl_trainer_rows_dropped_total", {"reason": "stale"})
    weighted = _counter("streamrl_trainer_stale_rows_weighted_total")
    service = TrainerService(settings, TorchBackend(settings.trainer, rollout_n=4, seed=0))
    assert service.run() == 2
    return {
        **service.last_metrics,
        "dropped": _counter("streamrl_trainer_rows_dropped_total", {"reason": "stale"}) - dropped,
        "weighted": _counter("streamrl_trainer_stale_rows_weighted_total") - weighted,
    }


def test_weight_scales_the_loss_like_a_row_weight_and_drop_drops(
    settings_factory, tiny_model_dir: Path, tmp_path: Path
) -> None:
    stale = _mixed_batch(stale_version=0)  # 1 version stale at trainer version 1, max_staleness 0
    weighted = _train(settings_factory, tiny_model_dir, tmp_path, stale, staleness_policy="weight")
    # the same rows, fresh, each carrying the weight the policy gives them (0.5 ** 1)
    same = _train(
        settings_factory,
        tiny_model_dir,
        tmp_path,
        _mixed_batch(stale_version=1, stale_weight=0.5),
        staleness_policy="weight",
    )
    full = _train(
        settings_factory,
        tiny_model_dir,
        tmp_path,
        stale,
        staleness_policy="weight",
        stale_weight_decay=1.0,
    )
    dropped = _train(settings_factory, tiny_model_dir, tmp_path, stale, staleness_policy="drop")

    assert weighted["weighted"] == 4 and weighted["dropped"] == 0
    assert same["weighted"] == 0 and full["weighted"] == 0 and full["dropped"] == 0
    for key in ("actor/loss", "actor/grad_norm"):
        assert math.isclose(weighted[key], same[key], rel_tol=1e-5, abs_tol=1e-7), key
        assert not math.isclose(weighted[key], full[key], rel_tol=1e-3), key
    assert dropped["dropped"] == 4 and dropped["weighted"] == 0
    assert not math.isclose(dropped["actor/loss"], full["actor/loss"], rel_tol=1e-3)
