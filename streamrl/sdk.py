"""The agent SDK: ``@rollout``, ``emit_reward``, ``LLM`` and the ``Agent`` class form.

An agent is a function ``(task, llm) -> reward | None`` (sync or async). ``task`` is the sample's
payload (a dict decoded from JSON); ``llm`` tells the agent where to send its OpenAI-API calls
(``llm.base_url``, ``llm.model``, ``llm.api_key``) and which sampling defaults to use. Every call
made through ``llm.base_url`` is recorded with its exact token ids by the gateway.

Example::

    from openai import OpenAI
    from streamrl import rollout

    @rollout
    def solve(task: dict, llm) -> float:
        client = OpenAI(base_url=llm.base_url, api_key=llm.api_key)
        out = client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": task["question"]}], **llm.sampling
        )
        return float(out.choices[0].message.content.strip() == task["answer"])

Rewards: the value the function returns (if not None) is the rollout's final primary reward.
``emit_reward(value, name=...)`` records intermediate or extra-dimension rewards during the rollout;
rewards named ``"reward"`` (or emitted with ``primary=True``) are primary. The rollout's reward is the
last primary reward unless ``@rollout(reduction="sum"|"mean"|"max"|"min")`` says otherwise. A reward
must be a finite real number; anything else fails the rollout with the reason.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
import numbers
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, overload

from streamrl.resources import ResourceMap
from streamrl.schemas.errors import StreamRLError
from streamrl.schemas.inference_http import attempt_base_url

__all__ = ["LLM", "Agent", "EmittedReward", "RewardError", "RolloutFunction", "emit_reward", "rollout"]

Reduction = Literal["last", "sum", "mean", "max", "min"]
REDUCTIONS: tuple[str, ...] = ("last", "sum", "mean", "max", "min")
PRIMARY_REWARD_NAME = "reward"


class RewardError(StreamRLError, ValueError):
    """A reward is not a finite real number (or there is no reward at all). Also a ``ValueError``."""


@dataclass(frozen=True)
class LLM:
    """Where and how an agent calls the policy during one rollout attempt.

    Attributes:
        base_url: OpenAI-API base URL ending in ``/v1``, scoped to this rollout attempt
            (``<gateway>/rollouts/<rollout_id>/attempts/<attempt_id>[/agents/<name>]/v1``).
        model: model name to pass as ``model`` (the policy served by the inference service).
        api_key: API key to pass to the client: this attempt's token, which the gateway requires on
            every call (``Authorization: Bearer``, or ``x-api-key`` for Anthropic clients); calls
            with another key are HTTP 401, calls after the attempt ended HTTP 404.
        sampling: sampling defaults for this rollout (``temperature``, ``max_tokens``, ...), to splat
            into ``create(...)``.
        rollout_id: the sample's ``rollout_id`` (``task_id/epoch/k``).
        attempt_id: this execution of the sample (fresh on every redelivery).
        agent_name: the agent name the calls are recorded under (selective optimization), or None.
        resources: the resources the sample pinned, by name (:class:`streamrl.resources.ResourceMap`:
            ``llm.resources["system_prompt"].format(...)`` for a prompt template; ``.get(name)`` is
            None when the sample pinned no such resource).
        ca_file: PEM CA bundle to verify an ``https`` gateway with (``security.ca_file``), or None
            for the system's; :meth:`openai_client` and :meth:`async_openai_client` use it.
    """

    base_url: str
    model: str
    api_key: str
    sampling: Mapping[str, Any] = field(default_factory=dict)
    rollout_id: str = ""
    attempt_id: str = ""
    agent_name: str | None = None
    gateway_url: str = ""
    resources: Mapping[str, Any] = field(default_factory=ResourceMap)
    ca_file: str | None = None

    @staticmethod
    def scoped_base_url(gateway_url: str, rollout_id: str, attempt_id: str, agent_name: str | None) -> str:
        """The ``/v1`` base URL of one attempt on a gateway (:func:`streamrl.schemas.inference_http.attempt_base_url`)."""
        return attempt_base_url(gateway_url, rollout_id, attempt_id, agent_name)

    def for_agent(self, name: str) -> LLM:
        """The same rollout with calls recorded under agent ``name`` (for multi-agent rollouts).

        Raises:
            ValueError: ``name`` is empty.
        """
        if not name:
            raise ValueError("agent name must be a non-empty string")
        url = self.scoped_base_url(self.gateway_url, self.rollout_id, self.attempt_id, name)
        return replace(self, base_url=url, agent_name=name)

    def _verify(self) -> Any:
        """What httpx's ``verify`` needs for this gateway: a context trusting ``ca_file`` too."""
        import ssl

        ctx = ssl.create_default_context()
        if self.ca_file:
            ctx.load_verify_locations(cafile=self.ca_file)
        return ctx

    @property
    def anthropic_base_url(self) -> str:
        """The base URL for Anthropic clients (``anthropic.Anthropic(base_url=...)``, CrewAI's Anthropic
        provider): ``base_url`` without its ``/v1``, since those clients add ``/v1/messages`` themselves."""
        return self.base_url.removesuffix("/v1")

    def openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client pointed at this rollout (``kwargs`` go to its constructor)."""
        import openai

        if self.ca_file and "http_client" not in kwargs:
            import httpx

            kwargs["http_client"] = httpx.Client(verify=self._verify())
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)

    def async_openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` client pointed at this rollout."""
        import openai

        if self.ca_file and "http_client" not in kwargs:
            import httpx

            kwargs["http_client"] = httpx.AsyncClient(verify=self._verify())
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)


