"""RL knobs shared by several stages (sampler, streams, trainer)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamrl.config.base import Section


class RLSettings(Section):
    """The shape of on-policy work, read by the sampler, streams and the trainer alike."""

    policy_name: str = "policy"
    """Name of the trained policy; the key of its ``checkpoints`` records."""
    group_size: int = Field(8, ge=1)
    """Rollouts per task per epoch (a GRPO group)."""
    train_batch_size: int = Field(4, ge=1)
    """Groups per training batch (one trainer step, i.e. one policy version, per batch)."""
    max_staleness: int = Field(1, ge=0)
    """Policy versions a trained row may lag behind the trainer (staleness = trainer version - the
    row's policy version); 0 = fully on-policy. The sampler admits at most ``(max_staleness + 1) x
    train_batch_size x group_size`` train samples ahead of the trainer; rows staler than this are
    handled by ``staleness_policy``."""
    staleness_policy: Literal["drop", "weight"] = "drop"  # one function each in streamrl.trainer.staleness
    """What the trainer (the only stage that knows the true version) does with a row staler than
    ``max_staleness``: ``drop`` it, or ``weight`` it: keep it with its advantage scaled by
    ``stale_weight_decay ** (staleness - max_staleness)``."""
    stale_weight_decay: float = Field(0.5, gt=0, le=1)
    """With ``staleness_policy: weight``: the per-version decay of a stale row's weight (1 keeps
    stale rows at full weight)."""
    seed: int = 0
    """Seed for shuffling and sampling."""
