"""Inference integration tests run with one torch thread; the tiny-model fixtures are in tests/conftest.py."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