@dataclass(frozen=True)
class EmittedReward:
    """One reward emitted during a rollout (wall-clock ``emitted_at`` in seconds since the epoch)."""

    name: str
    value: float
    primary: bool
    emitted_at: float


def as_reward(value: object, where: str) -> float:
    """Validate a reward: a finite real number (bool excluded) → float.

    Raises:
        RewardError: ``value`` is not a real number, is a bool, or is NaN/±inf; the message names ``where``.
    """
    if isinstance(value, bool):
        raise RewardError(f"{where}: reward must be a finite float, got bool {value!r}")
    if isinstance(value, numbers.Real):
        try:
            out = float(value)
        except OverflowError:  # an int beyond float range (10**400)
            raise RewardError(
                f"{where}: reward must be finite, got {type(value).__name__} beyond float range"
            ) from None
    elif (
        hasattr(value, "__float__") and getattr(value, "ndim", 0) == 0 and not isinstance(value, str | bytes)
    ):
        try:
            out = float(value)  # numpy / torch scalars
        except (TypeError, ValueError, OverflowError) as exc:
            raise RewardError(f"{where}: reward must be a finite float, got {type(value).__name__}") from exc
    else:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise RewardError(f"{where}: reward must be a finite float, got {type(value).__name__} {shown}")
    if not math.isfinite(out):
        raise RewardError(f"{where}: reward must be finite, got {out}")
    return out


class RewardLog:
    """The rewards of one rollout attempt, filled by :func:`emit_reward` through a context variable."""

    def __init__(self, rollout_id: str, attempt_id: str) -> None:
        self.rollout_id = rollout_id
        self.attempt_id = attempt_id
        self.rewards: list[EmittedReward] = []
        self.closed = False

    def emit(self, value: object, name: str, primary: bool | None) -> float:
        if self.closed:
            raise RuntimeError(f"emit_reward({name!r}) after rollout {self.rollout_id!r} finished")
        if not isinstance(name, str) or not name:
            raise RewardError(f"emit_reward: name must be a non-empty string, got {name!r}")
        v = as_reward(value, f"emit_reward(name={name!r}) in rollout {self.rollout_id!r}")
        is_primary = (name == PRIMARY_REWARD_NAME) if primary is None else bool(primary)
        self.rewards.append(EmittedReward(name, v, is_primary, time.time()))
        return v


_CURRENT: contextvars.ContextVar[RewardLog | None] = contextvars.ContextVar(
    "streamrl_reward_log", default=None
)


def current_reward_log() -> RewardLog | None:
    """The reward log of the rollout running in this context, or None outside a rollout."""
    return _CURRENT.get()


def bind_reward_log(log: RewardLog) -> contextvars.Context:
    """A copy of the current context in which :func:`emit_reward` writes to ``log``."""
    ctx = contextvars.copy_context()
    ctx.run(_CURRENT.set, log)
    return ctx


def emit_reward(value: float, name: str = PRIMARY_REWARD_NAME, *, primary: bool | None = None) -> float:
    """Record a reward for the running rollout (intermediate, or one dimension of several).

    Args:
        value: a finite real number.
        name: the reward's name; ``"reward"`` is the primary reward by default.
        primary: whether it counts towards the rollout's reward; None = ``name == "reward"``.

    Returns:
        The reward as a float.

    Raises:
        RewardError: ``value`` is not a finite real number (the rollout then fails with this reason
            unless the agent catches it).
        RuntimeError: called outside a rollout (e.g. from a thread the agent started itself; pass
            ``contextvars.copy_context()`` to such threads).
    """
    log = _CURRENT.get()
    if log is None:
        raise RuntimeError(
            "emit_reward() called outside a rollout; call it from the @rollout function (or a task/"
            "thread that inherits its contextvars context)"
        )
    return log.emit(value, name, primary)


