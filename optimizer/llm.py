"""The optimizer LLM of APO: one OpenAI-compatible ``/chat/completions`` call at a time, with retries.

Any endpoint that speaks the OpenAI chat API works: a hosted model, vLLM, or StreamRL's own
inference server. Transient failures (connection errors, timeouts, HTTP 408/429/5xx) are retried
with exponential backoff (1 s, 2 s, 4 s, ...); anything else, or a reply without text, is an
:class:`OptimizerLLMError` naming the endpoint, the status and the start of the body.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from streamrl.config.optimizer import OptimizerLLMSettings
from streamrl.errors import StreamRLError

log = logging.getLogger(__name__)

RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class OptimizerLLMError(StreamRLError):
    """The optimizer LLM did not give a usable answer (after the retries)."""


class OptimizerLLM:
    """An async client of the optimizer LLM (one connection pool; calls bounded by ``concurrency``)."""

    def __init__(
        self,
        cfg: OptimizerLLMSettings,
        *,
        backoff_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = cfg.api_key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(headers=headers, timeout=cfg.timeout_s, transport=transport)
        self._slots = asyncio.Semaphore(cfg.concurrency)
        self._backoff_s = backoff_s
        self.calls = 0

    async def complete(self, prompt: str) -> str:
        """The model's answer to one user message.

        Raises:
            OptimizerLLMError: a non-retriable error, retries spent, or an empty answer.
        """
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
            async with self._slots:
                self.calls += 1
                try:
                    resp = await self._client.post(self.url, json=body)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    log.warning("optimizer LLM %s: %s (try %d)", self.url, last, attempt + 1)
                    continue
            if resp.status_code in RETRIABLE_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                log.warning("optimizer LLM %s: %s (try %d)", self.url, last, attempt + 1)
                continue
            if resp.status_code != 200:
                raise OptimizerLLMError(f"{self.url}: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                text = resp.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise OptimizerLLMError(f"{self.url}: not a chat completion: {resp.text[:300]}") from exc
            if not isinstance(text, str) or not text.strip():
                raise OptimizerLLMError(f"{self.url}: empty answer")
            return text
        raise OptimizerLLMError(f"{self.url}: failed after {self.cfg.max_retries + 1} tries: {last}")

    async def aclose(self) -> None:
        await self._client.aclose()
