"""The demo: embedded defaults equal configs/demo.yaml; the task data is balanced, held out, reproducible."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import yaml

from streamrl.config import load_settings
from streamrl.dev.demo import DEMO_MAX_STEPS, demo_overrides

ROOT = Path(__file__).resolve().parents[3]


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_configs_demo_yaml_is_the_embedded_demo() -> None:
    assert yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text()) == demo_overrides()
    s = load_settings(ROOT / "configs" / "demo.yaml")
    assert (s.rl.group_size, s.rl.train_batch_size, s.trainer.lr) == (8, 16, 3e-4)
    assert (s.trainer.ppo_mini_batches, s.trainer.ppo_epochs, s.trainer.entropy_coeff) == (4, 4, 0.1)
    assert s.dev.val_target == 0.9 and s.dev.stop_at_val_target
    assert s.dev.max_steps == s.trainer.max_steps == DEMO_MAX_STEPS
    assert s.sampler.val_every > 0 and s.worker.agent == "examples.max_digit.agent:solve"
    for ds in s.dev.datasets:
        assert (ROOT / ds.path).is_file()


def test_gsm8k_config_is_valid() -> None:
    s = load_settings(ROOT / "configs" / "gsm8k.yaml")
    assert s.worker.agent == "examples.gsm8k.agent:solve"
    for ds in s.dev.datasets:
        assert (ROOT / ds.path).is_file()


def test_demo_data_is_balanced_held_out_and_reproducible() -> None:
    make_data = _load(ROOT / "examples" / "max_digit" / "make_data.py")
    train, val = make_data.make_splits()
    data = ROOT / "examples" / "max_digit" / "data"
    assert _rows(data / "train.jsonl") == train and _rows(data / "val.jsonl") == val
    assert len(val) >= 100
    counts = Counter(r["answer"] for r in val)
    assert len(set(counts.values())) == 1 and len(counts) == 8  # balanced over answers 2..9
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    assert all(r["answer"] == max(r["prompt"]) and len(r["prompt"]) == 4 for r in train + val)
    assert all(r.get("eval") is True for r in val) and not any("eval" in r for r in train)
    train_counts = Counter(r["answer"] for r in train)  # balanced too: answer 2's 52 prompts repeat
    assert set(train_counts.values()) == {150} and len(train_counts) == 8
    assert len({r["id"] for r in train}) == len(train)  # every copy is its own task
    assert len({r["prompt"] for r in train}) == 7 * 150 + 52


def test_demo_reward() -> None:
    agent = _load(ROOT / "examples" / "max_digit" / "agent.py")
    assert agent.score("7", "7", strict=False) == 1.0
    assert agent.score(" 7\n", "7", strict=True) == 1.0
    assert agent.score("3", "7", strict=False) == agent.FORMAT_CREDIT
    assert agent.score("3", "7", strict=True) == 0.0
    assert agent.score("x", "7", strict=False) == 0.0
    assert agent.score("77", "7", strict=False) == 0.0
