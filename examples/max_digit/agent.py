"""The demo agent: answer with the largest digit of a digit string, in one token.

Written with the official ``openai`` SDK; the only StreamRL import is ``@rollout``. The reward is
verifiable: 1.0 for the right digit. During training a wrong *digit* earns 0.1 (format credit), so
an untrained policy, which rarely says the right digit, still gets a learning signal; validation
rows (``"eval": true``) are decoded greedily (temperature 0) and scored strictly (1 or 0), so the
val reward is plain accuracy.

The agent is ``async`` (the worker runs it on its event loop, no thread per rollout), which keeps a
CPU-bound demo cheaper; a plain ``def`` agent works the same way.
"""

from __future__ import annotations

from openai import AsyncOpenAI, DefaultAioHttpClient

from streamrl import rollout

FORMAT_CREDIT = 0.1
"""Train reward of a wrong digit (any other answer gets 0)."""

# One client (one HTTP connection pool) per process; each rollout uses a copy pointed at its own
# base_url, which is cheap (the pool is shared). The pool is the SDK's aiohttp one
# (``DefaultAioHttpClient``, as its docs advise for many concurrent requests): with the default
# httpx pool and the demo's 128 concurrent rollouts, every request scanned all 128 connections
# (a socket check each), ~40 % of the worker's CPU in a py-spy profile.
_CLIENT = AsyncOpenAI(
    base_url="http://127.0.0.1:1/v1", api_key="unused", max_retries=0, http_client=DefaultAioHttpClient()
)


def score(answer: str, expected: str, *, strict: bool) -> float:
    """1.0 if ``answer`` is ``expected``; else ``FORMAT_CREDIT`` for a single digit unless ``strict``; else 0."""
    answer = answer.strip()
    if answer == expected:
        return 1.0
    if not strict and len(answer) == 1 and answer.isdigit():
        return FORMAT_CREDIT
    return 0.0


@rollout(name="max_digit")
async def solve(task: dict, llm) -> float:
    """One rollout: ask for the largest digit of ``task["prompt"]`` and score the reply."""
    client = _CLIENT.with_options(base_url=llm.base_url, api_key=llm.api_key)
    sampling = dict(llm.sampling)
    evaluating = bool(task.get("eval"))
    if evaluating:
        sampling["temperature"] = 0.0
    sampling.setdefault("max_tokens", 1)
    out = await client.chat.completions.create(
        model=llm.model, messages=[{"role": "user", "content": task["prompt"]}], **sampling
    )
    return score(out.choices[0].message.content or "", str(task["answer"]), strict=evaluating)
