"""Tool calling for models whose chat template may not know tools: rendering, and parsing calls out of text.

**Rendering.** When a request has ``tools``, the server first asks the model's own chat template
(``apply_chat_template(..., tools=...)``). :func:`template_renders_tools` tells whether the template
uses them (it renders a probe conversation with and without a tool and compares). Templates that
ignore ``tools`` (SmolLM2's, many small models') get the tools in the system prompt instead, in the
Hermes format that Qwen2.5's and our built models' templates use, plus one example call, because
small models follow a format far more reliably when shown one (SmolLM2-135M-Instruct: no valid call
without the example; most calls valid with it). :func:`tools_system_prompt` writes exactly this,
after the request's own system message, if any::

    <system message>

    # Tools

    You may call one or more functions to assist with the user query.

    You are provided with function signatures within <tools></tools> XML tags:
    <tools>
    {"type": "function", "function": {"name": ..., "description": ..., "parameters": ...}}
    </tools>

    For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
    <tool_call>
    {"name": <function-name>, "arguments": <args-json-object>}
    </tool_call>

    For example:
    <tool_call>
    {"name": "<first tool's name>", "arguments": {<each property>: <an example value>}}
    </tool_call>

Example values come from the first tool's JSON schema: ``examples[0]``, ``default``, ``enum[0]``, or
by type (``"text"``, ``1``, ``1.5``, ``true``, ``[]``, ``{}``). The same fallback renders the rest of
an agent's conversation so that the template can print it: an assistant message's ``tool_calls``
become ``<tool_call>`` blocks in its content (as the model would have written them), a ``tool``
message becomes ``<tool_response>\\n...\\n</tool_response>`` in a ``user`` turn (Qwen2.5's layout), and
``None`` or list-of-parts content becomes text.

**Parsing** (Hermes, like vLLM's ``hermes`` tool parser): every ``<tool_call>{json}</tool_call>``
block whose JSON is an object with a string ``name`` becomes an OpenAI tool call (``arguments`` a
JSON string); ``content`` is the text before the first such block (None when only whitespace);
blocks that do not parse stay in the content. :class:`ToolCallStream` does the same incrementally
for streamed responses, so the concatenated stream says what the non-streamed response says.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)

_PROBE_MESSAGES = [{"role": "user", "content": "hi"}]
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "streamrl_probe_tool",
            "description": "probe",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template prints a ``tools`` list (probe: a conversation with and without one).

    A template that raises on the probe counts as not rendering tools.
    """
    try:
        without = tokenizer.apply_chat_template(_PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
        with_tools = tokenizer.apply_chat_template(
            _PROBE_MESSAGES, tools=_PROBE_TOOLS, tokenize=False, add_generation_prompt=True
        )
    except Exception:
        return False
    return with_tools != without and "streamrl_probe_tool" in with_tools


def _example_value(schema: dict[str, Any]) -> Any:
    if not isinstance(schema, dict):
        return "text"
    for key in ("examples", "enum"):
        values = schema.get(key)
        if isinstance(values, list) and values:
            return values[0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(kind, "text")


def example_call(tool: dict[str, Any]) -> dict[str, Any]:
    """``{"name", "arguments"}`` of an example call of ``tool`` (values from its schema, see module docs)."""
    fn = tool.get("function", tool)
    props = (fn.get("parameters") or {}).get("properties") or {}
    return {"name": fn.get("name", "function"), "arguments": {k: _example_value(v) for k, v in props.items()}}


def tools_system_prompt(tools: list[dict[str, Any]], system: str | None = None) -> str:
    """The system prompt that tells a model about ``tools`` (the format in the module docstring).

    Args:
        tools: OpenAI ``tools`` entries (``{"type": "function", "function": {...}}``).
        system: the request's own system message text, put first; None = none.
    """
    lines = [] if not system else [system, ""]
    lines += [
        "# Tools",
        "",
        "You may call one or more functions to assist with the user query.",
        "",
        "You are provided with function signatures within <tools></tools> XML tags:",
        "<tools>",
        *(json.dumps(t, ensure_ascii=False) for t in tools),
        "</tools>",
        "",
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:",
        TOOL_CALL_START,
        '{"name": <function-name>, "arguments": <args-json-object>}',
        TOOL_CALL_END,
    ]
    if tools:
        lines += ["", "For example:", TOOL_CALL_START, json.dumps(example_call(tools[0])), TOOL_CALL_END]
    return "\n".join(lines)


def content_text(content: Any) -> str:
    """OpenAI message content as text: a string as is, None as ``""``, the ``text`` parts of a list joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def _call_block(call: dict[str, Any]) -> str:
    fn = call.get("function", call)
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass  # print what the agent sent
    return f"{TOOL_CALL_START}\n{json.dumps({'name': fn.get('name'), 'arguments': args})}\n{TOOL_CALL_END}"


def fallback_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages for a chat template that knows neither ``tools`` nor tool calls (see module docs).

    Returns:
        New messages (the input is not changed): the tools in the system message (one is added if
        there was none and ``tools`` is non-empty), assistant ``tool_calls`` as ``<tool_call>`` text,
        ``tool`` results as ``<tool_response>`` user turns, every content a string.
    """
    out: list[dict[str, Any]] = []
    rest = messages
    if tools:
        system = None
        if messages and messages[0].get("role") == "system":
            system, rest = content_text(messages[0].get("content")), messages[1:]
        out.append({"role": "system", "content": tools_system_prompt(tools, system)})
    for m in rest:
        role = m.get("role")
        text = content_text(m.get("content"))
        if role == "assistant" and m.get("tool_calls"):
            blocks = "\n".join(_call_block(c) for c in m["tool_calls"])
            text = f"{text}\n{blocks}" if text.strip() else blocks
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"})
        else:
            out.append({"role": role, "content": text})
    return out


def _as_call(block: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": obj["name"], "arguments": args if isinstance(args, str) else json.dumps(args)},
    }


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split Hermes-style ``<tool_call>{json}</tool_call>`` blocks out of generated text.

    Returns:
        ``(content, tool_calls)``. Without a valid call: ``(text, [])``. With calls: content is the
        text before the first valid block (None if only whitespace), tool_calls in OpenAI form
        (``{"id", "type": "function", "function": {"name", "arguments": <JSON string>}}``).
    """
    calls: list[dict[str, Any]] = []
    first = None
    for m in _TOOL_CALL.finditer(text):
        call = _as_call(m.group(1))
        if call is None:
            continue
        first = m.start() if first is None else first
        calls.append(call)
    if not calls:
        return text, []
    content = text[:first]
    return (content if content.strip() else None), calls


@dataclass
class ToolCallStream:
    """Incremental :func:`parse_tool_calls` for one streamed choice.

    Feed the growing visible text with :meth:`feed`; each call returns what to send now: a content
    delta and completed tool calls (each with its ``index`` among this choice's calls). Text that
    may be the start of ``<tool_call>``, and whitespace before any content, is held back until it is
    known. :meth:`finish` flushes the rest at the end of generation.

    Attributes:
        calls: tool calls found so far (OpenAI form).
    """

    calls: list[dict[str, Any]] = field(default_factory=list)
    _seen: int = 0  # characters of the text already consumed
    _buffer: str = ""  # held-back text: whitespace, a partial start tag, or an open block
    _sent_content: bool = False

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """Consume ``text`` (the whole visible text so far); returns ``(content_delta, new_calls)``."""
        self._buffer += text[self._seen :]
        self._seen = max(self._seen, len(text))
        return self._drain(final=False)

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """End of generation: the held-back text as content (only if no call was found), no more calls."""
        return self._drain(final=True)

    def _emit(self, piece: str) -> str:
        """Content to send for ``piece``: nothing once a call was found (text after calls is dropped)."""
        if self.calls or not piece:
            return ""
        self._sent_content = True
        return piece

    def _drain(self, final: bool) -> tuple[str, list[dict[str, Any]]]:
        out: list[str] = []
        new: list[dict[str, Any]] = []
        while self._buffer:
            start = self._buffer.find(TOOL_CALL_START)
            if start < 0:
                if final:
                    out.append(self._emit(self._buffer))
                    self._buffer = ""
                    break
                cut = len(self._buffer) - _partial_tag_len(self._buffer)  # a partial tag waits
                piece = self._buffer[:cut]
                if piece.strip() or self._sent_content:  # whitespace before any content waits
                    out.append(self._emit(piece))
                    self._buffer = self._buffer[cut:]
                break
            before = self._buffer[:start]
            if before.strip() or self._sent_content:
                out.append(self._emit(before))
                self._buffer, before = self._buffer[start:], ""
                start = 0
            end = self._buffer.find(TOOL_CALL_END, start)
            if end < 0:  # an open block waits for its end tag (or for the end of generation)
                if final:
                    out.append(self._emit(self._buffer))
                    self._buffer = ""
                break
            stop = end + len(TOOL_CALL_END)
            call = _as_call(self._buffer[start + len(TOOL_CALL_START) : end].strip())
            if call is None:
                out.append(self._emit(self._buffer[:stop]))  # not a call: it is content, as is
            else:  # whitespace-only text before the first call is not content
                call["index"] = len(self.calls)
                self.calls.append(call)
                new.append(call)
            self._buffer = self._buffer[stop:]
        return "".join(out), new


def _partial_tag_len(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``<tool_call>``."""
    for n in range(min(len(text), len(TOOL_CALL_START) - 1), 0, -1):
        if TOOL_CALL_START.startswith(text[-n:]):
            return n
    return 0
