"""The ``torch`` backend: one Hugging Face causal LM in this process (CPU or one GPU), optionally LoRA.

One call of :meth:`TorchBackend.train_step` trains one batch: advantages from VERL's registered
estimator, then ``ppo_epochs`` passes over ``ppo_mini_batches`` mini-batches, one optimizer step each
(1 x 1 by default), with micro-batches and gradient accumulation inside a mini-batch (each micro-batch
loss is its share of the mini-batch loss, VERL ``agg_loss`` with global batch info), gradient
clipping, AdamW, and one step of the warmup/decay schedule per batch.

pi_old: with one optimizer step per batch, every micro-batch forward runs on the weights of the step's
start, which are exactly the weights VERL's separate ``compute_log_prob`` pass would score; so
pi_old = ``log_prob.detach()`` of the training forward (identical values for models without active
dropout, as causal LMs are configured for RL). Skipping that extra forward pass is why a step costs
about one forward+backward. With more than one optimizer step per batch, pi_old is scored once
before the first (a no-grad forward per micro-batch) and every step's ratio is taken against it.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, get_scheduler
from verl import DataProto
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

from streamrl.config.trainer import TrainerSettings
from streamrl.errors import CheckpointError
from streamrl.trainer.algorithms import (
    LossInputs,
    build_actor_config,
    check_algorithm_names,
    compute_actor_loss,
    compute_advantages,
    set_global_batch_info,
)
from streamrl.trainer.errors import NonFiniteLossError
from streamrl.trainer.state_file import (
    LEGACY_STATE_FILE,
    STATE_FILE,
    legacy_state_error,
    load_state_file,
    save_state_file,
)

log = logging.getLogger(__name__)

#: Metrics that are shares of the batch value (summed over micro-batches); the rest are token-weighted means.
SUMMED_METRICS = frozenset({"actor/pg_loss", "actor/entropy", "actor/kl_loss", "actor/loss"})


@dataclass
class StepResult:
    """What one trainer step measured (units in the names)."""

    metrics: dict[str, float] = field(default_factory=dict)
    """``actor/loss``, ``actor/pg_loss``, ``actor/pg_clipfrac``, ``actor/ppo_kl``, ``actor/entropy``,
    ``actor/kl_loss``, ``actor/grad_norm``, ``actor/lr``, ``reward/mean``, ``rollout_corr/*``, ..."""
    num_tokens: int = 0
    """Real (non-padding) prompt+response tokens processed."""
    num_rows: int = 0
    step_time_s: float = 0.0


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchBackend:
    """Policy, optional reference model, optimizer and schedule of the ``torch`` backend.

    Args:
        ts: trainer settings (``model_path`` required).
        rollout_n: group size (VERL's ``ActorConfig.rollout_n``).
        seed: RNG seed (torch, numpy, random).

    Raises:
        ConfigError: unknown VERL algorithm names.
        CheckpointError: ``model_path`` is missing or not a Hugging Face model directory.
    """

    def __init__(self, ts: TrainerSettings, rollout_n: int, seed: int = 0) -> None:
        check_algorithm_names(ts)
        if ts.model_path is None:
            raise CheckpointError("trainer.model_path is not set: point it at a Hugging Face model directory")
        if not (Path(ts.model_path) / "config.json").is_file():
            raise CheckpointError(
                f"trainer.model_path={ts.model_path}: no config.json (not a Hugging Face model dir)"
            )
        self.ts = ts
        self.base_model_path = Path(ts.model_path)
        self.device = resolve_device(ts.device)
        self.dtype = torch.bfloat16 if ts.dtype == "bfloat16" else torch.float32
        if ts.torch_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(ts.torch_threads)
        self._seed_all(seed)
        self.actor_cfg = build_actor_config(ts, rollout_n)
        self.model = self._load_policy()
        self.ref_model: PreTrainedModel | None = None
        if ts.use_kl_loss and ts.lora is None:
            self.ref_model = self._load_base().eval().requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=ts.lr, betas=ts.betas, eps=ts.eps, weight_decay=ts.weight_decay
        )
        horizon = ts.total_steps or ts.max_steps or 1
        self.scheduler = get_scheduler(
            ts.lr_schedule, self.optimizer, num_warmup_steps=ts.warmup_steps, num_training_steps=horizon
        )
        cfg = AutoConfig.from_pretrained(self.base_model_path)
        self.vocab_size: int = int(cfg.vocab_size)
        self.max_positions: int | None = getattr(cfg, "max_position_embeddings", None)
        self.pad_token_id: int = (
            int(cfg.pad_token_id) if getattr(cfg, "pad_token_id", None) is not None else 0
        )

    # ------------------------------------------------------------------ model loading
    def _load_base(self) -> PreTrainedModel:
        model = AutoModelForCausalLM.from_pretrained(
            self.base_model_path, dtype=self.dtype, use_safetensors=True
        )
        return model.to(self.device)

    def _load_policy(self) -> PreTrainedModel:
        model = self._load_base()
        if self.ts.lora is not None:
            from peft import LoraConfig, get_peft_model

            lc = self.ts.lora
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lc.rank,
                    lora_alpha=lc.alpha,
                    lora_dropout=lc.dropout,
                    target_modules=lc.target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
        return model

    @property
    def kind(self) -> str:
        """Checkpoint kind: ``lora`` (adapter only) or ``full``."""
        return "lora" if self.ts.lora is not None else "full"

    # ------------------------------------------------------------------ the step
    def _forward_logprobs(
        self, model: torch.nn.Module, mb: dict[str, torch.Tensor], with_entropy: bool, entropy_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log pi(response token) ``(b, T)`` and entropy ``(b, T)`` of a trimmed micro-batch, of the
        policy at each row's ``temperature`` (``log_softmax(logits / T)``, as the behaviour logprobs)."""
        logits = self._response_logits(model, mb)  # (b, T, V)
        temperature = mb["temperature"]  # (b,)
        if bool((temperature != 1.0).any()):
            logits = logits / temperature[:, None, None]
        log_prob = logprobs_from_logits(logits, mb["responses"])
        entropy = None
        if with_entropy:
            if entropy_grad:
                entropy = entropy_from_logits(logits)
            else:
                with torch.no_grad():
                    entropy = entropy_from_logits(logits.detach())
        return log_prob, entropy

    def _response_logits(self, model: torch.nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
        """Float logits ``(b, T, V)``; position i predicts response token i.

        Rows with the same prompt (a GRPO group's rollouts) share one prompt pass: the ``U`` distinct
        prompts ``(U, P)`` run once with the KV cache, the cache rows are copied to the ``b`` rows,
        and only the responses ``(b, T-1)`` run per row (the last prompt position already predicts
        response token 0). The gradient flows through the shared pass to every row that uses it, so
        loss and gradients are those of ``b`` full passes (up to float rounding), at ``U/b`` of the
        prompt cost. With no prompt shared it is one plain pass over ``(b, P+T)``. Either way the LM
        head runs only on the positions that predict response tokens (``logits_to_keep``).
        """
        p = mb["prompts"].shape[1]
        t = mb["responses"].shape[1]
        prompt_attn = mb["attention_mask"][:, :p]
        uniq, row_of = torch.unique(
            torch.cat([mb["prompts"], prompt_attn], dim=1), dim=0, return_inverse=True
        )
        if uniq.shape[0] == mb["prompts"].shape[0]:  # nothing shared: one pass over prompt + response
            out = model(
                input_ids=mb["input_ids"],
                attention_mask=mb["attention_mask"],
                position_ids=mb["position_ids"],
                logits_to_keep=t + 1,
            )
            return out.logits[:, :t, :].float()  # the last t+1 positions are p-1 .. p+t-1
        from transformers import DynamicCache

        u_ids, u_attn = uniq[:, :p], uniq[:, p:]
        u_pos = (u_attn.cumsum(-1) - 1).clamp(min=0)  # (U, P)
        cache = DynamicCache(config=model.config)
        out = model(
            input_ids=u_ids,
            attention_mask=u_attn,
            position_ids=u_pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        first = out.logits[:, -1, :].float()[row_of].unsqueeze(1)  # (b, 1, V): predicts response token 0
        if t == 1:
            return first
        cache.batch_select_indices(row_of)  # (U, ...) -> (b, ...), differentiable indexing
        resp_attn = mb["attention_mask"][:, p : p + t - 1]
        pos = u_pos[row_of][:, -1:] + 1 + torch.arange(t - 1, device=u_pos.device)  # (b, T-1)
        out = model(
            input_ids=mb["responses"][:, : t - 1],
            attention_mask=torch.cat([u_attn[row_of], resp_attn], dim=1),
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        )
        return torch.cat([first, out.logits.float()], dim=1)

    def _micro_batches(
        self, data: DataProto, start: int = 0, end: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Split rows ``[start, end)`` into micro-batches and trim each to its own longest prompt/response."""
        tensors = data.batch
        n = len(data) if end is None else end
        mbs = []
        for first in range(start, n, self.ts.micro_batch_size):
            sl = slice(first, min(n, first + self.ts.micro_batch_size))
            prompts, responses = tensors["prompts"][sl], tensors["responses"][sl]
            p_full = prompts.shape[1]
            attn = tensors["attention_mask"][sl]
            p_len = int(attn[:, :p_full].sum(-1).max())
            t_len = int(attn[:, p_full:].sum(-1).max())
            keep = torch.cat([torch.arange(p_full - p_len, p_full), torch.arange(p_full, p_full + t_len)])
            mb = {
                "prompts": prompts[:, p_full - p_len :],
                "responses": responses[:, :t_len],
                "input_ids": tensors["input_ids"][sl][:, keep],
                "attention_mask": attn[:, keep],
                "position_ids": tensors["position_ids"][sl][:, keep],
                "temperature": tensors["temperature"][sl],
            }
            for key in ("response_mask", "rollout_log_probs", "advantages"):
                mb[key] = tensors[key][sl][:, :t_len]
            mbs.append({k: v.to(self.device) for k, v in mb.items()})
        return mbs

    def _mini_batches(self, data: DataProto) -> list[list[dict[str, torch.Tensor]]]:
        """``ppo_mini_batches`` contiguous row ranges (one optimizer step each), as micro-batches."""
        n = len(data)
        k = min(self.ts.ppo_mini_batches, n)
        bounds = [round(i * n / k) for i in range(k + 1)]
        return [self._micro_batches(data, bounds[i], bounds[i + 1]) for i in range(k)]

    def train_step(self, data: DataProto) -> StepResult:
        """The optimizer steps of one prepared batch: ``ppo_epochs`` passes over ``ppo_mini_batches``
        mini-batches (one optimizer step each; 1 x 1 by default), then one step of the LR schedule.

        Args:
            data: a ``DataProto`` from :func:`streamrl.trainer.batch.prepare_batch`.

        Returns:
            The step's metrics (means over its optimizer steps; ``actor/updates`` = how many).

        Raises:
            NonFiniteLossError: a micro-batch loss or the gradient norm was NaN/inf. Gradients are
                dropped; weights, optimizer state and schedule are as before the call (with several
                optimizer steps per batch, restored from a copy taken at its start).
        """
        t0 = time.perf_counter()
        batch_id = str(data.meta_info.get("batch_id", "?"))
        advantages, _returns = compute_advantages(data, self.ts)
        # rows kept by the staleness policy with a weight < 1 scale their advantage (VERL losses are linear in A)
        data.batch["advantages"] = advantages * data.batch["row_weights"].unsqueeze(-1)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        minis = self._mini_batches(data)
        updates = self.ts.ppo_epochs * len(minis)
        # pi_old: the policy at the start of this call. With one optimizer step it is the training
        # forward itself (detached); with more, one no-grad pass scores every row first.
        old = [[self._old_logprobs(mb) for mb in mbs] for mbs in minis] if updates > 1 else None
        saved = self._snapshot() if updates > 1 else None
        totals: dict[str, float] = {}
        lr = float(self.scheduler.get_last_lr()[0])
        done = 0
        try:
            for _epoch in range(self.ts.ppo_epochs):
                for j, mbs in enumerate(minis):
                    m = self._update(mbs, None if old is None else old[j], batch_id)
                    for k, v in m.items():
                        totals[k] = totals.get(k, 0.0) + v
                    done += 1
        except NonFiniteLossError:
            if saved is not None and done > 0:
                self._restore(saved)
            raise
        self.scheduler.step()
        metrics = {k: v / updates for k, v in totals.items()}
        scores = data.batch["token_level_scores"].sum(-1)
        metrics.update(
            {
                "actor/lr": lr,
                "actor/updates": float(updates),
                "reward/mean": float(scores.mean()),
                "reward/std": float(scores.std()) if len(scores) > 1 else 0.0,
                "response_length/mean": float(
                    data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].sum(-1).float().mean()
                ),
            }
        )
        return StepResult(
            metrics=metrics,
            num_tokens=int(data.batch["attention_mask"].sum()) * self.ts.ppo_epochs,
            num_rows=len(data),
            step_time_s=time.perf_counter() - t0,
        )

    def _update(
        self, mbs: list[dict[str, torch.Tensor]], old: list[torch.Tensor] | None, batch_id: str
    ) -> dict[str, float]:
        """One optimizer step over the micro-batches of one mini-batch; returns its metrics.

        Raises:
            NonFiniteLossError: as :meth:`train_step` (gradients dropped, no step taken).
        """
        # trained tokens per row (rows,): micro-batches are trimmed to different lengths, and the
        # mini-batch's token and row counts are all set_global_batch_info reads from its mask
        response_mask = torch.cat([mb["response_mask"].sum(-1) for mb in mbs])
        set_global_batch_info(self.actor_cfg, response_mask.unsqueeze(-1))
        sums: dict[str, float] = {}
        weighted: dict[str, float] = {}
        total_tokens = float(response_mask.sum())
        want_entropy_grad = self.ts.entropy_coeff > 0
        for i, mb in enumerate(mbs):
            ref_log_prob = self._ref_logprobs(mb) if self.ts.use_kl_loss else None
            log_prob, entropy = self._forward_logprobs(self.model, mb, True, want_entropy_grad)
            assert entropy is not None
            loss, m = compute_actor_loss(
                LossInputs(
                    log_prob=log_prob,
                    entropy=entropy,
                    old_log_prob=log_prob.detach() if old is None else old[i],
                    rollout_log_prob=mb["rollout_log_probs"],
                    advantages=mb["advantages"],
                    response_mask=mb["response_mask"],
                    ref_log_prob=ref_log_prob,
                ),
                self.actor_cfg,
                self.ts,
            )
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(batch_id, "loss", loss_value)
            loss.backward()
            m["actor/loss"] = loss_value
            share = float(mb["response_mask"].sum()) / total_tokens if total_tokens else 0.0
            for k, v in m.items():
                if k in SUMMED_METRICS:
                    sums[k] = sums.get(k, 0.0) + v
                else:
                    weighted[k] = weighted.get(k, 0.0) + v * share
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.ts.max_grad_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(batch_id, "grad norm", grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**weighted, **sums, "actor/grad_norm": grad_norm}

    @torch.no_grad()
    def _old_logprobs(self, mb: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log pi_old ``(b, T)`` of a micro-batch: the current weights, no grad."""
        lp, _ = self._forward_logprobs(self.model, mb, False, False)
        return lp

    def _snapshot(self) -> tuple[list[torch.Tensor], dict[str, Any]]:
        """Copies of the trainable parameters and the optimizer state (undo of a failed multi-step call)."""
        params = [p.detach().clone() for p in self.model.parameters() if p.requires_grad]
        return params, copy.deepcopy(self.optimizer.state_dict())

    def _restore(self, saved: tuple[list[torch.Tensor], dict[str, Any]]) -> None:
        params, opt_state = saved
        with torch.no_grad():
            for p, v in zip((p for p in self.model.parameters() if p.requires_grad), params, strict=True):
                p.copy_(v)
        self.optimizer.load_state_dict(opt_state)
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _ref_logprobs(self, mb: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.ref_model is not None:
            lp, _ = self._forward_logprobs(self.ref_model, mb, False, False)
            return lp
        # LoRA: the reference is the base model, i.e. the policy with its adapter disabled
        with self.model.disable_adapter():  # type: ignore[operator]
            lp, _ = self._forward_logprobs(self.model, mb, False, False)
        return lp

    # ------------------------------------------------------------------ checkpoint I/O
    def save_model(self, model_dir: Path) -> None:
        """Write the policy in Hugging Face format (safetensors) into ``model_dir`` (adapter alone for LoRA)."""
        self.model.save_pretrained(model_dir, safe_serialization=True)

    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        """Write optimizer, scheduler, RNG states and ``extra`` (step, offsets, ...) to ``path``
        (:func:`~streamrl.trainer.state_file.save_state_file`: safetensors + JSON, no pickle)."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "extra": extra,
        }
        save_state_file(path, state)

    def load(self, ckpt_dir: Path) -> dict[str, Any]:
        """Restore weights, optimizer, scheduler and RNG from a checkpoint written by this backend.

        Returns:
            The ``extra`` dict saved with the state.

        Tensors are read from safetensors only (``model.safetensors`` / ``adapter_model.safetensors`` and
        :data:`~streamrl.trainer.state_file.STATE_FILE`); nothing is unpickled.

        Raises:
            CheckpointError: files missing or unreadable, or the state is the old pickle file.
        """
        model_dir, state_path = ckpt_dir / "model", ckpt_dir / STATE_FILE
        if not state_path.is_file() and (ckpt_dir / LEGACY_STATE_FILE).is_file():
            raise legacy_state_error(ckpt_dir)
        if not model_dir.is_dir() or not state_path.is_file():
            raise CheckpointError(f"{ckpt_dir}: missing model/ or {STATE_FILE}")
        state = load_state_file(state_path)
        try:
            if self.ts.lora is not None:
                from peft import set_peft_model_state_dict
                from safetensors.torch import load_file

                set_peft_model_state_dict(self.model, load_file(model_dir / "adapter_model.safetensors"))
            else:
                loaded = AutoModelForCausalLM.from_pretrained(
                    model_dir, dtype=self.dtype, use_safetensors=True
                )
                self.model.load_state_dict(loaded.state_dict())
                del loaded
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{ckpt_dir}: cannot load: {exc}") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        return dict(state["extra"])

    @staticmethod
    def _seed_all(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
