"""The APIs the gateway translates to chat completions, behind one interface for its request flow.

A :class:`Dialect` is made per call (:func:`dialect_for`): ``translate`` turns the agent's body into
the chat completion body sent upstream, ``complete`` turns the upstream chat response into the
dialect's answer, ``stream`` gives the writer of the dialect's event stream, and ``error`` renders an
error in the dialect's format. The Responses API keeps each answer in the attempt's state for
``previous_response_id`` (unless ``store: false``).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from streamrl.consumers import messages_api, responses_api
from streamrl.consumers.attempts import AttemptState
from streamrl.consumers.translation import ChatOutput, StreamEvent
from streamrl.schemas.inference_http import MESSAGES, RESPONSES

__all__ = ["Dialect", "MessagesDialect", "ResponsesDialect", "StreamWriter", "dialect_for", "openai_error"]


def openai_error(status: int, message: str, param: str | None = None, kind: str | None = None) -> bytes:
    """OpenAI's error body (what the ``openai`` client parses)."""
    kind = kind or ("invalid_request_error" if status < 500 else "upstream_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": status}})


class StreamWriter(Protocol):
    """Writes one dialect's server-sent events from chat stream events (see the dialect modules)."""

    def open(self, prompt_tokens: int) -> bytes: ...
    def feed(self, events: list[StreamEvent]) -> bytes: ...
    def finish(self, output: ChatOutput) -> bytes: ...
    def fail(self, status: int, message: str) -> bytes: ...


class Dialect(Protocol):
    """One translated call (see the module docstring)."""

    name: str

    def translate(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def complete(self, output: ChatOutput) -> dict[str, Any]: ...
    def stream(self) -> StreamWriter: ...
    def error(self, status: int, message: str, param: str | None = None) -> bytes: ...
    def upstream_error(self, status: int, raw: bytes) -> bytes: ...


def _upstream_message(raw: bytes) -> str:
    try:
        err = orjson.loads(raw).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return raw[:500].decode("utf-8", "replace")


class _ResponsesWriter:
    def __init__(self, dialect: ResponsesDialect) -> None:
        assert dialect.call is not None
        self._d = dialect
        self._w = responses_api.ResponsesStream(dialect.call)

    def open(self, prompt_tokens: int) -> bytes:
        return self._w.start()

    def feed(self, events: list[StreamEvent]) -> bytes:
        return self._w.feed(events)

    def finish(self, output: ChatOutput) -> bytes:
        out = self._w.finish(output)
        assert self._w.final is not None
        self._d.keep(output, self._w.final)
        return out

    def fail(self, status: int, message: str) -> bytes:
        return self._w.fail(message)


class ResponsesDialect:
    """``POST /v1/responses`` (:mod:`streamrl.consumers.responses_api`)."""

    name = RESPONSES

    def __init__(self, state: AttemptState) -> None:
        self.state = state
        self.call: responses_api.ResponsesCall | None = None

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        chat, self.call = responses_api.translate_request(body, self.state.responses.get)
        return chat

    def keep(self, output: ChatOutput, response: dict[str, Any]) -> None:
        """Keep a finished response for ``previous_response_id`` (unless ``store: false``)."""
        assert self.call is not None
        if self.call.store:
            self.state.responses[self.call.id] = self.call.stored(output, response)

    def complete(self, output: ChatOutput) -> dict[str, Any]:
        assert self.call is not None
        response = self.call.complete(output)
        self.keep(output, response)
        return response

    def stream(self) -> StreamWriter:
        return _ResponsesWriter(self)

    def error(self, status: int, message: str, param: str | None = None) -> bytes:
        return openai_error(status, message, param)

    def upstream_error(self, status: int, raw: bytes) -> bytes:
        return raw  # the inference service answers in OpenAI's error format already


class _MessagesWriter:
    def __init__(self, call: messages_api.MessagesCall) -> None:
        self._w = messages_api.MessagesStream(call)

    def open(self, prompt_tokens: int) -> bytes:
        return self._w.start(prompt_tokens)

    def feed(self, events: list[StreamEvent]) -> bytes:
        return self._w.feed(events)

    def finish(self, output: ChatOutput) -> bytes:
        return self._w.finish(output)

    def fail(self, status: int, message: str) -> bytes:
        return self._w.fail(status, message)


class MessagesDialect:
    """``POST /v1/messages`` (:mod:`streamrl.consumers.messages_api`)."""

    name = MESSAGES

    def __init__(self, state: AttemptState | None = None) -> None:
        self.call: messages_api.MessagesCall | None = None

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        chat, self.call = messages_api.translate_request(body)
        return chat

    def complete(self, output: ChatOutput) -> dict[str, Any]:
        assert self.call is not None
        return self.call.complete(output)

    def stream(self) -> StreamWriter:
        assert self.call is not None
        return _MessagesWriter(self.call)

    def error(self, status: int, message: str, param: str | None = None) -> bytes:
        if param:
            message = f"{param}: {message}" if not message.startswith(param) else message
        return orjson.dumps(messages_api.error_body(status, message))

    def upstream_error(self, status: int, raw: bytes) -> bytes:
        return orjson.dumps(messages_api.error_body(status, _upstream_message(raw)))


def dialect_for(endpoint: str, state: AttemptState) -> Dialect | None:
    """The dialect serving ``endpoint`` (relative to ``/v1``), or None for a chat pass-through."""
    if endpoint == RESPONSES:
        return ResponsesDialect(state)
    if endpoint == MESSAGES:
        return MessagesDialect(state)
    return None
