"""A vLLM-like OpenAI chat server for the coordination benchmark: plain asyncio, raw HTTP/1.1 keep-alive.

It answers every ``POST /v1/chat/completions`` at once (no generation) with a fixed reply and the
fields vLLM returns with ``return_token_ids`` and ``logprobs``: top-level ``prompt_token_ids``, per
choice ``token_ids`` and ``logprobs.content[j].logprob``, plus StreamRL's ``policy_version`` (body
field and ``X-Policy-Version`` header). They are returned on every call, asked for or not, so the
direct and the gateway path move the same bytes. ``GET /v1/models`` lists the model. Streaming,
``n > 1`` and other endpoints are answered with an OpenAI-style error.

Token ids: a stand-in BPE, one id per 4 bytes of the rendered prompt (``"<role>: <content>\\n"`` per
message), ``id = int.from_bytes(chunk, "little") % 151_936`` (Qwen2.5 vocabulary size), so prompts
have realistic token counts and id magnitudes. The reply has ``response_tokens`` tokens (default
128) with logprob ``-(id % 7 + 1) / 10`` nats each; its JSON is built once at start.

Why not aiohttp (``tests.support.fake_inference``): the server must cost as little as possible so the
gateway's overhead is what the benchmark measures; an ``asyncio.Protocol`` with a hand-written
parser answers in a few tens of microseconds.

Run: ``python -m bench.coordination.fake_vllm --port 0`` prints ``listening on http://127.0.0.1:<port>/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

import orjson

from streamrl.schemas.inference_http import (
    LOGPROBS,
    LOGPROBS_CONTENT,
    POLICY_VERSION,
    POLICY_VERSION_HEADER,
    PROMPT_TOKEN_IDS,
    TOKEN_IDS,
)

# the contract's names as the bytes this hand-written server writes (built once)
_PROMPT_IDS_FIELD = b',"%s":' % PROMPT_TOKEN_IDS.encode()
_VERSION_FIELD = b',"%s":%%d}' % POLICY_VERSION.encode()
_VERSION_HEADER_LINE = b"%s: %%d\r\n" % POLICY_VERSION_HEADER.encode()

__all__ = ["VOCAB_SIZE", "FakeVLLM", "fake_tokenize", "reply_tokens"]

VOCAB_SIZE = 151_936
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_WORDS = ("the", "answer", "is", "forty", "two", "because", "we", "add", "both", "numbers")


def fake_tokenize(text: str) -> list[int]:
    """Stand-in BPE: one token id per 4 UTF-8 bytes, ``int.from_bytes(chunk, "little") % VOCAB_SIZE``."""
    data = text.encode()
    return [int.from_bytes(data[i : i + 4], "little") % VOCAB_SIZE for i in range(0, len(data), 4)]


def reply_tokens(n: int) -> tuple[str, list[int], list[float]]:
    """The fixed reply of ``n`` tokens: ``(text, token ids (n,), logprobs (n,) in nats)``."""
    words = [_WORDS[i % len(_WORDS)] for i in range(n)]
    ids = [(1000 + 7919 * i) % VOCAB_SIZE for i in range(n)]
    logprobs = [-((t % 7) + 1) / 10 for t in ids]
    return " ".join(words), ids, logprobs


def render_prompt(messages: Any) -> str:
    """Prompt text of a chat request: ``"<role>: <content>\\n"`` per message (text parts joined)."""
    out = []
    for msg in messages if isinstance(messages, list) else []:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append(f"{msg.get('role', '')}: {content or ''}\n")
    return "".join(out)


class FakeVLLM:
    """The server. ``await start()`` listens on the running loop; ``close()`` stops it.

    Args:
        host: bind address.
        port: TCP port; 0 = ephemeral (read ``port`` after ``start``).
        model: model name in responses and ``/v1/models``.
        policy_version: ``policy_version`` of every response.
        response_tokens: tokens in the fixed reply.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        model: str = "policy",
        policy_version: int = 0,
        response_tokens: int = 128,
    ) -> None:
        self.host, self.port, self.model = host, port, model
        self.policy_version = policy_version
        self.calls = 0
        text, ids, logprobs = reply_tokens(response_tokens)
        content = [
            {"token": f"t{t}", "logprob": lp, "bytes": None, "top_logprobs": []}
            for t, lp in zip(ids, logprobs, strict=True)
        ]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            LOGPROBS: {LOGPROBS_CONTENT: content},
            TOKEN_IDS: ids,
        }
        self._choices = orjson.dumps([choice])
        self._completion_tokens = response_tokens
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        """Base URL of the OpenAI API (``http://host:port/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> str:
        """Listen; returns :attr:`url`. Raises ``OSError`` when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    def close(self) -> None:
        """Stop listening (open connections are closed by their clients or at exit)."""
        if self._server is not None:
            self._server.close()

    # ------------------------------------------------------------------------------ responses
    def respond(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        """The ``(status, JSON body)`` of one request."""
        if method == b"POST" and path.endswith(b"/chat/completions"):
            try:
                req = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return 400, _error(400, f"request body is not JSON: {exc}")
            if not isinstance(req, dict):
                return 400, _error(400, "request body must be a JSON object")
            if req.get("stream"):
                return 400, _error(400, "the benchmark server does not stream; send stream=false")
            if int(req.get("n") or 1) != 1:
                return 400, _error(400, "the benchmark server answers n=1 only")
            self.calls += 1
            prompt_ids = fake_tokenize(render_prompt(req.get("messages")))
            model = str(req.get("model") or self.model)
            usage = orjson.dumps(
                {
                    "prompt_tokens": len(prompt_ids),
                    "completion_tokens": self._completion_tokens,
                    "total_tokens": len(prompt_ids) + self._completion_tokens,
                }
            )
            out = b"".join(
                (
                    b'{"id":"chatcmpl-bench-%d","object":"chat.completion","created":%d,"model":'
                    % (self.calls, int(time.time())),
                    orjson.dumps(model),
                    b',"choices":',
                    self._choices,
                    b',"usage":',
                    usage,
                    _PROMPT_IDS_FIELD,
                    orjson.dumps(prompt_ids),
                    _VERSION_FIELD % self.policy_version,
                )
            )
            return 200, out
        if method == b"GET" and path.endswith(b"/models"):
            data = {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "bench"}]}
            return 200, orjson.dumps(data)
        return 404, _error(404, f"{method.decode()} {path.decode(errors='replace')} is not served")


