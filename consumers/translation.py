"""What the gateway's two translated dialects share: errors, chat output, chat stream deltas, SSE.

The gateway serves OpenAI's Responses API (:mod:`streamrl.consumers.responses_api`) and Anthropic's
Messages API (:mod:`streamrl.consumers.messages_api`) by translating each request into one chat
completion of the inference service, so token ids, logprobs and the policy version come from the one
place they always come from (vLLM's chat endpoint or the CPU server's), and the call is recorded
exactly as a chat call is. This module holds the pieces both translations use:

- :class:`TranslationError`: a request that cannot be translated faithfully (a field that would
  change generation and that the chat endpoint cannot honour, a malformed item), with the HTTP
  status and the field it names. Never a silent drop.
- :class:`ChatOutput` / :func:`chat_output`: choice 0 of a chat completion (text, tool calls,
  finish and stop reason, token counts, logprob entries).
- :class:`ChatStreamReader`: chat completion chunks in, :class:`ChatOutput` accumulated, and the
  deltas of each chunk as events (text, a tool call starting, tool-call argument text).
- :class:`SSESplitter` and :func:`sse`: server-sent events in and out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamrl.errors import StreamRLError
from streamrl.schemas.inference_http import (
    LOGPROBS,
    LOGPROBS_CONTENT,
    PROMPT_TOKEN_IDS,
    SSE_DONE,
    STOP_REASON,
    TOKEN_IDS,
)

__all__ = [
    "VLLM_SAMPLING_EXTENSIONS",
    "ChatOutput",
    "ChatStreamReader",
    "SSESplitter",
    "ToolCall",
    "TranslationError",
    "chat_output",
    "chat_tools",
    "content_text",
    "new_id",
    "sse",
]


VLLM_SAMPLING_EXTENSIONS: tuple[str, ...] = (
    "seed",
    "top_k",
    "min_p",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "min_tokens",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)
"""vLLM's chat sampling fields that neither translated API has, accepted in a translated request (as
``extra_body``) and passed on as is: the inference service honours or refuses them, as for chat."""


class TranslationError(StreamRLError):
    """A request the gateway cannot translate into a chat completion without changing its meaning.

    Attributes:
        status: HTTP status to answer with (400 unless said otherwise).
        param: the request field at fault, as a path (``tools[2].type``), or None.
    """

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def new_id(prefix: str) -> str:
    """A fresh object id in the style of the API (``resp_<hex>``, ``msg_<hex>``, ``fc_<hex>``, ...)."""
    import uuid

    return f"{prefix}_{uuid.uuid4().hex}"


def sse(event: str | None, data: dict[str, Any]) -> bytes:
    """One server-sent event: ``event: <name>`` (when given) and one ``data:`` line of JSON."""
    body = orjson.dumps(data)
    if event is None:
        return b"data: " + body + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


def content_text(content: Any, where: str, *, text_types: tuple[str, ...] = ("text",)) -> str:
    """Text of a message content: a string as is, None as ``""``, a list of parts joined.

    Raises:
        TranslationError: a part is not one of ``text_types`` (naming ``where[i].type``).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of content parts", where)
    out = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in text_types:
            raise TranslationError(
                f"{where}[{i}].type {kind!r} is not supported here (only {', '.join(text_types)})",
                f"{where}[{i}].type",
            )
        out.append(str(part.get("text", "")))
    return "".join(out)


@dataclass
class ToolCall:
    """One tool call of a chat choice: ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str = ""


@dataclass
class ChatOutput:
    """Choice 0 of a chat completion, as the translations need it.

    Attributes:
        text: the visible text (``message.content``; ``""`` when None).
        tool_calls: the parsed tool calls, in order.
        finish_reason: ``stop``, ``length``, ``tool_calls``, ... (None while streaming).
        stop_reason: the stop string (or token id) that ended generation, when the server says (vLLM's
            ``stop_reason``); None for end-of-sequence or unknown.
        prompt_tokens / completion_tokens: token counts (from ``usage``, else from the token ids).
        logprobs: chat ``logprobs.content`` entries (``{token, logprob, bytes, top_logprobs}``), one per token.
        model: the model name the server answered with.
    """

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None


def chat_output(body: dict[str, Any]) -> ChatOutput:
    """Choice 0 of a non-streaming chat completion.

    Raises:
        TranslationError: (status 502) the body has no choices or is malformed.
    """
    try:
        choice = body["choices"][0]
        msg = choice.get("message") or {}
        out = ChatOutput(
            text=msg.get("content") or "",
            tool_calls=[
                ToolCall(
                    str(c.get("id") or new_id("call")),
                    c["function"]["name"],
                    c["function"].get("arguments") or "",
                )
                for c in msg.get("tool_calls") or []
            ],
            finish_reason=choice.get("finish_reason"),
            stop_reason=choice.get(STOP_REASON),
            model=body.get("model"),
        )
        lp = choice.get(LOGPROBS)
        if isinstance(lp, dict) and isinstance(lp.get(LOGPROBS_CONTENT), list):
            out.logprobs = list(lp[LOGPROBS_CONTENT])
        usage = body.get("usage") or {}
        out.prompt_tokens = int(usage.get("prompt_tokens") or len(body.get(PROMPT_TOKEN_IDS) or ()))
        out.completion_tokens = int(usage.get("completion_tokens") or len(choice.get(TOKEN_IDS) or ()))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise TranslationError(
            f"the inference service's chat response is malformed: {exc!r}", None, 502
        ) from exc
    return out


class SSESplitter:
    """Split a byte stream of server-sent events into the JSON objects of its ``data:`` lines.

    ``feed(bytes)`` returns the objects completed by those bytes; ``data: [DONE]`` and comments are
    skipped. A ``data:`` payload that is not a JSON object raises :class:`TranslationError` (502).
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buf += chunk
        out = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                return out
            line, self._buf = self._buf[:nl].rstrip(b"\r"), self._buf[nl + 1 :]
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if not data or data == SSE_DONE.encode():
                continue
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise TranslationError(
                    f"the inference stream sent a chunk that is not JSON: {exc}", None, 502
                ) from exc
            if not isinstance(obj, dict):
                raise TranslationError(
                    "the inference stream sent a chunk that is not a JSON object", None, 502
                )
            out.append(obj)


