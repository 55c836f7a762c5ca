"""Learning: on a toy reward with a known optimum, fresh samples of the trained policy score clearly higher.

Task: any prompt; reward 1 iff the one-token response is TARGET (chance 1/16 for the untrained model).
Samples are drawn in-process from the current weights with their behaviour logprobs, packed into real
``TrainingBatch`` records, serialised and deserialised with ``streamrl.schemas.serde`` (as they travel through
``batches``), and trained by the same path the service uses (``prepare_batch`` + ``train_step``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamrl.config.trainer import TrainerSettings
from streamrl.schemas import TrainingBatch
from streamrl.schemas.serde import Serde
from streamrl.trainer.batch import prepare_batch
from streamrl.trainer.torch_backend import TorchBackend
from tests.support.toy_policy import make_batch, sample

TARGET = 7
GROUPS, GROUP_SIZE, MAX_STEPS = 8, 8, 24


def _prompts(n: int, g: torch.Generator) -> list[list[int]]:
    return [[1, int(torch.randint(3, 16, (1,), generator=g))] for _ in range(n)]


def _mean_reward(be: TorchBackend, g: torch.Generator, n: int = 512) -> float:
    resp, _ = sample(be.model, _prompts(n, g), 1, g)
    return sum(r[0] == TARGET for r in resp) / n


def test_grpo_raises_the_reward_of_fresh_samples(tiny_model_dir: Path) -> None:
    ts = TrainerSettings(model_path=tiny_model_dir, lr=3e-3, micro_batch_size=32, weight_decay=0.0)
    be = TorchBackend(ts, rollout_n=GROUP_SIZE, seed=0)
    serde = Serde()
    g = torch.Generator().manual_seed(0)
    before = _mean_reward(be, g)
    on_policy: list[float] = []  # the step's reward/mean: the reward of the policy's fresh samples
    for step in range(MAX_STEPS):
        # one prompt per group, GROUP_SIZE samples each
        prompts = [p for p in _prompts(GROUPS, g) for _ in range(GROUP_SIZE)]
        resp, lp = sample(be.model, prompts, 1, g)
        rewards = [1.0 if r[0] == TARGET else 0.0 for r in resp]
        record = make_batch(
            f"learn/{step}", "policy", prompts, resp, lp, rewards, GROUP_SIZE, policy_version=step
        )
        batch = serde.decode(serde.encode(record), TrainingBatch)
        data = prepare_batch(
            batch, serde=None, trainer_version=step, max_staleness=0, vocab_size=be.vocab_size
        )
        result = be.train_step(data)  # raises on a non-finite loss or gradient
        assert result.metrics["reward/mean"] == pytest.approx(sum(rewards) / len(rewards))
        on_policy.append(result.metrics["reward/mean"])
    after = _mean_reward(be, g)
    first, last = on_policy[:6], on_policy[-6:]
    print(f"on-policy reward: first 6 steps {sum(first) / 6:.3f}, last 6 steps {sum(last) / 6:.3f}")
    assert sum(last) / 6 > sum(first) / 6 + 0.3, on_policy
    assert before < 0.2, f"untrained model already scores {before:.2f}"
    assert after > 0.6 and after > before + 0.4, (
        f"mean reward {before:.3f} -> {after:.3f} after {MAX_STEPS} steps"
    )
