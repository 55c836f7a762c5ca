"""The agents the coordination benchmark runs (``streamrl worker --agent bench.coordination.agents:<name>``).

- :func:`trivial` (part A): returns reward 1.0, no LLM call.
- :func:`llm_gateway` (parts B, D): one chat completion with the official ``openai.AsyncOpenAI``
  client through the worker's recording gateway (``llm.base_url``).
- :func:`llm_direct` (part B): the same call straight to the fake vLLM server
  (``$BENCH_FAKE_VLLM_URL``), bypassing the gateway; nothing is recorded to ``requests``.

The LLM agents time the ``create`` call with ``time.perf_counter`` and report it as a non-primary
reward named ``llm_latency_ms`` (ms), so the figure reaches the benchmark inside the Trajectory
record and no side channel is needed. The rollout reward is the task's ``reward`` field (default
1.0): part D varies it within a group so the aggregator's zero-variance filter keeps the group.

One pooled ``httpx.AsyncClient`` per worker process (created on first use, on the worker's event
loop) carries every call, like a real agent process would reuse its connections; each rollout builds
its own ``AsyncOpenAI`` on it because the gateway's base URL is scoped to the rollout attempt.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["LATENCY_REWARD", "llm_direct", "llm_gateway", "trivial"]

LATENCY_REWARD = "llm_latency_ms"
FAKE_URL_ENV = "BENCH_FAKE_VLLM_URL"
MAX_TOKENS = 128

_http: Any = None  # the process's pooled httpx.AsyncClient (see module docstring)


def _pooled_http() -> Any:
    global _http
    if _http is None:
        import httpx

        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
        _http = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0))
    return _http


def _reward(task: Any) -> float:
    if isinstance(task, dict) and "reward" in task:
        return float(task["reward"])
    return 1.0


async def trivial(task: Any, llm: Any) -> float:
    """Part A: no LLM call, reward 1.0."""
    return 1.0


async def _one_call(task: Any, base_url: str, llm: Any) -> float:
    """One chat completion to ``base_url``; emits its latency (ms) and returns the task's reward."""
    import openai

    from streamrl import emit_reward

    question = task.get("question", "What is 6 times 7?") if isinstance(task, dict) else str(task)
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=llm.api_key, http_client=_pooled_http(), max_retries=0
    )
    t0 = time.perf_counter()
    out = await client.chat.completions.create(
        model=llm.model,
        messages=[{"role": "user", "content": question}],
        max_tokens=MAX_TOKENS,
        temperature=1.0,
    )
    latency_ms = (time.perf_counter() - t0) * 1e3
    if not out.choices or out.choices[0].message.content is None:
        raise RuntimeError(f"{base_url}: the chat completion has no content: {out!r}")
    emit_reward(latency_ms, name=LATENCY_REWARD, primary=False)
    return _reward(task)


async def llm_gateway(task: Any, llm: Any) -> float:
    """Parts B and D: one chat completion through the StreamRL gateway (recorded to ``requests``)."""
    return await _one_call(task, llm.base_url, llm)


async def llm_direct(task: Any, llm: Any) -> float:
    """Part B baseline: one chat completion straight to the fake vLLM server at ``$BENCH_FAKE_VLLM_URL``.

    Raises:
        RuntimeError: ``$BENCH_FAKE_VLLM_URL`` is not set (the rollout then fails with this reason).
    """
    url = os.environ.get(FAKE_URL_ENV)
    if not url:
        raise RuntimeError(
            f"${FAKE_URL_ENV} is not set: the benchmark sets it to the fake vLLM server's /v1 URL"
        )
    return await _one_call(task, url, llm)
