"""RL algorithms of the trainer: thin, single-path calls into VERL's ``core_algos`` by registered name.

Nothing VERL provides is re-implemented here: advantages come from
``core_algos.get_adv_estimator_fn(name)``, the policy loss from ``core_algos.get_policy_loss_fn(name)``,
reductions from ``core_algos.agg_loss``, the KL estimator from ``core_algos.kl_penalty`` and the
importance weights from ``rollout_corr_helper.compute_rollout_correction_and_rejection_mask``. This
module only builds the config objects those functions expect (``ActorConfig``, ``AlgoConfig``) and
composes the actor loss in the same order as VERL's own ``verl.workers.utils.losses.ppo_loss``.

Shapes: ``B`` rows, ``T`` response tokens (right-padded), all token tensors ``(B, T)``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.trainer.config.algorithm import AlgoConfig, RolloutCorrectionConfig
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_rejection_mask
from verl.workers.config import ActorConfig
from verl.workers.config.actor import PolicyLossConfig

from streamrl.config.trainer import TrainerSettings
from streamrl.errors import ConfigError


def check_algorithm_names(ts: TrainerSettings) -> None:
    """Fail fast if a configured name is not in VERL's registries.

    Raises:
        ConfigError: ``trainer.adv_estimator`` / ``trainer.policy_loss`` is unknown to VERL, with the
            registered names.
    """
    if ts.adv_estimator not in core_algos.ADV_ESTIMATOR_REGISTRY:
        raise ConfigError(
            f"trainer.adv_estimator={ts.adv_estimator!r} is not registered in verl "
            f"(known: {sorted(core_algos.ADV_ESTIMATOR_REGISTRY)})"
        )
    if ts.policy_loss not in core_algos.POLICY_LOSS_REGISTRY:
        raise ConfigError(
            f"trainer.policy_loss={ts.policy_loss!r} is not registered in verl "
            f"(known: {sorted(core_algos.POLICY_LOSS_REGISTRY)})"
        )


def build_algo_config(ts: TrainerSettings) -> AlgoConfig:
    """The ``AlgoConfig`` VERL's advantage estimators read (``norm_adv_by_std_in_grpo``, gamma, lam)."""
    return AlgoConfig(adv_estimator=ts.adv_estimator, norm_adv_by_std_in_grpo=ts.norm_adv_by_std_in_grpo)


def build_actor_config(ts: TrainerSettings, rollout_n: int) -> ActorConfig:
    """The ``ActorConfig`` VERL's policy losses read (clip ratios, loss_agg_mode, policy_loss, KL knobs).

    Args:
        ts: trainer settings.
        rollout_n: rollouts per prompt (GRPO group size); VERL requires it on the config.

    Returns:
        An ``ActorConfig`` with ``strategy="fsdp"`` (unused by the losses), ``global_batch_info`` empty
        (filled per step by :func:`set_global_batch_info`).
    """
    rollout_corr = RolloutCorrectionConfig(
        rollout_is=ts.rollout_is,
        rollout_is_threshold=ts.rollout_is_threshold,
        bypass_mode=ts.policy_loss == "bypass_mode",
        loss_type=ts.bypass_loss_type,
    )
    return ActorConfig(
        strategy="fsdp",
        rollout_n=rollout_n,
        ppo_micro_batch_size_per_gpu=ts.micro_batch_size,
        clip_ratio=ts.clip_ratio,
        clip_ratio_low=ts.clip_ratio_low if ts.clip_ratio_low is not None else ts.clip_ratio,
        clip_ratio_high=ts.clip_ratio_high if ts.clip_ratio_high is not None else ts.clip_ratio,
        clip_ratio_c=ts.clip_ratio_c,
        loss_agg_mode=ts.loss_agg_mode,
        entropy_coeff=ts.entropy_coeff,
        use_kl_loss=ts.use_kl_loss,
        kl_loss_coef=ts.kl_loss_coef,
        kl_loss_type=ts.kl_loss_type,
        use_torch_compile=False,
        policy_loss=PolicyLossConfig(loss_mode=ts.policy_loss, rollout_correction=rollout_corr),
    )


def set_global_batch_info(cfg: ActorConfig, response_mask: torch.Tensor) -> None:
    """Make every micro-batch loss a share of the whole-batch loss (gradient accumulation by summing).

    VERL's ``agg_loss`` divides by ``batch_num_tokens`` (token modes) or ``global_batch_size`` (seq
    modes) when given, exactly as its FSDP engine does for micro-batches of one mini-batch.

    Args:
        cfg: the actor config (mutated: ``global_batch_info``).
        response_mask: ``(B, T)`` mask of the whole batch.
    """
    cfg.global_batch_info["dp_size"] = 1
    cfg.global_batch_info["batch_num_tokens"] = int(response_mask.sum().item())
    cfg.global_batch_info["global_batch_size"] = int((response_mask.sum(-1) > 0).sum().item())
    cfg.global_batch_info["loss_scale_factor"] = cfg.loss_scale_factor


