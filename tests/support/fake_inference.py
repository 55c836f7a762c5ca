"""A small, real OpenAI-compatible HTTP server with vLLM's token-id fields, for tests and benchmarks.

It speaks ``/v1/chat/completions`` (plain and SSE streaming, ``n`` choices, tool calls),
``/v1/completions``, ``/v1/models`` and ``/health`` (200, or 503 while ``healthy`` is False), and answers like vLLM with ``return_token_ids``: top-level
``prompt_token_ids`` (chat), per choice ``token_ids`` (and ``prompt_token_ids`` for completions),
``logprobs.content[i].logprob``/``token`` (chat) or ``logprobs.token_logprobs`` (completions), and
like the StreamRL CPU server a ``policy_version`` field and ``X-Policy-Version`` header. Token ids
and logprobs are only returned when asked for, as vLLM does.

Tokenizer: one token per character, ``id = ord(char)``; the chat prompt is rendered as
``"<role>: <content>\\n"`` per message. The reply is ``"ok"`` unless the last message contains a
directive: ``REPLY:<text>`` (answer ``<text>``), ``CALL:<tool>`` (a tool call, when tools are given),
``ERROR:<status>`` (fail with that HTTP status), ``SLEEP:<seconds>`` (wait first), ``BREAK:<how>``
(a misbehaving server, chat only: ``positive_logprob`` (one logprob of 0.5), ``nan_logprob`` (a
``-Infinity`` in the JSON, as Python's ``json`` writes it), ``short_ids`` (the last token id and
logprob missing while ``usage`` counts them), ``no_ids`` (no token ids: an old vLLM), and when
streaming ``die`` (the connection drops after two tokens) or ``no_done`` (the stream ends cleanly
without ``data: [DONE]``)). Logprob of the j-th response token: ``-(id % 7 + 1) / 10``.

Run standalone: ``python -m tests.support.fake_inference --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
from typing import Any

import orjson
from aiohttp import web

from streamrl.schemas.inference_http import (
    HEALTH_PATH,
    LOGPROB_TOKENS,
    LOGPROBS,
    LOGPROBS_CONTENT,
    POLICY_VERSION,
    PROMPT_TOKEN_IDS,
    RETURN_TOKEN_IDS,
    SSE_DONE,
    TOKEN_IDS,
    TOKEN_LOGPROBS,
    version_headers,
)

_DONE_EVENT = f"data: {SSE_DONE}\n\n".encode()

__all__ = ["FakeInferenceServer", "fake_logprob", "render_chat", "tokenize"]

_DIRECTIVE = re.compile(r"(REPLY|CALL|ERROR|SLEEP|BREAK):(\S+)")


def tokenize(text: str) -> list[int]:
    """Character-level token ids: ``[ord(c) for c in text]``."""
    return [ord(c) for c in text]


def fake_logprob(token_id: int) -> float:
    """The logprob the server reports for ``token_id`` (nats)."""
    return -((token_id % 7) + 1) / 10


def render_chat(messages: list[dict[str, Any]]) -> str:
    """The prompt text of a chat request (``"<role>: <content>\\n"`` per message)."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append(f"{msg.get('role', '')}: {content or ''}\n")
    return "".join(out)


def _directives(text: str) -> dict[str, str]:
    return {k: v for k, v in _DIRECTIVE.findall(text)}


