"""Helpers for the ``streamrl dev`` integration tests: a small run config and a process scan."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def dev_config(tmp_path: Path, kafka_bootstrap: str) -> Callable[..., tuple[Path, dict[str, str]]]:
    """``make(**sections) -> (config path, env)``: the demo task on 2 tasks, tiny model, session broker."""

    def make(**sections: dict) -> tuple[Path, dict[str, str]]:
        config: dict = {
            "rl": {"group_size": 2, "train_batch_size": 1},
            "dev": {
                "run_root": str(tmp_path / "runs"),
                "run_id": "r",
                "model": {"path": str(tmp_path / "model"), "max_chars": 20_000},
                "datasets": [
                    {"path": str(ROOT / "examples/max_digit/data/train.jsonl"), "split": "train", "limit": 2},
                ],
                "display": "plain",
                "plain_every_s": 2,
                "stop_timeout_s": 20,
                "timeout_s": 300,
            },
            "worker": {"agent": "examples.max_digit.agent:solve", "sampling": {"max_tokens": 1}},
            "trainer": {"save_every": 1},
            # every run_id is "r": a prefix of its own keeps the runs on the session's broker apart
            "topics": {"prefix": f"t{uuid.uuid4().hex[:10]}."},
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        path = tmp_path / "dev.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONPATH": str(ROOT)}
        env.pop("STREAMRL_TOPIC_PREFIX", None)
        return path, env

    return make


@pytest.fixture
def processes_mentioning() -> Callable[[str], list[str]]:
    """``scan(text) -> [pid: cmdline]`` of live processes whose command line contains ``text``."""

    def scan(text: str) -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                found.append(f"{proc.name}: {cmdline}")
        return found

    return scan
