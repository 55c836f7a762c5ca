"""The torch backend's step: weights move, micro-batching is exact, NaN leaves weights untouched, state round-trips."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from streamrl.config.trainer import LoRASettings, TrainerSettings
from streamrl.trainer.batch import prepare_batch
from streamrl.trainer.checkpoint import LEGACY_STATE_FILE, STATE_FILE
from streamrl.trainer.errors import NonFiniteLossError
from streamrl.trainer.torch_backend import TorchBackend
from tests.support.toy_policy import make_batch, sample


def _backend(model_dir: Path, **kw: object) -> TorchBackend:
    ts = TrainerSettings(model_path=model_dir, lr=1e-3, **kw)  # type: ignore[arg-type]
    return TorchBackend(ts, rollout_n=4, seed=0)


def _data(be: TorchBackend, seed: int = 0, n: int = 16, t: int = 3):
    g = torch.Generator().manual_seed(seed)
    prompts = [[1, 3 + (i // 4) % 8, 5] for i in range(n)]
    resp, lp = sample(be.model, prompts, t, g)
    rewards = [float(r[0] % 2) for r in resp]
    batch = make_batch(f"b{seed}", "policy", prompts, resp, lp, rewards, group_size=4)
    return prepare_batch(batch, serde=None, trainer_version=0, max_staleness=None, vocab_size=be.vocab_size)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_old_logprobs_are_those_of_the_temperature_the_rows_were_sampled_at(
    tiny_model_dir: Path, temperature: float
) -> None:
    """Rows sampled at T carry the logprobs of softmax(logits / T) (the inference server's ``scaled``
    mode): the trainer's pi_old must be the same distribution, so the first importance ratio is 1."""
    be = _backend(tiny_model_dir, micro_batch_size=64)
    g = torch.Generator().manual_seed(3)
    prompts = [[1, 3 + i % 8, 5] for i in range(8)]
    resp, lp = sample(be.model, prompts, 4, g, temperature=temperature)
    batch = make_batch(
        "bt", "policy", prompts, resp, lp, [0.0, 1.0] * 4, group_size=4, temperature=temperature
    )
    data = prepare_batch(batch, serde=None, trainer_version=0, max_staleness=None, vocab_size=be.vocab_size)
    data.batch["advantages"] = torch.zeros_like(data.batch["response_mask"])
    (mb,) = be._micro_batches(data)
    torch.testing.assert_close(be._old_logprobs(mb), torch.tensor(lp), rtol=1e-4, atol=1e-4)
    if temperature != 1.0:  # the same rows read at temperature 1 are another distribution
        mb["temperature"] = torch.ones_like(mb["temperature"])
        assert not torch.allclose(be._old_logprobs(mb), torch.tensor(lp), atol=1e-2)


def _params(be: TorchBackend) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in be.model.state_dict().items()}


def test_step_changes_weights_and_reports_metrics(tiny_model_dir: Path) -> None:
    be = _backend(tiny_model_dir)
    before = _params(be)
    r = be.train_step(_data(be))
    after = _params(be)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for key in (
        "actor/loss",
        "actor/pg_clipfrac",
        "actor/ppo_kl",
        "actor/entropy",
        "actor/grad_norm",
        "reward/mean",
    ):
        assert key in r.metrics and math.isfinite(r.metrics[key]), (key, r.metrics.get(key))
    assert r.metrics["actor/grad_norm"] > 0 and r.metrics["actor/entropy"] > 0
    assert r.num_tokens == 16 * 6 and r.step_time_s > 0


def test_micro_batches_give_the_same_update_as_one_batch(tiny_model_dir: Path) -> None:
    a = _backend(tiny_model_dir, micro_batch_size=16)
    b = _backend(tiny_model_dir, micro_batch_size=3)
    data = _data(a)
    a.train_step(data)
    b.train_step(_data(b))  # same seed, same weights -> same samples
    pa, pb = _params(a), _params(b)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-6)


def test_nan_loss_skips_the_step_without_touching_weights_or_optimizer(tiny_model_dir: Path) -> None:
    be = _backend(tiny_model_dir)
    be.train_step(_data(be, seed=1))  # give the optimizer some state
    opt_before = {k: v.clone() for k, v in be.optimizer.state[next(iter(be.optimizer.state))].items()}
    data = _data(be, seed=2)
    with torch.no_grad():
        be.model.get_input_embeddings().weight[1, :] = float("nan")  # token 1 starts every prompt
    poisoned = _params(be)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* step skipped, weights unchanged"):
        be.train_step(data)
    after = _params(be)
    for k in poisoned:
        torch.testing.assert_close(after[k], poisoned[k], equal_nan=True)
    opt_after = be.optimizer.state[next(iter(be.optimizer.state))]
    for k, v in opt_before.items():
        torch.testing.assert_close(opt_after[k], v)
    assert all(p.grad is None for p in be.model.parameters())


