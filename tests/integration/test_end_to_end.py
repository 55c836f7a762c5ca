"""End to end: ``streamrl dev`` trains the GSM8K example agent through the whole Kafka pipeline.

A handful of GSM8K tasks, the tiny locally built model, the example agent (openai SDK, calculator
tool) and every stage as a real child process on the session's real broker. Checks: every sample
got a trajectory, batches were trained, checkpoints were published and loaded by the inference server
(its ``/health`` version advanced and calls were served by new versions), the last version's
validation reward arrived from streams, and no child is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.timeout(540)
def test_dev_trains_the_gsm8k_agent_end_to_end(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "configs" / "gsm8k.yaml").read_text())
    config["rl"] = {"group_size": 2, "train_batch_size": 2, "max_staleness": 1}
    config["dev"].update(
        {
            "run_root": str(tmp_path / "runs"),
            "run_id": "e2e",
            "model": {
                "path": str(tmp_path / "model"),
                "preset": "small",
                "tokenizer": "bpe",
                "max_chars": 100_000,
            },
            "datasets": [
                {"path": str(ROOT / "examples/gsm8k/data/train.jsonl"), "split": "train", "limit": 4},
                {"path": str(ROOT / "examples/gsm8k/data/test.jsonl"), "split": "val", "limit": 2},
            ],
            "max_steps": 2,
            "final_val_timeout_s": 90,
            "timeout_s": 400,
            "display": "plain",
            "plain_every_s": 5,
            "stop_timeout_s": 30,
        }
    )
    config["sampler"] = {"val_every": 1, "max_epochs": 1, "exit_when_done": False}
    config["worker"].update({"concurrency": 8, "sampling": {"temperature": 1.0, "max_tokens": 24}})
    config["streams"].update({"batch_timeout_s": 3, "tick_interval_s": 0.5})
    config["trainer"].update({"max_steps": 2})
    config.setdefault("topics", {})["prefix"] = f"t{uuid.uuid4().hex[:10]}."  # apart from other runs
    cfg = tmp_path / "e2e.yaml"
    cfg.write_text(yaml.safe_dump(config))

    env = {**os.environ, "STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONPATH": str(ROOT)}
    env.pop("STREAMRL_TOPIC_PREFIX", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrl.cli", "dev", "--config", str(cfg)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # dev stops its children on SIGTERM
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"streamrl dev did not finish in 480 s:\n{output[-6000:]}")
    run_dir = tmp_path / "runs" / "e2e"
    assert proc.returncode == 0, output[-6000:]
    summary = json.loads((run_dir / "summary.json").read_text())

    # every sample produced a trajectory (4 tasks x 2 rollouts of epoch 0, plus val rollouts)
    assert summary["samples"] >= 8, summary
    assert summary["missing_trajectories"] == 0, summary
    assert summary["rollouts"] >= summary["samples"]
    # batches were trained into >= 2 policy versions, published as checkpoints
    assert summary["batches"] >= 2 and summary["versions"] >= 2, summary
    ckpts = sorted((run_dir / "checkpoints").rglob("step-*"))
    assert ckpts, "no checkpoint directory written"
    # the inference server loaded them: its reported version advanced and new versions served calls
    assert summary["inference_version_first"] == 0, summary
    assert summary["inference_version_last"] >= 2, summary
    assert summary["served_version_max"] >= 1, summary
    # the last version was validated: dev read streams' ValidationResult records (validation topic)
    assert summary["version_last"] == summary["versions"] and summary["val_tasks"] == 2, summary
    assert 0.0 <= summary["reward_last"] <= 1.0, summary
    assert (run_dir / "reward.png").read_bytes()[:4] == b"\x89PNG"
    # every child's log exists and nothing is left running
    for name in ("inference", "trainer", "streams", "worker-0", "sampler"):
        assert (run_dir / "logs" / f"{name}.log").is_file()
    assert _processes_mentioning(str(run_dir / "config.yaml")) == []
