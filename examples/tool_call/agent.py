"""The tool-call agent: answer a request by calling the one tool it needs, with the right arguments.

Written with the official ``openai`` SDK; the only StreamRL import is ``@rollout``. Each rollout
sends the task's tool in ``tools`` and, before the real request, one example exchange for that tool
(a request and the assistant's ``<tool_call>``): small models such as SmolLM2-135M-Instruct follow the
call format far more often after seeing one (the server puts the tools and the format into the
system prompt when the model's chat template ignores ``tools``; see ``streamrl.inference.tools``).
The reward is :func:`examples.tool_call.tools.score_call` of the returned ``tool_calls``: 1.0 for the
right call, partial credit for a well-formed call with some arguments wrong, 0 without a call.
Validation rows (``"eval": true``) are decoded greedily and count only exact calls (1 or 0), so the
val reward is the share of requests answered with exactly the right call.

Run it through StreamRL: ``streamrl dev -c configs/tool_call.yaml``.
"""

from __future__ import annotations

import json

from openai import AsyncOpenAI

from examples.tool_call.tools import EXAMPLES, TOOLS, score_call
from streamrl import emit_reward, rollout

# One client (one HTTP connection pool) per process; each rollout uses a copy with its own base_url.
_CLIENT = AsyncOpenAI(base_url="http://127.0.0.1:1/v1", api_key="unused", max_retries=0)


def messages_for(task: dict) -> list[dict]:
    """The example exchange for the task's tool, then the task's request."""
    request, args = EXAMPLES[task["tool"]]
    call = json.dumps({"name": task["tool"], "arguments": args})
    return [
        {"role": "user", "content": request},
        {"role": "assistant", "content": f"<tool_call>\n{call}\n</tool_call>"},
        {"role": "user", "content": task["question"]},
    ]


@rollout(name="tool_call")
async def solve(task: dict, llm) -> float:
    """One rollout: one chat completion with the task's tool; the reward scores its tool call."""
    return await call_and_score(task, llm, messages_for(task))


async def call_and_score(task: dict, llm, messages: list[dict]) -> float:
    """One chat completion of ``messages`` with the task's tool (greedy for a val row); the reward of
    its tool call (val: 1 for the exact call, else 0)."""
    client = _CLIENT.with_options(base_url=llm.base_url, api_key=llm.api_key)
    sampling = dict(llm.sampling)
    evaluating = bool(task.get("eval"))
    if evaluating:
        sampling["temperature"] = 0.0
    sampling.setdefault("max_tokens", 64)
    out = await client.chat.completions.create(
        model=llm.model, messages=messages, tools=[TOOLS[task["tool"]]], **sampling
    )
    calls = [c.model_dump() for c in (out.choices[0].message.tool_calls or [])]
    reward = score_call(calls, task["tool"], task["arguments"])
    emit_reward(float(bool(calls)), name="called_a_tool")
    if evaluating:
        return float(reward == 1.0)
    return reward
