"""Config section of the trainer stage (``trainer:`` in ``streamrl.yaml``).

The algorithm names are VERL registry names (``verl.trainer.ppo.core_algos``); they are checked
against the registry when the trainer starts, not here, so that this module imports no torch/verl.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from streamrl.config.base import Section

#: Advantage estimators of VERL that need only outcome rewards, the response mask and the group index
#: (no critic values, no extra baseline rollouts): the ones a batch from ``batches`` can feed.
OUTCOME_ADV_ESTIMATORS: tuple[str, ...] = (
    "grpo",
    "grpo_vectorized",
    "grpo_passk",
    "rloo",
    "rloo_vectorized",
    "reinforce_plus_plus",
    "reinforce_plus_plus_baseline",
    "opo",
    "gpg",
)

#: VERL's other estimators: known names that a batch cannot feed (critic values, baseline rollouts).
NON_OUTCOME_ADV_ESTIMATORS: tuple[str, ...] = (
    "gae",
    "remax",
    "gdpo",
    "optimal_token_baseline",
    "tir_optimal_token_baseline",
)


class LoRASettings(Section):
    """Low-rank adaptation (peft) of the policy; the checkpoint then holds the adapter alone."""

    rank: int = Field(8, ge=1)
    """LoRA rank r."""
    alpha: float = Field(16.0, gt=0)
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA branch."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names (peft ``target_modules``) that get adapters."""


class VerlBackendSettings(Section):
    """The ``verl`` backend: VERL's FSDP training engine driven through a Ray worker group (GPUs)."""

    n_gpus: int = Field(1, ge=1)
    """Data-parallel ranks (one GPU each) of the actor worker group."""
    strategy: Literal["fsdp", "fsdp2"] = "fsdp2"
    """VERL engine backend name."""
    param_offload: bool = False
    """Offload parameters to CPU between steps (FSDP)."""
    optimizer_offload: bool = False
    """Offload optimizer state to CPU between steps (FSDP)."""
    gradient_checkpointing: bool = True
    """Activation checkpointing in the actor."""
    ray_address: str | None = None
    """Ray cluster to join; None starts a local Ray instance in this process."""


