"""Fixtures of the inference unit tests: a tiny char-level model built locally (seconds, no hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def inference_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default ``tiny`` preset with the ``char`` tokenizer trained on part of GSM8K."""
    from inference.model_builder import build_model

    out = tmp_path_factory.mktemp("inference-model") / "tiny"
    build_model(out, preset="tiny", tokenizer="char", max_chars=50_000, seed=0)
    return out


@pytest.fixture(scope="session")
def tokenizer(inference_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(inference_model_dir)


@pytest.fixture(scope="session")
def model(inference_model_dir: Path):
    from inference.server import load_model

    return load_model(str(inference_model_dir))
