"""The embedded defaults of ``streamrl demo`` (``make demo``): the learnable CPU demo.

Task: the largest digit of a 4-digit string (``examples/max_digit``), one-token answers, reward 1
for the right digit (0.1 for another digit while training), greedy strict validation on 104 held-out
prompts balanced over the 8 possible answers (2..9). Policy: the ~0.3M-parameter 2-layer
character-level model (``tiny`` preset, ``char`` tokenizer) built locally. GRPO with 8 rollouts per
prompt, 16 prompts per batch; per batch 4 PPO epochs over 4 mini-batches (16 AdamW steps against
the batch's pi_old, PPO's clipped ratio bounding how far they go) at lr 3e-4, with an entropy bonus
of 0.1: the trainer's steps cost ~7 % of the CPU of the rollouts that feed them with one epoch, so
more optimizer steps per batch are cheap, and the entropy bonus keeps the policy from settling on a
wrong digit for some answer (a group of 8 equal answers has no advantage to learn from). In
``bench/learning.py`` (the same GRPO in one process, sampling one version behind, val every 10)
this reached val 0.9 at versions 50 / 50 / 60 for seeds 0 / 1 / 2 (lr 5e-4, val every 5: 75 / 50 / 40, with
drops on the way), where one epoch without the entropy bonus plateaued at 0.50-0.88 (see the
README's demo section). The run ends when validation first
reaches 0.9 (``dev.stop_at_val_target``) or at version 200.
``configs/demo.yaml`` is the same config as a file (a test keeps them equal).
"""

from __future__ import annotations

import copy
from typing import Any

DEMO_MAX_STEPS = 200
"""Policy versions trained by the demo."""

_DEMO: dict[str, Any] = {
    "rl": {"group_size": 8, "train_batch_size": 16, "max_staleness": 1, "seed": 0},
    "dev": {
        "model": {"path": "models/tiny-char", "preset": "tiny", "tokenizer": "char", "seed": 0},
        "datasets": [
            {"path": "examples/max_digit/data/train.jsonl", "split": "train", "id_field": "id"},
            {"path": "examples/max_digit/data/val.jsonl", "split": "val", "id_field": "id"},
        ],
        "workers": 1,
        "max_steps": DEMO_MAX_STEPS,
        "final_val_timeout_s": 60.0,
        "val_target": 0.9,  # summary.json and the last line report when val first reached it
        "stop_at_val_target": True,  # and the run ends there (else at max_steps)
        "timeout_s": 3600.0,  # a safety net only: a run that reaches it exits 3
        "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
    },
    "sampler": {"val_every": 10, "val_at_start": True, "val_samples_per_task": 1},
    "worker": {
        "agent": "examples.max_digit.agent:solve",
        "concurrency": 128,
        "sampling": {"temperature": 1.0, "max_tokens": 1},
        "rollout_timeout_s": 60.0,
    },
    "inference": {"torch_threads": 1, "max_batch_size": 128, "max_batch_wait_ms": 5.0},
    # Full batches of 16 groups: zero-variance groups are kept (their advantage is 0). Filtering them
    # with the sampler's admission bound of (max_staleness + 1) batches left batches partial (timeouts),
    # so the trainer stepped on 1-3 groups and in-flight rows went stale: slower, noisier learning.
    "streams": {"filter_zero_variance": False, "batch_timeout_s": 120.0, "straggler_timeout_s": 120.0},
    "trainer": {
        "lr": 3.0e-4,
        "ppo_mini_batches": 4,
        "ppo_epochs": 4,
        "entropy_coeff": 0.1,
        "save_every": 1,
        "keep_last": 3,
        "max_steps": DEMO_MAX_STEPS,
        "torch_threads": 1,
        "micro_batch_size": 128,
    },
}


def demo_overrides() -> dict[str, Any]:
    """A fresh copy of the demo's config sections (safe to modify)."""
    return copy.deepcopy(_DEMO)
