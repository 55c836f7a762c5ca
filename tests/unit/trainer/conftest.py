"""Fixtures of the trainer unit tests: a tiny local Llama (built, never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a 16-token vocabulary (~0.1 M parameters)."""
    from tests.support.toy_policy import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model", vocab_size=16, hidden_size=32, num_heads=2
    )
