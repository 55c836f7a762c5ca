"""The ``openai`` SDK, Chat Completions, with one tool: OpenAI's function-calling quick start.

Changed for StreamRL: the client's ``base_url``/``api_key`` and the ``model`` come from ``llm`` (the
rollout's gateway URL); ``@rollout`` marks the function and its return value is the reward.
Run: ``streamrl worker --agent examples.frameworks.openai_chat:solve``.
"""

from __future__ import annotations

import json

from openai import AsyncOpenAI

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
    client = AsyncOpenAI(base_url=llm.base_url, api_key=llm.api_key)  # StreamRL: the rollout's gateway
    stream = bool(task.get("stream"))
    messages = [{"role": "user", "content": task["question"]}]
    called = False
    for _ in range(4):  # model -> tools -> model, until it answers
        if stream:
            message = await _streamed_message(client, llm.model, messages)
        else:
            completion = await client.chat.completions.create(model=llm.model, messages=messages, tools=tools)
            message = completion.choices[0].message.model_dump(exclude_none=True)
        messages.append(message)
        if not message.get("tool_calls"):
            return float(called and "sunny" in (message.get("content") or "").lower())
        for call in message["tool_calls"]:
            args = json.loads(call["function"]["arguments"])
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": get_weather(**args)})
            called = True
    return 0.0


async def _streamed_message(client: AsyncOpenAI, model: str, messages: list) -> dict:
    """The assistant message of a streamed completion, accumulated from its deltas."""
    content, calls = "", {}
    stream = await client.chat.completions.create(model=model, messages=messages, tools=tools, stream=True)
    async for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is None:
            continue
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            call = calls.setdefault(
                tc.index, {"id": tc.id, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["function"]["name"] += (tc.function and tc.function.name) or ""
            call["function"]["arguments"] += (tc.function and tc.function.arguments) or ""
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message
