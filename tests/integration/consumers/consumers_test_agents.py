"""Agents used by the consumers integration tests (imported by worker processes via --agent)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from streamrl import Agent, emit_reward, rollout


def _messages(task: dict) -> list[dict]:
    return [{"role": "user", "content": task["question"]}]


@rollout(name="solver")
async def two_calls(task: dict, llm) -> float:
    """Two chat calls (the second streamed), an intermediate reward, a final reward."""
    client = llm.async_openai_client()
    first = await client.chat.completions.create(model=llm.model, messages=_messages(task))
    emit_reward(0.25, name="format")
    text = ""
    stream = await client.chat.completions.create(
        model=llm.model,
        messages=[
            *_messages(task),
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "again REPLY:" + task["answer"]},
        ],
        stream=True,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    await client.close()
    return 1.0 if text == task["answer"] else 0.0


@rollout
def sync_client_zoo(task: dict, llm) -> float:
    """Calls the gateway with the client named by the task (openai sync/async/stream, LangChain)."""
    kind = task["client"]
    msgs = _messages(task)
    if kind == "openai_sync":
        out = llm.openai_client().chat.completions.create(model=llm.model, messages=msgs)
        text = out.choices[0].message.content
    elif kind == "openai_sync_stream":
        stream = llm.openai_client().chat.completions.create(model=llm.model, messages=msgs, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    elif kind == "openai_async":

        async def go() -> str:
            c = llm.async_openai_client()
            out = await c.chat.completions.create(model=llm.model, messages=msgs)
            await c.close()
            return out.choices[0].message.content

        text = asyncio.run(go())
    elif kind == "openai_async_stream":

        async def go_stream() -> str:
            c = llm.async_openai_client()
            s = await c.chat.completions.create(model=llm.model, messages=msgs, stream=True)
            parts = [ch.choices[0].delta.content or "" async for ch in s if ch.choices]
            await c.close()
            return "".join(parts)

        text = asyncio.run(go_stream())
    elif kind in ("langchain", "langchain_stream"):
        from langchain_openai import ChatOpenAI

        chat = ChatOpenAI(base_url=llm.base_url, api_key=llm.api_key, model=llm.model, max_retries=0)
        if kind == "langchain":
            text = chat.invoke(task["question"]).content
        else:
            text = "".join(str(c.content) for c in chat.stream(task["question"]))
    elif kind == "openai_tools":
        tools = [
            {
                "type": "function",
                "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
            }
        ]
        out = llm.openai_client().chat.completions.create(model=llm.model, messages=msgs, tools=tools)
        call = out.choices[0].message.tool_calls[0]
        text = task["answer"] if call.function.name == "lookup" else "no tool call"
    else:
        raise ValueError(f"unknown client {kind!r}")
    return 1.0 if text == task["answer"] else 0.0


@rollout
async def sleepy(task: dict, llm) -> float:
    """Sleeps ``task['sleep_s']`` seconds, makes one call, returns 1."""
    await asyncio.sleep(float(task.get("sleep_s", 0.0)))
    c = llm.async_openai_client()
    await c.chat.completions.create(model=llm.model, messages=_messages(task))
    await c.close()
    return 1.0


@rollout
def sleepy_sync(task: dict, llm) -> float:
    """A sync agent that sleeps ``task['sleep_s']`` seconds without any call."""
    time.sleep(float(task.get("sleep_s", 0.0)))
    return 0.5


@rollout
def broken(task: dict, llm) -> float:
    """Fails or returns a bad reward depending on the task."""
    if task.get("mode") == "raise":
        raise RuntimeError("agent exploded on purpose")
    if task.get("mode") == "nan":
        return float("nan")
    if task.get("mode") == "sleep":
        time.sleep(float(task["sleep_s"]))
    return 1.0


@rollout
async def trivial(task: dict, llm) -> float:
    """No LLM call: measures the worker's own cost per rollout."""
    return 1.0


class CountingAgent(Agent):
    """Class form: setup/teardown once per worker."""

    name = "counter"

    def setup(self, worker_id: str) -> None:
        self.n = 0
        self.worker_id = worker_id

    async def rollout(self, task: dict, llm) -> float:
        self.n += 1
        c = llm.async_openai_client()
        await c.chat.completions.create(model=llm.model, messages=_messages(task))
        await c.close()
        return float(self.n > 0)


@rollout(name="policy-agent")
async def chat_twice(task: dict, llm) -> float:
    """Two calls with the worker's sampling defaults, the second streamed (for the real CPU server)."""
    client = llm.async_openai_client(max_retries=0)
    msgs = _messages(task)
    await client.chat.completions.create(model=llm.model, messages=msgs, **llm.sampling)
    stream = await client.chat.completions.create(model=llm.model, messages=msgs, stream=True, **llm.sampling)
    async for _ in stream:
        pass
    await client.close()
    return 0.0


@rollout
async def reads_its_prompt(task: dict, llm) -> float:
    """Reports the pinned prompt it was given (filled with the task's name) as a reward's name."""
    prompt = llm.resources["system_prompt"].format(name=task["name"])
    emit_reward(1.0, name=f"saw:{prompt}:{llm.resources['system_prompt'].version}")
    return float(len(llm.resources))


BIG = 123456789012345678901234567890  # beyond 64 bits: must reach the agent exactly


@rollout
def catalogue(task: dict, llm) -> object:
    """The bad-input catalogue's agent (sync): ``task["do"]`` says how it misbehaves, or which call to
    make (``q``: the user message with the fake server's directives; ``stream``)."""
    do = task["do"]
    if do == "raise":
        raise ValueError("the agent's own bug")
    if do == "nan":
        return float("nan")
    if do == "str":
        return "great"
    if do == "huge":
        return 10**400
    if do == "none":
        return None
    if do == "hang":
        if task.get("mark"):
            Path(task["mark"]).write_text("running")
        threading.Event().wait()  # never returns
    if do == "int":
        n = task["n"]
        if type(n) is not int or n != BIG:
            raise AssertionError(f"payload integer arrived as {n!r}")
        return 1.0
    client = llm.openai_client(max_retries=0)
    kw = {"model": llm.model, "messages": [{"role": "user", "content": task["q"]}]}
    if task.get("stream"):
        for _chunk in client.chat.completions.create(stream=True, **kw):
            pass
    else:
        client.chat.completions.create(**kw)
    return 1.0