@dataclass
class StreamEvent:
    """One delta of a chat stream, in order.

    ``kind``: ``text`` (``text`` = the new text, ``logprobs`` = entries of the tokens since the last
    text event: a server may hold text back for a few tokens while it checks for a stop string),
    ``tool_start`` (``index``, ``call``: a new tool call with its id and name), ``tool_args``
    (``index``, ``text`` = more argument JSON text).
    """

    kind: str
    text: str = ""
    index: int = 0
    call: ToolCall | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)


class ChatStreamReader:
    """Accumulates a chat completion stream (choice 0) into a :class:`ChatOutput` and yields its deltas.

    ``feed(chunk)`` takes one ``chat.completion.chunk`` object and returns the :class:`StreamEvent`
    list of that chunk; ``output`` is the accumulated result; ``error`` is set when the stream carried
    an ``error`` object; ``started`` once the first chunk arrived (it carries the prompt's token ids,
    so ``output.prompt_tokens`` is known from then on).
    """

    def __init__(self) -> None:
        self.output = ChatOutput()
        self.error: str | None = None
        self.started = False
        self._calls: dict[int, ToolCall] = {}
        self._pending_logprobs: list[dict[str, Any]] = []

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        self.started = True
        out = self.output
        events: list[StreamEvent] = []
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            self.error = str(err.get("message") if isinstance(err, dict) else err)
            return events
        if chunk.get(PROMPT_TOKEN_IDS) is not None and not out.prompt_tokens:
            out.prompt_tokens = len(chunk[PROMPT_TOKEN_IDS])
        out.model = chunk.get("model") or out.model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            out.prompt_tokens = int(usage.get("prompt_tokens") or out.prompt_tokens)
            out.completion_tokens = int(usage.get("completion_tokens") or out.completion_tokens)
        for choice in chunk.get("choices") or []:
            if int(choice.get("index", 0)) != 0:
                continue
            if not isinstance(usage, dict):
                out.completion_tokens += len(choice.get(TOKEN_IDS) or ())
            lp = choice.get(LOGPROBS)
            if isinstance(lp, dict) and isinstance(lp.get(LOGPROBS_CONTENT), list):
                out.logprobs.extend(lp[LOGPROBS_CONTENT])
                self._pending_logprobs.extend(lp[LOGPROBS_CONTENT])
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                out.text += text
                events.append(StreamEvent("text", text=text, logprobs=self._pending_logprobs))
                self._pending_logprobs = []
            for tc in delta.get("tool_calls") or []:
                idx = int(tc.get("index", len(self._calls)))
                fn = tc.get("function") or {}
                call = self._calls.get(idx)
                if call is None:
                    call = ToolCall(str(tc.get("id") or new_id("call")), str(fn.get("name") or ""))
                    self._calls[idx] = call
                    out.tool_calls.append(call)
                    events.append(StreamEvent("tool_start", index=idx, call=call))
                elif fn.get("name") and not call.name:
                    call.name = fn["name"]
                args = fn.get("arguments")
                if args:
                    call.arguments += args
                    events.append(StreamEvent("tool_args", text=args, index=idx))
            if choice.get("finish_reason") is not None:
                out.finish_reason = choice["finish_reason"]
                out.stop_reason = choice.get(STOP_REASON)
        return events


def chat_tools(
    tools: Any, *, kinds: tuple[str | None, ...], schema_key: str, refusal: str
) -> list[dict[str, Any]]:
    """A translated API's tool list -> chat ``tools`` (``{"type": "function", "function": {...}}``).

    Args:
        tools: the request's ``tools`` (a list of objects with ``name``, ``description``, a schema).
        kinds: the ``type`` values that are function tools (None: no ``type`` field).
        schema_key: where the JSON schema of the arguments is (``parameters``, ``input_schema``).
        refusal: why any other kind cannot be honoured (ends the error message).

    Raises:
        TranslationError: not a list, a tool of another kind (naming ``tools[i].type``), no name.
    """
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        kind = t.get("type") if isinstance(t, dict) else "?"
        if kind not in kinds:
            raise TranslationError(f"tools[{i}].type {kind!r} {refusal}", f"tools[{i}].type")
        if not isinstance(t.get("name"), str):
            raise TranslationError(f"tools[{i}].name must be a string", f"tools[{i}].name")
        fn: dict[str, Any] = {
            "name": t["name"],
            "parameters": t.get(schema_key) or {"type": "object", "properties": {}},
        }
        for key in ("description", "strict"):
            if t.get(key) is not None:
                fn[key] = t[key]
        out.append({"type": "function", "function": fn})
    return out


def json_object_or_none(text: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object (``""`` counts as ``{}``), or None when it is not one."""
    if not text.strip():
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
