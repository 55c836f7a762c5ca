"""On a machine without a GPU the verl backend refuses to start with the recorded reason (not a hang or a CUDA trace)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamrl.config.trainer import TrainerSettings
from streamrl.trainer.errors import TrainerError


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_verl_backend_on_cpu_fails_with_the_reason(tiny_model_dir: Path) -> None:
    from streamrl.trainer.verl_backend import VerlBackend

    with pytest.raises(
        TrainerError, match=r"needs CUDA GPUs: verl 0.9.1 has no CPU platform.*device=\['cuda', 'npu'\]"
    ):
        VerlBackend(TrainerSettings(backend="verl", model_path=tiny_model_dir), rollout_n=4)


def test_verl_engine_registry_has_no_cpu_fsdp_engine() -> None:
    # the fact VERL_CPU_REASON rests on: the FSDP language-model engine is registered for cuda/npu only
    from verl.workers.engine import EngineRegistry

    devices = set(EngineRegistry._engines["language_model"]["fsdp2"])
    assert "cpu" not in devices and {"cuda", "npu"} <= {d if isinstance(d, str) else d[0] for d in devices}
