"""OpenAI's Responses API (``POST /v1/responses``) served by translating to one chat completion.

Request (``responses.create`` body) -> chat completion body:

- ``instructions`` -> a first ``system`` message (not carried over by ``previous_response_id``, as
  OpenAI documents); ``input`` as a string -> one ``user`` message; as items: ``message`` items
  (``system``/``developer`` -> ``system``, content parts ``input_text``/``output_text``/``refusal``
  as text, ``input_image`` with an ``image_url`` as an ``image_url`` part), consecutive assistant
  ``message`` and ``function_call`` items -> one assistant message with ``tool_calls``,
  ``function_call_output`` -> a ``tool`` message (``tool_call_id`` = ``call_id``).
- ``previous_response_id``: the stored conversation of that response (its input and output, without
  its instructions) goes first. Responses are kept for the attempt's life unless ``store: false``;
  an id the attempt does not hold is HTTP 400 naming ``previous_response_id``.
- ``tools`` (``function`` only) -> chat ``tools``; ``tool_choice`` (``auto``/``none``/``required``,
  ``{"type": "function", "name"}``, ``allowed_tools``) -> chat ``tool_choice``;
  ``parallel_tool_calls``, ``temperature``, ``top_p``, ``top_logprobs`` as is;
  ``max_output_tokens`` -> ``max_tokens``; ``text.format`` (``json_object``/``json_schema``) ->
  ``response_format``; ``text.verbosity`` -> ``verbosity``; ``reasoning.effort`` -> ``reasoning_effort``;
  vLLM's sampling extensions (``seed``, ``top_k``, ``min_p``, ``stop``, ...) as is.
- Accepted without effect on generation: ``store``, ``metadata``, ``user``, ``safety_identifier``,
  ``prompt_cache_*``, ``service_tier``, ``stream_options``, ``truncation``, ``max_tool_calls``
  (hosted tools only), ``reasoning.summary``, ``include`` (``message.output_text.logprobs`` adds the
  logprobs to ``output_text``).
- Anything else that is set (hosted tools, ``background``, ``conversation``, ``prompt``,
  ``context_management``, reasoning or custom-tool input items, unknown fields) is HTTP 400 naming
  the field: it would change generation and the chat endpoint cannot honour it.

Response: a ``response`` object with a ``message`` item (``output_text``) when there is text or no
tool call, then one ``function_call`` item per tool call; ``status`` ``completed``, or ``incomplete``
with ``incomplete_details.reason = "max_output_tokens"`` when generation hit the token limit.
Streaming sends the Responses event sequence (``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta``/
``.done``, ``response.content_part.done``, ``response.function_call_arguments.delta``/``.done``,
``response.output_item.done``, then ``response.completed``/``response.incomplete``, or
``response.failed`` when the inference stream breaks), each with its ``sequence_number``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamrl.consumers.translation import (
    VLLM_SAMPLING_EXTENSIONS,
    ChatOutput,
    StreamEvent,
    ToolCall,
    TranslationError,
    chat_tools,
    content_text,
    new_id,
    sse,
)

__all__ = ["ResponsesCall", "ResponsesStream", "StoredResponse", "translate_request"]

LOGPROBS_INCLUDE = "message.output_text.logprobs"

_PASSED = ("temperature", "top_p", "top_logprobs", "parallel_tool_calls")
"""Responses fields that mean the same in a chat request."""
_VLLM_SAMPLING = VLLM_SAMPLING_EXTENSIONS
_NO_EFFECT = (
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "previous_response_id",
    "stream",
    "text",
    "reasoning",
    "include",
    "store",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "service_tier",
    "stream_options",
    "truncation",
    "max_tool_calls",
)
"""Fields handled below, or accepted because they do not change what the model generates."""
_KNOWN = frozenset(_PASSED + _VLLM_SAMPLING + _NO_EFFECT)


@dataclass
class StoredResponse:
    """A response kept for ``previous_response_id``: its conversation as chat messages (input and
    output, without instructions) and the response object (for ``GET /v1/responses/<id>``)."""

    messages: list[dict[str, Any]]
    response: dict[str, Any]


@dataclass
class ResponsesCall:
    """One ``/v1/responses`` call being served: what the response echoes and what is stored after it."""

    id: str
    created_at: int
    request: dict[str, Any]
    history: list[dict[str, Any]]
    """Chat messages of the conversation so far (previous response's, then this input), no instructions."""
    include_logprobs: bool
    store: bool
    model: str

    def response(self, out: ChatOutput | None, items: list[dict[str, Any]], status: str) -> dict[str, Any]:
        """The ``response`` object with ``items`` as its output (``out`` None = nothing generated yet)."""
        req = self.request
        text = req.get("text") if isinstance(req.get("text"), dict) else {}
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "max_tool_calls": req.get("max_tool_calls"),
            "model": (out.model if out is not None and out.model else None) or self.model,
            "output": items,
            "parallel_tool_calls": req.get("parallel_tool_calls", True),
            "previous_response_id": req.get("previous_response_id"),
            "reasoning": {"effort": (req.get("reasoning") or {}).get("effort"), "summary": None},
            "service_tier": "default",
            "store": self.store,
            "temperature": req.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, **(text or {})},
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": req.get("tools") or [],
            "top_logprobs": req.get("top_logprobs", 0),
            "top_p": req.get("top_p", 1.0),
            "truncation": req.get("truncation", "disabled"),
            "usage": None,
            "user": req.get("user"),
            "metadata": req.get("metadata") or {},
        }
        if out is not None and status in ("completed", "incomplete"):
            body["completed_at"] = int(time.time()) if status == "completed" else None
            body["usage"] = {
                "input_tokens": out.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": out.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": out.prompt_tokens + out.completion_tokens,
            }
            if status == "incomplete":
                body["incomplete_details"] = {"reason": "max_output_tokens"}
        return body

    def message_item(self, item_id: str, out: ChatOutput, status: str = "completed") -> dict[str, Any]:
        """The assistant ``message`` output item holding ``out.text``."""
        return {
            "id": item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [self.text_part(out.text, out.logprobs)],
        }

    def text_part(self, text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "type": "output_text",
            "text": text,
            "annotations": [],
            "logprobs": list(logprobs) if self.include_logprobs else [],
        }

    @staticmethod
    def call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
        """A ``function_call`` output item."""
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }

    def complete(self, out: ChatOutput) -> dict[str, Any]:
        """The final (non-streaming) ``response`` object for a finished chat choice."""
        items: list[dict[str, Any]] = []
        if out.text or not out.tool_calls:
            items.append(self.message_item(new_id("msg"), out))
        items += [self.call_item(new_id("fc"), c) for c in out.tool_calls]
        return self.response(out, items, status_of(out))

    def stored(self, out: ChatOutput, response: dict[str, Any]) -> StoredResponse:
        """What ``previous_response_id`` continues from: this conversation plus the assistant's turn."""
        return StoredResponse([*self.history, assistant_message(out)], response)


