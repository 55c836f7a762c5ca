"""LiteLLM with one tool: LiteLLM's function-calling quick start (``litellm.acompletion``).

Changed for StreamRL: ``model="openai/<policy>"`` with ``api_base``/``api_key`` from ``llm`` (LiteLLM's
route for any OpenAI-compatible server). Set ``LITELLM_LOCAL_MODEL_COST_MAP=True`` in the worker's
environment: otherwise importing LiteLLM fetches its model price list from GitHub (and waits ~10 s
for retries where the network is closed).
Run: ``streamrl worker --agent examples.frameworks.litellm_completion:solve``.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import

import litellm

from streamrl import rollout

tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city name"}},
                "required": ["city"],
            },
        },
    }
]


def get_weather(city: str) -> str:
    return f"Sunny, 22 C in {city}"


@rollout
async def solve(task: dict, llm) -> float:
    messages = [{"role": "user", "content": task["question"]}]
    called = False
    for _ in range(4):  # model -> tools -> model, until it answers
        kwargs = {"model": f"openai/{llm.model}", "api_base": llm.base_url, "api_key": llm.api_key}
        if task.get("stream"):
            chunks = [
                c
                async for c in await litellm.acompletion(
                    messages=messages, tools=tools, stream=True, **kwargs
                )
            ]
            response = litellm.stream_chunk_builder(chunks, messages=messages)
        else:
            response = await litellm.acompletion(messages=messages, tools=tools, **kwargs)
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return float(called and "sunny" in (message.content or "").lower())
        for call in message.tool_calls:
            output = get_weather(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
            called = True
    return 0.0
