"""RL knobs shared by several stages (sampler, streams, trainer)."""

from __future__ import annotations

from pydantic import Field

from streamrl.config.base import Section


class RLSettings(Section):
    """The shape of on-policy work, read by the sampler, streams and the trainer alike."""

    policy_name: str = "policy"
    """Name of the trained policy; the key of its ``checkpoints`` records."""
    group_size: int = Field(8, ge=1)
    """Rollouts per task per epoch (a GRPO group)."""
    train_batch_size: int = Field(4, ge=1)
    """Groups per training batch (one trainer step per batch)."""
    max_staleness: int = Field(1, ge=0)
    """Policy versions a trained sample may lag behind the trainer; 0 = fully on-policy."""
    seed: int = 0
    """Seed for shuffling and sampling."""
