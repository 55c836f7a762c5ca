"""The inference API's guard: bearer tokens and a request body bound, as pure ASGI middleware.

Wraps the CPU server's and the vLLM front's FastAPI apps (:func:`guard_app`):

- ``GET /health`` is open (load balancers, ``streamrl dev``, the gateway's probe);
- ``GET /metrics`` needs ``security.metrics_token`` when one is set;
- every other route needs ``security.admin_token`` when one is set (the gateway sends it);
- a body over ``inference.max_body_bytes`` is HTTP 413 (by ``Content-Length``, or counted while a
  chunked body is read), before the app parses it.

Rejections are OpenAI-format JSON errors (what the ``openai`` client reports), with
``WWW-Authenticate: Bearer`` on a 401. The token check is one header lookup and a constant-time compare.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from streamrl.schemas.inference_http import HEALTH_PATH
from streamrl.security import Credentials, bearer_token, token_matches

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"
OPEN_PATHS = frozenset({HEALTH_PATH})


def _error(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}}).encode()


async def _answer(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra)})
    await send({"type": "http.response.body", "body": body})


def guard_app(
    app: ASGIApp,
    credentials: Credentials,
    max_body_bytes: int,
    on_reject: Callable[[str, int], None] | None = None,
) -> ASGIApp:
    """``app`` behind the token checks and the body bound (see the module docstring).

    Args:
        app: the ASGI application (FastAPI).
        credentials: the admin and metrics tokens (None = that check is off).
        max_body_bytes: largest request body, in bytes.
        on_reject: called with ``(path, status)`` for each rejected request (metrics).
    """
    admin, metrics = credentials.admin_token, credentials.metrics_token

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path: str = scope["path"]
        expected = None if path in OPEN_PATHS else (metrics if path == METRICS_PATH else admin)
        if expected is not None:
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization")
            sent = bearer_token(auth.decode("latin-1") if auth is not None else None)
            if not token_matches(sent, expected):
                if on_reject is not None:
                    on_reject(path, 401)
                which = "security.metrics_token" if path == METRICS_PATH else "security.admin_token"
                await _answer(
                    send,
                    401,
                    _error(
                        401,
                        f"{path} needs a bearer token ({which}): Authorization: Bearer <token>",
                        "authentication_error",
                    ),
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            await _too_large(send, path, max_body_bytes, on_reject)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # a chunked body: read it here, up to the bound, then hand it on
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                if size > max_body_bytes:
                    await _too_large(send, path, max_body_bytes, on_reject)
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            sent_once = False

            async def replay() -> Message:
                nonlocal sent_once
                if not sent_once:
                    sent_once = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await app(scope, replay, send)
            return
        await app(scope, receive, send)

    return guarded


async def _too_large(send: Send, path: str, limit: int, on_reject: Callable[[str, int], None] | None) -> None:
    if on_reject is not None:
        on_reject(path, 413)
    await _answer(
        send,
        413,
        _error(413, f"request body over {limit} bytes (inference.max_body_bytes)", "BadRequestError"),
    )
