"""LangGraph's prebuilt ReAct agent with one tool: LangGraph's quick start (``create_react_agent``).

Changed for StreamRL: the model is ``ChatOpenAI`` on ``llm``'s ``base_url``/``api_key``/``model``
(the quick start names a hosted model); with ``stream`` the graph is run with ``stream_mode="messages"``
(every model call streams).  Run: ``streamrl worker --agent examples.frameworks.langgraph_react:solve``.
"""

from __future__ import annotations

from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent

from streamrl import rollout


def get_weather(city: str) -> str:
    """Get the current weather in a given city."""
    return f"Sunny, 22 C in {city}"


@rollout
async def solve(task: dict, llm) -> float:
    model = ChatOpenAI(model=llm.model, base_url=llm.base_url, api_key=llm.api_key)
    agent = create_react_agent(model=model, tools=[get_weather], prompt="You are a helpful assistant")
    inputs = {"messages": [{"role": "user", "content": task["question"]}]}
    if task.get("stream"):  # tokens as they come ("messages"), and the state after each step ("values")
        async for mode, chunk in agent.astream(inputs, stream_mode=["messages", "values"]):
            if mode == "values":
                messages = chunk["messages"]
    else:
        messages = (await agent.ainvoke(inputs))["messages"]
    called = any(m.type == "tool" for m in messages)
    return float(called and "sunny" in messages[-1].text.lower())
