"""LangChain's ``ChatOpenAI`` with one tool: LangChain's tool-calling quick start (``bind_tools``).

Changed for StreamRL: ``base_url``/``api_key``/``model`` come from ``llm``; ``streaming=`` follows the
task. ``solve`` uses Chat Completions; ``solve_responses`` sets ``use_responses_api=True`` (LangChain
also switches to the Responses API by itself when ``reasoning=`` is set), which the gateway translates.
Run: ``streamrl worker --agent examples.frameworks.langchain_openai:solve`` (or ``:solve_responses``).
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from streamrl import rollout


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a given city."""
    return f"Sunny, 22 C in {city}"


async def _run(task: dict, llm, use_responses_api: bool) -> float:
    model = ChatOpenAI(
        model=llm.model,
        base_url=llm.base_url,
        api_key=llm.api_key,
        streaming=bool(task.get("stream")),
        use_responses_api=use_responses_api,
    )
    llm_with_tools = model.bind_tools([get_weather])
    messages = [HumanMessage(task["question"])]
    called = False
    for _ in range(4):  # model -> tools -> model, until it answers
        ai_msg = await llm_with_tools.ainvoke(messages)
        messages.append(ai_msg)
        if not ai_msg.tool_calls:
            return float(called and "sunny" in ai_msg.text.lower())
        for tool_call in ai_msg.tool_calls:
            messages.append(await get_weather.ainvoke(tool_call))
            called = True
    return 0.0


@rollout
async def solve(task: dict, llm) -> float:
    return await _run(task, llm, use_responses_api=False)


@rollout
async def solve_responses(task: dict, llm) -> float:
    return await _run(task, llm, use_responses_api=True)
