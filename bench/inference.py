"""CPU inference benchmark: generated tokens/s at 1, 8 and 32 concurrent requests, batched vs one-by-one.

    .venv/bin/python -m bench.inference [--preset tiny] [--tokenizer bpe] [--max-tokens 64] [--rounds 3]
    .venv/bin/python -m bench.inference --pretrained smollm2-135m-instruct --rounds 1 --modes batching \
        --hf-generate 4 --length-check

Builds the model locally (default: ``streamrl model build`` defaults, i.e. ``tiny`` + ``bpe``), or with
``--pretrained NAME`` fetches a real one (``streamrl model fetch``, cached), serves
it with the CPU server over real HTTP (uvicorn on a local socket, in this process), and drives it with
``C`` concurrent asyncio clients, each sending ``rounds`` chat requests back to back
(``max_tokens`` tokens each, ``ignore_eos`` so every request generates exactly that many).
Two server settings: dynamic batching (``max_batch_size=32``, ``max_batch_wait_ms=5``) and
one-by-one (``max_batch_size=1``). tokens/s = generated tokens / wall time of the whole run.
``--hf-generate N``: the baseline without a server, N requests one after the other through Hugging
Face ``model.generate`` (sampling, KV cache, ``min_new_tokens = max_new_tokens``) on the same prompts.
``--length-check``: one request of 50 and one of 200 tokens; with the KV cache the per-token time of
both is about the same (linear in length), without it the 200-token one would be ~4x slower per token.
Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

from streamrl.schemas.inference_http import TOKEN_IDS


def _question(k: int, r: int) -> str:
    return f"Question {k}.{r}: what is {k} + {r}?"


async def _drive(url: str, concurrency: int, rounds: int, max_tokens: int) -> tuple[int, float, list[float]]:
    """Run ``concurrency`` clients × ``rounds`` requests; returns (tokens, wall_s, latencies_s)."""
    latencies: list[float] = []
    tokens = 0

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for r in range(rounds):
            body = {
                "model": "policy",
                "messages": [{"role": "user", "content": _question(k, r)}],
                "max_tokens": max_tokens,
                "temperature": 1.0,
                "ignore_eos": True,
            }
            t0 = time.perf_counter()
            resp = await http.post(f"{url}/v1/chat/completions", json=body)
            resp.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            tokens += len(resp.json()["choices"][0][TOKEN_IDS])

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(k, http) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    return tokens, wall, latencies


def _serve(model_dir: Path, max_batch_size: int):
    from streamrl.inference.server import InferenceService, ServerOptions, ServerThread

    svc = InferenceService(
        str(model_dir), ServerOptions(max_batch_size=max_batch_size, max_batch_wait_ms=5.0)
    )
    svc.start()
    return svc, ServerThread(svc.app()).start()


def _hf_generate(model_dir: Path, n: int, max_tokens: int) -> tuple[int, float]:
    """``n`` chat requests one by one through ``model.generate``; returns (tokens, wall_s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokens, t0 = 0, time.perf_counter()
    for k in range(n):
        ids = tok.apply_chat_template(
            [{"role": "user", "content": _question(k, 0)}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(
                **ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=True, top_k=0,
                pad_token_id=tok.pad_token_id,
            )  # fmt: skip
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    return tokens, time.perf_counter() - t0


def _length_check(url: str) -> None:
    """Per-token time of one 50-token and one 200-token answer (KV cache: about equal)."""
    per_token = {}
    for n in (50, 200):
        body = {"model": "policy", "messages": [{"role": "user", "content": _question(0, n)}], "max_tokens": n,
                "ignore_eos": True}  # fmt: skip
        t0 = time.perf_counter()
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).raise_for_status()
        per_token[n] = (time.perf_counter() - t0) / n
    print(
        f"one request: {per_token[50] * 1000:.0f} ms/token for 50 tokens, {per_token[200] * 1000:.0f} ms/token for "
        f"200 tokens (ratio {per_token[200] / per_token[50]:.2f}; 1 = linear, ~4 = quadratic)"
    )


def _model_dir(args: argparse.Namespace, tmp: str) -> tuple[Path, str]:
    """The served model's directory and a one-line description."""
    if args.pretrained:
        from streamrl.inference.pretrained import fetch_pretrained

        path = fetch_pretrained(args.pretrained)
        return path, f"{args.pretrained} (pretrained)"
    from streamrl.inference.model_builder import build_model

    report = build_model(Path(tmp) / "model", preset=args.preset, tokenizer=args.tokenizer)
    return Path(report.path), f"{args.preset}/{args.tokenizer}, vocab {report.vocab_size}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokenizer", default="bpe", choices=["bpe", "char"])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="requests per client")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument(
        "--pretrained", default=None, help="serve this pretrained model instead (streamrl model list)"
    )
    ap.add_argument("--modes", default="batching,one-by-one", help="server settings to run")
    ap.add_argument("--hf-generate", type=int, default=0, help="also time N requests through HF generate")
    ap.add_argument(
        "--length-check", action="store_true", help="per-token time of a 50- and a 200-token answer"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]

    modes = [m for m in (("dynamic batching", 32), ("one-by-one", 1)) if m[0].split()[-1] in args.modes]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, what = _model_dir(args, tmp)
        n_params = sum(p.numel() for p in _load(model_dir).parameters())
        print(
            f"model: {what}, {n_params / 1e6:.2f}M params; torch threads {args.threads}; {args.max_tokens} "
            f"tokens/request, {args.rounds} requests/client; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores"
        )
        rows = []
        for mode, max_batch in modes:
            svc, thread = _serve(model_dir, max_batch)
            try:
                asyncio.run(_drive(thread.url, 2, 1, 8))  # warm-up
                if args.length_check and max_batch > 1:
                    _length_check(thread.url)
                for c in levels:
                    tokens, wall, lat = asyncio.run(_drive(thread.url, c, args.rounds, args.max_tokens))
                    p50 = statistics.median(lat)
                    rows.append((mode, c, tokens / wall, p50))
                    print(f"{mode:17s} concurrency {c:3d} (load {os.getloadavg()[0]:4.1f}): {tokens / wall:8.1f} generated tokens/s, "
                          f"p50 latency {p50 * 1000:7.0f} ms ({tokens} tokens in {wall:.2f} s)")  # fmt: skip
            finally:
                thread.stop()
                svc.stop()
        by = {(m, c): t for m, c, t, _ in rows}
        for c in levels:
            if ("dynamic batching", c) in by and ("one-by-one", c) in by:
                print(
                    f"speed-up of batching at concurrency {c}: {by[('dynamic batching', c)] / by[('one-by-one', c)]:.1f}x"
                )
        if args.hf_generate:
            tokens, wall = _hf_generate(model_dir, args.hf_generate, args.max_tokens)
            print(
                f"HF generate, one by one (load {os.getloadavg()[0]:4.1f}): {tokens / wall:8.1f} generated tokens/s "
                f"({args.hf_generate} requests, {tokens} tokens in {wall:.2f} s)"
            )
            for c in levels:
                if ("dynamic batching", c) in by:
                    print(f"server with dynamic batching at concurrency {c} vs HF generate one by one: "
                          f"{by[('dynamic batching', c)] / (tokens / wall):.1f}x")  # fmt: skip


def _load(model_dir: Path):
    from streamrl.inference.server import load_model

    return load_model(str(model_dir))


if __name__ == "__main__":
    main()
