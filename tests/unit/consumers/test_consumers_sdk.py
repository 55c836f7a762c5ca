"""The agent SDK and the runner: decorator forms, rewards, timeouts, failures as outcomes."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import streamrl
from streamrl.consumers.runner import AgentLoadError, AgentRunner, finish, load_agent
from streamrl.sdk import (
    LLM,
    Agent,
    EmittedReward,
    RewardError,
    as_reward,
    emit_reward,
    reduce_rewards,
    rollout,
)


def _llm() -> LLM:
    return LLM(
        "http://gw/rollouts/t%2F0%2F1/attempts/a/v1",
        "policy",
        "key",
        {"temperature": 1.0},
        "t/0/1",
        "a",
        None,
        "http://gw",
    )


def _run(runner: AgentRunner, task: object = None, timeout_s: float = 5.0):
    with ThreadPoolExecutor(2) as pool:
        return asyncio.run(runner.run(task, _llm(), timeout_s=timeout_s, executor=pool))


def test_public_names_are_reexported_from_streamrl() -> None:
    assert streamrl.rollout is rollout and streamrl.emit_reward is emit_reward
    assert streamrl.LLM is LLM and streamrl.Agent is Agent


def test_llm_urls_encode_ids_and_agent() -> None:
    url = LLM.scoped_base_url("http://h:1/", "task/0/3", "att", "solver team")
    assert url == "http://h:1/rollouts/task%2F0%2F3/attempts/att/agents/solver%20team/v1"
    sub = _llm().for_agent("judge")
    assert sub.base_url.endswith("/attempts/a/agents/judge/v1") and sub.agent_name == "judge"
    with pytest.raises(ValueError):
        _llm().for_agent("")


@pytest.mark.parametrize("value", [1, 0.5, np.float32(0.25), np.int64(3)])
def test_rewards_accept_finite_reals(value: object) -> None:
    assert as_reward(value, "x") == float(value)


@pytest.mark.parametrize("value", [True, math.nan, math.inf, "1.0", None, [1.0], np.array([1.0, 2.0])])
def test_rewards_reject_everything_else(value: object) -> None:
    with pytest.raises(RewardError, match="where"):
        as_reward(value, "where")


def test_reductions() -> None:
    rs = [
        EmittedReward("reward", 1.0, True, 0),
        EmittedReward("aux", 9.0, False, 1),
        EmittedReward("reward", 3.0, True, 2),
    ]
    assert [reduce_rewards(rs, r) for r in ("last", "sum", "mean", "max", "min")] == [3.0, 4.0, 2.0, 3.0, 1.0]
    assert reduce_rewards(rs[1:2], "last") is None
    with pytest.raises(ValueError, match="reduction"):
        rollout(reduction="median")(lambda t, llm: 1.0)  # type: ignore[arg-type]


def test_emit_reward_outside_a_rollout_raises() -> None:
    with pytest.raises(RuntimeError, match="outside a rollout"):
        emit_reward(1.0)


def test_sync_agent_emits_rewards_from_its_thread() -> None:
    seen = {}

    @rollout(name="solver", reduction="sum")
    def agent(task: dict, llm: LLM) -> None:
        seen["thread"] = threading.current_thread().name
        emit_reward(0.5)
        emit_reward(2.0, name="length", primary=False)
        emit_reward(0.25, name="bonus", primary=True)

    with pytest.raises(
        RuntimeError, match="outside a rollout"
    ):  # still a plain function when called directly
        agent({"q": 1}, _llm())
    out = _run(AgentRunner(agent))
    assert out.status == "succeeded" and out.reward == 0.75, out.error
    assert [(r.name, r.primary) for r in out.rewards] == [
        ("reward", True),
        ("length", False),
        ("bonus", True),
    ]
    assert seen["thread"] != threading.main_thread().name


def test_async_agent_return_value_is_the_last_primary_reward() -> None:
    @rollout
    async def agent(task: dict, llm: LLM) -> float:
        emit_reward(0.1)
        await asyncio.sleep(0)
        return 0.9

    out = _run(AgentRunner(agent))
    assert out.status == "succeeded" and out.reward == 0.9 and [r.value for r in out.rewards] == [0.1, 0.9]


def test_failures_and_timeouts_are_outcomes() -> None:
    def raises(task: object, llm: LLM) -> float:
        raise KeyError("missing field")

    async def hangs(task: object, llm: LLM) -> float:
        await asyncio.sleep(30)
        return 1.0

    def sleeps(task: object, llm: LLM) -> float:
        time.sleep(0.5)
        return 1.0

    out = _run(AgentRunner(raises))
    assert out.status == "failed" and "KeyError: 'missing field'" in out.error
    t0 = time.monotonic()
    out = _run(AgentRunner(hangs), timeout_s=0.2)
    assert out.status == "timeout" and "0.2 s" in out.error and time.monotonic() - t0 < 2
    out = _run(AgentRunner(rollout(timeout_s=0.1)(sleeps)), timeout_s=10)
    assert out.status == "timeout"
    out = _run(AgentRunner(lambda t, llm: "great"))
    assert out.status == "failed" and "str 'great'" in out.error
    out = _run(AgentRunner(lambda t, llm: None))
    assert out.status == "failed" and "no reward" in out.error

    def bad_emit(task: object, llm: LLM) -> float:
        emit_reward(float("inf"), name="x")
        return 1.0

    out = _run(AgentRunner(bad_emit))
    assert out.status == "failed" and "finite" in out.error


def test_finish_appends_returned_reward() -> None:
    out = finish(1, [], "last", 0.1)
    assert out.reward == 1.0 and out.rewards[0].primary and out.rewards[0].name == "reward"


class _Counter(Agent):
    name = "counter"

    def setup(self, worker_id: str) -> None:
        self.worker_id = worker_id

    async def rollout(self, task: dict, llm: LLM) -> float:
        return float(len(self.worker_id))


def test_class_agent_setup_and_loader() -> None:
    runner = AgentRunner(_Counter)
    assert runner.name == "counter" and runner.is_async

    async def go():
        await runner.setup("abc")
        out = await runner.run({}, _llm(), timeout_s=1, executor=None)
        await runner.teardown()
        return out

    assert asyncio.run(go()).reward == 3.0
    assert load_agent("streamrl.sdk:emit_reward").fn is emit_reward
    for spec, msg in [
        ("nocolon", "expected"),
        ("no_such_mod_x:f", "cannot import"),
        ("streamrl.sdk:nope", "no attribute"),
        ("streamrl.sdk:PRIMARY_REWARD_NAME", "not an agent"),
    ]:
        with pytest.raises(AgentLoadError, match=msg):
            load_agent(spec)


def test_load_agent_imports_from_the_current_directory(tmp_path, monkeypatch) -> None:
    """README: `streamrl worker --agent my_agents:solve` run next to my_agents.py (console script: cwd not on sys.path)."""
    import sys

    (tmp_path / "nu_agents_cwd_mod.py").write_text(
        "from streamrl import rollout\n\n@rollout\ndef solve(task, llm):\n    return 1.0\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "nu_agents_cwd_mod", raising=False)
    assert load_agent("nu_agents_cwd_mod:solve").spec == "nu_agents_cwd_mod:solve"