def _error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": status}})


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large"}


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: requests parsed from a byte buffer, answered in order (keep-alive)."""

    def __init__(self, server: FakeVLLM) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    self._send(413, _error(413, "request headers too large"), close=True)
                return
            head = bytes(self.buf[:end]).split(b"\r\n")
            try:
                method, path, version = head[0].split(b" ", 2)
            except ValueError:
                self._send(400, _error(400, "malformed request line"), close=True)
                return
            length, close = 0, version == b"HTTP/1.0"
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == b"connection":
                    v = value.strip().lower()
                    close = v == b"close" or (close and v != b"keep-alive")
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self._send(400, _error(400, "chunked request bodies are not supported"), close=True)
                    return
            if length > MAX_BODY_BYTES:
                self._send(413, _error(413, f"request body of {length} bytes is too large"), close=True)
                return
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            status, out = self.server.respond(method, path.split(b"?", 1)[0], body)
            self._send(status, out, close=close)

    def _send(self, status: int, body: bytes, *, close: bool) -> None:
        assert self.transport is not None
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            % (status, _REASONS.get(status, b"Error"), len(body))
            + _VERSION_HEADER_LINE % self.server.policy_version
            + b"Connection: %s\r\n\r\n" % (b"close" if close else b"keep-alive")
        )
        self.transport.write(head + body)
        if close:
            self.transport.close()


async def _serve(args: argparse.Namespace) -> None:
    server = FakeVLLM(
        args.host, args.port, policy_version=args.policy_version, response_tokens=args.response_tokens
    )
    url = await server.start()
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(f"served {server.calls} chat completions", flush=True)


def main() -> None:
    """``python -m bench.coordination.fake_vllm [--host H] [--port P] [--policy-version V] [--response-tokens R]``."""
    p = argparse.ArgumentParser(description="vLLM-like chat server that answers at once (benchmark)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--policy-version", type=int, default=0)
    p.add_argument("--response-tokens", type=int, default=128)
    asyncio.run(_serve(p.parse_args()))


if __name__ == "__main__":
    main()
