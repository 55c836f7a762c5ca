"""The recording OpenAI-compatible gateway between agents and the inference service.

Agents call ``<gateway>/rollouts/<rollout_id>/attempts/<attempt_id>[/agents/<name>]/v1/...`` with
any OpenAI client (ids percent-encoded; the ``X-StreamRL-Agent`` header also names the agent). The
gateway forwards ``chat/completions``, ``completions`` and ``models`` to the inference service,
forcing ``return_token_ids`` and ``logprobs`` on generation calls (the HTTP contract, names and
format: :mod:`streamrl.schemas.inference_http`), answers the agent (as a stream if
it asked for one; bytes untouched, tool calls included), and only then parses the response and
publishes one ``LLMRequest`` per choice to ``requests`` (key ``rollout_id``). Upstream errors reach
the agent with the same status and body. Calls for an attempt that is not open get 404.

Every upstream outcome is noted on the attempt (:meth:`AttemptState.upstream_ok` /
:meth:`~AttemptState.upstream_failed`), classified: unreachable, a timeout, a broken stream, 5xx,
408 or 429 is ``infrastructure``; any other 4xx is ``request``. The worker reads them when it closes
the attempt to tell the task's failures from the inference service's. :meth:`Gateway.probe_upstream`
(and ``GET /healthz/upstream`` for workers of a standalone gateway) asks the service's ``/health``.

OpenAI's Responses API (``responses``, ``GET responses/<id>``) and Anthropic's Messages API
(``messages``, ``messages/count_tokens``) are translated: each generation becomes one chat completion
upstream (:mod:`streamrl.consumers.dialects`), recorded exactly as a chat call, and its answer is
translated back (events too, when streaming). A field that cannot be honoured is HTTP 400 naming it;
an unknown endpoint is HTTP 404 listing the supported ones.

Credentials: every call must carry its attempt's token (``Authorization: Bearer <token>``, as OpenAI
clients send ``api_key``, or ``x-api-key: <token>``, as Anthropic clients do); without it, or with
another attempt's, the answer is HTTP 401; after the attempt ends, HTTP 404. The agent's key never
goes upstream: the gateway sends ``gateway.upstream_api_key``, else the admin token. A body over
``gateway.max_body_bytes`` is HTTP 413, ``n`` over ``gateway.max_choices`` HTTP 400.

The control routes (``POST /control/attempts``, ``POST /control/attempts/close``) let workers in
other processes open and close attempts on a standalone gateway (``streamrl gateway``); with an admin
token configured they require it (``Authorization: Bearer <admin>``), and opening an attempt answers
its token. A standalone gateway serves HTTPS with ``gateway.tls``.

Stack: aiohttp server and one pooled aiohttp client session on the worker's event loop; JSON via
orjson. Recording (parse + Avro encode + produce) runs after the response is written.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from pydantic import ValidationError

from streamrl.config.consumers import GatewaySettings
from streamrl.consumers import metrics as m
from streamrl.consumers.attempts import (
    INFRASTRUCTURE,
    AttemptRegistry,
    AttemptState,
    request_id_for,
    upstream_failure_kind,
)
from streamrl.consumers.dialects import Dialect, MessagesDialect, dialect_for, openai_error
from streamrl.consumers.messages_api import translate_request
from streamrl.consumers.recording import ParsedResponse, RecordingError, parse_response, parse_sse
from streamrl.consumers.sink import RecordSink
from streamrl.consumers.translation import ChatStreamReader, SSESplitter, TranslationError, chat_output
from streamrl.errors import StreamRLError
from streamrl.schemas.inference_http import (
    AGENT_HEADER,
    ANTHROPIC_API_KEY_HEADER,
    CHAT_COMPLETIONS,
    GATEWAY_ENDPOINTS,
    GENERATION_ENDPOINTS,
    HEALTH_PATH,
    MESSAGES,
    MESSAGES_COUNT_TOKENS,
    MODELS,
    PASSED_RESPONSE_HEADERS,
    POLICY_VERSION_HEADER,
    RESPONSES,
    SSE_DONE,
    TOKENIZE_PATH,
    force_training_fields,
    parse_attempt_path,
    policy_version_of,
    sampling_temperature,
)
from streamrl.security import Credentials, bearer_token, client_ssl_context, is_loopback, token_matches

log = logging.getLogger(__name__)

__all__ = ["Gateway"]


def _error(
    status: int, message: str, kind: str = "invalid_request_error", dialect: Dialect | None = None
) -> web.Response:
    """An error answer in the format of the API called (OpenAI's, or Anthropic's for ``messages``)."""
    body = dialect.error(status, message) if dialect is not None else openai_error(status, message, kind=kind)
    return web.Response(status=status, body=body, content_type="application/json")


def _unauthorized(message: str, dialect: Dialect | None = None) -> web.Response:
    """HTTP 401 in the API's error format, with ``WWW-Authenticate: Bearer``."""
    body = (
        dialect.error(401, message)
        if dialect is not None
        else openai_error(401, message, kind="authentication_error")
    )
    return web.Response(
        status=401, body=body, content_type="application/json", headers={"WWW-Authenticate": "Bearer"}
    )