def test_state_round_trip_restores_weights_optimizer_and_rng(tiny_model_dir: Path, tmp_path: Path) -> None:
    be = _backend(tiny_model_dir)
    be.train_step(_data(be, seed=3))
    ckpt = tmp_path / "ckpt"
    (ckpt / "model").mkdir(parents=True)
    be.save_model(ckpt / "model")
    be.save_state(ckpt / STATE_FILE, {"version": 1})
    rng_next = torch.rand(3)
    want = _params(be)
    # continue training from the saved point in a fresh backend and in the original; they must agree
    be.train_step(_data(be, seed=4))
    after_original = _params(be)
    fresh = _backend(tiny_model_dir)
    extra = fresh.load(ckpt)
    assert extra == {"version": 1}
    torch.testing.assert_close(torch.rand(3), rng_next)
    for k, v in _params(fresh).items():
        torch.testing.assert_close(v, want[k])
    fresh.train_step(_data(fresh, seed=4))
    for k, v in _params(fresh).items():
        torch.testing.assert_close(v, after_original[k], rtol=1e-5, atol=1e-7)


def test_state_file_is_not_pickle_and_the_old_pickle_state_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The state is safetensors (a JSON header, raw tensors): a pickle payload in its place is refused
    without being run, and a checkpoint holding only the old ``trainer_state.pt`` is refused by name."""
    import pickle

    from streamrl.errors import CheckpointError

    be = _backend(tiny_model_dir)
    ckpt = tmp_path / "ckpt"
    (ckpt / "model").mkdir(parents=True)
    be.save_model(ckpt / "model")
    be.save_state(ckpt / STATE_FILE, {"version": 1, "offsets": {0: 5}})
    assert not (ckpt / STATE_FILE).read_bytes().startswith(b"\x80")  # no pickle protocol header
    assert be.load(ckpt) == {"version": 1, "offsets": {0: 5}}

    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.write_text, ("pwned",))

    (ckpt / STATE_FILE).write_bytes(pickle.dumps({"extra": Exploit()}))
    with pytest.raises(CheckpointError, match="cannot load") as err:
        be.load(ckpt)
    assert err.value.reason == "load" and not marker.exists()

    (ckpt / STATE_FILE).unlink()
    (ckpt / LEGACY_STATE_FILE).write_bytes(pickle.dumps({"extra": Exploit()}))
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt .*pickle.*no longer loads"):
        be.load(ckpt)
    assert not marker.exists()


def test_lora_trains_and_saves_the_adapter_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    be = _backend(
        tiny_model_dir, lora=LoRASettings(rank=4, target_modules=["q_proj", "v_proj"]), use_kl_loss=True
    )
    assert be.kind == "lora" and be.ref_model is None
    base_before = {k: v.clone() for k, v in be.model.state_dict().items() if "lora_" not in k}
    r = be.train_step(_data(be))
    assert "actor/kl_loss" in r.metrics
    for k, v in be.model.state_dict().items():
        if "lora_" not in k:
            torch.testing.assert_close(v, base_before[k])
    be.save_model(tmp_path / "adapter")
    names = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names
    assert "model.safetensors" not in names


def _mixed_rows_batch(be: TorchBackend, shared: bool):
    """Groups of 4 rows: prompts of different lengths (left padding), responses of 1-3 tokens (right
    padding); ``shared``: the rows of a group have one prompt, else every row has its own."""
    from streamrl.schemas import TrainingBatch, TrainingRow

    g = torch.Generator().manual_seed(7)
    rows = []
    for i in range(12):
        group = i // 4
        plen = 2 + group * 2
        base = i if not shared else group
        prompt = [1, *[3 + (base + j) % 11 for j in range(plen - 1)]]
        n = 1 + i % 3
        resp = torch.randint(3, 16, (n,), generator=g).tolist()
        rows.append(
            TrainingRow(
                rollout_id=f"r{i}",
                group_id=f"g{group}",
                prompt_ids=prompt,
                response_ids=resp,
                response_mask=[1] * n,
                behaviour_logprobs=[-1.5] * n,
                token_rewards=[0.0] * (n - 1) + [float(i % 2)],
                reward=float(i % 2),
                policy_version=0,
            )
        )
    batch = TrainingBatch(
        batch_id="mixed", policy_name="p", num_groups=3, rows=rows, min_policy_version=0, max_policy_version=0
    )
    return prepare_batch(batch, serde=None, trainer_version=0, max_staleness=None)


def _reference_logprobs(model: torch.nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    """One full forward over every row's prompt + response: what the shared pass must equal."""
    from verl.utils.torch_functional import logprobs_from_logits

    p, t = mb["prompts"].shape[1], mb["responses"].shape[1]
    out = model(
        input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], position_ids=mb["position_ids"]
    )
    return logprobs_from_logits(out.logits[:, p - 1 : p - 1 + t, :].float(), mb["responses"])


