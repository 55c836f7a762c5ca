"""AutoGen's ``AssistantAgent`` with one tool: AutoGen AgentChat's quick start.

Changed for StreamRL, and why: ``OpenAIChatCompletionClient`` gets ``base_url``/``api_key``/``model``
from ``llm`` and a ``model_info``: AutoGen refuses a model name it does not know (before any call)
unless told what the model can do. ``model_client_stream`` follows the task.
Run: ``streamrl worker --agent examples.frameworks.autogen_assistant:solve``.
"""

from __future__ import annotations

from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient

from streamrl import rollout


async def get_weather(city: str) -> str:
    """Get the current weather in a given city."""
    return f"Sunny, 22 C in {city}"


@rollout
async def solve(task: dict, llm) -> float:
    model_client = OpenAIChatCompletionClient(
        model=llm.model,
        base_url=llm.base_url,
        api_key=llm.api_key,
        model_info={  # StreamRL: the policy is not a model AutoGen knows by name
            "vision": False,
            "function_calling": True,
            "json_output": False,
            "structured_output": False,
            "family": "unknown",
        },
    )
    agent = AssistantAgent(
        name="weather_agent",
        model_client=model_client,
        tools=[get_weather],
        system_message="You are a helpful assistant.",
        reflect_on_tool_use=True,
        model_client_stream=bool(task.get("stream")),
    )
    try:
        result = await agent.run(task=task["question"])
    finally:
        await model_client.close()
    called = any(m.type == "ToolCallExecutionEvent" for m in result.messages)
    return float(called and "sunny" in str(result.messages[-1].content).lower())
