"""``python -m bench.gateway`` with a handful of samples prints a throughput a worker can have: it
measures from the first sample produced to the last trajectory, not over the span between the first
and last trajectory (which all arrive in one consumer batch for few samples: that read ~2 million
rollouts/s)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_few_samples_give_a_believable_rate(kafka_bootstrap: str) -> None:
    env = {**os.environ, "STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap}
    env.pop("STREAMRL_TOPIC_PREFIX", None)
    out = subprocess.run(
        [sys.executable, "-m", "bench.gateway", "--calls", "5", "--samples", "20", "--workers", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,.]+) rollouts/s", out.stdout)]
    assert len(rates) == 2, out.stdout
    # a sample goes broker -> worker -> agent -> broker: at least a few ms for the 20 of them, on any
    # machine; the old span-based figure for this run was in the millions
    assert all(0 < r < 20 / 0.005 for r in rates), out.stdout