@pytest.mark.parametrize("shared", [True, False])
def test_shared_prompt_pass_gives_the_logprobs_and_gradients_of_full_passes(
    tiny_model_dir: Path, shared: bool
) -> None:
    be = _backend(tiny_model_dir, micro_batch_size=64)
    data = _mixed_rows_batch(be, shared)
    data.batch["advantages"] = torch.zeros_like(data.batch["response_mask"])
    (mb,) = be._micro_batches(data)
    assert len(torch.unique(mb["prompts"], dim=0)) == (3 if shared else 12)
    mask = mb["response_mask"]
    got, _ = be._forward_logprobs(be.model, mb, False, False)
    (got * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in be.model.named_parameters()}
    be.model.zero_grad(set_to_none=True)
    want = _reference_logprobs(be.model, mb)
    (want * mask).sum().backward()
    torch.testing.assert_close(got * mask, want * mask, rtol=1e-5, atol=1e-5)
    for n, p in be.model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6)


def _rewarded_logprob(be: TorchBackend, data) -> float:
    """Mean log-probability of the responses with reward 1 under the backend's current weights."""
    if "advantages" not in data.batch.keys():  # train_step sets them; the micro-batches carry them
        data.batch["advantages"] = torch.zeros_like(data.batch["response_mask"], dtype=torch.float32)
    (mb,) = be._micro_batches(data)
    with torch.no_grad():
        lp, _ = be._forward_logprobs(be.model, mb, False, False)
    rewarded = data.batch["token_level_scores"].sum(-1) > 0
    return float(lp[rewarded].mean())


def test_several_optimizer_steps_per_batch_go_further_than_one(tiny_model_dir: Path) -> None:
    one = _backend(tiny_model_dir, micro_batch_size=64)
    four = _backend(tiny_model_dir, micro_batch_size=64, ppo_mini_batches=2, ppo_epochs=2)
    data_one, data_four = _data(one), _data(four)  # same weights and seed: same samples
    start = _rewarded_logprob(one, data_one)
    r1 = one.train_step(data_one)
    r4 = four.train_step(data_four)
    assert r1.metrics["actor/updates"] == 1.0 and r4.metrics["actor/updates"] == 4.0
    assert int(four.optimizer.state[next(iter(four.optimizer.state))]["step"]) == 4
    assert four.scheduler.last_epoch == one.scheduler.last_epoch == 1  # the schedule steps per batch
    gain_one = _rewarded_logprob(one, data_one) - start
    gain_four = _rewarded_logprob(four, data_four) - start
    assert gain_one > 0 and gain_four > 1.5 * gain_one, (gain_one, gain_four)


def test_a_non_finite_loss_in_a_later_step_restores_the_weights_and_optimizer_of_the_start(
    tiny_model_dir: Path,
) -> None:
    be = _backend(tiny_model_dir, micro_batch_size=4, ppo_mini_batches=2)
    be.train_step(_data(be, seed=1))  # optimizer state to restore
    data = _data(be, seed=2)
    data.batch["row_weights"][8:] = float("nan")  # the second mini-batch's loss is NaN, the first's is not
    before = _params(be)
    opt_before = {k: v.clone() for k, v in be.optimizer.state[next(iter(be.optimizer.state))].items()}
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        be.train_step(data)
    for k, v in _params(be).items():
        torch.testing.assert_close(v, before[k])
    opt_after = be.optimizer.state[next(iter(be.optimizer.state))]
    for k, v in opt_before.items():
        torch.testing.assert_close(opt_after[k], v)
    assert be.scheduler.last_epoch == 1
