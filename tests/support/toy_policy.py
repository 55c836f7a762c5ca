"""A tokenizer-less tiny policy for the trainer's tests and benchmark: a model, sampling, batches.

Why beside the product's builder (``streamrl.inference.model_builder``): that one always trains a
tokenizer on text (a vocabulary of ~100 characters at least) and builds a servable model with a chat
template. The trainer's math and learning tests need a model of any vocabulary size and width
(16 tokens, so a one-token target has chance 1/16) and no tokenizer at all; the trainer benchmark
sizes it freely. Nothing here is downloaded: the model is a randomly initialised
``LlamaForCausalLM`` saved with ``save_pretrained``. Sampling is plain ancestral sampling from the model's softmax (temperature 1),
returning the exact behaviour logprobs, as an inference engine would record them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamrl.schemas import TrainingBatch, TrainingRow


def build_tiny_model(
    out_dir: Path,
    *,
    vocab_size: int = 32,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 256,
    seed: int = 0,
) -> Path:
    """Save a random tiny Llama (about ``12 * layers * hidden^2 + 2 * vocab * hidden`` parameters) to ``out_dir``.

    Returns:
        ``out_dir`` (a Hugging Face model directory with config.json and model.safetensors).
    """
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> tuple[list[list[int]], list[list[float]]]:
    """Sample one response per prompt (equal-length prompts, no EOS stopping).

    Args:
        model: a causal LM.
        prompts: ``B`` prompts of the same length ``P``.
        max_new_tokens: response length ``T``.
        generator: RNG for reproducible samples.
        temperature: sample from ``softmax(logits / temperature)`` (> 0), the logprobs of that
            distribution (the inference server's ``scaled`` logprobs).

    Returns:
        ``(responses, logprobs)``: ``B`` lists of ``T`` token ids and their behaviour logprobs (nats).
    """
    was_training = model.training
    model.eval()
    ids = torch.tensor(prompts, dtype=torch.long)
    out_ids, out_lp = [], []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids).logits[:, -1, :].float()
        logp = torch.log_softmax(logits / temperature, dim=-1)
        nxt = torch.multinomial(logp.exp(), 1, generator=generator)  # (B, 1)
        out_ids.append(nxt)
        out_lp.append(logp.gather(-1, nxt))
        ids = torch.cat([ids, nxt], dim=1)
    model.train(was_training)
    return torch.cat(out_ids, 1).tolist(), torch.cat(out_lp, 1).tolist()


def make_batch(
    batch_id: str,
    policy_name: str,
    prompts: list[list[int]],
    responses: list[list[int]],
    logprobs: list[list[float]],
    rewards: list[float],
    group_size: int,
    policy_version: int = 0,
    temperature: float = 1.0,
) -> TrainingBatch:
    """An inline ``TrainingBatch``: rows ``i*group_size .. (i+1)*group_size-1`` form group ``i``.

    The reward is placed on the last response token (outcome reward), all response tokens trained.
    """
    rows = []
    for i, (p, r, lp, rew) in enumerate(zip(prompts, responses, logprobs, rewards, strict=True)):
        g = i // group_size
        token_rewards = [0.0] * (len(r) - 1) + [float(rew)]
        rows.append(
            TrainingRow(
                rollout_id=f"{batch_id}/t{g}/0/{i % group_size}",
                group_id=f"{batch_id}/t{g}/0",
                prompt_ids=list(p),
                response_ids=list(r),
                response_mask=[1] * len(r),
                behaviour_logprobs=list(lp),
                token_rewards=token_rewards,
                reward=float(rew),
                policy_version=policy_version,
                temperature=temperature,
            )
        )
    return TrainingBatch(
        batch_id=batch_id,
        policy_name=policy_name,
        num_groups=-(-len(rows) // group_size),
        rows=rows,
        min_policy_version=policy_version,
        max_policy_version=policy_version,
    )
