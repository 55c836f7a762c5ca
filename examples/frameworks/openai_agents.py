"""The OpenAI Agents SDK with one tool: its quick start (``Agent`` + ``function_tool`` + ``Runner``).

Changed for StreamRL, and why:
- the model comes from a per-run ``RunConfig(model_provider=OpenAIProvider(...))`` built on the rollout's
  client, not from ``set_default_openai_client``: that one is process-global, so concurrent rollouts
  (each with its own gateway URL) would send their calls through each other's URLs;
- ``tracing_disabled=True``: otherwise the SDK uploads a trace of every run to OpenAI;
- ``solve`` uses the SDK's default model class (the Responses API, which the gateway translates);
  ``solve_chat`` uses its Chat Completions model (``use_responses=False``).
Run: ``streamrl worker --agent examples.frameworks.openai_agents:solve`` (or ``:solve_chat``).
"""

from __future__ import annotations

from agents import Agent, OpenAIProvider, RunConfig, Runner, function_tool
from openai import AsyncOpenAI

from streamrl import rollout


@function_tool
def get_weather(city: str) -> str:
    """Get the current weather in a given city."""
    return f"Sunny, 22 C in {city}"


agent = Agent(name="Weather agent", instructions="You are a helpful agent.", tools=[get_weather])


async def _run(task: dict, llm, use_responses: bool) -> float:
    client = AsyncOpenAI(base_url=llm.base_url, api_key=llm.api_key)
    config = RunConfig(
        model=llm.model,
        model_provider=OpenAIProvider(openai_client=client, use_responses=use_responses),
        tracing_disabled=True,
    )
    if task.get("stream"):
        result = Runner.run_streamed(agent, task["question"], run_config=config)
        async for _event in result.stream_events():
            pass
    else:
        result = await Runner.run(agent, task["question"], run_config=config)
    called = any(item.type == "tool_call_output_item" for item in result.new_items)
    return float(called and "sunny" in str(result.final_output).lower())


@rollout
async def solve(task: dict, llm) -> float:
    return await _run(task, llm, use_responses=True)


@rollout
async def solve_chat(task: dict, llm) -> float:
    return await _run(task, llm, use_responses=False)
