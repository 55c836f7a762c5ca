"""The ``verl`` backend: VERL's own FSDP training engine (``TrainingWorker`` on a Ray worker group) for GPUs.

The batch comes from Kafka instead of VERL's rollout loop; everything else is VERL's path, as in
``verl.trainer.ppo.ray_trainer``: ``infer_batch`` (VERL's compute_log_prob) gives pi_old and the
entropy, advantages come from the same registered estimator as the torch backend, the truncated IS
weights from VERL's rollout-correction helper, and ``train_mini_batch`` with VERL's ``ppo_loss``
(one mini-batch = the whole batch, one epoch = one optimizer step per batch).

Why this backend cannot run on a CPU rank (checked against verl 0.9.1, recorded in README ``## Trainer``):
VERL_CPU_REASON below. Its tests are marked ``gpu``.
"""

from __future__ import annotations

import random
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig
from verl import DataProto

from streamrl.config.trainer import TrainerSettings
from streamrl.errors import CheckpointError, ConfigError
from streamrl.trainer.algorithms import build_actor_config, check_algorithm_names, compute_advantages
from streamrl.trainer.errors import NonFiniteLossError, TrainerError
from streamrl.trainer.state_file import (
    LEGACY_STATE_FILE,
    STATE_FILE,
    legacy_state_error,
    load_state_file,
    save_state_file,
)
from streamrl.trainer.torch_backend import StepResult

VERL_CPU_REASON = (
    "verl 0.9.1 has no CPU platform: its platform registry knows nvidia/npu/rocm and falls back to 'nvidia' "
    "(verl.plugin.platform.platform_manager._detect_platform_name); the FSDP engine is registered only for "
    "device=['cuda', 'npu'] (verl.workers.engine.fsdp.transformer_impl, EngineRegistry.register), and it "
    "places the model and every micro-batch with get_device_id() = torch.cuda.current_device(), which on a "
    "machine without a GPU raises 'RuntimeError: Found no NVIDIA driver on your system'. A single gloo CPU "
    "rank therefore cannot build the engine; use the torch backend on CPU."
)
STATE_DIR = "verl_state"


