"""The recording OpenAI-compatible gateway between agents and the inference service.

Agents call ``<gateway>/rollouts/<rollout_id>/attempts/<attempt_id>[/agents/<name>]/v1/...`` with
any OpenAI client (ids percent-encoded; the ``X-StreamRL-Agent`` header also names the agent). The
gateway forwards ``chat/completions``, ``completions`` and ``models`` to the inference service,
forcing ``return_token_ids`` and ``logprobs`` on generation calls (the HTTP contract, names and
format: :mod:`streamrl.schemas.inference_http`), answers the agent (as a stream if
it asked for one; bytes untouched, tool calls included), and only then parses the response and
publishes one ``LLMRequest`` per choice to ``requests`` (key ``rollout_id``). Upstream errors reach
the agent with the same status and body. Calls for an attempt that is not open get 404.

The control routes (``POST /control/attempts``, ``POST /control/attempts/close``) let workers in
other processes open and close attempts on a standalone gateway (``streamrl gateway``).

Stack: aiohttp server and one pooled aiohttp client session on the worker's event loop; JSON via
orjson. Recording (parse + Avro encode + produce) runs after the response is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from streamrl.config.consumers import GatewaySettings
from streamrl.consumers import metrics as m
from streamrl.consumers.attempts import AttemptRegistry, AttemptState, request_id_for
from streamrl.consumers.recording import ParsedResponse, RecordingError, parse_response, parse_sse
from streamrl.consumers.sink import RecordSink
from streamrl.schemas.inference_http import (
    AGENT_HEADER,
    CHAT_COMPLETIONS,
    GENERATION_ENDPOINTS,
    MODELS,
    PASSED_RESPONSE_HEADERS,
    POLICY_VERSION_HEADER,
    force_training_fields,
    parse_attempt_path,
    policy_version_of,
)

log = logging.getLogger(__name__)

__all__ = ["Gateway"]


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": kind, "code": status}})
    return web.Response(status=status, body=body, content_type="application/json")


class Gateway:
    """An OpenAI-compatible recording proxy.

    Args:
        settings: the ``gateway`` config section (upstream URL and key, timeouts, pool size).
        sink: where LLMRequest records go (None = record nothing, e.g. a pass-through benchmark).
        control: serve the control routes (for a standalone gateway).
    """

    def __init__(self, settings: GatewaySettings, sink: RecordSink | None, *, control: bool = False) -> None:
        self.settings = settings
        self.sink = sink
        self.registry = AttemptRegistry()
        self.url = ""
        self._control = control
        self._upstream = settings.upstream_url.rstrip("/")
        key = settings.upstream_api_key
        self._upstream_auth = f"Bearer {key.get_secret_value()}" if key is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        """The aiohttp application (routes: control, then one catch-all for the OpenAI paths)."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        if self._control:
            app.router.add_post("/control/attempts", self._open_attempt)
            app.router.add_post("/control/attempts/close", self._close_attempt)
        app.router.add_get("/healthz", self._health)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(
        self, host: str | None = None, port: int | None = None, advertise_host: str | None = None
    ) -> str:
        """Open the upstream pool and listen. Returns the gateway URL (``http://host:port``).

        Raises:
            OSError: the address cannot be bound.
        """
        self._session = aiohttp.ClientSession(
            # keep idle connections less than uvicorn's 5 s keep-alive (CPU server, vLLM): else a reused,
            # server-closed connection fails the call with ServerDisconnectedError (HTTP 502 to the agent)
            connector=aiohttp.TCPConnector(
                limit=self.settings.max_connections, ttl_dns_cache=300, keepalive_timeout=3.0
            ),
            timeout=aiohttp.ClientTimeout(total=self.settings.upstream_timeout_s),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        host = host if host is not None else self.settings.host
        site = web.TCPSite(self._runner, host, self.settings.port if port is None else port, backlog=1024)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        shown = advertise_host or self.settings.advertise_host or host
        if shown in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        self.url = f"http://{shown}:{bound_port}"
        log.info("gateway listening on %s:%d, upstream %s", host, bound_port, self._upstream)
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

    async def _open_attempt(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            self.registry.open(
                str(body["rollout_id"]),
                str(body["attempt_id"]),
                body.get("agent_name"),
                int(body.get("policy_version", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _error(400, f"cannot open attempt: {exc}")
        return web.json_response({"status": "open"}, status=201)

    async def _close_attempt(self, request: web.Request) -> web.Response:
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
        state = self.registry.get(rollout_id, attempt_id)
        if state is None:
            return _error(
                404, f"rollout {rollout_id!r} attempt {attempt_id!r} is unknown or finished", "not_found"
            )
        agent = agent or request.headers.get(AGENT_HEADER) or state.agent_name
        if endpoint in GENERATION_ENDPOINTS:
            if request.method != "POST":
                return _error(405, f"{endpoint} takes POST")
            return await self._generate(request, state, agent, endpoint, t_in)
        if endpoint == MODELS or endpoint.startswith(f"{MODELS}/"):
            return await self._passthrough(request, endpoint)
        return _error(404, f"the gateway does not serve /v1/{endpoint}")

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        auth = self._upstream_auth or request.headers.get("Authorization")
        if auth:
            headers["Authorization"] = auth
        return headers

    async def _passthrough(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        assert self._session is not None
        try:
            async with self._session.request(
                request.method, f"{self._upstream}/{endpoint}", headers=self._upstream_headers(request)
            ) as up:
                raw = await up.read()
                return web.Response(body=raw, status=up.status, headers=_copy_headers(up.headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"inference service unreachable: {exc!r}", "upstream_error")

    async def _generate(
        self, request: web.Request, state: AttemptState, agent: str | None, endpoint: str, t_in: float
    ) -> web.StreamResponse:
        assert self._session is not None
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        if self.settings.force_token_ids:
            force_training_fields(body, chat=endpoint == CHAT_COMPLETIONS)
        stream = bool(body.get("stream"))
        payload = orjson.dumps(body)
        seq = state.begin_call()
        started_at = datetime.now(timezone.utc)
        try:
            t_up0 = time.perf_counter()
            try:
                async with self._session.post(
                    f"{self._upstream}/{endpoint}", data=payload, headers=self._upstream_headers(request)
                ) as up:
                    if stream and up.status == 200:
                        return await self._relay_stream(
                            request, up, state, seq, agent, body, started_at, t_in, t_up0
                        )
                    raw = await up.read()
                    status, headers = up.status, _copy_headers(up.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                m.LLM_CALLS.labels(endpoint, "upstream_unreachable").inc()
                code = 504 if isinstance(exc, TimeoutError) else 502
                return _error(code, f"inference service call failed: {exc!r}", "upstream_error")
            t_up1 = time.perf_counter()
            if status == 200:
                state.completed_at[request_id_for(state.attempt_id, seq, 0)] = time.time()
            resp = web.Response(body=raw, status=status, headers=headers)
            await resp.prepare(request)
            await resp.write_eof()
            t_out = time.perf_counter()
            m.OVERHEAD_SECONDS.observe((t_up0 - t_in) + (t_out - t_up1))
            m.UPSTREAM_SECONDS.observe(t_up1 - t_up0)
            if status != 200:
                m.LLM_CALLS.labels(endpoint, f"http_{status}").inc()
                return resp
            m.LLM_CALLS.labels(endpoint, "ok").inc()
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
    ) -> web.StreamResponse:
        headers = _copy_headers(up.headers)
        headers.setdefault("Content-Type", "text/event-stream")
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        buf = bytearray()
        t_first: float | None = None
        try:
            async for chunk in up.content.iter_any():
                if t_first is None:
                    t_first = time.perf_counter()
                buf += chunk
                await resp.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            m.LLM_CALLS.labels("stream", "upstream_broken").inc()
            state.errors.append(f"call {seq}: the inference stream broke: {exc!r}")
            return resp
        except (ConnectionResetError, RuntimeError):
            m.LLM_CALLS.labels("stream", "agent_disconnected").inc()
            return resp
        t_up1 = time.perf_counter()
        state.completed_at[request_id_for(state.attempt_id, seq, 0)] = time.time()
        await resp.write_eof()
        m.OVERHEAD_SECONDS.observe((t_up0 - t_in) + (time.perf_counter() - t_up1))
        m.UPSTREAM_SECONDS.observe(t_up1 - t_up0)
        m.LLM_CALLS.labels("stream", "ok").inc()
        ttft = None if t_first is None else (t_first - t_up0) * 1e3
        raw = bytes(buf)
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
        return resp

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
                )
                futs.append(self.sink.publish("requests", state.rollout_id, rec))
                ids.append(rid)
            state.add_records(seq, ids, futs)
            m.LLM_RECORDS.inc(len(ids))
        except RecordingError as exc:
            m.RECORDING_ERRORS.labels("bad_response").inc()
            state.errors.append(str(exc))
        except (
            Exception
        ) as exc:  # a record that fails validation/encoding: reported, never raised to the agent
            m.RECORDING_ERRORS.labels(type(exc).__name__).inc()
            state.errors.append(f"rollout {state.rollout_id!r} call {seq}: cannot record the response: {exc}")


def _copy_headers(upstream: Any) -> dict[str, str]:
    return {h: upstream[h] for h in PASSED_RESPONSE_HEADERS if h in upstream}


async def serve_forever(gateway: Gateway, stop: asyncio.Event) -> None:
    """Run a started gateway until ``stop`` is set, then stop it."""
    try:
        await stop.wait()
    finally:
        await gateway.stop()
