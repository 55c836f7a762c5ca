"""CPU inference benchmark: generated tokens/s at 1, 8 and 32 concurrent requests, batched vs one-by-one.

    .venv/bin/python -m bench.inference [--preset tiny] [--tokenizer bpe] [--max-tokens 64] [--rounds 3]

Builds the model locally (default: ``streamrl model build`` defaults, i.e. ``tiny`` + ``bpe``), serves
it with the CPU server over real HTTP (uvicorn on a local socket, in this process), and drives it with
``C`` concurrent asyncio clients, each sending ``rounds`` chat requests back to back
(``max_tokens`` tokens each, ``ignore_eos`` so every request generates exactly that many).
Two server settings: dynamic batching (``max_batch_size=32``, ``max_batch_wait_ms=5``) and
one-by-one (``max_batch_size=1``). tokens/s = generated tokens / wall time of the whole run.
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


async def _drive(url: str, concurrency: int, rounds: int, max_tokens: int) -> tuple[int, float, list[float]]:
    """Run ``concurrency`` clients × ``rounds`` requests; returns (tokens, wall_s, latencies_s)."""
    latencies: list[float] = []
    tokens = 0

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for r in range(rounds):
            body = {
                "model": "policy",
                "messages": [{"role": "user", "content": f"Question {k}.{r}: what is {k} + {r}?"}],
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokenizer", default="bpe", choices=["bpe", "char"])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="requests per client")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]

    from streamrl.inference.model_builder import build_model

    with tempfile.TemporaryDirectory() as tmp:
        report = build_model(Path(tmp) / "model", preset=args.preset, tokenizer=args.tokenizer)
        print(
            f"model: {args.preset}/{args.tokenizer}, {report.num_parameters / 1e6:.2f}M params, vocab {report.vocab_size}; "
            f"torch threads {args.threads}; {args.max_tokens} tokens/request, {args.rounds} requests/client; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        rows = []
        for mode, max_batch in (("dynamic batching", 32), ("one-by-one", 1)):
            svc, thread = _serve(Path(report.path), max_batch)
            try:
                asyncio.run(_drive(thread.url, 2, 1, 8))  # warm-up
                for c in levels:
                    tokens, wall, lat = asyncio.run(_drive(thread.url, c, args.rounds, args.max_tokens))
                    p50 = statistics.median(lat)
                    rows.append((mode, c, tokens / wall, p50))
                    print(f"{mode:17s} concurrency {c:3d} (load {os.getloadavg()[0]:4.1f}): {tokens / wall:8.0f} generated tokens/s, "
                          f"p50 latency {p50 * 1000:7.0f} ms ({tokens} tokens in {wall:.2f} s)")  # fmt: skip
            finally:
                thread.stop()
                svc.stop()
        by = {(m, c): t for m, c, t, _ in rows}
        for c in levels:
            print(
                f"speed-up of batching at concurrency {c}: {by[('dynamic batching', c)] / by[('one-by-one', c)]:.1f}x"
            )


if __name__ == "__main__":
    main()