def compute_advantages(data: DataProto, ts: TrainerSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by VERL's registered estimator ``ts.adv_estimator``.

    Args:
        data: needs ``batch["token_level_rewards"]`` and ``batch["response_mask"]`` ``(B, T)`` and
            ``non_tensor_batch["uid"]`` ``(B,)`` (group index).
        ts: trainer settings.

    Returns:
        ``(advantages, returns)``, each ``(B, T)``, zero outside the response mask.
    """
    fn = core_algos.get_adv_estimator_fn(ts.adv_estimator)
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {
        "token_level_rewards": data.batch["token_level_rewards"],
        "response_mask": data.batch["response_mask"],
        "config": build_algo_config(ts),
    }
    if "index" in params:
        kwargs["index"] = data.non_tensor_batch["uid"]
    if "norm_adv_by_std_in_grpo" in params:
        kwargs["norm_adv_by_std_in_grpo"] = ts.norm_adv_by_std_in_grpo
    advantages, returns = fn(**kwargs)
    return advantages, returns


@dataclass
class LossInputs:
    """One micro-batch's tensors for :func:`compute_actor_loss`; token tensors are ``(b, T)``."""

    log_prob: torch.Tensor
    """Log pi_theta(token) with grad."""
    entropy: torch.Tensor
    """Per-token entropy of pi_theta (nats); with grad if ``entropy_coeff > 0``."""
    old_log_prob: torch.Tensor
    """Log pi_old: the policy at the start of this step (no grad)."""
    rollout_log_prob: torch.Tensor
    """Behaviour logprobs recorded by the inference engine."""
    advantages: torch.Tensor
    response_mask: torch.Tensor
    ref_log_prob: torch.Tensor | None = None
    """Reference-model logprobs, required when ``use_kl_loss``."""


def compute_actor_loss(
    inp: LossInputs, cfg: ActorConfig, ts: TrainerSettings
) -> tuple[torch.Tensor, dict[str, float]]:
    """The actor loss of one micro-batch, composed like VERL's ``workers.utils.losses.ppo_loss``.

    loss = policy_loss(old, new, A, mask; IS weights) - entropy_coeff * agg(entropy) + kl_coef * agg(kl(new, ref))

    Importance correction: unless ``policy_loss == "bypass_mode"`` (where VERL uses the behaviour
    logprobs as pi_old and corrects inside the loss), the truncated IS weights
    ``min(pi_old / pi_behaviour, threshold)`` (token or sequence level, VERL decoupled mode) multiply
    the per-token policy loss.

    Args:
        inp: the micro-batch tensors.
        cfg: the actor config with ``global_batch_info`` set for the whole batch.
        ts: trainer settings.

    Returns:
        ``(loss, metrics)``: a scalar loss (this micro-batch's share of the batch loss) and float
        metrics named like VERL's (``actor/pg_loss``, ``actor/pg_clipfrac``, ``actor/ppo_kl``,
        ``actor/entropy``, ``actor/kl_loss``, ``rollout_corr/*``).
    """
    mask = inp.response_mask.bool()
    metrics: dict[str, float] = {}
    rollout_is_weights: torch.Tensor | None = None
    if ts.policy_loss == "bypass_mode":
        old_log_prob = inp.rollout_log_prob
    else:
        old_log_prob = inp.old_log_prob
        if ts.rollout_is is not None:
            with torch.no_grad():
                weights_proto, _, corr_metrics = compute_rollout_correction_and_rejection_mask(
                    old_log_prob=inp.old_log_prob,
                    rollout_log_prob=inp.rollout_log_prob,
                    response_mask=inp.response_mask,
                    rollout_is=ts.rollout_is,
                    rollout_is_threshold=ts.rollout_is_threshold,
                )
            rollout_is_weights = (
                weights_proto.batch["rollout_is_weights"] if weights_proto is not None else None
            )
            metrics.update({k: float(v) for k, v in corr_metrics.items()})
    loss_fn = core_algos.get_policy_loss_fn(ts.policy_loss)
    pg_loss, pg_metrics = loss_fn(
        old_log_prob=old_log_prob,
        log_prob=inp.log_prob,
        advantages=inp.advantages,
        response_mask=mask,
        loss_agg_mode=cfg.loss_agg_mode,
        config=cfg,
        rollout_is_weights=rollout_is_weights,
    )
    metrics.update({k: float(v) for k, v in pg_metrics.items() if _is_number(v)})
    metrics["actor/pg_loss"] = float(pg_loss.detach())
    loss = pg_loss
    entropy_agg = core_algos.agg_loss(
        loss_mat=inp.entropy, loss_mask=mask, loss_agg_mode=cfg.loss_agg_mode, **cfg.global_batch_info
    )
    metrics["actor/entropy"] = float(entropy_agg.detach())
    if cfg.entropy_coeff > 0:
        loss = loss - cfg.entropy_coeff * entropy_agg
    if cfg.use_kl_loss:
        if inp.ref_log_prob is None:
            raise ValueError("use_kl_loss needs ref_log_prob")
        kld = core_algos.kl_penalty(
            logprob=inp.log_prob, ref_logprob=inp.ref_log_prob, kl_penalty=cfg.kl_loss_type
        )
        kl_loss = core_algos.agg_loss(
            loss_mat=kld, loss_mask=mask, loss_agg_mode=cfg.loss_agg_mode, **cfg.global_batch_info
        )
        loss = loss + cfg.kl_loss_coef * kl_loss
        metrics["actor/kl_loss"] = float(kl_loss.detach())
    return loss, metrics


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.floating | np.integer) or (
        isinstance(v, torch.Tensor) and v.numel() == 1
    )
