"""Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) served by
translating to one chat completion.

Request -> chat completion body:

- ``system`` (a string or text blocks) -> a first ``system`` message; ``messages``: ``text`` blocks as
  text, ``image`` blocks (base64 or url source) as ``image_url`` parts, assistant ``tool_use`` blocks
  -> ``tool_calls`` (``arguments`` = the ``input`` as JSON), user ``tool_result`` blocks -> ``tool``
  messages (``tool_call_id`` = ``tool_use_id``; an ``is_error`` result is prefixed ``Error: ``), put
  before the rest of that user turn. A conversation that ends with an assistant message is a prefill:
  the chat request continues it (``continue_final_message``, vLLM's field) and the answer holds only
  the continuation.
- ``max_tokens`` (required), ``temperature``, ``top_p``, ``top_k`` and vLLM's sampling extensions
  (``seed``, ``min_p``, ...) as is; ``stop_sequences`` ->
  ``stop``; ``tools`` (custom tools: ``name``, ``description``, ``input_schema``) -> chat ``tools``;
  ``tool_choice`` ``auto``/``any``/``tool``/``none`` -> ``auto``/``required``/the named function/``none``
  (``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``); ``output_config.format``
  (``json_schema``) -> ``response_format``; ``output_config.effort`` -> ``reasoning_effort``.
- Accepted without effect on generation: ``metadata``, ``service_tier``, ``cache_control`` (on the
  request and on blocks), ``thinking: {"type": "disabled"}``, ``inference_geo``, ``speed``,
  ``diagnostics``, ``stream``.
- Anything else (extended ``thinking``, server tools such as web search or the bash/text-editor
  tools, ``container``, ``mcp_servers``, ``context_management``, document or thinking blocks,
  unknown fields) is HTTP 400 naming the field.

Response: a ``message`` with a ``text`` block (when there is text or no tool call) and one
``tool_use`` block per tool call (``input`` = the parsed arguments; a call whose arguments are not a
JSON object stays text, as the model wrote it, so the agent sees the model's mistake). ``stop_reason``:
``end_turn``, ``max_tokens``, ``stop_sequence`` (with ``stop_sequence``) or ``tool_use``. Streaming sends
``message_start``, per block ``content_block_start``/``content_block_delta`` (``text_delta``,
``input_json_delta``)/``content_block_stop``, then ``message_delta`` (stop reason, output tokens) and
``message_stop``; an inference failure mid-stream is an ``error`` event. Errors are Anthropic's
``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streamrl.consumers.translation import (
    VLLM_SAMPLING_EXTENSIONS,
    ChatOutput,
    StreamEvent,
    ToolCall,
    TranslationError,
    chat_tools,
    json_object_or_none,
    new_id,
    sse,
)

__all__ = ["MessagesCall", "MessagesStream", "error_body", "translate_request"]

_PASSED = ("temperature", "top_p", *(k for k in VLLM_SAMPLING_EXTENSIONS if k != "stop"))
_NO_EFFECT = (
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "output_config",
    "thinking",
    "metadata",
    "service_tier",
    "cache_control",
    "inference_geo",
    "speed",
    "diagnostics",
)
_KNOWN = frozenset(_PASSED + _NO_EFFECT)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body for an HTTP status."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


@dataclass
class MessagesCall:
    """One ``/v1/messages`` call being served."""

    id: str
    model: str
    stop_sequences: list[str]

    def stop(self, out: ChatOutput) -> tuple[str, str | None]:
        """``(stop_reason, stop_sequence)`` of a finished choice."""
        if out.tool_calls and out.finish_reason in ("tool_calls", "stop"):
            return "tool_use", None
        if out.finish_reason == "length":
            return "max_tokens", None
        if isinstance(out.stop_reason, str) and out.stop_reason in self.stop_sequences:
            return "stop_sequence", out.stop_reason
        return "end_turn", None

    def usage(self, out: ChatOutput) -> dict[str, Any]:
        return {
            "input_tokens": out.prompt_tokens,
            "output_tokens": out.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    def complete(self, out: ChatOutput) -> dict[str, Any]:
        """The (non-streaming) ``message`` for a finished chat choice."""
        blocks: list[dict[str, Any]] = []
        text = out.text
        tool_blocks = []
        for call in out.tool_calls:
            block = tool_block(call)
            if block is None:  # arguments not a JSON object: keep what the model wrote, as text
                text += call_as_text(call)
            else:
                tool_blocks.append(block)
        if text or not tool_blocks:
            blocks.append({"type": "text", "text": text})
        blocks += tool_blocks
        reason, seq = self.stop(out)
        if reason == "tool_use" and not tool_blocks:
            reason = "end_turn"
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": out.model or self.model,
            "content": blocks,
            "stop_reason": reason,
            "stop_sequence": seq,
            "usage": self.usage(out),
        }


def tool_block(call: ToolCall) -> dict[str, Any] | None:
    """A ``tool_use`` block, or None when the arguments are not a JSON object."""
    args = json_object_or_none(call.arguments)
    if args is None:
        return None
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": args}


def call_as_text(call: ToolCall) -> str:
    """A tool call whose arguments do not parse, as the text the model wrote."""
    return f'\n<tool_call>\n{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}\n</tool_call>'


# ---------------------------------------------------------------------------------------- request


def _text_of_blocks(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of blocks", where)
    parts = []
    for i, b in enumerate(content):
        if not isinstance(b, dict) or b.get("type") != "text":
            kind = b.get("type") if isinstance(b, dict) else None
            raise TranslationError(
                f"{where}[{i}].type {kind!r} is not supported here (text only)", f"{where}[{i}].type"
            )
        parts.append(str(b.get("text", "")))
    return "\n".join(parts)


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    elif src.get("type") == "url":
        url = str(src.get("url"))
    else:
        raise TranslationError(
            f"{where}.source.type {src.get('type')!r} is not supported (base64 or url)",
            f"{where}.source.type",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(block: dict[str, Any], where: str) -> str:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text = _text_of_blocks(content, f"{where}.content")
    return f"Error: {text}" if block.get("is_error") else text


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty list", "messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise TranslationError(f"{where}.role must be user or assistant, got {role!r}", f"{where}.role")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise TranslationError(
                f"{where}.content must be a string or a list of blocks", f"{where}.content"
            )
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for j, b in enumerate(content):
            bw = f"{where}.content[{j}]"
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(b.get("text", ""))})
            elif kind == "image" and role == "user":
                parts.append(_image_part(b, bw))
            elif kind == "tool_use" and role == "assistant":
                calls.append(
                    {
                        "id": str(b.get("id")),
                        "type": "function",
                        "function": {
                            "name": str(b.get("name")),
                            "arguments": json.dumps(b.get("input") or {}),
                        },
                    }
                )
            elif kind == "tool_result" and role == "user":
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": str(b.get("tool_use_id")),
                        "content": _tool_result_text(b, bw),
                    }
                )
            else:
                raise TranslationError(
                    f"{bw}.type {kind!r} cannot be passed to a chat completion in a {role} message "
                    "(supported: text, image (user), tool_use (assistant), tool_result (user))",
                    f"{bw}.type",
                )
        if role == "assistant":
            text = "".join(p["text"] for p in parts)
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif parts:
            if all(p["type"] == "text" for p in parts):
                out.append({"role": "user", "content": "".join(p["text"] for p in parts)})
            else:
                out.append({"role": "user", "content": parts})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    return chat_tools(
        tools,
        kinds=(None, "custom"),
        schema_key="input_schema",
        refusal="is a server or Anthropic-defined tool the inference service cannot run; only custom "
        "tools (name, description, input_schema) are supported",
    )


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise TranslationError(
            f"tool_choice {choice!r} is not supported (auto, any, tool, none)", "tool_choice"
        )
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


def translate_request(
    body: dict[str, Any], *, count_only: bool = False
) -> tuple[dict[str, Any], MessagesCall]:
    """A ``/v1/messages`` body -> ``(chat completion body, call)``.

    Args:
        count_only: a ``count_tokens`` body (``max_tokens`` not required).

    Raises:
        TranslationError: a field that cannot be honoured or a malformed block (400, naming it).
    """
    for key, value in body.items():
        if key not in _KNOWN and value is not None:
            raise TranslationError(
                f"{key!r} cannot be honoured by the gateway's translation to chat completions; remove it", key
            )
    thinking = body.get("thinking")
    if thinking is not None and not (isinstance(thinking, dict) and thinking.get("type") == "disabled"):
        raise TranslationError(
            "extended thinking cannot be honoured by the inference service; remove thinking", "thinking"
        )
    messages = _messages(body.get("messages"))
    system = body.get("system")
    if system is not None:
        text = _text_of_blocks(system, "system")
        if text:
            messages.insert(0, {"role": "system", "content": text})
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if not count_only:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise TranslationError("max_tokens is required: a positive integer", "max_tokens")
        chat["max_tokens"] = max_tokens
    for key in _PASSED:
        if body.get(key) is not None:
            chat[key] = body[key]
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise TranslationError("stop_sequences must be a list of strings", "stop_sequences")
    if stops:
        chat["stop"] = list(stops)
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    config = body.get("output_config")
    if config is not None:
        if not isinstance(config, dict):
            raise TranslationError("output_config must be an object", "output_config")
        fmt = config.get("format")
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
                raise TranslationError(
                    "output_config.format must be a json_schema format", "output_config.format"
                )
            chat["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": fmt.get("schema")},
            }
        if config.get("effort") is not None:
            chat["reasoning_effort"] = config["effort"]
    if messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
        chat["continue_final_message"] = True  # a prefill: continue the assistant's turn
        chat["add_generation_prompt"] = False
    if body.get("stream") and not count_only:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, MessagesCall(
        id=new_id("msg"), model=str(body.get("model") or ""), stop_sequences=list(stops)
    )


# ---------------------------------------------------------------------------------------- stream


@dataclass
class MessagesStream:
    """Writes the Messages event sequence for one streamed call, from chat stream events.

    ``start(prompt_tokens)`` once the first upstream chunk is in (``message_start`` carries the input
    token count), ``feed(events)`` per chunk, then ``finish(output)`` or ``fail(message)``. Text is
    streamed as it comes; a tool call is sent whole once its arguments are complete (so a call whose
    arguments are not a JSON object can still become text).
    """

    call: MessagesCall
    _index: int = 0
    _text_open: bool = False
    _pending: dict[int, ToolCall] = field(default_factory=dict)
    _sent_tool: bool = False

    def start(self, prompt_tokens: int) -> bytes:
        msg = {
            "id": self.call.id,
            "type": "message",
            "role": "assistant",
            "model": self.call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }  # fmt: skip
        return sse("message_start", {"type": "message_start", "message": msg})

    def _text(self, text: str) -> bytes:
        out = b""
        if not self._text_open:
            out += sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self._index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            self._text_open = True
        return out + sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._index,
                "delta": {"type": "text_delta", "text": text},
            },
        )

    def _close_text(self) -> bytes:
        if not self._text_open:
            return b""
        self._text_open = False
        self._index += 1
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index - 1})

    def _flush_calls(self) -> bytes:
        out = b""
        for call in self._pending.values():
            block = tool_block(call)
            if block is None:
                out += self._text(call_as_text(call))
                continue
            out += self._close_text()
            idx = self._index
            out += sse(
                "content_block_start",
                {"type": "content_block_start", "index": idx, "content_block": {**block, "input": {}}},
            )
            out += sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": idx,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                },
            )
            out += sse("content_block_stop", {"type": "content_block_stop", "index": idx})
            self._index += 1
            self._sent_tool = True
        self._pending.clear()
        return out

    def feed(self, events: list[StreamEvent]) -> bytes:
        out = b""
        for ev in events:
            if ev.kind == "text" and ev.text:
                out += self._flush_calls() + self._text(ev.text)
            elif ev.kind == "tool_start" and ev.call is not None:
                self._pending[ev.index] = ev.call  # its arguments accumulate on the same object
        return out

    def finish(self, output: ChatOutput) -> bytes:
        out = self._flush_calls()
        if self._index == 0 and not self._text_open:
            out += self._text("")  # an empty answer still has its text block
        out += self._close_text()
        reason, seq = self.call.stop(output)
        if reason == "tool_use" and not self._sent_tool:
            reason = "end_turn"
        out += sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": seq},
                "usage": {"output_tokens": output.completion_tokens},
            },
        )
        return out + sse("message_stop", {"type": "message_stop"})

    def fail(self, status: int, message: str) -> bytes:
        return sse("error", error_body(status, message))
