"""The ``verl`` backend (VERL's FSDP engine on Ray). GPU only: see ``streamrl.trainer.verl_backend.VERL_CPU_REASON``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from streamrl.config.trainer import TrainerSettings
from streamrl.trainer.batch import prepare_batch
from streamrl.trainer.checkpoint import STATE_FILE

from .conftest import toy_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="verl backend needs a CUDA GPU (VERL_CPU_REASON)"
    ),
]


def test_verl_backend_trains_saves_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    from streamrl.trainer.verl_backend import VerlBackend

    ts = TrainerSettings(backend="verl", model_path=tiny_model_dir, lr=1e-3, max_steps=10)
    be = VerlBackend(ts, rollout_n=4)
    for i in range(2):
        data = prepare_batch(
            toy_batch(i), serde=None, trainer_version=i, max_staleness=None, vocab_size=be.vocab_size
        )
        r = be.train_step(data)
        assert math.isfinite(r.metrics["actor/grad_norm"]) and r.metrics["actor/grad_norm"] > 0
    ckpt = tmp_path / "step"
    (ckpt / "model").mkdir(parents=True)
    be.save_model(ckpt / "model")
    be.save_state(ckpt / STATE_FILE, {"version": 2})
    assert (ckpt / "model" / "config.json").is_file()
    assert be.load(ckpt) == {"version": 2}
