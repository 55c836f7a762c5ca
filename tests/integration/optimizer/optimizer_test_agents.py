"""Agents of the optimizer tests: their reward depends on the pinned prompt, deterministically.

They call the real (tiny) policy through the gateway so every rollout has recorded calls, and read
their prompt with one line, ``llm.resources["system_prompt"]``.
"""

from __future__ import annotations

import asyncio

from streamrl import rollout


async def _call(llm, system: str, user: str) -> str:
    client = llm.async_openai_client(max_retries=0)
    try:
        out = await client.chat.completions.create(
            model=llm.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=4,
            temperature=0.0,
        )
    finally:
        await client.close()
    return out.choices[0].message.content or ""


@rollout(name="solver")
async def prompted(task: dict, llm) -> float:
    """APO's agent: 1.0 with a prompt asking for precision, 0.5 otherwise; hangs on a prompt saying HANG."""
    prompt = llm.resources["system_prompt"].format(question=task["question"])
    if "HANG" in prompt:
        await asyncio.sleep(3600)
    await _call(llm, prompt, task["question"])
    return 1.0 if "precisely" in prompt else 0.5


@rollout(name="shower")
async def shows(task: dict, llm) -> float:
    """Few-shot's agent: a train task is worth its ``r``; a val task 0.25 per demonstration in the
    prompt (lines starting ``Q: ``), up to 1."""
    prompt = llm.resources["system_prompt"].format()
    await _call(llm, prompt, task["question"])
    if not task.get("eval"):
        return float(task["r"])
    return min(1.0, 0.25 * (1 + sum(line.startswith("Q: ") for line in prompt.splitlines())))