def reduce_rewards(rewards: list[EmittedReward], reduction: Reduction) -> float | None:
    """The rollout reward from the primary rewards, in emission order; None if there is none.

    ``last``: the last primary reward; ``sum``/``mean``/``max``/``min`` over all primary rewards.
    """
    values = [r.value for r in rewards if r.primary]
    if not values:
        return None
    if reduction == "last":
        return values[-1]
    if reduction == "sum":
        return float(sum(values))
    if reduction == "mean":
        return float(sum(values) / len(values))
    if reduction == "max":
        return max(values)
    if reduction == "min":
        return min(values)
    raise ValueError(f"unknown reward reduction {reduction!r}; use last, sum, mean, max or min")


F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class RolloutFunction:
    """A function marked with :func:`rollout`; calling it calls the function unchanged.

    Attributes:
        fn: the agent function ``(task, llm) -> reward | None`` (sync or async).
        name: agent name its LLM calls are recorded under (None = unnamed).
        timeout_s: per-rollout time limit overriding ``worker.rollout_timeout_s`` (None = the worker's).
        reduction: how primary rewards make the rollout reward.
    """

    fn: Callable[[Any, LLM], Any]
    name: str | None = None
    timeout_s: float | None = None
    reduction: Reduction = "last"

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"@rollout needs a callable, got {type(self.fn).__name__}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"@rollout(timeout_s=...) must be > 0, got {self.timeout_s}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"@rollout(reduction={self.reduction!r}): use one of {list(REDUCTIONS)}")
        functools.update_wrapper(self, self.fn)  # type: ignore[arg-type]

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (run on the event loop, not in a thread)."""
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, task: Any, llm: LLM) -> Any:
        return self.fn(task, llm)


@overload
def rollout(fn: F, /) -> RolloutFunction: ...
@overload
def rollout(
    *, name: str | None = None, timeout_s: float | None = None, reduction: Reduction = "last"
) -> Callable[[F], RolloutFunction]: ...
def rollout(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    reduction: Reduction = "last",
) -> RolloutFunction | Callable[[Callable[..., Any]], RolloutFunction]:
    """Mark a function ``(task, llm) -> reward | None`` as a StreamRL agent.

    Use bare (``@rollout``) or with options (``@rollout(name="solver", timeout_s=120)``). The
    worker runs async functions on its event loop and sync functions in a thread pool.

    Args:
        name: agent name the rollout's LLM calls are recorded under (``train_agents`` selects by it).
        timeout_s: time limit of one rollout in seconds (default: ``worker.rollout_timeout_s``).
        reduction: how primary rewards combine into the rollout reward (default: the last one).

    Raises:
        TypeError: ``fn`` is not callable.  ValueError: a bad ``timeout_s`` or ``reduction``.
    """

    def wrap(f: Callable[..., Any]) -> RolloutFunction:
        return RolloutFunction(f, name=name, timeout_s=timeout_s, reduction=reduction)

    return wrap(fn) if fn is not None else wrap


class Agent:
    """The class form of an agent, for setup/teardown once per worker (load a tool, open a DB).

    Subclass it and define ``rollout(self, task, llm)`` (sync or async). ``setup(worker_id)`` runs
    once before the first rollout and ``teardown()`` once at shutdown; both may be async. The
    worker creates one instance with no arguments (``--agent package.module:MyAgent``).

    Class attributes ``name``, ``timeout_s`` and ``reduction`` mean what they mean for :func:`rollout`.
    """

    name: str | None = None
    timeout_s: float | None = None
    reduction: Reduction = "last"

    def setup(self, worker_id: str) -> Awaitable[None] | None:
        """Prepare per-worker resources; called once before any rollout."""
        return None

    def teardown(self) -> Awaitable[None] | None:
        """Release per-worker resources; called once when the worker stops."""
        return None

    def rollout(self, task: Any, llm: LLM) -> Any:
        """Run one rollout and return its reward (or None and use :func:`emit_reward`)."""
        raise NotImplementedError(f"{type(self).__name__} must define rollout(self, task, llm)")
