"""The demo agent: answer with the largest digit of a digit string, in one token.

Written with the official ``openai`` SDK; the only StreamRL import is :class:`~streamrl.Agent`
(its class form: one HTTP client per worker, opened in ``setup`` and closed in ``teardown``). The
reward is verifiable: 1.0 for the right digit. During training a wrong *digit* earns 0.1 (format
credit), so an untrained policy, which rarely says the right digit, still gets a learning signal;
validation rows (``"eval": true``) are decoded greedily (temperature 0) and scored strictly (1 or
0), so the val reward is plain accuracy.

The rollout is ``async`` (the worker runs it on its event loop, no thread per rollout), which keeps
a CPU-bound demo cheaper; a plain ``def`` works the same way.
"""

from __future__ import annotations

from openai import AsyncOpenAI, DefaultAioHttpClient

from streamrl import Agent

FORMAT_CREDIT = 0.1
"""Train reward of a wrong digit (any other answer gets 0)."""


def score(answer: str, expected: str, *, strict: bool) -> float:
    """1.0 if ``answer`` is ``expected``; else ``FORMAT_CREDIT`` for a single digit unless ``strict``; else 0."""
    answer = answer.strip()
    if answer == expected:
        return 1.0
    if not strict and len(answer) == 1 and answer.isdigit():
        return FORMAT_CREDIT
    return 0.0


class MaxDigit(Agent):
    """One client (one HTTP connection pool) per worker; each rollout uses a copy pointed at its own
    ``llm.base_url``, which is cheap (the pool is shared).

    The pool is the SDK's aiohttp one (``DefaultAioHttpClient``, as its docs advise for many
    concurrent requests): with the default httpx pool and the demo's 128 concurrent rollouts, every
    request checked the socket of every open connection, ~40 % of the worker's CPU in a py-spy
    profile of the demo. It is opened on the worker's event loop (``setup``) and closed there at
    shutdown (``teardown``).
    """

    name = "max_digit"

    def __init__(self) -> None:
        self.client: AsyncOpenAI | None = None

    async def setup(self, worker_id: str) -> None:
        """Open the shared client (its aiohttp session binds to the running event loop)."""
        self.client = AsyncOpenAI(
            base_url="http://127.0.0.1:1/v1",
            api_key="unused",
            max_retries=0,
            http_client=DefaultAioHttpClient(),
        )

    async def teardown(self) -> None:
        """Close the client's connections."""
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def rollout(self, task: dict, llm) -> float:
        """One rollout: ask for the largest digit of ``task["prompt"]`` and score the reply."""
        if self.client is None:  # used without the worker's setup (a test, a notebook)
            await self.setup("local")
        assert self.client is not None
        client = self.client.with_options(base_url=llm.base_url, api_key=llm.api_key)
        sampling = dict(llm.sampling)
        evaluating = bool(task.get("eval"))
        if evaluating:
            sampling["temperature"] = 0.0
        sampling.setdefault("max_tokens", 1)
        out = await client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": task["prompt"]}], **sampling
        )
        return score(out.choices[0].message.content or "", str(task["answer"]), strict=evaluating)


solve = MaxDigit
"""What ``worker.agent: examples.max_digit.agent:solve`` names: the worker makes one ``MaxDigit()``."""
