"""Trainer benchmark: step time and tokens/s of the torch backend vs a bare forward+backward on the same tokens.

    .venv/bin/python -m bench.trainer [--rows 64] [--prompt 32] [--response 32] [--repeats 5] [--threads 1]
    .venv/bin/python -m bench.trainer --pretrained smollm2-135m-instruct --lora-rank 16 --rows 128 \
        --prompt 64 --response 64 --repeats 1 --warmup 0 --no-bare

``--pretrained NAME``: a real model instead (``streamrl model fetch``, cached), ``--lora-rank R`` trains a
LoRA adapter (rank R, alpha 2R, every attention and MLP projection) as ``configs/tool_call.yaml`` does;
``--micro-batch`` rows per forward/backward. Peak RSS (``ru_maxrss``) is printed too.

Model: a local random Llama built by ``tests.support.toy_policy.build_tiny_model`` (vocab 256, hidden 128, 2 layers,
~0.5 M parameters). One batch = ``rows`` rows (groups of 8), ``prompt`` + ``response`` tokens each.

- trainer step: decode the ``TrainingBatch`` record (``streamrl.schemas.serde``) + ``prepare_batch`` + ``train_step``
  (VERL GRPO advantages, truncated IS weights, PPO-clip loss, entropy, clipping, AdamW), one micro-batch.
- bare: the same model and the same padded tokens: forward, log-softmax gather of the response tokens,
  mean, backward, AdamW step: the least a policy update can cost.

Overhead ratio = trainer step / bare step (medians). tokens/s counts prompt+response tokens. Prints
figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--response", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--pretrained", default=None, help="a pretrained model name (streamrl model list)")
    ap.add_argument("--lora-rank", type=int, default=0, help="train a LoRA adapter of this rank (0 = full)")
    ap.add_argument("--micro-batch", type=int, default=None, help="rows per forward/backward (default: all)")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare forward+backward comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from streamrl.config.trainer import LoRASettings, TrainerSettings
    from streamrl.schemas import TrainingBatch
    from streamrl.schemas.serde import Serde
    from streamrl.trainer.batch import prepare_batch
    from streamrl.trainer.torch_backend import TorchBackend
    from tests.support.toy_policy import build_tiny_model, make_batch

    if args.pretrained:
        from streamrl.inference.pretrained import fetch_pretrained

        model_dir = fetch_pretrained(args.pretrained)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
        model_dir = build_tiny_model(
            tmp / "model", vocab_size=256, hidden_size=128, num_layers=2, num_heads=4
        )
    lora = None
    if args.lora_rank:
        projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        lora = LoRASettings(rank=args.lora_rank, alpha=2.0 * args.lora_rank, target_modules=projections)
    ts = TrainerSettings(
        model_path=model_dir, lr=1e-4, micro_batch_size=args.micro_batch or args.rows, lora=lora
    )
    be = TorchBackend(ts, rollout_n=8)
    n_params = sum(p.numel() for p in be.model.parameters())
    n_train = sum(p.numel() for p in be.model.parameters() if p.requires_grad)
    vocab = min(be.vocab_size, 2000)  # ordinary tokens (ids past the special ones)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (args.rows, args.prompt), generator=g).tolist()
    responses = torch.randint(3, vocab, (args.rows, args.response), generator=g).tolist()
    logprobs = (-torch.rand(args.rows, args.response, generator=g) * 5).tolist()
    rewards = torch.randint(0, 2, (args.rows,), generator=g).float().tolist()
    serde = Serde()
    wire = serde.encode(make_batch("bench/0", "policy", prompts, responses, logprobs, rewards, group_size=8))
    tokens = args.rows * (args.prompt + args.response)

    def trainer_step() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        batch = serde.decode(wire, TrainingBatch)
        t1 = time.perf_counter()
        data = prepare_batch(
            batch, serde=None, trainer_version=0, max_staleness=None, vocab_size=be.vocab_size
        )
        t2 = time.perf_counter()
        be.train_step(data)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    ids = torch.tensor([p + r for p, r in zip(prompts, responses, strict=True)])
    resp = torch.tensor(responses)
    bare_opt = torch.optim.AdamW(be.model.parameters(), lr=1e-4)

    def bare_step() -> float:
        t0 = time.perf_counter()
        logits = be.model(input_ids=ids).logits[:, args.prompt - 1 : -1, :].float()
        lp = torch.log_softmax(logits, -1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)
        (-lp.mean()).backward()
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        trainer_step()
        if not args.no_bare:
            bare_step()
    parts = [trainer_step() for _ in range(args.repeats)]
    bare = [] if args.no_bare else [bare_step() for _ in range(args.repeats)]
    dec = statistics.median(p[0] for p in parts)
    prep = statistics.median(p[1] for p in parts)
    step = statistics.median(p[2] for p in parts)
    total = statistics.median(sum(p) for p in parts)
    print(
        f"model: {args.pretrained or 'tiny local Llama'}, {n_params / 1e6:.2f} M params ({n_train / 1e6:.2f} M trained"
        f"{f', LoRA rank {args.lora_rank}' if args.lora_rank else ''}); batch {args.rows} rows x "
        f"({args.prompt}+{args.response}) tokens = {tokens} tokens, micro-batch {ts.micro_batch_size}; "
        f"{args.threads} threads; median of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"trainer step (decode+prepare+train): {total * 1000:.1f} ms  ({tokens / total:,.0f} tok/s)"
        f"  [decode {dec * 1000:.1f} ms, prepare {prep * 1000:.1f} ms, train_step {step * 1000:.1f} ms]"
    )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    if bare:
        bare_s = statistics.median(bare)
        print(f"bare forward+backward+AdamW:         {bare_s * 1000:.1f} ms  ({tokens / bare_s:,.0f} tok/s)")
        print(f"overhead ratio: {total / bare_s:.2f}x (train_step alone {step / bare_s:.2f}x)")


if __name__ == "__main__":
    main()
