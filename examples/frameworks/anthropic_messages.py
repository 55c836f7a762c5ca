"""The ``anthropic`` SDK (Messages API) with one tool: Anthropic's tool-use quick start.

Changed for StreamRL: ``base_url=llm.anthropic_base_url`` (the rollout's gateway without ``/v1``: the
SDK adds ``/v1/messages``), ``api_key`` and ``model`` from ``llm``. The gateway translates each
Messages call into one chat completion of the policy and records it with its token ids.
Run: ``streamrl worker --agent examples.frameworks.anthropic_messages:solve``.
"""

from __future__ import annotations

from anthropic import AsyncAnthropic

from streamrl import rollout

tools = [
    {
        "name": "get_weather",
        "description": "Get the current weather in a given city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    }
]


def get_weather(city: str) -> str:
    return f"Sunny, 22 C in {city}"


@rollout
async def solve(task: dict, llm) -> float:
    client = AsyncAnthropic(base_url=llm.anthropic_base_url, api_key=llm.api_key)
    messages = [{"role": "user", "content": task["question"]}]
    called = False
    for _ in range(4):  # model -> tools -> model, until it answers
        if task.get("stream"):
            async with client.messages.stream(
                model=llm.model, max_tokens=1024, tools=tools, messages=messages
            ) as s:
                response = await s.get_final_message()
        else:
            response = await client.messages.create(
                model=llm.model, max_tokens=1024, tools=tools, messages=messages
            )
        messages.append({"role": "assistant", "content": response.content})
        if response.stop_reason != "tool_use":
            text = "".join(block.text for block in response.content if block.type == "text")
            return float(called and "sunny" in text.lower())
        results = [
            {"type": "tool_result", "tool_use_id": block.id, "content": get_weather(**block.input)}
            for block in response.content
            if block.type == "tool_use"
        ]
        messages.append({"role": "user", "content": results})
        called = True
    return 0.0
