"""Load an agent by name and run one rollout of it: timeout, thread pool, rewards, outcome.

Nothing here raises because of the agent: an exception, a timeout or a bad reward becomes an
:class:`Outcome` with status ``failed``/``timeout`` and the reason, so the worker never crashes.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import time
import traceback
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from streamrl.consumers.sync_pool import SyncAgentPool
from streamrl.errors import StreamRLError
from streamrl.sdk import (
    LLM,
    Agent,
    EmittedReward,
    Reduction,
    RewardError,
    RewardLog,
    RolloutFunction,
    as_reward,
    bind_reward_log,
    reduce_rewards,
)

__all__ = ["AgentLoadError", "AgentRunner", "Outcome", "import_agent", "load_agent"]

MAX_ERROR_CHARS = 4000


class AgentLoadError(StreamRLError):
    """``--agent`` (or ``worker.agent``) does not name an importable agent (the message names the
    key, the value and the ImportError/AttributeError)."""


@dataclass
class Outcome:
    """How one rollout attempt ended.

    Attributes:
        status: ``succeeded``, ``failed`` or ``timeout``.
        reward: the rollout reward (None unless succeeded).
        rewards: every emitted reward, in order (the returned value last).
        error: the reason when not succeeded (exception type, message and the agent's frames).
        duration_s: wall-clock duration of the agent call in seconds.
    """

    status: str
    reward: float | None = None
    rewards: list[EmittedReward] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0


class AgentRunner:
    """One loaded agent: a :class:`RolloutFunction` or an :class:`Agent` instance.

    Args:
        target: what ``--agent`` named: a ``@rollout`` function, a plain function, an ``Agent``
            subclass (instantiated here with no arguments) or an ``Agent`` instance.
        spec: the ``module:attr`` it came from (for messages).
        key: where ``spec`` came from (``--agent`` or ``worker.agent``), for messages.

    Raises:
        AgentLoadError: ``target`` is none of the above, or the ``Agent`` subclass's ``__init__`` failed.
    """

    def __init__(self, target: Any, spec: str = "<agent>", key: str = "--agent") -> None:
        _check_kind(target, spec, key)
        self.spec = spec
        self.instance: Agent | None = None
        if isinstance(target, type) and issubclass(target, Agent):
            try:
                target = target()
            except Exception as exc:
                raise AgentLoadError(f"{key} {spec!r}: {target.__name__}() failed: {exc!r}") from exc
        if isinstance(target, Agent):
            self.instance = target
            self.fn: Any = target.rollout
            self.name = target.name
            self.timeout_s = target.timeout_s
            self.reduction: Reduction = target.reduction
        elif isinstance(target, RolloutFunction):
            self.fn = target.fn
            self.name, self.timeout_s, self.reduction = target.name, target.timeout_s, target.reduction
        else:
            self.fn = target
            self.name, self.timeout_s, self.reduction = None, None, "last"
        self.is_async = inspect.iscoroutinefunction(self.fn)

    async def setup(self, worker_id: str) -> None:
        """Run ``Agent.setup`` (sync or async) once."""
        if self.instance is not None:
            result = self.instance.setup(worker_id)
            if inspect.isawaitable(result):
                await result

    async def teardown(self) -> None:
        """Run ``Agent.teardown`` (sync or async) once."""
        if self.instance is not None:
            result = self.instance.teardown()
            if inspect.isawaitable(result):
                await result

    async def run(self, task: Any, llm: LLM, *, timeout_s: float, executor: Executor | None) -> Outcome:
        """Run one rollout attempt; never raises because of the agent.

        Args:
            task: the decoded sample payload.
            llm: the attempt's :class:`LLM`.
            timeout_s: time limit in seconds (the agent's own ``timeout_s`` wins when set), counted
                from when the agent starts (a sync agent waiting for a free thread is not yet timed).
            executor: thread pool for sync agents (a timed-out sync agent's thread runs on; its
                result is discarded).

        Returns:
            The :class:`Outcome`. Cancelling this coroutine (worker shutdown) cancels the agent.
        """
        limit = self.timeout_s if self.timeout_s is not None else timeout_s
        log = RewardLog(llm.rollout_id, llm.attempt_id)
        ctx = bind_reward_log(log)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # one waiter woken by whichever comes first, the agent or the time limit (what asyncio.wait
        # does, without its per-call sets and callback bookkeeping)
        waiter: asyncio.Future[None] = loop.create_future()
        timer: asyncio.TimerHandle | None = None

        def wake(_: Any = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        def start_clock() -> None:
            """The time limit runs from when the agent starts: a sync agent queued for a free thread
            (``worker.sync_threads`` < ``concurrency``) has not used any of it yet."""
            nonlocal timer, t0
            if timer is None and not waiter.done():
                t0 = loop.time()
                timer = loop.call_later(limit, wake)

        def started_then_run() -> Any:  # on the agent's thread
            try:
                loop.call_soon_threadsafe(start_clock)
            except RuntimeError:  # the loop is closed: nobody waits for this call any more
                pass
            return ctx.run(self.fn, task, llm)

        pooled: Future[Any] | None = None  # a sync call on a SyncAgentPool (abandoned if given up)
        if self.is_async:
            fut: asyncio.Future[Any] = loop.create_task(self.fn(task, llm), context=ctx)
            start_clock()
        elif isinstance(executor, SyncAgentPool):
            pooled = executor.submit(started_then_run)
            fut = asyncio.wrap_future(pooled, loop=loop)
        else:
            fut = loop.run_in_executor(executor, started_then_run)
        fut.add_done_callback(wake)
        try:
            await waiter
        except asyncio.CancelledError:
            fut.cancel()
            if pooled is not None:
                executor.abandon(pooled)  # type: ignore[union-attr]
            log.closed = True
            raise
        finally:
            if timer is not None:
                timer.cancel()
            fut.remove_done_callback(wake)
        duration = loop.time() - t0
        log.closed = True
        if not fut.done():
            fut.cancel()
            if pooled is not None:  # a sync agent cannot be stopped: its thread is written off and
                executor.abandon(pooled)  # type: ignore[union-attr]  # replaced (consumers/sync_pool.py)
            return Outcome(
                "timeout", None, log.rewards, f"rollout exceeded its time limit of {limit:g} s", duration
            )
        exc = fut.exception()
        if exc is not None:
            return Outcome("failed", None, log.rewards, _format_exception(exc), duration)
        return finish(fut.result(), log.rewards, self.reduction, duration)


def finish(returned: Any, rewards: list[EmittedReward], reduction: Reduction, duration_s: float) -> Outcome:
    """Turn an agent's return value and emitted rewards into an :class:`Outcome`.

    The returned value (if not None) is appended as the last primary reward named ``reward``.
    """
    rewards = list(rewards)
    if returned is not None:
        try:
            value = as_reward(returned, "the agent's return value")
        except RewardError as exc:
            return Outcome("failed", None, rewards, str(exc), duration_s)
        emitted_at = rewards[-1].emitted_at if rewards else 0.0
        rewards.append(EmittedReward("reward", value, True, max(time.time(), emitted_at)))
    reward = reduce_rewards(rewards, reduction)
    if reward is None:
        return Outcome(
            "failed",
            None,
            rewards,
            "no reward: the agent returned None and emitted no primary reward (emit_reward(value) or return a float)",
            duration_s,
        )
    return Outcome("succeeded", reward, rewards, None, duration_s)


def _format_exception(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS // 4] + "\n...\n" + text[-(3 * MAX_ERROR_CHARS) // 4 :]
    return text.rstrip()


def _check_kind(target: Any, spec: str, key: str) -> None:
    """Raise :class:`AgentLoadError` unless ``target`` is something a worker can run."""
    if isinstance(target, type) and issubclass(target, Agent):
        return
    if isinstance(target, (Agent, RolloutFunction)) or (callable(target) and not isinstance(target, type)):
        return
    raise AgentLoadError(
        f"{key} {spec!r}: {type(target).__name__} is not an agent; name a @rollout function, "
        "a function (task, llm) -> reward, or an Agent subclass"
    )


def import_agent(spec: str, key: str = "--agent") -> Any:
    """Import ``package.module:attr`` and return what it names, checked to be an agent but not
    instantiated (an ``Agent`` subclass stays a class): the worker's rule, which ``streamrl dev``'s
    preflight applies too, so a typo fails before anything starts.

    The current directory is importable (as with ``python -m`` or uvicorn), so
    ``streamrl worker --agent my_agents:solve`` next to ``my_agents.py`` works; the ``streamrl``
    console script alone would not put it on ``sys.path``.

    Args:
        spec: ``package.module:function`` (or ``:Class``, or ``:obj.attr``).
        key: where ``spec`` came from, named in errors (``--agent`` or ``worker.agent``).

    Raises:
        AgentLoadError: bad syntax, module not importable (the exception it raised), attribute
            missing (the AttributeError) or not an agent; one line naming ``key`` and ``spec``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AgentLoadError(f"{key} {spec!r}: expected package.module:function (or :Class)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AgentLoadError(
            f"{key} {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise AgentLoadError(f"{key} {spec!r}: AttributeError: {exc}") from exc
    _check_kind(target, spec, key)
    return target


def load_agent(spec: str, key: str = "--agent") -> AgentRunner:
    """Import ``package.module:attr`` (:func:`import_agent`) and wrap it in an :class:`AgentRunner`.

    Raises:
        AgentLoadError: see :func:`import_agent`; also an ``Agent`` subclass whose ``__init__`` fails.
    """
    return AgentRunner(import_agent(spec, key), spec, key)
