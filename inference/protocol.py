"""OpenAI-compatible request models and response builders, with vLLM's training fields.

Responses are OpenAI ``chat.completion`` / ``text_completion`` JSON plus, as vLLM returns them with
``return_token_ids``: top-level ``prompt_token_ids: list[int]``, per choice ``token_ids: list[int]``
(every sampled token, including EOS and stop-string tokens), per-token ``logprobs`` (chat:
``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}`` one entry per generated token), and
StreamRL's ``policy_version: int`` (also the ``X-Policy-Version`` response header). Logprobs are always
returned: training needs them. ``return_token_ids`` is accepted and ignored (ids are always returned).
The names and the format are the HTTP contract, :mod:`streamrl.schemas.inference_http`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamrl.inference.engine import SamplingParams, Sequence
from streamrl.inference.errors import RequestError
from streamrl.inference.tools import parse_tool_calls
from streamrl.schemas.inference_http import (
    DEFAULT_TEMPERATURE,
    LOGPROB_TOKENS,
    LOGPROBS,
    LOGPROBS_CONTENT,
    POLICY_VERSION,
    PROMPT_TOKEN_IDS,
    STOP_REASON,
    TOKEN_IDS,
    TOKEN_LOGPROBS,
)

#: Bounds on what a caller controls beyond the body size (``inference.max_body_bytes``): each
#: over-long field is HTTP 400 naming it.
MAX_STOP = 64
"""Most stop strings per request (OpenAI allows 4; vLLM any)."""
MAX_STOP_CHARS = 1024
"""Longest stop string, in characters."""
MAX_STOP_TOKEN_IDS = 1024
"""Most ``stop_token_ids``."""
MAX_TOOLS = 256
"""Most ``tools`` per chat request."""
MAX_PROMPTS = 128
"""Most prompts in one ``/v1/completions`` request (each is a sequence in the batch, times ``n``)."""


class _Request(BaseModel):
    """Sampling fields shared by both endpoints. Unknown fields are ignored (as OpenAI SDKs send many)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, le=10.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOP_TOKEN_IDS)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False
    return_token_ids: bool | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else list(stop or ())
        if len(strings) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(strings)}")
        for s in strings:
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(f"a stop string is at most {MAX_STOP_CHARS} characters, got {len(s)}")
        return stop

    def sampling(self, max_tokens: int, top_logprobs: int) -> SamplingParams:
        """The engine's :class:`SamplingParams` for this request.

        Raises:
            RequestError: penalties or logit bias were asked for (they would change the sampling
                distribution away from the policy's, so the returned logprobs would be wrong for training).
        """
        for name, value, neutral in (
            ("presence_penalty", self.presence_penalty, 0.0),
            ("frequency_penalty", self.frequency_penalty, 0.0),
            ("repetition_penalty", self.repetition_penalty, 1.0),
        ):
            if value != neutral:
                raise RequestError(
                    f"{name}={value} is not supported: it would bias the policy's logprobs", name
                )
        if self.logit_bias:
            raise RequestError(
                "logit_bias is not supported: it would bias the policy's logprobs", "logit_bias"
            )
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            stop=stop,
            stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos,
            seed=self.seed,
            top_logprobs=top_logprobs,
        )