class VerlBackend:
    """Policy updates on VERL's FSDP engine; same interface as :class:`streamrl.trainer.torch_backend.TorchBackend`.

    Args:
        ts: trainer settings (``model_path`` required; ``verl`` section for the worker group).
        rollout_n: group size.
        seed: seed of the driver's RNGs.

    Raises:
        TrainerError: no CUDA device (with :data:`VERL_CPU_REASON`).
        ConfigError: an option this backend does not wire (``use_kl_loss``: needs a reference worker group).
    """

    def __init__(self, ts: TrainerSettings, rollout_n: int, seed: int = 0) -> None:
        check_algorithm_names(ts)
        if not torch.cuda.is_available():
            raise TrainerError(f"trainer.backend=verl needs CUDA GPUs: {VERL_CPU_REASON}")
        import tensordict
        from packaging.version import parse as parse_version

        if parse_version(tensordict.__version__) < parse_version("0.10"):
            raise TrainerError(
                f"trainer.backend=verl needs tensordict>=0.10 (verl's DataProto.to_tensordict); "
                f"installed {tensordict.__version__}: pip install 'streamrl[gpu]'"
            )
        if ts.use_kl_loss:
            raise ConfigError(
                "trainer.use_kl_loss is not wired in the verl backend (no reference worker group); "
                "use backend=torch or disable the KL loss"
            )
        if ts.model_path is None:
            raise CheckpointError("trainer.model_path is not set: point it at a Hugging Face model directory")
        import ray
        from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
        from verl.trainer.config import CheckpointConfig
        from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
        from verl.workers.engine_workers import TrainingWorker, TrainingWorkerConfig
        from verl.workers.utils.losses import ppo_loss

        self.ts = ts
        self.seed = seed
        self.base_model_path = Path(ts.model_path)
        cfg = AutoConfig.from_pretrained(self.base_model_path)
        self.vocab_size = int(cfg.vocab_size)
        self.max_positions = getattr(cfg, "max_position_embeddings", None)
        self.pad_token_id = int(cfg.pad_token_id) if getattr(cfg, "pad_token_id", None) is not None else 0
        if not ray.is_initialized():
            ray.init(address=ts.verl.ray_address)
        lora = ts.lora
        model_config = HFModelConfig(
            path=str(self.base_model_path),
            load_tokenizer=False,
            enable_gradient_checkpointing=ts.verl.gradient_checkpointing,
            lora_rank=lora.rank if lora else 0,
            lora_alpha=int(lora.alpha) if lora else 16,
            target_modules=lora.target_modules if lora else "all-linear",
        )
        engine_config = FSDPEngineConfig(
            strategy=ts.verl.strategy,
            param_offload=ts.verl.param_offload,
            optimizer_offload=ts.verl.optimizer_offload,
            model_dtype="bf16" if ts.dtype == "bfloat16" else "fp32",
            use_torch_compile=False,
        )
        horizon = ts.total_steps or ts.max_steps or 1
        optimizer_config = FSDPOptimizerConfig(
            lr=ts.lr,
            weight_decay=ts.weight_decay,
            betas=ts.betas,
            clip_grad=ts.max_grad_norm,
            lr_warmup_steps=ts.warmup_steps,
            total_training_steps=horizon,
            lr_scheduler_type="cosine" if ts.lr_schedule == "cosine" else "constant",
        )
        checkpoint_config = CheckpointConfig(
            save_contents=["model", "optimizer", "extra", "hf_model"],
            load_contents=["model", "optimizer", "extra"],
        )
        worker_config = TrainingWorkerConfig(
            model_type="language_model",
            model_config=model_config,
            engine_config=engine_config,
            optimizer_config=optimizer_config,
            checkpoint_config=checkpoint_config,
        )
        self.actor_cfg = build_actor_config(ts, rollout_n)
        pool = RayResourcePool(process_on_nodes=[ts.verl.n_gpus])
        self.wg = RayWorkerGroup(
            resource_pool=pool,
            ray_cls_with_init=RayClassWithInitArgs(ray.remote(TrainingWorker), config=worker_config),
            device_name="cuda",
        )
        self.wg.set_loss_fn(loss_fn=partial(ppo_loss, config=self.actor_cfg))
        self.wg.reset()
        self._global_step = 0

    @property
    def kind(self) -> str:
        """Checkpoint kind: ``lora`` or ``full``."""
        return "lora" if self.ts.lora is not None else "full"

    def _infer(self, data: DataProto) -> tuple[torch.Tensor, torch.Tensor]:
        """pi_theta logprobs and entropy ``(B, T)`` from VERL's engine (forward only)."""
        from verl.utils import tensordict_utils as tu
        from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

        td = left_right_2_no_padding(
            data.select(
                batch_keys=[
                    "prompts",
                    "responses",
                    "input_ids",
                    "attention_mask",
                    "position_ids",
                    "response_mask",
                    "temperature",  # (B,): verl's engine divides each row's logits by it
                ]
            ).to_tensordict()
        )
        tu.assign_non_tensor(td, calculate_entropy=True, compute_loss=False)
        out = self.wg.infer_batch(td).get()
        log_probs = no_padding_2_padding(tu.get(out, "log_probs"), td).float()
        entropy = no_padding_2_padding(tu.get(out, "entropy"), td).float()
        return log_probs, entropy

    def train_step(self, data: DataProto) -> StepResult:
        """One optimizer step on VERL's engine (see module docstring). Raises NonFiniteLossError like the torch backend."""
        from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_rejection_mask
        from verl.utils import tensordict_utils as tu
        from verl.workers.utils.padding import left_right_2_no_padding

        t0 = time.perf_counter()
        batch_id = str(data.meta_info.get("batch_id", "?"))
        advantages, _ = compute_advantages(data, self.ts)
        data.batch["advantages"] = advantages * data.batch["row_weights"].unsqueeze(-1)
        old_log_probs, entropy = self._infer(data)
        metrics: dict[str, float] = {}
        if self.ts.policy_loss == "bypass_mode":
            old_log_probs = data.batch["rollout_log_probs"]
        elif self.ts.rollout_is is not None:
            weights, _, corr = compute_rollout_correction_and_rejection_mask(
                old_log_prob=old_log_probs,
                rollout_log_prob=data.batch["rollout_log_probs"],
                response_mask=data.batch["response_mask"],
                rollout_is=self.ts.rollout_is,
                rollout_is_threshold=self.ts.rollout_is_threshold,
            )
            if weights is not None:
                data.batch["rollout_is_weights"] = weights.batch["rollout_is_weights"]
            metrics.update({k: float(v) for k, v in corr.items()})
        data.batch["old_log_probs"] = old_log_probs
        keys = [
            "prompts",
            "responses",
            "input_ids",
            "attention_mask",
            "position_ids",
            "response_mask",
            "old_log_probs",
            "advantages",
            "temperature",
        ] + (["rollout_is_weights"] if "rollout_is_weights" in data.batch else [])
        td = left_right_2_no_padding(data.select(batch_keys=keys).to_tensordict())
        n = len(data)
        tu.assign_non_tensor(
            td,
            calculate_entropy=self.ts.entropy_coeff > 0,
            global_batch_size=n,
            mini_batch_size=n,
            epochs=1,
            seed=self.seed,
            dataloader_kwargs={"shuffle": False},
            compute_loss=True,
        )
        out = self.wg.train_mini_batch(td).get()
        for k, v in tu.get(out, "metrics").items():
            val = v[-1] if isinstance(v, list) else v
            try:
                metrics[k if "/" in k else f"actor/{k}"] = float(getattr(val, "value", val))
            except (TypeError, ValueError):
                continue
        grad_norm = metrics.get("actor/grad_norm", 0.0)
        if not np.isfinite(grad_norm) or not np.isfinite(metrics.get("actor/pg_loss", 0.0)):
            # VERL's engine skips optimizer.step() when the grad norm is not finite
            raise NonFiniteLossError(batch_id, "loss/grad norm", grad_norm)
        mask = data.batch["response_mask"]
        metrics["actor/entropy"] = float((entropy * mask).sum() / mask.sum())
        metrics.setdefault("actor/loss", metrics.get("actor/pg_loss", float("nan")))
        scores = data.batch["token_level_scores"].sum(-1)
        metrics["reward/mean"] = float(scores.mean())
        self._global_step += 1
        return StepResult(
            metrics=metrics,
            num_tokens=int(data.batch["attention_mask"].sum()),
            num_rows=n,
            step_time_s=time.perf_counter() - t0,
        )

    def save_model(self, model_dir: Path) -> None:
        """VERL checkpoint (model, optimizer, extra, hf_model) into ``../verl_state``; its HF export into ``model_dir``."""
        state_dir = model_dir.parent / STATE_DIR
        self.wg.save_checkpoint(
            local_path=str(state_dir), global_step=self._global_step, max_ckpt_to_keep=None
        )
        hf = state_dir / "huggingface"
        if not hf.is_dir():
            raise CheckpointError(f"verl wrote no Hugging Face export under {hf}")
        for item in hf.iterdir():
            shutil.move(str(item), model_dir / item.name)

    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        """Driver-side state (RNG, ``extra``) in :func:`~streamrl.trainer.state_file.save_state_file`'s format;
        optimizer/scheduler live in VERL's ``verl_state/``."""
        save_state_file(
            path,
            {
                "extra": extra,
                "global_step": self._global_step,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(),
                    "python": random.getstate(),
                },
            },
        )

    def load(self, ckpt_dir: Path) -> dict[str, Any]:
        """Restore VERL's checkpoint and the driver state; returns ``extra``.

        The driver state is read without unpickling. VERL's own ``load_checkpoint`` reads its shards in
        ``verl_state/`` with ``torch.load(weights_only=False)``: the trainer loads a checkpoint only after
        :meth:`~streamrl.trainer.checkpoint.CheckpointManager.latest_valid` matched the digest of these
        files with the one recorded at write time (docs/SECURITY.md, "Checkpoints").

        Raises:
            CheckpointError: files missing, the driver state unreadable or in the old pickle format.
        """
        state_dir, state_path = ckpt_dir / STATE_DIR, ckpt_dir / STATE_FILE
        if not state_path.is_file() and (ckpt_dir / LEGACY_STATE_FILE).is_file():
            raise legacy_state_error(ckpt_dir)
        if not state_dir.is_dir() or not state_path.is_file():
            raise CheckpointError(f"{ckpt_dir}: missing {STATE_DIR}/ or {STATE_FILE}")
        state = load_state_file(state_path)
        self.wg.load_checkpoint(local_path=str(state_dir))
        self._global_step = int(state["global_step"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return dict(state["extra"])
