"""Sync agents that never return: their thread is written off and replaced; healthy rollouts keep
running on a full pool, and nothing waits for the hung thread (not even the interpreter at exit)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from streamrl.consumers.runner import AgentRunner
from streamrl.consumers.sync_pool import SyncAgentPool
from streamrl.sdk import LLM

NEVER = threading.Event()  # never set: a hung agent waits on it forever


def _llm(rid: str) -> LLM:
    return LLM("http://gw/v1", "policy", "key", {}, rid, "a", None, "http://gw")


def test_a_hung_sync_agent_is_abandoned_and_healthy_rollouts_keep_running() -> None:
    def agent(task: dict, llm: LLM) -> float:
        if task["hang"]:
            NEVER.wait()
        return 1.0

    runner = AgentRunner(agent)
    pool = SyncAgentPool(1, "test-agent")  # one thread: a hung agent alone would starve the rest

    async def main() -> list[str]:
        hung = [runner.run({"hang": True}, _llm(f"h{i}"), timeout_s=0.2, executor=pool) for i in range(3)]
        outs = await asyncio.gather(*hung)
        # with the hung threads still holding the pool these would time out, queued behind them
        ok = await asyncio.gather(
            *(runner.run({"hang": False}, _llm(f"ok{i}"), timeout_s=5, executor=pool) for i in range(5))
        )
        return [o.status for o in outs] + [o.status for o in ok]

    statuses = asyncio.run(main())
    assert statuses == ["timeout"] * 3 + ["succeeded"] * 5
    assert pool.abandoned == 3  # still stuck in NEVER.wait(); each was replaced
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("test-agent"))
    pool.shutdown()


def test_the_time_limit_runs_from_when_a_queued_sync_agent_starts() -> None:
    """With fewer threads than rollouts, a rollout queued behind a slow one is timed from its own start:
    it succeeds although it waited longer than its limit for the thread (it used to time out unrun)."""
    gate, ran = threading.Event(), []

    def agent(task: dict, llm: LLM) -> float:
        ran.append(task["name"])
        if task["name"] == "slow":
            gate.wait(10)
        return 1.0

    runner = AgentRunner(agent)
    pool = SyncAgentPool(1, "queued-agent")

    async def main() -> list[str]:
        slow = asyncio.ensure_future(runner.run({"name": "slow"}, _llm("slow"), timeout_s=10, executor=pool))
        queued = asyncio.ensure_future(
            runner.run({"name": "queued"}, _llm("q"), timeout_s=0.2, executor=pool)
        )
        await asyncio.sleep(0.6)  # three times the queued rollout's limit, spent waiting for the thread
        assert ran == ["slow"] and not queued.done()
        gate.set()
        return [o.status for o in await asyncio.gather(slow, queued)]

    assert asyncio.run(main()) == ["succeeded", "succeeded"]
    pool.shutdown()


def test_a_late_return_of_an_abandoned_call_is_dropped_and_its_thread_exits() -> None:
    gate = threading.Event()
    pool = SyncAgentPool(1, "late-agent")
    fut = pool.submit(gate.wait)
    deadline = time.monotonic() + 5
    while not fut.running():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert pool.abandon(fut) and pool.abandoned == 1
    assert pool.submit(lambda: 7).result(timeout=5) == 7  # the replacement serves the queue
    gate.set()
    fut.result(timeout=5)
    deadline = time.monotonic() + 5
    while pool.abandoned:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sum(t.name.startswith("late-agent") for t in threading.enumerate()) == 1  # size kept
    pool.shutdown()


def test_the_process_exits_at_once_with_a_hung_agent_thread() -> None:
    """What made a worker ignore SIGTERM: the interpreter joined the stuck pool thread at exit."""
    code = textwrap.dedent(
        """
        import threading
        from streamrl.consumers.sync_pool import SyncAgentPool
        pool = SyncAgentPool(1)
        fut = pool.submit(threading.Event().wait)
        while not fut.running():
            pass
        pool.abandon(fut)
        pool.shutdown()
        print("done", flush=True)
        """
    )
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr
    assert time.monotonic() - t0 < 30


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        SyncAgentPool(0)
