"""The advantage and loss the trainer uses are VERL's functions on the same inputs (pinned here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights

from streamrl.config.trainer import TrainerSettings
from streamrl.errors import ConfigError
from streamrl.trainer.algorithms import (
    LossInputs,
    build_actor_config,
    check_algorithm_names,
    compute_actor_loss,
    compute_advantages,
    set_global_batch_info,
)


def _data(b: int = 8, t: int = 5, seed: int = 0) -> DataProto:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t)
    mask[1, 3:] = 0
    mask[5, 1:] = 0
    scores = torch.zeros(b, t)
    scores[torch.arange(b), (mask.sum(-1) - 1).long()] = torch.randint(0, 2, (b,), generator=g).float()
    uid = np.array([f"g{i // 4}" for i in range(b)], dtype=object)
    return DataProto.from_dict(
        tensors={"token_level_rewards": scores, "response_mask": mask}, non_tensors={"uid": uid}
    )


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_plus_plus", "opo"])
def test_advantages_are_verls_registered_estimator(name: str) -> None:
    data = _data()
    ts = TrainerSettings(adv_estimator=name)
    adv, ret = compute_advantages(data, ts)
    fn = core_algos.get_adv_estimator_fn(name)
    kwargs = {
        "token_level_rewards": data.batch["token_level_rewards"],
        "response_mask": data.batch["response_mask"],
    }
    if name != "reinforce_plus_plus":
        kwargs["index"] = data.non_tensor_batch["uid"]
    if name == "reinforce_plus_plus":
        from verl.trainer.config.algorithm import AlgoConfig

        kwargs["config"] = AlgoConfig()
    want_adv, want_ret = fn(**kwargs)
    torch.testing.assert_close(adv, want_adv)
    torch.testing.assert_close(ret, want_ret)


def test_grpo_advantage_is_group_normalised_reward() -> None:
    # independent check of the formula A_i = (r_i - mean_g) / (std_g + eps), broadcast over the mask
    data = _data()
    adv, _ = compute_advantages(data, TrainerSettings(adv_estimator="grpo"))
    r = data.batch["token_level_rewards"].sum(-1)
    for g in range(2):
        rg = r[g * 4 : (g + 1) * 4]
        want = (rg - rg.mean()) / (rg.std() + 1e-6)
        got = adv[g * 4 : (g + 1) * 4, 0]
        torch.testing.assert_close(got, want)
    assert torch.all(adv[data.batch["response_mask"] == 0] == 0)


def _loss_inputs(b: int = 6, t: int = 4, offpolicy: float = 0.0) -> LossInputs:
    g = torch.Generator().manual_seed(1)
    log_prob = -torch.rand(b, t, generator=g) - 0.1
    mask = torch.ones(b, t)
    mask[0, 2:] = 0
    return LossInputs(
        log_prob=log_prob.clone().requires_grad_(True),
        entropy=torch.rand(b, t, generator=g),
        old_log_prob=log_prob.clone() + 0.05 * torch.randn(b, t, generator=g),
        rollout_log_prob=log_prob.clone() - offpolicy,
        advantages=torch.randn(b, t, generator=g),
        response_mask=mask,
        ref_log_prob=log_prob.clone() - 0.1,
    )


def test_vanilla_loss_matches_verl_with_truncated_is_weights() -> None:
    ts = TrainerSettings(policy_loss="vanilla", rollout_is="token", rollout_is_threshold=2.0)
    inp = _loss_inputs(offpolicy=0.3)
    cfg = build_actor_config(ts, rollout_n=4)
    set_global_batch_info(cfg, inp.response_mask)
    loss, metrics = compute_actor_loss(inp, cfg, ts)
    weights, _ = compute_rollout_correction_weights(
        log_ratio=inp.old_log_prob - inp.rollout_log_prob,
        response_mask=inp.response_mask,
        rollout_is="token",
        rollout_is_threshold=2.0,
    )
    want, want_m = core_algos.compute_policy_loss_vanilla(
        old_log_prob=inp.old_log_prob,
        log_prob=inp.log_prob,
        advantages=inp.advantages,
        response_mask=inp.response_mask.bool(),
        loss_agg_mode="token-mean",
        config=cfg,
        rollout_is_weights=weights,
    )
    torch.testing.assert_close(loss, want)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(want_m["actor/pg_clipfrac"])
    assert "rollout_corr/rollout_is_mean" in metrics
    assert metrics["rollout_corr/rollout_is_mean"] > 1.0  # behaviour logprobs were lower: weights > 1


def test_kl_and_entropy_terms_use_verl_kl_penalty_and_agg_loss() -> None:
    ts = TrainerSettings(
        rollout_is=None, use_kl_loss=True, kl_loss_coef=0.5, entropy_coeff=0.01, kl_loss_type="low_var_kl"
    )
    inp = _loss_inputs()
    cfg = build_actor_config(ts, rollout_n=4)
    set_global_batch_info(cfg, inp.response_mask)
    loss, metrics = compute_actor_loss(inp, cfg, ts)
    mask = inp.response_mask.bool()
    pg, _ = core_algos.compute_policy_loss_vanilla(
        old_log_prob=inp.old_log_prob,
        log_prob=inp.log_prob,
        advantages=inp.advantages,
        response_mask=mask,
        loss_agg_mode="token-mean",
        config=cfg,
    )
    kl = core_algos.agg_loss(
        core_algos.kl_penalty(inp.log_prob, inp.ref_log_prob, "low_var_kl"),
        mask,
        "token-mean",
        **cfg.global_batch_info,
    )
    ent = core_algos.agg_loss(inp.entropy, mask, "token-mean", **cfg.global_batch_info)
    torch.testing.assert_close(loss, pg - 0.01 * ent + 0.5 * kl)
    assert metrics["actor/kl_loss"] == pytest.approx(float(kl.detach()))


def test_bypass_mode_uses_behaviour_logprobs_as_pi_old() -> None:
    ts = TrainerSettings(policy_loss="bypass_mode", rollout_is="token")
    inp = _loss_inputs(offpolicy=0.4)
    cfg = build_actor_config(ts, rollout_n=4)
    set_global_batch_info(cfg, inp.response_mask)
    loss, _ = compute_actor_loss(inp, cfg, ts)
    want, _ = core_algos.compute_policy_loss_vanilla(
        old_log_prob=inp.rollout_log_prob,
        log_prob=inp.log_prob,
        advantages=inp.advantages,
        response_mask=inp.response_mask.bool(),
        loss_agg_mode="token-mean",
        config=cfg,
    )
    torch.testing.assert_close(loss, want)


def test_micro_batch_losses_sum_to_the_whole_batch_loss() -> None:
    ts = TrainerSettings(rollout_is=None, loss_agg_mode="token-mean")
    inp = _loss_inputs(b=6)
    cfg = build_actor_config(ts, rollout_n=4)
    set_global_batch_info(cfg, inp.response_mask)
    full, _ = compute_actor_loss(inp, cfg, ts)
    parts = []
    for sl in (slice(0, 2), slice(2, 6)):
        sub = LossInputs(**{k: (v[sl] if isinstance(v, torch.Tensor) else v) for k, v in vars(inp).items()})
        parts.append(compute_actor_loss(sub, cfg, ts)[0])
    torch.testing.assert_close(parts[0] + parts[1], full)


def test_unknown_names_are_rejected_with_the_registry() -> None:
    with pytest.raises(ValueError, match="'gae' is not usable from batches"):
        TrainerSettings(adv_estimator="gae")
    ts = TrainerSettings(policy_loss="nope")
    with pytest.raises(
        ConfigError, match=r"trainer.policy_loss='nope' is not registered in verl \(known: .*vanilla"
    ):
        check_algorithm_names(ts)