def status_of(out: ChatOutput) -> str:
    """``incomplete`` when generation stopped at the token limit, else ``completed``."""
    return "incomplete" if out.finish_reason == "length" else "completed"


def assistant_message(out: ChatOutput) -> dict[str, Any]:
    """The chat ``assistant`` message of a generated choice (text and tool calls)."""
    msg: dict[str, Any] = {"role": "assistant", "content": out.text or None}
    if out.tool_calls:
        msg["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in out.tool_calls
        ]
    return msg


# ---------------------------------------------------------------------------------------- request


def _message_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A Responses message content -> chat content (a string, or parts when there is an image)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of content parts", where)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise TranslationError(
                f"{where}[{i}].type {kind!r} cannot be passed to a chat completion "
                "(supported: input_text, output_text, refusal, input_image with an image_url)",
                f"{where}[{i}].type",
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _input_messages(items: Any) -> list[dict[str, Any]]:
    """Responses ``input`` -> chat messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise TranslationError("input must be a string or a list of items", "input")
    out: list[dict[str, Any]] = []
    assistant: dict[str, Any] | None = None  # the assistant message being assembled from items
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{where} must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise TranslationError(
                    f"{where}.role must be user/assistant/system/developer, got {role!r}", f"{where}.role"
                )
            content = _message_content(item.get("content"), f"{where}.content")
            if role == "assistant":
                text = content if isinstance(content, str) else content_text(content, f"{where}.content")
                if assistant is not None and not assistant.get("tool_calls"):
                    assistant["content"] = (assistant["content"] or "") + text
                else:
                    assistant = {"role": "assistant", "content": text}
                    out.append(assistant)
                continue
            assistant = None
            out.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            for key in ("call_id", "name"):
                if not isinstance(item.get(key), str):
                    raise TranslationError(f"{where}.{key} must be a string", f"{where}.{key}")
            if assistant is None:
                assistant = {"role": "assistant", "content": None}
                out.append(assistant)
            assistant.setdefault("tool_calls", []).append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": str(item.get("arguments") or "")},
                }
            )
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise TranslationError(f"{where}.call_id must be a string", f"{where}.call_id")
            output = item.get("output")
            text = (
                output
                if isinstance(output, str)
                else content_text(output, f"{where}.output", text_types=("input_text", "output_text"))
            )
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
            assistant = None
        else:
            raise TranslationError(
                f"{where}.type {kind!r} cannot be passed to a chat completion "
                "(supported: message, function_call, function_call_output)",
                f"{where}.type",
            )
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    return chat_tools(
        tools,
        kinds=("function",),
        schema_key="parameters",
        refusal="is a hosted tool the inference service cannot run; only function tools are supported",
    )


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools":
        tools = []
        for i, t in enumerate(choice.get("tools") or []):
            if not isinstance(t, dict) or t.get("type") != "function":
                raise TranslationError(
                    "allowed_tools may only list function tools", f"tool_choice.tools[{i}]"
                )
            tools.append({"type": "function", "function": {"name": t.get("name")}})
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools},
        }
    raise TranslationError(
        f"tool_choice {choice!r} cannot be honoured (hosted tools are not supported)", "tool_choice"
    )


def _text_format(text: Any) -> dict[str, Any]:
    """``text`` -> chat fields (``response_format``, ``verbosity``)."""
    if not isinstance(text, dict):
        raise TranslationError("text must be an object", "text")
    out: dict[str, Any] = {}
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt is not None and kind != "text":
        raise TranslationError(f"text.format.type {kind!r} is not supported", "text.format.type")
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    return out


def translate_request(
    body: dict[str, Any], previous: Callable[[str], StoredResponse | None]
) -> tuple[dict[str, Any], ResponsesCall]:
    """A ``/v1/responses`` body -> ``(chat completion body, call)``.

    Args:
        body: the request JSON.
        previous: looks up a stored response of this attempt by id (None when unknown).

    Raises:
        TranslationError: a field that cannot be honoured, a malformed item, an unknown
            ``previous_response_id`` (400, naming the field).
    """
    for key, value in body.items():
        if key not in _KNOWN and value is not None:
            raise TranslationError(
                f"{key!r} cannot be honoured by the gateway's translation to chat completions "
                "(it would change generation); remove it",
                key,
            )
    if body.get("background"):
        raise TranslationError("background responses are not supported", "background")
    history: list[dict[str, Any]] = []
    prev_id = body.get("previous_response_id")
    if prev_id is not None:
        stored = previous(str(prev_id))
        if stored is None:
            raise TranslationError(
                f"previous response {prev_id!r} is not held for this rollout attempt (responses are kept "
                "for the attempt's life, and only with store != false)",
                "previous_response_id",
            )
        history = [dict(m) for m in stored.messages]
    if "input" not in body:
        raise TranslationError("input is required", "input")
    history += _input_messages(body["input"])
    messages = list(history)
    instructions = body.get("instructions")
    if instructions is not None:
        if isinstance(instructions, str):
            messages.insert(0, {"role": "system", "content": instructions})
        else:
            messages[:0] = _input_messages(instructions)
    if not messages:
        raise TranslationError("input has no messages", "input")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for key in (*_PASSED, *_VLLM_SAMPLING):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("text") is not None:
        chat.update(_text_format(body["text"]))
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    include = body.get("include") or []
    if not isinstance(include, list):
        raise TranslationError("include must be a list", "include")
    stream = bool(body.get("stream"))
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    call = ResponsesCall(
        id=new_id("resp"),
        created_at=int(time.time()),
        request=body,
        history=history,
        include_logprobs=LOGPROBS_INCLUDE in include,
        store=body.get("store") is not False,
        model=str(body.get("model") or ""),
    )
    return chat, call


# ---------------------------------------------------------------------------------------- stream


@dataclass
class ResponsesStream:
    """Writes the Responses event sequence for one streamed call, from chat stream events.

    ``start()`` once, ``feed(events)`` per upstream chunk, then ``finish(output)`` or ``fail(message)``;
    each returns the bytes to send. ``final`` holds the last ``response`` object after ``finish``.
    """

    call: ResponsesCall
    seq: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    _open: dict[str, Any] | None = None  # the output item being streamed
    _open_call: ToolCall | None = None
    _text: str = ""
    _logprobs: list[dict[str, Any]] = field(default_factory=list)

    def _ev(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return sse(kind, payload)

    def start(self) -> bytes:
        resp = self.call.response(None, [], "in_progress")
        return self._ev("response.created", response=resp) + self._ev("response.in_progress", response=resp)

    def _close(self) -> bytes:
        """Finish the item being streamed (if any)."""
        item, self._open = self._open, None
        if item is None:
            return b""
        idx = len(self.items)
        out = b""
        if item["type"] == "message":
            part = self.call.text_part(self._text, self._logprobs)
            out += self._ev(
                "response.output_text.done",
                item_id=item["id"],
                output_index=idx,
                content_index=0,
                text=self._text,
                logprobs=part["logprobs"],
            )
            out += self._ev(
                "response.content_part.done", item_id=item["id"], output_index=idx, content_index=0, part=part
            )
            done = {**item, "status": "completed", "content": [part]}
        else:
            call = self._open_call
            assert call is not None
            out += self._ev(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=idx,
                name=call.name,
                arguments=call.arguments,
            )
            done = self.call.call_item(item["id"], call)
        out += self._ev("response.output_item.done", output_index=idx, item=done)
        self.items.append(done)
        return out

    def _open_message(self) -> bytes:
        item = {
            "id": new_id("msg"),
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._open, self._text, self._logprobs = item, "", []
        idx = len(self.items)
        return self._ev("response.output_item.added", output_index=idx, item=item) + self._ev(
            "response.content_part.added",
            item_id=item["id"],
            output_index=idx,
            content_index=0,
            part=self.call.text_part("", []),
        )

    def feed(self, events: list[StreamEvent]) -> bytes:
        out = b""
        for ev in events:
            if ev.kind == "text":
                if self._open is None or self._open["type"] != "message":
                    out += self._close() + self._open_message()
                self._text += ev.text
                self._logprobs += ev.logprobs
                out += self._ev(
                    "response.output_text.delta",
                    item_id=self._open["id"],  # type: ignore[index]
                    output_index=len(self.items),
                    content_index=0,
                    delta=ev.text,
                    logprobs=list(ev.logprobs) if self.call.include_logprobs else [],
                )
            elif ev.kind == "tool_start":
                assert ev.call is not None
                out += self._close()
                self._open_call = ev.call
                self._open = self.call.call_item(
                    new_id("fc"), ToolCall(ev.call.id, ev.call.name), "in_progress"
                )
                out += self._ev(
                    "response.output_item.added", output_index=len(self.items), item=dict(self._open)
                )
            elif ev.kind == "tool_args" and self._open is not None and self._open["type"] == "function_call":
                out += self._ev(
                    "response.function_call_arguments.delta",
                    item_id=self._open["id"],
                    output_index=len(self.items),
                    delta=ev.text,
                )
        return out

    def finish(self, output: ChatOutput) -> bytes:
        out = b""
        if not self.items and self._open is None and not output.tool_calls:
            out += self._open_message()  # no text and no call: an empty message, as the API gives
        out += self._close()
        status = status_of(output)
        self.final = self.call.response(output, list(self.items), status)
        return out + self._ev(f"response.{status}", response=self.final)

    def fail(self, message: str) -> bytes:
        resp = self.call.response(None, list(self.items), "failed")
        resp["error"] = {"code": "server_error", "message": message}
        return self._ev("response.failed", response=resp)