SUPPORTED = (
    ", ".join(f"{'GET' if e == MODELS else 'POST'} /v1/{e}" for e in GATEWAY_ENDPOINTS)
    + ", GET /v1/responses/<id>"
)
"""The endpoints an agent may call, as the 404 for any other lists them."""


class Gateway:
    """An OpenAI-compatible recording proxy.

    Args:
        settings: the ``gateway`` config section (upstream URL and key, timeouts, pool size, bounds).
        sink: where LLMRequest records go (None = record nothing, e.g. a pass-through benchmark).
        control: serve the control routes (for a standalone gateway).
        credentials: the admin token (control routes; sent upstream unless ``upstream_api_key`` is
            set) and the CA file an ``https`` upstream is verified against.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        sink: RecordSink | None,
        *,
        control: bool = False,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.registry = AttemptRegistry()
        self.url = ""
        self._control = control
        self._creds = credentials or Credentials()
        self._upstream = settings.upstream_url.rstrip("/")
        key = settings.upstream_api_key
        upstream_key = key.get_secret_value() if key is not None else self._creds.admin_token
        self._upstream_auth = f"Bearer {upstream_key}" if upstream_key else None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        """The aiohttp application (routes: control, then one catch-all for the OpenAI paths)."""
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        if self._control:
            app.router.add_post("/control/attempts", self._open_attempt)
            app.router.add_post("/control/attempts/close", self._close_attempt)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/healthz/upstream", self._upstream_health)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(
        self,
        host: str | None = None,
        port: int | None = None,
        advertise_host: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> str:
        """Open the upstream pool and listen. Returns the gateway URL (``http[s]://host:port``).

        Args:
            host, port: bind address (default ``gateway.host``/``gateway.port``).
            advertise_host: host put in the URL (default ``gateway.advertise_host`` or ``host``).
            ssl_context: serve HTTPS with this server context (``streamrl.security.server_ssl_context``).

        Raises:
            OSError: the address cannot be bound.
            ConfigError: ``security.ca_file`` cannot be loaded (an ``https`` upstream).
        """
        upstream_tls = (
            client_ssl_context(self._creds.ca_file) if self._upstream.startswith("https:") else None
        )
        self._session = aiohttp.ClientSession(
            # keep idle connections less than uvicorn's 5 s keep-alive (CPU server, vLLM): else a reused,
            # server-closed connection fails the call with ServerDisconnectedError (HTTP 502 to the agent)
            connector=aiohttp.TCPConnector(
                limit=self.settings.max_connections,
                ttl_dns_cache=300,
                keepalive_timeout=3.0,
                ssl=upstream_tls if upstream_tls is not None else True,
            ),
            timeout=aiohttp.ClientTimeout(total=self.settings.upstream_timeout_s),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        host = host if host is not None else self.settings.host
        site = web.TCPSite(
            self._runner,
            host,
            self.settings.port if port is None else port,
            backlog=1024,
            ssl_context=ssl_context,
        )
        await site.start()
        bound_port = self._runner.addresses[0][1]
        shown = advertise_host or self.settings.advertise_host or host
        if shown in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://{shown}:{bound_port}"
        log.info("gateway listening on %s://%s:%d, upstream %s", scheme, host, bound_port, self._upstream)
        if self._control and self._creds.admin_token is None and not is_loopback(host):
            log.warning(
                "gateway: control routes on %s take no token (set security.admin_token or "
                "security.admin_token_file): anyone who reaches this port can open attempts",
                host,
            )
        return self.url

    async def stop(self) -> None:
        """Stop listening and close the upstream pool."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------------------------ handlers

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "open_attempts": len(self.registry)})

    async def _upstream_health(self, request: web.Request) -> web.Response:
        healthy, detail = await self.probe_upstream()
        return web.json_response({"healthy": healthy, "detail": detail}, status=200 if healthy else 503)

    async def probe_upstream(self, timeout_s: float = 2.0) -> tuple[bool, str]:
        """Ask the inference service whether it serves: ``GET <root>/health`` answers 200 (a service
        without ``/health``, 404, is asked ``GET /v1/models`` instead).

        Returns:
            ``(healthy, detail)``: detail is the status or the error, for logs.
        """
        if self._session is None:
            return False, "the gateway is not started"
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        headers = {"Authorization": self._upstream_auth} if self._upstream_auth else {}
        try:
            async with self._session.get(self._upstream_root() + HEALTH_PATH, timeout=timeout) as r:
                await r.read()
                status = r.status
            if status == 404:
                async with self._session.get(
                    f"{self._upstream}/{MODELS}", timeout=timeout, headers=headers
                ) as r:
                    await r.read()
                    status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"inference service unreachable: {exc!r}"
        return status == 200, f"HTTP {status}"

    def _admin_denied(self, request: web.Request) -> web.Response | None:
        """401 unless the request carries the admin token (None when allowed or none is configured)."""
        expected = self._creds.admin_token
        if expected is None or token_matches(bearer_token(request.headers.get("Authorization")), expected):
            return None
        m.LLM_CALLS.labels("control", "unauthorized").inc()
        return _unauthorized("the control routes need the admin token (Authorization: Bearer <admin token>)")

    async def _open_attempt(self, request: web.Request) -> web.Response:
        denied = self._admin_denied(request)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
            state = self.registry.open(
                str(body["rollout_id"]),
                str(body["attempt_id"]),
                body.get("agent_name"),
                int(body.get("policy_version", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _error(400, f"cannot open attempt: {exc}")
        return web.json_response({"status": "open", "token": state.token}, status=201)

    async def _close_attempt(self, request: web.Request) -> web.Response:
        denied = self._admin_denied(request)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
            rid, aid = str(body["rollout_id"]), str(body["attempt_id"])
            timeout_s = float(body.get("timeout_s", 30.0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _error(400, f"cannot close attempt: {exc}")
        state = self.registry.close(rid, aid)
        if state is None:
            return _error(404, f"attempt {aid!r} of rollout {rid!r} is not open")
        result = await state.settle(timeout_s)
        return web.Response(
            body=orjson.dumps(
                {
                    "request_ids": result.request_ids,
                    "completed_at": result.completed_at,
                    "errors": result.errors,
                    "calls_ok": result.calls_ok,
                    "infra_failures": result.infra_failures,
                    "unrecovered": list(result.unrecovered) if result.unrecovered else None,
                    "in_progress": result.in_progress,
                    "in_progress_error": result.in_progress_error,
                }
            ),
            content_type="application/json",
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t_in = time.perf_counter()
        parsed = parse_attempt_path(request.rel_url.raw_path)
        if parsed is None:
            return _error(
                404, f"unknown path {request.rel_url.raw_path!r}; use /rollouts/<id>/attempts/<id>/v1/..."
            )
        rollout_id, attempt_id, agent, endpoint = parsed
        anthropic = MessagesDialect() if endpoint.startswith(MESSAGES) else None
        state = self.registry.get(rollout_id, attempt_id)
        if state is None:
            return _error(
                404,
                f"rollout {rollout_id!r} attempt {attempt_id!r} is unknown or finished",
                "not_found",
                anthropic,
            )
        headers = request.headers
        if not token_matches(bearer_token(headers.get("Authorization")), state.token) and not token_matches(
            headers.get(ANTHROPIC_API_KEY_HEADER), state.token
        ):
            m.LLM_CALLS.labels(endpoint.split("/", 1)[0], "unauthorized").inc()
            return _unauthorized(
                f"rollout {rollout_id!r} attempt {attempt_id!r}: send the attempt's token as the API key "
                "(llm.api_key: Authorization: Bearer <token>, or x-api-key)",
                anthropic,
            )
        agent = agent or headers.get(AGENT_HEADER) or state.agent_name
        if endpoint in GENERATION_ENDPOINTS or endpoint in (RESPONSES, MESSAGES):
            if request.method != "POST":
                return _error(405, f"{endpoint} takes POST", dialect=anthropic)
            return await self._generate(request, state, agent, endpoint, t_in)
        if endpoint == MESSAGES_COUNT_TOKENS and request.method == "POST":
            return await self._count_tokens(request)
        if endpoint.startswith(f"{RESPONSES}/") and request.method == "GET":
            stored = state.responses.get(endpoint[len(RESPONSES) + 1 :])
            if stored is None:
                return _error(
                    404, f"response {endpoint[len(RESPONSES) + 1 :]!r} is not held for this attempt"
                )
            return web.Response(body=orjson.dumps(stored.response), content_type="application/json")
        if endpoint == MODELS or endpoint.startswith(f"{MODELS}/"):
            return await self._passthrough(request, endpoint)
        return _error(
            404,
            f"the gateway does not serve {request.method} /v1/{endpoint}; it serves {SUPPORTED}",
            "not_found",
            anthropic,
        )

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        """Headers of an upstream call: the gateway's own key, never the agent's (its attempt token)."""
        headers = {"Content-Type": "application/json"}
        if self._upstream_auth:
            headers["Authorization"] = self._upstream_auth
        return headers

    def _upstream_root(self) -> str:
        """The inference service's root URL (``upstream_url`` without its ``/v1``)."""
        return self._upstream[: -len("/v1")] if self._upstream.endswith("/v1") else self._upstream

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """``messages/count_tokens``: the translated prompt, tokenized by the inference service."""
        assert self._session is not None
        dialect = MessagesDialect()
        try:
            body = orjson.loads(await self._read_body(request))
            if not isinstance(body, dict):
                raise TranslationError("request body must be a JSON object")
            chat, _ = translate_request(body, count_only=True)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not JSON: {exc}", dialect=dialect)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(dialect)
        except TranslationError as exc:
            return web.Response(
                status=exc.status,
                body=dialect.error(exc.status, exc.message, exc.param),
                content_type="application/json",
            )
        req = {
            k: chat[k]
            for k in ("model", "messages", "tools", "add_generation_prompt", "continue_final_message")
            if k in chat
        }
        try:
            async with self._session.post(
                self._upstream_root() + TOKENIZE_PATH,
                data=orjson.dumps(req),
                headers=self._upstream_headers(request),
            ) as up:
                raw = await up.read()
                if up.status != 200:
                    return web.Response(
                        status=up.status,
                        body=dialect.upstream_error(up.status, raw),
                        content_type="application/json",
                    )
                count = int(orjson.loads(raw)["count"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._note_unreachable(request, exc)
            return _error(502, f"inference service unreachable: {exc!r}", dialect=dialect)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _error(
                502, f"the inference service's {TOKENIZE_PATH} answer is malformed: {exc!r}", dialect=dialect
            )
        return web.Response(body=orjson.dumps({"input_tokens": count}), content_type="application/json")

    async def _passthrough(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        assert self._session is not None
        try:
            async with self._session.request(
                request.method, f"{self._upstream}/{endpoint}", headers=self._upstream_headers(request)
            ) as up:
                raw = await up.read()
                return web.Response(body=raw, status=up.status, headers=_copy_headers(up.headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._note_unreachable(request, exc)
            return _error(502, f"inference service unreachable: {exc!r}", "upstream_error")

    def _note_unreachable(self, request: web.Request, exc: BaseException) -> None:
        """Note an infrastructure failure of a non-generation call on its attempt, if it has one."""
        parsed = parse_attempt_path(request.rel_url.raw_path)
        state = self.registry.get(parsed[0], parsed[1]) if parsed is not None else None
        if state is not None:
            state.upstream_failed(INFRASTRUCTURE, f"inference service unreachable: {exc!r}")

    async def _generate(
        self, request: web.Request, state: AttemptState, agent: str | None, endpoint: str, t_in: float
    ) -> web.StreamResponse:
        assert self._session is not None
        dialect = dialect_for(endpoint, state)
        try:
            body = orjson.loads(await self._read_body(request))
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not JSON: {exc}", dialect=dialect)
        except web.HTTPRequestEntityTooLarge:
            m.LLM_CALLS.labels(endpoint, "too_large").inc()
            return self._too_large(dialect)
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", dialect=dialect)
        n = body.get("n")
        n = 1 if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.settings.max_choices:
            m.LLM_CALLS.labels(endpoint, "too_many_choices").inc()
            return _error(
                400,
                f"n={n!r}: must be an integer from 1 to {self.settings.max_choices} (gateway.max_choices)",
                dialect=dialect,
            )
        if dialect is not None:
            try:
                body = dialect.translate(body)
            except TranslationError as exc:
                m.LLM_CALLS.labels(endpoint, "untranslatable").inc()
                return web.Response(
                    status=exc.status,
                    body=dialect.error(exc.status, exc.message, exc.param),
                    content_type="application/json",
                )
            endpoint = CHAT_COMPLETIONS
        if self.settings.force_token_ids:
            force_training_fields(body, chat=endpoint == CHAT_COMPLETIONS)
        stream = bool(body.get("stream"))
        payload = orjson.dumps(body)
        seq = state.begin_call()
        started_at = datetime.now(timezone.utc)
        label = dialect.name if dialect is not None else endpoint
        try:
            t_up0 = time.perf_counter()
            try:
                async with self._session.post(
                    f"{self._upstream}/{endpoint}", data=payload, headers=self._upstream_headers(request)
                ) as up:
                    if stream and up.status == 200:
                        relay = self._relay_stream if dialect is None else self._translate_stream
                        return await relay(
                            request, up, state, seq, agent, body, started_at, t_in, t_up0, dialect
                        )
                    raw = await up.read()
                    status, headers = up.status, _copy_headers(up.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                m.LLM_CALLS.labels(label, "upstream_unreachable").inc()
                code = 504 if isinstance(exc, TimeoutError) else 502
                state.upstream_failed(INFRASTRUCTURE, f"inference service call failed: {exc!r}")
                return _error(code, f"inference service call failed: {exc!r}", "upstream_error", dialect)
            t_up1 = time.perf_counter()
            if status == 200:
                state.completed_at[request_id_for(state.attempt_id, seq, 0)] = time.time()
            answer = raw
            if dialect is not None:
                try:
                    answer = (
                        orjson.dumps(dialect.complete(chat_output(orjson.loads(raw))))
                        if status == 200
                        else dialect.upstream_error(status, raw)
                    )
                except (orjson.JSONDecodeError, TranslationError) as exc:
                    status, answer = 502, dialect.error(502, f"cannot translate the inference answer: {exc}")
                    raw = answer
                headers["Content-Type"] = "application/json"
            if status == 200:
                state.upstream_ok()
            else:
                state.upstream_failed(
                    upstream_failure_kind(status),
                    f"the inference service answered HTTP {status}: {raw[:300].decode(errors='replace')}",
                )
            resp = web.Response(body=answer, status=status, headers=headers)
            await resp.prepare(request)
            await resp.write_eof()
            t_out = time.perf_counter()
            m.OVERHEAD_SECONDS.observe((t_up0 - t_in) + (t_out - t_up1))
            m.UPSTREAM_SECONDS.observe(t_up1 - t_up0)
            if status != 200:
                m.LLM_CALLS.labels(label, f"http_{status}").inc()
                return resp
            m.LLM_CALLS.labels(label, "ok").inc()
            self._record(
                state,
                seq,
                agent,
                body,
                started_at,
                (t_up1 - t_up0) * 1e3,
                None,
                headers.get(POLICY_VERSION_HEADER),
                lambda: parse_response(raw, where=f"rollout {state.rollout_id!r} call {seq}"),
            )
            return resp
        finally:
            state.end_call()

    async def _relay_stream(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        state: AttemptState,
        seq: int,
        agent: str | None,
        body: dict[str, Any],
        started_at: datetime,
        t_in: float,
        t_up0: float,
        dialect: Dialect | None = None,
    ) -> web.StreamResponse:
        headers = _copy_headers(up.headers)
        headers.setdefault("Content-Type", "text/event-stream")
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(status=200, headers=headers)
        buf = bytearray()
        t_first: float | None = None
        broken: str | None = None
        try:
            await _send(resp, request=request)
            async for chunk in up.content.iter_any():
                if t_first is None:
                    t_first = time.perf_counter()
                buf += chunk
                await _send(resp, chunk)
        except _AgentGone:
            m.LLM_CALLS.labels("stream", "agent_disconnected").inc()
            return resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            broken = f"the inference stream broke: {exc!r}"
        if broken is None and not _ends_with_done(buf):
            broken = "the inference stream ended without data: [DONE] (the service went away mid-answer)"
        if broken is not None:
            # the agent must be able to tell a partial answer from a complete one: end its stream
            # with an error event (the openai clients raise APIError on it), never a clean end
            m.LLM_CALLS.labels("stream", "upstream_broken").inc()
            state.upstream_failed(INFRASTRUCTURE, f"call {seq}: {broken}")
            sep = b"" if buf.endswith(b"\n\n") or not buf else b"\n\n"
            try:
                await resp.write(sep + b"data: " + openai_error(502, broken, kind="upstream_error") + b"\n\n")
                await resp.write_eof()
            except (ConnectionResetError, RuntimeError):
                pass
            return resp
        t_up1 = time.perf_counter()
        state.completed_at[request_id_for(state.attempt_id, seq, 0)] = time.time()
        state.upstream_ok()
        await _end(resp)
        self._stream_done(
            state, seq, agent, body, started_at, t_in, t_up0, t_up1, t_first, headers, bytes(buf)
        )
        return resp

    async def _translate_stream(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        state: AttemptState,
        seq: int,
        agent: str | None,
        body: dict[str, Any],
        started_at: datetime,
        t_in: float,
        t_up0: float,
        dialect: Dialect | None = None,
    ) -> web.StreamResponse:
        """Relay a chat stream as the dialect's event stream, translating chunk by chunk."""
        assert dialect is not None
        headers = _copy_headers(up.headers)
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(status=200, headers=headers)
        writer, splitter, reader = dialect.stream(), SSESplitter(), ChatStreamReader()
        opened = False
        buf = bytearray()
        t_first: float | None = None
        try:
            await _send(resp, request=request)
            async for chunk in up.content.iter_any():
                if t_first is None:
                    t_first = time.perf_counter()
                buf += chunk
                out = b""
                for obj in splitter.feed(chunk):
                    events = reader.feed(obj)
                    if not opened:
                        out, opened = writer.open(reader.output.prompt_tokens), True
                    out += writer.feed(events)
                if out:
                    await _send(resp, out)
            if not opened:
                await _send(resp, writer.open(reader.output.prompt_tokens))
            if reader.error is not None:
                raise TranslationError(f"the inference service reported an error: {reader.error}", None, 502)
            if not _ends_with_done(buf):
                raise TranslationError(
                    "the inference stream ended without data: [DONE] (the service went away mid-answer)",
                    None,
                    502,
                )
            await _send(resp, writer.finish(reader.output))
        except _AgentGone:
            m.LLM_CALLS.labels("stream", "agent_disconnected").inc()
            return resp
        except (aiohttp.ClientError, TimeoutError, TranslationError) as exc:
            m.LLM_CALLS.labels("stream", "upstream_broken").inc()
            reason = (
                exc.message if isinstance(exc, TranslationError) else f"the inference stream broke: {exc!r}"
            )
            state.upstream_failed(INFRASTRUCTURE, f"call {seq}: {reason}")
            try:
                await resp.write(writer.fail(502, reason))
                await resp.write_eof()
            except (ConnectionResetError, RuntimeError):
                pass
            return resp
        t_up1 = time.perf_counter()
        state.completed_at[request_id_for(state.attempt_id, seq, 0)] = time.time()
        state.upstream_ok()
        await _end(resp)
        self._stream_done(
            state, seq, agent, body, started_at, t_in, t_up0, t_up1, t_first, headers, bytes(buf)
        )
        return resp

    def _stream_done(
        self,
        state: AttemptState,
        seq: int,
        agent: str | None,
        body: dict[str, Any],
        started_at: datetime,
        t_in: float,
        t_up0: float,
        t_up1: float,
        t_first: float | None,
        headers: dict[str, str],
        raw: bytes,
    ) -> None:
        """Metrics and the record of a finished stream (the upstream chat stream's bytes in ``raw``)."""
        m.OVERHEAD_SECONDS.observe((t_up0 - t_in) + (time.perf_counter() - t_up1))
        m.UPSTREAM_SECONDS.observe(t_up1 - t_up0)
        m.LLM_CALLS.labels("stream", "ok").inc()
        ttft = None if t_first is None else (t_first - t_up0) * 1e3
        self._record(
            state,
            seq,
            agent,
            body,
            started_at,
            (t_up1 - t_up0) * 1e3,
            ttft,
            headers.get(POLICY_VERSION_HEADER),
            lambda: parse_sse(raw, where=f"rollout {state.rollout_id!r} call {seq} (stream)"),
        )

    async def _read_body(self, request: web.Request) -> bytes:
        """The request body; ``web.HTTPRequestEntityTooLarge`` past ``gateway.max_body_bytes``."""
        if (request.content_length or 0) > self.settings.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.settings.max_body_bytes, actual_size=request.content_length or 0
            )
        return await request.read()

    def _too_large(self, dialect: Dialect | None) -> web.Response:
        return _error(
            413,
            f"request body over {self.settings.max_body_bytes} bytes (gateway.max_body_bytes)",
            dialect=dialect,
        )

    # ------------------------------------------------------------------------------------ recording

    def _record(
        self,
        state: AttemptState,
        seq: int,
        agent: str | None,
        body: dict[str, Any],
        started_at: datetime,
        latency_ms: float,
        ttft_ms: float | None,
        version_header: str | None,
        parse: Any,
    ) -> None:
        """Parse the response and publish one LLMRequest per choice; failures go to ``state.errors``."""
        if self.sink is None:
            return
        from streamrl.schemas import LLMRequest

        try:
            parsed: ParsedResponse = parse()
            version = parsed.policy_version
            if version is None:
                version = policy_version_of(version_header)
            if version is None:
                m.VERSION_MISSING.inc()
                version = state.policy_version
            temperature = sampling_temperature(body)
            ids, futs = [], []
            for c in parsed.choices:
                rid = request_id_for(state.attempt_id, seq, c.index)
                rec = LLMRequest(
                    request_id=rid,
                    rollout_id=state.rollout_id,
                    attempt_id=state.attempt_id,
                    agent_name=agent,
                    sequence=seq,
                    model=str(parsed.model or body.get("model") or ""),
                    prompt_token_ids=c.prompt_token_ids,
                    response_token_ids=c.response_token_ids,
                    response_logprobs=c.response_logprobs,
                    finish_reason=c.finish_reason,
                    policy_version=version,
                    latency_ms=latency_ms,
                    started_at=started_at,
                    choice_index=c.index,
                    ttft_ms=ttft_ms,
                    temperature=temperature,
                )
                futs.append(self.sink.publish("requests", state.rollout_id, rec))
                ids.append(rid)
            state.add_records(seq, ids, futs)
            m.LLM_RECORDS.inc(len(ids))
        except RecordingError as exc:
            m.RECORDING_ERRORS.labels("bad_response").inc()
            state.errors.append(str(exc))
        except ValidationError as exc:  # the response breaks a rule of LLMRequest (say which)
            m.RECORDING_ERRORS.labels("invalid_record").inc()
            what = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            state.errors.append(
                f"rollout {state.rollout_id!r} call {seq}: cannot record the response: {what}"
            )
        except (
            Exception
        ) as exc:  # a record that fails validation/encoding: reported, never raised to the agent
            m.RECORDING_ERRORS.labels(type(exc).__name__).inc()
            state.errors.append(f"rollout {state.rollout_id!r} call {seq}: cannot record the response: {exc}")


class _AgentGone(StreamRLError):
    """The agent's connection closed while the gateway wrote a streamed answer to it."""


async def _send(resp: web.StreamResponse, data: bytes = b"", request: web.Request | None = None) -> None:
    """Write ``data`` to the agent (or, with ``request``, start the response).

    aiohttp raises ``ClientConnectionResetError`` ("Cannot write to closing transport") when the agent
    has closed its connection; that class is an ``aiohttp.ClientError`` too, so, unwrapped, it would be
    read as the inference service's failure by the handlers that catch the upstream's errors.

    Raises:
        _AgentGone: the agent closed its connection.
    """
    try:
        if request is not None:
            await resp.prepare(request)
        else:
            await resp.write(data)
    except (ConnectionResetError, RuntimeError) as exc:
        raise _AgentGone(repr(exc)) from exc


async def _end(resp: web.StreamResponse) -> None:
    """End a streamed answer whose every byte was written (its ``data: [DONE]`` included). An agent that
    closed its connection once it read ``[DONE]``, before the end of the chunked body, got the whole
    answer: the call is complete, not failed (CrewAI's streaming OpenAI client does so)."""
    try:
        await resp.write_eof()
    except (ConnectionResetError, RuntimeError):
        log.debug("the agent closed its connection after the end of a streamed answer")


def _ends_with_done(buf: bytearray) -> bool:
    """Whether a relayed event stream ended with its ``data: [DONE]`` event."""
    return buf.rstrip().endswith(b"data: " + SSE_DONE.encode()) or buf.rstrip().endswith(
        b"data:" + SSE_DONE.encode()
    )


def _copy_headers(upstream: Any) -> dict[str, str]:
    return {h: upstream[h] for h in PASSED_RESPONSE_HEADERS if h in upstream}


async def serve_forever(gateway: Gateway, stop: asyncio.Event) -> None:
    """Run a started gateway until ``stop`` is set, then stop it."""
    try:
        await stop.wait()
    finally:
        await gateway.stop()