class TrainerSettings(Section):
    """How the trainer consumes ``batches``, updates the policy and writes checkpoints."""

    backend: Literal["torch", "verl"] = "torch"
    """``torch``: one-process Hugging Face model (CPU or one GPU); ``verl``: VERL's FSDP engine on Ray (GPUs)."""
    model_path: Path | None = None
    """Hugging Face model directory of the initial policy (config.json + safetensors). Required to run."""
    checkpoint_dir: Path = Path("runs/checkpoints")
    """Checkpoints go to ``<checkpoint_dir>/<policy_name>/step-<NNNNNNNN>/``."""
    save_every: int = Field(10, ge=1)
    """Write a checkpoint (and publish a CheckpointEvent) every this many trainer steps."""
    keep_last: int = Field(3, ge=1)
    """Complete checkpoints kept on disk; older ones are deleted after a newer one is published."""
    save_on_exit: bool = True
    """Write a checkpoint on a graceful stop (SIGTERM/SIGINT, ``max_steps``) if steps were trained since the last."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this trainer version (step) is reached; None runs until stopped."""
    device: str = "cpu"
    """Torch device of the ``torch`` backend: ``cpu``, ``cuda``, ``cuda:1`` or ``auto`` (cuda if available)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Parameter dtype of the ``torch`` backend."""
    torch_threads: int | None = Field(None, ge=1)
    """``torch.set_num_threads`` for the ``torch`` backend on CPU; None keeps torch's default."""
    lora: LoRASettings | None = None
    """Train a LoRA adapter instead of all weights; None = full fine-tuning."""

    # --- algorithm (VERL registry names) ---
    adv_estimator: str = "grpo"
    """VERL advantage estimator (``core_algos.get_adv_estimator_fn``); one of the outcome estimators."""
    norm_adv_by_std_in_grpo: bool = True
    """GRPO: divide by the group std (False = Dr.GRPO, https://arxiv.org/abs/2503.20783)."""
    policy_loss: str = "vanilla"
    """VERL policy loss (``core_algos.get_policy_loss_fn``): vanilla (PPO-clip), gspo, cispo, bypass_mode, ..."""
    loss_agg_mode: Literal[
        "token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"
    ] = "token-mean"
    """How VERL's ``agg_loss`` reduces the token loss matrix to a scalar (over the whole batch)."""
    clip_ratio: float = Field(0.2, gt=0)
    """PPO clip epsilon (https://arxiv.org/abs/1707.06347)."""
    clip_ratio_low: float | None = Field(None, gt=0)
    """Lower clip epsilon; None = ``clip_ratio``."""
    clip_ratio_high: float | None = Field(None, gt=0)
    """Upper clip epsilon (DAPO clip-higher); None = ``clip_ratio``."""
    clip_ratio_c: float = Field(3.0, gt=1)
    """Dual-clip lower bound of the ratio for negative advantages (https://arxiv.org/abs/1912.09729)."""
    entropy_coeff: float = Field(0.0, ge=0)
    """Weight of the entropy bonus in the loss (entropy is always measured)."""
    use_kl_loss: bool = False
    """Add a KL(policy || reference) loss; the reference is the initial model (or the LoRA base)."""
    kl_loss_coef: float = Field(0.001, ge=0)
    """Weight of the KL loss."""
    kl_loss_type: str = "low_var_kl"
    """VERL ``kl_penalty`` estimator: kl/k1, abs, mse/k2, low_var_kl/k3 (optionally with '+')."""
    rollout_is: Literal["token", "sequence"] | None = "token"
    """Importance correction of the behaviour (rollout) logprobs: truncated IS weights
    pi_theta / pi_behaviour at this level (VERL ``compute_rollout_correction_weights``); None disables."""
    rollout_is_threshold: float = Field(2.0, gt=0)
    """Upper bound of the truncated IS weight (TIS)."""
    bypass_loss_type: Literal["ppo_clip", "reinforce"] = "ppo_clip"
    """With ``policy_loss: bypass_mode``: old logprobs = behaviour logprobs, and this inner loss."""

    # --- optimisation ---
    lr: float = Field(1e-6, gt=0)
    """AdamW peak learning rate."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warmup (transformers ``get_scheduler``)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warmup steps."""
    total_steps: int | None = Field(None, ge=1)
    """Horizon of the linear/cosine decay; defaults to ``max_steps``."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping by global L2 norm."""
    micro_batch_size: int = Field(8, ge=1)
    """Rows per forward/backward; a mini-batch is one optimizer step with gradient accumulation over micro-batches."""
    ppo_mini_batches: int = Field(1, ge=1)
    """Optimizer steps per pass over a batch: its rows split into this many mini-batches (VERL's
    ppo_mini_batch_size = rows / this). torch backend only."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each batch (VERL's ppo_epochs): ppo_epochs x ppo_mini_batches optimizer steps per
    batch, all against pi_old = the policy before the batch (the clipped ratio bounds how far they
    go); the LR schedule steps once per batch. torch backend only."""

    # --- service ---
    poll_timeout_s: float = Field(1.0, gt=0)
    """Consumer poll timeout."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Prometheus HTTP port; None/0 = off."""
    dedupe_window: int = Field(100_000, ge=1)
    """How many recent trained batch ids are remembered (in the checkpoint) to skip re-delivered batches."""
    verl: VerlBackendSettings = Field(default_factory=VerlBackendSettings)
    """Settings of the ``verl`` backend."""

    @field_validator("adv_estimator")
    @classmethod
    def _known_estimator(cls, name: str) -> str:
        if name in NON_OUTCOME_ADV_ESTIMATORS:
            raise ValueError(
                f"{name!r} is not usable from batches (it needs critic values or extra baseline "
                f"rollouts); choose one of {list(OUTCOME_ADV_ESTIMATORS)}"
            )
        if name not in OUTCOME_ADV_ESTIMATORS:
            close = difflib.get_close_matches(name, OUTCOME_ADV_ESTIMATORS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown estimator {name!r}{hint}; known: {list(OUTCOME_ADV_ESTIMATORS)}")
        return name

    @model_validator(mode="after")
    def _check(self) -> TrainerSettings:
        if self.backend == "verl" and (self.ppo_epochs > 1 or self.ppo_mini_batches > 1):
            raise ValueError(
                "ppo_epochs and ppo_mini_batches > 1 are implemented by the torch backend only "
                "(the verl backend takes one optimizer step per batch)"
            )
        if self.lr_schedule != "constant" and self.total_steps is None and self.max_steps is None:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} decays over a horizon: set trainer.total_steps or trainer.max_steps"
            )
        return self