class ChatRequest(_Request):
    """``POST /v1/chat/completions`` body."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Any = None
    """``auto`` (default with tools) or ``none`` (tools neither shown nor parsed); ``required`` and a
    named function are refused (they need guided decoding, which this backend does not have)."""
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    """vLLM's: the last (assistant) message is a prefix to continue, not a finished turn (needs
    ``add_generation_prompt: false``)."""
    chat_template_kwargs: dict[str, Any] | None = None

    def active_tools(self) -> list[dict[str, Any]] | None:
        """The tools to show the model and parse calls of (None = no tool calling in this request).

        Raises:
            RequestError: ``tool_choice`` is ``required`` or names a function.
        """
        choice = self.tool_choice
        if choice in (None, "auto"):
            return self.tools or None
        if choice == "none":
            return None
        raise RequestError(
            f"tool_choice={choice!r} is not supported by the cpu backend (no guided decoding): "
            "use 'auto' or 'none'",
            "tool_choice",
        )

    @field_validator("messages")
    @classmethod
    def _roles(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, m in enumerate(messages):
            if m.get("role") not in ("system", "user", "assistant", "tool", "developer"):
                raise ValueError(
                    f"messages[{i}].role must be system/user/assistant/tool, got {m.get('role')!r}"
                )
        return messages


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` body (vLLM's): a ``prompt``, or chat ``messages`` (with ``tools``) rendered by
    the chat template."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_Request):
    """``POST /v1/completions`` body. ``prompt``: text, token ids, or a list of either."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list (text or token ids each).

        Raises:
            RequestError: empty prompt list, or ``echo`` (not supported).
        """
        if self.echo:
            raise RequestError("echo=true is not supported", "echo")
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise RequestError("prompt must not be empty", "prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        if len(p) > MAX_PROMPTS:
            raise RequestError(f"at most {MAX_PROMPTS} prompts per request, got {len(p)}", "prompt")
        return list(p)  # type: ignore[arg-type]


class TokenTable:
    """Display text and exact bytes of every token id (for the ``token``/``bytes`` logprob fields).

    Byte-level BPE tokens map back through the GPT-2 byte alphabet; ``<0xNN>`` byte-fallback tokens
    are the byte NN; other tokens are their UTF-8 text.
    """

    _BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = "ByteLevel" in repr(decoder)
        self._byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def entry(self, token_id: int) -> tuple[str, list[int]]:
        """``(token_text, utf8_bytes)`` of one id."""
        hit = self._cache.get(token_id)
        if hit is not None:
            return hit
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            data = b""
        elif token_id in self._special:
            data = piece.encode()
        elif m := self._BYTE_FALLBACK.match(piece):
            data = bytes([int(m.group(1), 16)])
        elif self._byte_level and all(c in self._byte_decoder for c in piece):
            data = bytes(self._byte_decoder[c] for c in piece)
        else:
            data = piece.encode()
        hit = (data.decode("utf-8", errors="replace"), list(data))
        self._cache[token_id] = hit
        return hit

    def chat_logprob(self, token_id: int, logprob: float, top: list[tuple[int, float]]) -> dict[str, Any]:
        """One ``logprobs.content`` entry of a chat choice."""
        text, data = self.entry(token_id)
        return {
            "token": text,
            "logprob": logprob,
            "bytes": data,
            "top_logprobs": [
                {"token": self.entry(t)[0], "logprob": lp, "bytes": self.entry(t)[1]} for t, lp in top
            ],
        }


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (used by byte-level BPE)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def chat_response(
    *,
    model: str,
    seqs: list[Sequence],
    texts: list[str],
    table: TokenTable,
    with_tools: bool,
    version: int,
) -> dict[str, Any]:
    """The ``chat.completion`` body of a finished request (``seqs`` in choice order)."""
    choices = []
    for s, text in zip(seqs, texts, strict=True):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = s.finish_reason
        if with_tools:
            content, calls = parse_tool_calls(text)
            if calls:
                message = {"role": "assistant", "content": content, "tool_calls": calls}
                finish = "tool_calls" if finish == "stop" else finish
        choices.append(
            {
                "index": s.index,
                "message": message,
                "finish_reason": finish,
                STOP_REASON: s.stop_reason,
                LOGPROBS: {
                    LOGPROBS_CONTENT: [
                        table.chat_logprob(t, lp, top)
                        for t, lp, top in zip(s.token_ids, s.logprobs, s.top, strict=True)
                    ]
                },
                TOKEN_IDS: list(s.token_ids),
            }
        )
    completion = sum(len(s.token_ids) for s in seqs)
    prompt_ids = seqs[0].prompt_ids
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": completion,
            "total_tokens": len(prompt_ids) + completion,
        },
        PROMPT_TOKEN_IDS: list(prompt_ids),
        POLICY_VERSION: version,
    }


def completion_response(
    *, model: str, seqs: list[Sequence], texts: list[str], table: TokenTable, version: int
) -> dict[str, Any]:
    """The ``text_completion`` body (legacy logprobs format, plus token ids per choice)."""
    choices = []
    for i, (s, text) in enumerate(zip(seqs, texts, strict=True)):
        offsets, pos = [], 0
        for t in s.token_ids:
            offsets.append(pos)
            pos += len(table.entry(t)[0])
        choices.append(
            {
                "index": i,
                "text": text,
                "finish_reason": s.finish_reason,
                STOP_REASON: s.stop_reason,
                LOGPROBS: {
                    LOGPROB_TOKENS: [table.entry(t)[0] for t in s.token_ids],
                    TOKEN_LOGPROBS: list(s.logprobs),
                    "top_logprobs": [{table.entry(t)[0]: lp for t, lp in top} for top in s.top],
                    "text_offset": offsets,
                },
                TOKEN_IDS: list(s.token_ids),
                PROMPT_TOKEN_IDS: list(s.prompt_ids),
            }
        )
    prompt_tokens = sum(len(s.prompt_ids) for s in seqs if s.index == 0)
    completion = sum(len(s.token_ids) for s in seqs)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
        PROMPT_TOKEN_IDS: list(seqs[0].prompt_ids),
        POLICY_VERSION: version,
    }


def error_body(message: str, code: int, err_type: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI-style error body ``{"error": {...}}`` (what the ``openai`` client parses)."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}
