"""The ``openai`` SDK, Responses API, with one tool: OpenAI's function-calling quick start (Responses).

Changed for StreamRL: the client's ``base_url``/``api_key`` and the ``model`` come from ``llm``;
``@rollout`` marks the function and its return value is the reward. The gateway translates each
Responses call into one chat completion of the policy and records it with its token ids.
Run: ``streamrl worker --agent examples.frameworks.openai_responses:solve``.
"""

from __future__ import annotations

import json

from openai import AsyncOpenAI

from streamrl import rollout

tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather in a given city.",
        "parameters": {
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
    client = AsyncOpenAI(base_url=llm.base_url, api_key=llm.api_key)  # StreamRL: the rollout's gateway
    stream = bool(task.get("stream"))
    input_list = [{"role": "user", "content": task["question"]}]
    called = False
    for _ in range(4):  # model -> tools -> model, until it answers
        if stream:
            async with client.responses.stream(model=llm.model, tools=tools, input=input_list) as events:
                response = await events.get_final_response()
        else:
            response = await client.responses.create(model=llm.model, tools=tools, input=input_list)
        input_list += [item.model_dump(exclude_none=True) for item in response.output]
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return float(called and "sunny" in response.output_text.lower())
        for call in calls:
            output = get_weather(**json.loads(call.arguments))
            input_list.append({"type": "function_call_output", "call_id": call.call_id, "output": output})
            called = True
    return 0.0