class FakeInferenceServer:
    """The server, runnable in a background thread (``start()``/``stop()``) or as a context manager.

    Args:
        host: bind address.  port: 0 = ephemeral.
        policy_version: value of ``policy_version`` in every response (settable at any time).
        model: the served model name.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, policy_version: int = 3, model: str = "policy"
    ) -> None:
        self.host, self.port = host, port
        self.policy_version = policy_version
        self.model = model
        self.calls = 0
        self.healthy = True
        """What ``GET /health`` answers: 200 while True, 503 otherwise (settable at any time)."""
        self.last_request: dict[str, Any] | None = None
        self.last_authorization: str | None = None
        """The ``Authorization`` header of the last generation request (what a gateway sent upstream)."""
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get(HEALTH_PATH, self._health)
        return app

    async def start_async(self) -> str:
        """Listen on the running loop; returns the base URL (``http://host:port/v1``)."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}/v1"
        return self.url

    async def stop_async(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> str:
        """Serve from a daemon thread with its own event loop; returns the base URL."""
        ready = threading.Event()
        box: dict[str, Any] = {}

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                box["url"] = loop.run_until_complete(self.start_async())
            except BaseException as exc:  # reported to the caller below
                box["error"] = exc
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-inference", daemon=True)
        self._thread.start()
        ready.wait(10)
        if "error" in box:
            raise box["error"]
        return box["url"]

    def stop(self) -> None:
        """Stop the background server."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeInferenceServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ handlers
    async def _health(self, request: web.Request) -> web.Response:
        body = {"status": "ok" if self.healthy else "unavailable", POLICY_VERSION: self.policy_version}
        return self._json(body, 200 if self.healthy else 503)

    async def _models(self, request: web.Request) -> web.Response:
        return self._json(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "streamrl"}]}
        )

    def _json(self, body: dict[str, Any], status: int = 200) -> web.Response:
        return web.Response(
            body=orjson.dumps(body),
            status=status,
            content_type="application/json",
            headers=version_headers(self.policy_version),
        )

    async def _read(self, request: web.Request) -> dict[str, Any]:
        body = orjson.loads(await request.read())
        self.calls += 1
        self.last_request = body
        self.last_authorization = request.headers.get("Authorization")
        return body

    async def _prelude(self, text: str) -> tuple[dict[str, str], web.Response | None]:
        d = _directives(text)
        if "SLEEP" in d:
            await asyncio.sleep(float(d["SLEEP"]))
        if "ERROR" in d:
            status = int(d["ERROR"])
            msg = f"injected error {status}: This model's maximum context length is 64 tokens"
            return d, self._json(
                {"error": {"message": msg, "type": "BadRequestError", "code": status}}, status
            )
        return d, None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        messages = body.get("messages") or []
        prompt = render_chat(messages)
        last = str(messages[-1].get("content", "")) if messages else ""
        d, err = await self._prelude(last)
        if err is not None:
            return err
        want_ids = bool(body.get(RETURN_TOKEN_IDS))
        want_lp = bool(body.get(LOGPROBS))
        tool = d.get("CALL") if body.get("tools") else None
        reply, finish = self._reply(d, body)
        if tool is not None:
            reply, finish = f'{{"name": "{tool}"}}', "tool_calls"
        prompt_ids = tokenize(prompt)
        n = int(body.get("n") or 1)
        if body.get("stream"):
            return await self._chat_stream(
                request, body, prompt_ids, reply, finish, tool, n, want_ids, want_lp, d.get("BREAK")
            )
        choices = []
        for i in range(n):
            ids = tokenize(reply)
            msg: dict[str, Any] = {"role": "assistant", "content": reply if tool is None else None}
            if tool is not None:
                msg["tool_calls"] = [
                    {"id": f"call_{i}", "type": "function", "function": {"name": tool, "arguments": "{}"}}
                ]
            ch: dict[str, Any] = {"index": i, "message": msg, "finish_reason": finish, LOGPROBS: None}
            if want_lp:
                ch[LOGPROBS] = {LOGPROBS_CONTENT: [self._lp_item(t) for t in ids]}
            if want_ids:
                ch[TOKEN_IDS] = ids
            choices.append(ch)
        out: dict[str, Any] = {
            "id": f"chatcmpl-{self.calls}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": n * len(reply),
                "total_tokens": 0,
            },
            POLICY_VERSION: self.policy_version,
        }
        if want_ids:
            out[PROMPT_TOKEN_IDS] = prompt_ids
        how = d.get("BREAK")
        ch0 = choices[0]
        if how == "positive_logprob" and ch0[LOGPROBS]:
            ch0[LOGPROBS][LOGPROBS_CONTENT][0]["logprob"] = 0.5
        elif how == "nan_logprob" and ch0[LOGPROBS]:
            ch0[LOGPROBS][LOGPROBS_CONTENT][1]["logprob"] = float("-inf")
            return web.Response(  # Python's json writes -Infinity, which JSON does not have
                body=json.dumps(out),
                content_type="application/json",
                headers=version_headers(self.policy_version),
            )
        elif how == "short_ids" and TOKEN_IDS in ch0:
            ch0[TOKEN_IDS] = ch0[TOKEN_IDS][:-1]
            if ch0[LOGPROBS]:
                ch0[LOGPROBS][LOGPROBS_CONTENT] = ch0[LOGPROBS][LOGPROBS_CONTENT][:-1]
        elif how == "no_ids":
            out.pop(PROMPT_TOKEN_IDS, None)
            for ch in choices:
                ch.pop(TOKEN_IDS, None)
        return self._json(out)

    def _reply(self, d: dict[str, str], body: dict[str, Any]) -> tuple[str, str]:
        reply = d.get("REPLY", "ok")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens is not None and len(reply) > int(max_tokens):
            return reply[: int(max_tokens)], "length"
        return reply, "stop"

    @staticmethod
    def _lp_item(token_id: int) -> dict[str, Any]:
        return {"token": chr(token_id), "logprob": fake_logprob(token_id), "bytes": None, "top_logprobs": []}

    async def _chat_stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        prompt_ids: list[int],
        reply: str,
        finish: str,
        tool: str | None,
        n: int,
        want_ids: bool,
        want_lp: bool,
        how: str | None = None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **version_headers(self.policy_version)}
        )
        await resp.prepare(request)
        base = {
            "id": f"chatcmpl-{self.calls}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            POLICY_VERSION: self.policy_version,
        }

        async def send(chunk: dict[str, Any]) -> None:
            await resp.write(b"data: " + orjson.dumps({**base, **chunk}) + b"\n\n")

        first: dict[str, Any] = {
            "choices": [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                for i in range(n)
            ]
        }
        if want_ids:
            first[PROMPT_TOKEN_IDS] = prompt_ids
        await send(first)
        for i in range(n):
            for j, tid in enumerate(tokenize(reply)):
                delta: dict[str, Any] = {"content": chr(tid)}
                if tool is not None:
                    delta = (
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": f"call_{i}",
                                    "type": "function",
                                    "function": {"name": tool, "arguments": "{}"},
                                }
                            ]
                        }
                        if j == 0
                        else {}
                    )
                ch: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": None}
                if want_ids:
                    ch[TOKEN_IDS] = [tid]
                if want_lp:
                    ch[LOGPROBS] = {LOGPROBS_CONTENT: [self._lp_item(tid)]}
                await send({"choices": [ch]})
                if how == "die" and j == 1:  # the server process goes away mid-answer
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
            await send({"choices": [{"index": i, "delta": {}, "finish_reason": finish}]})
        if how != "no_done":
            await resp.write(_DONE_EVENT)
        await resp.write_eof()
        return resp

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        prompt = body.get("prompt") or ""
        if isinstance(prompt, list):
            prompt = "".join(map(str, prompt))
        d, err = await self._prelude(prompt)
        if err is not None:
            return err
        want_ids = bool(body.get(RETURN_TOKEN_IDS))
        want_lp = body.get(LOGPROBS) is not None
        reply, finish = self._reply(d, body)
        prompt_ids, ids = tokenize(prompt), tokenize(reply)
        n = int(body.get("n") or 1)

        def choice(i: int, toks: list[int], fin: str | None, first: bool) -> dict[str, Any]:
            ch: dict[str, Any] = {
                "index": i,
                "text": "".join(map(chr, toks)),
                "finish_reason": fin,
                LOGPROBS: None,
            }
            if want_lp:
                ch[LOGPROBS] = {
                    LOGPROB_TOKENS: [chr(t) for t in toks],
                    TOKEN_LOGPROBS: [fake_logprob(t) for t in toks],
                    "top_logprobs": None,
                    "text_offset": list(range(len(toks))),
                }
            if want_ids:
                ch[TOKEN_IDS] = toks
                if first:
                    ch[PROMPT_TOKEN_IDS] = prompt_ids
            return ch

        base = {
            "id": f"cmpl-{self.calls}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            POLICY_VERSION: self.policy_version,
        }
        if not body.get("stream"):
            return self._json({**base, "choices": [choice(i, ids, finish, True) for i in range(n)]})
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **version_headers(self.policy_version)}
        )
        await resp.prepare(request)
        for i in range(n):
            for j, tid in enumerate(ids):
                fin = finish if j == len(ids) - 1 else None
                await resp.write(
                    b"data: " + orjson.dumps({**base, "choices": [choice(i, [tid], fin, j == 0)]}) + b"\n\n"
                )
        await resp.write(_DONE_EVENT)
        await resp.write_eof()
        return resp


def main() -> None:
    """``python -m tests.support.fake_inference --host 127.0.0.1 --port 8000``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--policy-version", type=int, default=3)
    args = parser.parse_args()
    server = FakeInferenceServer(args.host, args.port, args.policy_version)

    async def run() -> None:
        url = await server.start_async()
        print(f"fake inference listening on {url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
