"""CrewAI with one tool: CrewAI's quick start (an ``Agent`` with a ``@tool``, a ``Task``, a ``Crew``).

CrewAI needs ``openai<3`` while the OpenAI Agents SDK needs ``openai>=3``: install it in its own
environment (``make setup`` builds ``.venv-crewai``) and start this worker from there.

Changed for StreamRL, and why:
- the crew is built per rollout inside a :class:`streamrl.Agent` whose ``setup`` runs once per worker
  before any rollout: CrewAI imports LiteLLM lazily and not thread-safely (two rollouts in the
  worker's thread pool would both see a half-imported LiteLLM), so ``setup`` builds one LiteLLM-backed
  ``LLM`` first, single-threaded; and LiteLLM is told that the served policy (``llm.model``) supports
  function calling, once per name under a lock (else CrewAI's LiteLLM route falls back to a text
  ReAct prompt, since LiteLLM does not know the name);
- ``LLM(model=..., provider=..., base_url=..., api_key=...)`` from ``llm``: ``Native`` uses CrewAI's
  own OpenAI provider (Chat Completions), ``LiteLLM`` its LiteLLM route, ``Anthropic`` its native
  Anthropic provider (the Messages API, translated by the gateway), with ``max_tokens=1024`` since its
  default asks for 32,000 new tokens, more than a served policy's context holds;
- CrewAI's telemetry, trace upload and PyPI version check are turned off by environment variables.
Run: ``.venv-crewai/bin/streamrl worker --agent examples.frameworks.crewai_crew:Native`` (or
``:LiteLLM``, ``:Anthropic``).
"""

from __future__ import annotations

import os
import threading

for _var, _value in (
    ("CREWAI_DISABLE_TELEMETRY", "true"),  # anonymous usage telemetry to telemetry.crewai.com
    ("CREWAI_TRACING_ENABLED", "false"),  # execution traces to CrewAI's platform
    ("CREWAI_DISABLE_VERSION_CHECK", "true"),  # asks PyPI for a newer crewai
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),  # LiteLLM fetches its price list from GitHub at import
):
    os.environ.setdefault(_var, _value)

from crewai import LLM, Crew, Task  # noqa: E402
from crewai import Agent as CrewAgent  # noqa: E402
from crewai.tools import tool  # noqa: E402

from streamrl import Agent  # noqa: E402


@tool("get_weather")
def get_weather(city: str) -> str:
    """Get the current weather in a given city."""
    return f"Sunny, 22 C in {city}"


_registered: set[str] = set()
_registered_lock = threading.Lock()


def _register_with_litellm(model: str) -> None:
    """StreamRL: tell LiteLLM that ``openai/<model>`` calls tools (CrewAI asks it; for a name LiteLLM
    does not know, its LiteLLM route falls back to a text ReAct prompt). Once per name, thread-safe."""
    with _registered_lock:
        if model in _registered:
            return
        import litellm

        litellm.register_model({f"openai/{model}": {"litellm_provider": "openai", "mode": "chat",
                                                     "supports_function_calling": True,
                                                     "input_cost_per_token": 0.0, "output_cost_per_token": 0.0}})  # fmt: skip
        _registered.add(model)


class Native(Agent):
    """The crew on CrewAI's native OpenAI provider."""

    provider = "openai"
    is_litellm = False

    def setup(self, worker_id: str) -> None:
        # StreamRL: CrewAI's lazy LiteLLM import must happen once, here, before rollouts run in
        # parallel threads.
        _register_with_litellm("policy")
        LLM(model="openai/policy", base_url="http://127.0.0.1:1/v1", api_key="-", is_litellm=True)

    def make_llm(self, llm, stream: bool) -> LLM:
        return LLM(
            model=llm.model, provider=self.provider, base_url=llm.base_url, api_key=llm.api_key, stream=stream
        )

    def rollout(self, task: dict, llm) -> float:
        _register_with_litellm(llm.model)  # the served policy's name (rl.policy_name), once
        reporter = CrewAgent(
            role="Weather reporter",
            goal="Tell people the current weather",
            backstory="You check the weather with your tool before you answer.",
            tools=[get_weather],
            llm=self.make_llm(llm, bool(task.get("stream"))),
        )
        report = Task(
            description="{question}", expected_output="One sentence about the weather.", agent=reporter
        )
        crew = Crew(agents=[reporter], tasks=[report])
        result = crew.kickoff(inputs={"question": task["question"]})
        called = any(m.get("role") == "tool" for m in (result.tasks_output[0].messages or []))
        return float(called and "sunny" in result.raw.lower())


class LiteLLM(Native):
    """The crew on CrewAI's LiteLLM route."""

    def make_llm(self, llm, stream: bool) -> LLM:
        return LLM(
            model=f"openai/{llm.model}",
            base_url=llm.base_url,
            api_key=llm.api_key,
            stream=stream,
            is_litellm=True,
        )


class Anthropic(Native):
    """The crew on CrewAI's native Anthropic provider (the Messages API)."""

    def make_llm(self, llm, stream: bool) -> LLM:
        return LLM(
            model=llm.model,
            provider="anthropic",
            base_url=llm.anthropic_base_url,
            api_key=llm.api_key,
            stream=stream,
            max_tokens=1024,  # StreamRL: CrewAI's Anthropic default (32,000) exceeds the policy's context
        )
